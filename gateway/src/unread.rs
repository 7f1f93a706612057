//! What happens to a request body the handler left unread, as every refusal
//! made before the body (401, 403, 429, 404, a 413 part-way through) does.
//!
//! Left alone, hyper writes the answer promising keep-alive, then finds the
//! body unread and closes the connection anyway: the client's next request on
//! it fails, and closing a socket with unread bytes sends a reset that can
//! destroy the answer itself. So after the handler: the rest of a body
//! declared no larger than the body limit is read and discarded, keeping the
//! connection; anything else (larger, chunked, or too slow) is answered
//! `Connection: close` while a background task discards what the client still
//! sends, within [`DISCARD_LIMIT_BYTES`] and [`DISCARD_TIMEOUT`], so that the
//! close is a clean end of stream rather than a reset.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Longest wait for the rest of a small body before giving up on the connection.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes discarded after a `Connection: close` answer; a client sending more ignored it.
pub const DISCARD_LIMIT_BYTES: u64 = 8 * 1024 * 1024;
/// Longest time spent discarding after a `Connection: close` answer.
pub const DISCARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The request body, shared between the handler's view of it and this layer.
#[derive(Default)]
struct Slot {
    /// `None` once read to its end.
    body: Option<Body>,
    /// Whether anyone asked for body bytes (after which hyper has sent `100 Continue`, if expected).
    polled: bool,
}

type Shared = Arc<Mutex<Slot>>;

/// The body the handler sees; the bytes it does not read stay in the [`Slot`].
struct Tracked(Shared);

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.polled = true;
        let Some(body) = slot.body.as_mut() else { return Poll::Ready(None) };
        let frame = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            slot.body = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.body.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

/// The layer: `drain_bytes` is the largest unread rest read and discarded to keep the
/// connection (the body limit: a body that size is one the API could have accepted).
pub async fn settle(State(drain_bytes): State<usize>, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(crate::extract::BodyLimit(drain_bytes));
    // HTTP/2 resets the one stream instead, and a body known to be empty leaves nothing behind.
    if request.version() >= Version::HTTP_2 || request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expects_continue =
        request.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // What the client declared, not what is left: a body over the limit closes even when the
    // handler already read most of it.
    let declared = request.body().size_hint().exact();
    let (parts, body) = request.into_parts();
    let shared: Shared = Arc::new(Mutex::new(Slot { body: Some(body), polled: false }));
    let mut response = next.run(Request::from_parts(parts, Body::new(Tracked(shared.clone())))).await;

    let Slot { body, polled } = std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner));
    let Some(mut body) = body.filter(|b| !b.is_end_stream()) else { return response };
    if declared.is_some_and(|n| n <= drain_bytes as u64) {
        // Polling sends `100 Continue` if the client waits for it: fine for a body this small.
        if let Ok(true) = tokio::time::timeout(DRAIN_TIMEOUT, discard(&mut body, u64::MAX)).await {
            return response;
        }
    }
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    if expects_continue && !polled {
        // The client waits for `100 Continue` before sending the body, so there is nothing to
        // discard; reading now would invite the upload the answer refuses.
        return response;
    }
    tracing::debug!(declared = ?declared, "closing the connection after an unread request body");
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DISCARD_TIMEOUT, discard(&mut body, DISCARD_LIMIT_BYTES)).await;
    });
    response
}

/// Reads `body` to its end, dropping the bytes: whether it ended within `limit` bytes and without
/// a read error.
async fn discard(body: &mut Body, limit: u64) -> bool {
    let mut read = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.len() as u64);
            if read > limit {
                return false;
            }
        }
    }
    true
}
