//! The tower layer in front of every gRPC service: authenticates the
//! caller, checks scope and program, and hands the handler a [`Caller`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;

use super::keys::AuthError;
use super::{Access, Caller, Checks, Policy, SERVICE_TOKEN_PREFIX, Security};

/// Largest request read to find its `program_id` (tonic's own default limit).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Services every caller may use: probes and tooling need no key.
const OPEN_SERVICES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection.v1.", "/grpc.reflection.v1alpha."];

/// Checks every call against one service's [`Policy`].
#[derive(Clone)]
pub struct AuthLayer {
    checker: Arc<Checker>,
}

struct Checker {
    security: Security,
    policy: Policy,
}

impl AuthLayer {
    pub fn new(security: Security, policy: Policy) -> Self {
        Self { checker: Arc::new(Checker { security, policy }) }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, checker: self.checker.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    checker: Arc<Checker>,
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was driven to readiness is the one we must call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let checker = self.checker.clone();
        Box::pin(async move {
            let route = checker.route(request.uri().path());
            match checker.admit(request, route).await {
                Ok(request) => inner.call(request).await,
                Err(status) => {
                    let mut response = status.into_http();
                    if !route.open && route.access.is_none() {
                        response.extensions_mut().insert(UnknownRpc);
                    }
                    Ok(response)
                }
            }
        })
    }
}

/// Marks a refusal of a path that is no RPC of this server, so that the
/// metrics do not make a label of whatever path a caller sends.
#[derive(Debug, Clone, Copy)]
pub struct UnknownRpc;

/// What a path is to this server, looked up once per call.
#[derive(Debug, Clone, Copy)]
struct Route {
    /// Health or reflection: no credentials needed.
    open: bool,
    /// The policy's rule; `None` for a path that is no RPC of the policy's service.
    access: Option<Access>,
}

impl Checker {
    fn route(&self, path: &str) -> Route {
        let open = OPEN_SERVICES.iter().any(|open| path.starts_with(open));
        Route { open, access: if open { None } else { self.policy.access(path) } }
    }

    async fn admit(&self, mut request: http::Request<Body>, route: Route) -> Result<http::Request<Body>, Status> {
        if route.open {
            return Ok(request);
        }
        let path = request.uri().path();
        let Some(access) = route.access else {
            // Another service's RPC (or none at all): not a question of credentials.
            return Err(Status::unimplemented(format!(
                "{path} is not served here; this port serves {}",
                self.policy.service
            )));
        };
        let Checks::Required { keys, services } = &self.security.checks else {
            request.extensions_mut().insert(Caller::Unchecked);
            return Ok(request);
        };
        let token = bearer(request.headers())?;
        if token.starts_with(SERVICE_TOKEN_PREFIX) {
            let name = services
                .iter()
                .find_map(|secret| secret.verify(token))
                .ok_or_else(|| Status::unauthenticated("the service identity is not valid"))?
                .to_owned();
            request.extensions_mut().insert(Caller::Service(name));
            return Ok(request);
        }
        let key = keys.verify(token).await.map_err(|error| match error {
            AuthError::Invalid => Status::unauthenticated("the API key is not valid (unknown, revoked or malformed)"),
            AuthError::Unavailable(cause) => {
                tracing::error!(error = %cause, "cannot check an api key");
                Status::unavailable("cannot check the API key, retry later")
            }
        })?;
        match access {
            Access::Internal => {
                return Err(Status::permission_denied(format!(
                    "{path} is internal: only the loyalty services may call it"
                )));
            }
            Access::Key(needed) if !key.scope.allows(needed) => {
                return Err(Status::permission_denied(format!(
                    "{path} needs a key with the {needed} scope; this key has {}",
                    key.scope
                )));
            }
            Access::Key(_) => {}
        }
        let (parts, body) = request.into_parts();
        let (first, rest) = first_message(body).await?;
        let program = program_id(&first).map_err(Status::invalid_argument)?;
        if program != key.program_id.as_bytes() {
            return Err(Status::permission_denied(format!(
                "program_id {:?} is not this API key's program ({:?})",
                String::from_utf8_lossy(program),
                key.program_id
            )));
        }
        let mut request = http::Request::from_parts(parts, Body::new(Replayed { first: Some(first), rest }));
        request.extensions_mut().insert(Caller::Key(key));
        Ok(request)
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    let missing = || Status::unauthenticated("send the API key as metadata `authorization: Bearer <key>`");
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| missing())?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(missing()),
    }
}

/// Reads the request body up to the end of its first gRPC message (without
/// waiting for the end of the stream), returning those bytes and the rest.
async fn first_message(mut body: Body) -> Result<(Bytes, Body), Status> {
    let mut buffered = BytesMut::new();
    loop {
        if has_first_message(&buffered)? {
            return Ok((buffered.freeze(), body));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    // The usual case, the whole message in one frame, needs no copy.
                    if buffered.is_empty() && has_first_message(&data)? {
                        return Ok((data, body));
                    }
                    buffered.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(Status::cancelled("the request body broke off")),
            // Ended early: the program check refuses what is there.
            None => return Ok((buffered.freeze(), body)),
        }
    }
}

/// True when `bytes` hold a whole first gRPC message (5-byte header, then its length).
fn has_first_message(bytes: &[u8]) -> Result<bool, Status> {
    let Some(header) = bytes.get(..5) else { return Ok(false) };
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length > MAX_REQUEST_BYTES {
        return Err(Status::resource_exhausted("the request is too large"));
    }
    Ok(bytes.len() >= 5 + length)
}

/// The request body again: the bytes read to find the program, then the rest.
struct Replayed {
    first: Option<Bytes>,
    rest: Body,
}

impl http_body::Body for Replayed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}

/// Field 1 (`program_id`) of the first message in a gRPC request body: a
/// 5-byte frame header (compression flag, big-endian length), then the
/// protobuf message. A field that occurs twice counts by its last value, as
/// protobuf decoders read it; an absent one is empty.
fn program_id(body: &[u8]) -> Result<&[u8], &'static str> {
    const MALFORMED: &str = "the request is not one uncompressed protobuf message";
    let (header, rest) = body.split_at_checked(5).ok_or(MALFORMED)?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = rest.get(..length).ok_or(MALFORMED)?;
    if header[0] != 0 {
        return Err(MALFORMED);
    }
    let mut rest = message;
    let mut program: &[u8] = &[];
    while !rest.is_empty() {
        let tag = varint(&mut rest).ok_or(MALFORMED)?;
        let skip = match tag & 7 {
            0 => {
                varint(&mut rest).ok_or(MALFORMED)?;
                0
            }
            1 => 8,
            2 => {
                let length = usize::try_from(varint(&mut rest).ok_or(MALFORMED)?).map_err(|_| MALFORMED)?;
                if length > rest.len() {
                    return Err(MALFORMED);
                }
                if tag >> 3 == 1 {
                    program = &rest[..length];
                }
                length
            }
            5 => 4,
            _ => return Err(MALFORMED),
        };
        rest = rest.get(skip..).ok_or(MALFORMED)?;
    }
    std::str::from_utf8(program).map(str::as_bytes).map_err(|_| "program_id: must be UTF-8")
}

/// Reads one base-128 varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn framed(message: &impl Message) -> Bytes {
        let encoded = message.encode_to_vec();
        let mut body = vec![0u8];
        body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        body.extend_from_slice(&encoded);
        Bytes::from(body)
    }

    #[test]
    fn finds_the_program_wherever_field_one_sits() {
        use loyalty_proto::points::v1::{GetBalanceRequest, SpendRequest};
        let balance = GetBalanceRequest { program_id: "shop-a".into(), customer_id: "anna".into() };
        assert_eq!(program_id(&framed(&balance)).unwrap(), b"shop-a");
        let spend = SpendRequest {
            program_id: "shop-b".into(),
            customer_id: "anna".into(),
            points: 300,
            idempotency_key: "k".into(),
            ..Default::default()
        };
        assert_eq!(program_id(&framed(&spend)).unwrap(), b"shop-b");
        assert_eq!(program_id(&framed(&GetBalanceRequest::default())).unwrap(), b"");
    }

    #[tokio::test]
    async fn the_first_message_is_read_across_frames_and_the_body_replayed_whole() {
        use loyalty_proto::points::v1::GetBalanceRequest;
        let message = framed(&GetBalanceRequest { program_id: "shop".into(), customer_id: "anna".into() });
        let (head, tail) = message.split_at(3);
        let frames: Vec<Result<_, Status>> = vec![
            Ok(http_body::Frame::data(Bytes::copy_from_slice(head))),
            Ok(http_body::Frame::data(Bytes::copy_from_slice(tail))),
            Ok(http_body::Frame::data(Bytes::from_static(b"next"))),
        ];
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
        let (first, rest) = first_message(body).await.unwrap();
        assert_eq!(program_id(&first).unwrap(), b"shop");
        let replayed = Body::new(Replayed { first: Some(first), rest }).collect().await.unwrap().to_bytes();
        assert_eq!(replayed, [&message[..], b"next"].concat());
    }

    #[test]
    fn the_last_program_id_counts_as_in_protobuf() {
        use loyalty_proto::points::v1::GetBalanceRequest;
        let first = GetBalanceRequest { program_id: "mine".into(), customer_id: "anna".into() }.encode_to_vec();
        let second = GetBalanceRequest { program_id: "theirs".into(), customer_id: String::new() }.encode_to_vec();
        let joined = [first, second].concat();
        let mut body = vec![0u8];
        body.extend_from_slice(&(joined.len() as u32).to_be_bytes());
        body.extend_from_slice(&joined);
        let decoded = GetBalanceRequest::decode(&joined[..]).unwrap();
        assert_eq!(program_id(&Bytes::from(body)).unwrap(), decoded.program_id.as_bytes());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(program_id(&Bytes::from_static(b"")).is_err());
        assert!(program_id(&Bytes::from_static(&[1, 0, 0, 0, 0])).is_err(), "compressed");
        assert!(program_id(&Bytes::from_static(&[0, 0, 0, 0, 9])).is_err(), "length beyond the body");
        assert!(program_id(&Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a, 0x05])).is_err(), "string beyond the body");
        assert!(program_id(&Bytes::from_static(&[0, 0, 0, 0, 1, 0x0b])).is_err(), "group wire type");
        assert!(program_id(&Bytes::from_static(&[0, 0, 0, 0, 3, 0x0a, 0x01, 0xff])).is_err(), "not UTF-8");
    }

    /// A caller sending made-up paths must not mint metrics labels.
    #[tokio::test]
    async fn unknown_paths_are_unimplemented_and_counted_under_unknown() {
        use tower::{Layer, ServiceExt};

        use crate::auth::keys::Scope;
        use crate::auth::{Access, AuthArgs};
        use crate::metrics::{Metrics, RpcObserverLayer};

        const POLICY: Policy =
            Policy { service: "loyalty.test.v1.TestService", methods: &[("Known", Access::Key(Scope::Server))] };
        let dir = std::env::temp_dir().join(format!("loyalty-layer-{}", crate::testing::unique_suffix()));
        let args = AuthArgs::required(&format!("sqlite://{}/keys.db", dir.display()), &"s".repeat(32));
        let security = Security::setup("test", &args, Arc::new(crate::clock::SystemClock)).await.unwrap();
        let metrics = Metrics::new();
        let handler = tower::service_fn(|_: http::Request<Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::default()))
        });
        let service = RpcObserverLayer::new(metrics.clone()).layer(security.layer(POLICY).layer(handler));
        for path in
            ["/attacker.Svc1/Method1", "/loyalty.test.v1.TestService/Made2", "/loyalty.test.v1.TestService/Known"]
        {
            let request = http::Request::builder().uri(path).body(Body::default()).unwrap();
            let response = service.clone().oneshot(request).await.unwrap();
            let expected = if path.ends_with("Known") { "16" } else { "12" };
            assert_eq!(
                response.headers()["grpc-status"],
                expected,
                "{path}: UNIMPLEMENTED unless served, then UNAUTHENTICATED"
            );
        }
        let text = metrics.render();
        assert!(!text.contains("attacker") && !text.contains("Made2"), "{text}");
        assert!(text.contains(r#"service="unknown",method="unknown",code="Unimplemented""#), "{text}");
        assert!(text.contains(r#"method="Known",code="Unauthenticated""#), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_token() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers).unwrap_err().code(), tonic::Code::Unauthenticated);
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&headers).is_err());
        headers.insert("authorization", "bearer  lk_x ".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), "lk_x");
    }
}
