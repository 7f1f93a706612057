//! Refusals the gateway answers before reading the request body (401, 413,
//! 429, 404, ...) leave the client's keep-alive connection usable: a small
//! body is read and discarded, anything else is answered `Connection: close`
//! and the connection is closed cleanly (no reset that could destroy the
//! answer). Spoken over raw HTTP/1.1 on one TCP connection, so that every
//! byte and every close is visible, and through a pooled client in a burst.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loyalty_gateway::keys::Scope;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use support::{Harness, Options};

/// Longest wait for one answer; a hang is a failure, not a slow pass.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 answer as read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the server said it will close the connection after this answer.
    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    #[track_caller]
    fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        assert_eq!(self.json()["code"], code);
    }
}

/// How a request body goes on the wire.
enum Framing {
    Length,
    Chunked,
}

/// A client on one TCP connection, as a browser or an HTTP library holds it between requests.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("the gateway accepts a connection");
        stream.set_nodelay(true).unwrap();
        Self { stream, buffer: Vec::new() }
    }

    /// Sends one request: the head in one write, the body in another, as clients do; any
    /// failure here or while reading the answer is the transport error this file is about.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        framing: Framing,
    ) -> Raw {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: gateway\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match framing {
            Framing::Length => head.push_str(&format!("content-length: {}\r\n\r\n", body.len())),
            Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n\r\n"),
        }
        let framed = match framing {
            Framing::Length => body.to_vec(),
            Framing::Chunked => {
                let mut framed = Vec::new();
                for chunk in body.chunks(4_096) {
                    framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    framed.extend_from_slice(chunk);
                    framed.extend_from_slice(b"\r\n");
                }
                framed.extend_from_slice(b"0\r\n\r\n");
                framed
            }
        };
        self.stream
            .write_all(head.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: writing the head: {e}"));
        if !framed.is_empty() {
            self.stream.write_all(&framed).await.unwrap_or_else(|e| panic!("{method} {path}: writing the body: {e}"));
        }
        timeout(ANSWER_WAIT, self.answer())
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {ANSWER_WAIT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: transport error: {e}"))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8_192];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before an answer"));
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }

    async fn answer(&mut self) -> std::io::Result<Raw> {
        let end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let head = String::from_utf8(self.buffer[..end].to_vec()).expect("an ASCII head");
        self.buffer.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().expect("a numeric Content-Length"))
            .unwrap_or_else(|| panic!("an answer without Content-Length: {head}"));
        while self.buffer.len() < length {
            self.fill().await?;
        }
        let body = self.buffer.drain(..length).collect();
        Ok(Raw { status, headers, body })
    }

    /// After an answer that said `Connection: close`: the server closes with a FIN (a clean end
    /// of stream), not a reset, and sends nothing more.
    async fn expect_clean_close(mut self) {
        assert!(self.buffer.is_empty(), "bytes after the last answer: {:?}", String::from_utf8_lossy(&self.buffer));
        let mut rest = Vec::new();
        let read = timeout(ANSWER_WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection it said it would close");
        assert_eq!(read.expect("a clean close, not a reset"), 0, "{:?}", String::from_utf8_lossy(&rest));
    }
}

fn order(order_id: &str) -> Vec<u8> {
    let body = json!({"customer_id": "anna", "order_id": order_id, "amount_minor": 2_500, "currency": "EUR"});
    serde_json::to_vec(&body).unwrap()
}

/// A valid order on `connection`, proving it still works.
async fn valid_order(connection: &mut Connection, key: &str, order_id: &str) {
    let bearer = format!("Bearer {key}");
    let headers =
        [("authorization", bearer.as_str()), ("content-type", "application/json"), ("idempotency-key", order_id)];
    let answer = connection.request("POST", "/v1/orders", &headers, &order(order_id), Framing::Length).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert!(!answer.closes(), "a served request keeps the connection: {:?}", answer.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_with_small_bodies_keep_the_connection() {
    let h = Harness::start().await;
    let server = h.key("shop", Scope::Server).await;
    let storefront = h.key("shop", Scope::Storefront).await;
    let addr = h.gateway().bind_addr();
    let mut connection = Connection::open(addr).await;
    let json_type = ("content-type", "application/json");

    // Many rounds on the same connection: the race between the answer and the body's arrival
    // (which broke ~5 % of requests) gets many chances to show.
    for round in 0..40 {
        let body = order(&format!("refused-{round}"));
        connection
            .request("POST", "/v1/orders", &[json_type], &body, Framing::Length)
            .await
            .problem(401, "UNAUTHENTICATED");
        let bad_key = [("authorization", "Bearer not-a-key"), json_type];
        connection
            .request("POST", "/v1/orders", &bad_key, &body, Framing::Length)
            .await
            .problem(401, "UNAUTHENTICATED");
        let weak = format!("Bearer {storefront}");
        let weak = [("authorization", weak.as_str()), json_type, ("idempotency-key", "k")];
        connection
            .request("POST", "/v1/orders", &weak, &body, Framing::Length)
            .await
            .problem(403, "INSUFFICIENT_SCOPE");
        let bearer = format!("Bearer {server}");
        let no_idempotency = [("authorization", bearer.as_str()), json_type];
        let answer = connection.request("POST", "/v1/orders", &no_idempotency, &body, Framing::Length).await;
        answer.problem(400, "MISSING_IDEMPOTENCY_KEY");
        connection
            .request("POST", "/v1/no-such-route", &[json_type], &body, Framing::Length)
            .await
            .problem(404, "NOT_FOUND");
        let answer = connection.request("DELETE", "/v1/orders", &[json_type], &body, Framing::Length).await;
        answer.problem(405, "METHOD_NOT_ALLOWED");
        assert!(!answer.closes(), "a small body is read, not a reason to close: {:?}", answer.headers);
        valid_order(&mut connection, &server, &format!("valid-{round}")).await;
    }

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limited_requests_keep_the_connection() {
    let h = Harness::start_with(Options { rate_limit_per_sec: 1, rate_limit_burst: 2, ..Options::default() }).await;
    let busy = h.key("shop", Scope::Server).await;
    let calm = h.key("shop", Scope::Server).await;
    let mut connection = Connection::open(h.gateway().bind_addr()).await;
    let bearer = format!("Bearer {busy}");

    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let id = format!("busy-{attempt}");
        let headers = [
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
            ("idempotency-key", id.as_str()),
        ];
        let answer = connection.request("POST", "/v1/orders", &headers, &order(&id), Framing::Length).await;
        statuses.push(answer.status);
        if answer.status == 429 {
            answer.problem(429, "RATE_LIMITED");
            assert!(answer.header("retry-after").is_some(), "{:?}", answer.headers);
            assert!(!answer.closes(), "{:?}", answer.headers);
        } else {
            assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        }
    }
    assert!(statuses.contains(&429), "the burst of 2 was never exceeded: {statuses:?}");
    valid_order(&mut connection, &calm, "calm-1").await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_unbounded_bodies_are_refused_with_a_clean_close() {
    let h = Harness::start().await;
    let server = h.key("shop", Scope::Server).await;
    let addr = h.gateway().bind_addr();
    let bearer = format!("Bearer {server}");
    let headers =
        [("authorization", bearer.as_str()), ("content-type", "application/json"), ("idempotency-key", "big")];
    // Twice the default 64 KiB limit; JSON-ish so only the size is wrong.
    let oversized = format!("{{\"customer_id\": \"{}\"}}", "a".repeat(128 * 1024)).into_bytes();

    // Declared too large: refused after reading at most the limit, the rest discarded before the close.
    let mut connection = Connection::open(addr).await;
    valid_order(&mut connection, &server, "before-big").await;
    let answer = connection.request("POST", "/v1/orders", &headers, &oversized, Framing::Length).await;
    answer.problem(413, "BODY_TOO_LARGE");
    assert!(answer.closes(), "an oversized body ends the connection, said so: {:?}", answer.headers);
    connection.expect_clean_close().await;

    // Too large and chunked: the same.
    let mut connection = Connection::open(addr).await;
    let answer = connection.request("POST", "/v1/orders", &headers, &oversized, Framing::Chunked).await;
    answer.problem(413, "BODY_TOO_LARGE");
    assert!(answer.closes(), "{:?}", answer.headers);
    connection.expect_clean_close().await;

    // A chunked body of unknown length refused before it is read (no key).
    let mut connection = Connection::open(addr).await;
    let answer = connection
        .request("POST", "/v1/orders", &[("content-type", "application/json")], &order("x"), Framing::Chunked)
        .await;
    answer.problem(401, "UNAUTHENTICATED");
    assert!(answer.closes(), "an unbounded body is not read on a refusal: {:?}", answer.headers);
    connection.expect_clean_close().await;

    // An oversized body refused before it is read (no key).
    let mut connection = Connection::open(addr).await;
    let answer = connection
        .request("POST", "/v1/orders", &[("content-type", "application/json")], &oversized, Framing::Length)
        .await;
    answer.problem(401, "UNAUTHENTICATED");
    assert!(answer.closes(), "{:?}", answer.headers);
    connection.expect_clean_close().await;

    // A client waiting for `100 Continue` before an oversized upload gets the refusal instead,
    // and is not invited to send the body.
    let mut connection = Connection::open(addr).await;
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        oversized.len()
    );
    connection.stream.write_all(head.as_bytes()).await.unwrap();
    let answer = timeout(ANSWER_WAIT, connection.answer()).await.expect("an answer").expect("no transport error");
    answer.problem(401, "UNAUTHENTICATED");
    assert!(answer.closes(), "{:?}", answer.headers);
    connection.expect_clean_close().await;

    // The same with a valid key: the declared size alone refuses it, before any `100 Continue`.
    let mut connection = Connection::open(addr).await;
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         authorization: {bearer}\r\nidempotency-key: big-continue\r\n\
         expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        oversized.len()
    );
    connection.stream.write_all(head.as_bytes()).await.unwrap();
    let answer = timeout(ANSWER_WAIT, connection.answer()).await.expect("an answer").expect("no transport error");
    answer.problem(413, "BODY_TOO_LARGE");
    assert!(answer.closes(), "{:?}", answer.headers);
    connection.expect_clean_close().await;

    // A well-behaved client opens a new connection and carries on.
    let mut connection = Connection::open(addr).await;
    valid_order(&mut connection, &server, "after-big").await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_refusals_through_a_pool_has_no_transport_error() {
    let h = Harness::start_with(Options { rate_limit_per_sec: 1, rate_limit_burst: 20, ..Options::default() }).await;
    let limited = h.key("shop", Scope::Server).await;
    let big = h.key("shop", Scope::Server).await;
    let base = h.base.clone();
    // One pool, as a shop's back end holds it; idle connections are reused for the next request.
    let client = reqwest::Client::builder().pool_max_idle_per_host(8).build().unwrap();
    let oversized = Arc::new(vec![b'x'; 100 * 1024]);
    let transport_errors = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));

    const REQUESTS: usize = 400;
    const CONCURRENCY: usize = 16;
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let (client, base, oversized) = (client.clone(), base.clone(), oversized.clone());
        let (limited, big) = (limited.clone(), big.clone());
        let (transport_errors, statuses) = (transport_errors.clone(), statuses.clone());
        workers.push(tokio::spawn(async move {
            for i in (worker..REQUESTS).step_by(CONCURRENCY) {
                let url = format!("{base}/v1/orders");
                let request = client.post(&url).header("content-type", "application/json");
                let request = match i % 4 {
                    // 401: no key.
                    0 => request.body(order(&format!("n-{i}"))),
                    // 429 once the burst is spent (200 before).
                    1 => request
                        .bearer_auth(&limited)
                        .header("idempotency-key", format!("l-{i}"))
                        .body(order(&format!("l-{i}"))),
                    // 413: too large (429 once that key's burst is spent).
                    2 => request.bearer_auth(&big).header("idempotency-key", format!("b-{i}")).body(oversized.to_vec()),
                    // 401: a key that is not one.
                    _ => request.bearer_auth("nope").body(order(&format!("x-{i}"))),
                };
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if response.bytes().await.is_err() {
                            transport_errors.fetch_add(1, Ordering::SeqCst);
                        }
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                    }
                    Err(error) => {
                        eprintln!("transport error: {error:?}");
                        transport_errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    assert_eq!(transport_errors.load(Ordering::SeqCst), 0, "answers: {statuses:?}");
    assert_eq!(statuses.values().sum::<usize>(), REQUESTS, "{statuses:?}");
    for status in [401, 413, 429] {
        assert!(statuses.contains_key(&status), "no {status} in {statuses:?}");
    }

    h.stop().await;
}
