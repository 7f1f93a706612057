//! Request extractors that answer every refusal as problem+json: the API
//! key (401 / 403 / 429), the customer a storefront acts for (401 / 403),
//! the `Idempotency-Key` header, JSON bodies (400 / 413 / 415, naming the
//! bad field), query strings and path segments.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use loyalty_common::validate;

use crate::customer::{CustomerTokens, TokenError, TokenRefusal};
use crate::keys::{AuthError, Caller, KeyVerifier, Scope};
use crate::problem::{FieldError, Problem};
use crate::ratelimit::RateLimiter;

/// What authentication needs from the application state.
#[derive(Clone)]
pub struct Admission {
    pub keys: Arc<KeyVerifier>,
    pub limiter: Arc<RateLimiter>,
}

/// The scope a route needs, as a type.
pub trait RequiredScope {
    const SCOPE: Scope;
}

pub struct StorefrontScope;
pub struct ServerScope;
pub struct AdminScope;

impl RequiredScope for StorefrontScope {
    const SCOPE: Scope = Scope::Storefront;
}
impl RequiredScope for ServerScope {
    const SCOPE: Scope = Scope::Server;
}
impl RequiredScope for AdminScope {
    const SCOPE: Scope = Scope::Admin;
}

/// A caller whose key is valid, allowed on the route, and within its rate limit.
pub struct Authorized<S: RequiredScope> {
    /// Shared with the key cache: a cache hit allocates nothing.
    pub caller: Arc<Caller>,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> Authorized<S> {
    pub fn program(&self) -> &str {
        &self.caller.program_id
    }

    /// Who made a change, for the services' audit log.
    pub fn actor(&self) -> String {
        format!("api-key:{}", self.caller.key_id)
    }

    /// Who acts, for the audit log, on a route the customer may call: the
    /// customer (through a storefront key, proven by their token), else the key.
    pub fn actor_for(&self, customer_id: &str) -> String {
        match self.caller.scope {
            crate::keys::Scope::Storefront => format!("customer:{customer_id}"),
            _ => self.actor(),
        }
    }
}

impl<S, St> FromRequestParts<St> for Authorized<S>
where
    S: RequiredScope,
    Admission: FromRef<St>,
    St: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let admission = Admission::from_ref(state);
        let presented = bearer(parts)?;
        let caller = admission.keys.verify(presented).await.map_err(|error| match error {
            AuthError::Invalid => Problem::unauthenticated("the API key is not valid"),
            AuthError::Unavailable(cause) => {
                tracing::error!(error = %cause, "cannot check an api key");
                Problem::unavailable("cannot check the API key, retry later")
            }
        })?;
        let span = tracing::Span::current();
        span.record("api.key_id", caller.key_id.as_str());
        span.record("loyalty.program_id", caller.program_id.as_str());
        if !caller.scope.allows(S::SCOPE) {
            let detail = format!("this route needs a key with the {} scope; this key has {}", S::SCOPE, caller.scope);
            return Err(Problem::new(StatusCode::FORBIDDEN, "INSUFFICIENT_SCOPE", detail));
        }
        if let Err(wait) = admission.limiter.acquire(&caller.key_id) {
            return Err(Problem::rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64));
        }
        Ok(Self { caller, scope: PhantomData })
    }
}

/// The header a storefront sends the customer token in.
pub const CUSTOMER_TOKEN_HEADER: &str = "x-customer-token";

/// The customer in the path (`/v1/customers/{customer_id}/...`) and a caller
/// allowed to act for them. A `server` or `admin` key is the shop itself and
/// may act for any of its customers. A `storefront` key is public (it sits in
/// the shop's pages), so it proves nothing about who is signed in: with one,
/// the request also needs `X-Customer-Token`, signed by the shop's back end
/// for exactly this customer (see [`crate::customer`]).
pub struct ForCustomer {
    pub auth: Authorized<StorefrontScope>,
    pub customer_id: String,
}

impl<St> FromRequestParts<St> for ForCustomer
where
    Admission: FromRef<St>,
    Arc<CustomerTokens>: FromRef<St>,
    St: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let auth = Authorized::<StorefrontScope>::from_request_parts(parts, state).await?;
        let Segment(customer_id) = Segment::<String>::from_request_parts(parts, state).await?;
        let tokens = Arc::<CustomerTokens>::from_ref(state);
        acts_for(&auth, &tokens, &parts.headers, &customer_id).await?;
        Ok(Self { auth, customer_id })
    }
}

/// Checks that `auth` may act for `customer_id`: always for a `server` or
/// `admin` key; for a `storefront` key only with an `X-Customer-Token` proving
/// that very customer. For routes that name the customer in the body.
pub async fn acts_for<S: RequiredScope>(
    auth: &Authorized<S>,
    tokens: &CustomerTokens,
    headers: &axum::http::HeaderMap,
    customer_id: &str,
) -> Result<(), Problem> {
    if auth.caller.scope != Scope::Storefront {
        return Ok(());
    }
    let token = headers.get(CUSTOMER_TOKEN_HEADER).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "CUSTOMER_TOKEN_REQUIRED",
            "a storefront key acts for a customer only with an X-Customer-Token header, \
             signed by the shop's back end for that customer",
        )
    })?;
    let token = token.to_str().map_err(|_| token_refused(TokenRefusal::Token(TokenError::Malformed)))?;
    if tokens.verify(auth.program(), token).await.map_err(token_refused)? != customer_id {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "CUSTOMER_TOKEN_MISMATCH",
            "the customer token was issued for another customer",
        ));
    }
    Ok(())
}

/// 401 for a token that proves nothing: `CUSTOMER_TOKEN_EXPIRED` when it is merely old (the
/// widget asks the shop for a new one), else `CUSTOMER_TOKEN_INVALID`. Never logs the token.
fn token_refused(refusal: TokenRefusal) -> Problem {
    match refusal {
        TokenRefusal::Unavailable(cause) => {
            tracing::error!(error = %cause, "cannot check a customer token");
            Problem::unavailable("cannot check the customer token, retry later")
        }
        TokenRefusal::Token(error) => {
            let code = if error == TokenError::Expired { "CUSTOMER_TOKEN_EXPIRED" } else { "CUSTOMER_TOKEN_INVALID" };
            Problem::new(StatusCode::UNAUTHORIZED, code, error.to_string())
        }
    }
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(parts: &Parts) -> Result<&str, Problem> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthenticated("send the API key as Authorization: Bearer <key>"))?;
    let text = value.to_str().map_err(|_| Problem::unauthenticated("the API key is not valid"))?;
    match text.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => Ok(key.trim()),
        _ => Err(Problem::unauthenticated("send the API key as Authorization: Bearer <key>")),
    }
}

/// The `Idempotency-Key` header every write needs: 1–128 visible ASCII
/// characters (a UUID is a good choice). A retry with the same key returns the first answer.
pub struct IdempotencyKey(pub String);

impl<St: Send + Sync> FromRequestParts<St> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        const FIELD: &str = "Idempotency-Key";
        let Some(value) = parts.headers.get(FIELD) else {
            return Err(Problem::malformed(
                "MISSING_IDEMPOTENCY_KEY",
                "every write needs an Idempotency-Key header; retry with the same key to get the first answer",
                vec![FieldError::new(FIELD, "is required")],
            ));
        };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > validate::MAX_ID_CHARS || !bytes.iter().all(|b| (b'!'..=b'~').contains(b))
        {
            let description = format!("must be 1 to {} visible ASCII characters", validate::MAX_ID_CHARS);
            return Err(Problem::malformed(
                "INVALID_IDEMPOTENCY_KEY",
                format!("{FIELD} {description}"),
                vec![FieldError::new(FIELD, description)],
            ));
        }
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// The body limit in bytes, put into every request's extensions by the layer
/// that settles unread bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body: `Content-Type: application/json`, at most the body limit,
/// every field known and of the right type.
pub struct JsonBody<T>(pub T);

impl<T, St> FromRequest<St> for JsonBody<T>
where
    T: DeserializeOwned,
    St: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &St) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as Content-Type: application/json",
            ));
        }
        let too_large = || {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", "the body is larger than this API accepts")
        };
        // A body declared larger than the limit is refused before a byte of it is read, so a
        // client waiting for `100 Continue` is not invited to upload what is refused.
        let declared = http_body::Body::size_hint(request.body()).exact();
        if let Some(BodyLimit(limit)) = request.extensions().get::<BodyLimit>()
            && declared.is_some_and(|n| n > *limit as u64)
        {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                Problem::malformed("INVALID_BODY", "the body could not be read", Vec::new())
            }
        })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let (field, description) = describe(&error.path().to_string(), &error.inner().to_string());
            invalid_body(field, description)
        })?;
        deserializer.end().map_err(|error| invalid_body("body".to_owned(), error.to_string()))?;
        Ok(Self(value))
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The field a decoding error is about: serde's path, or the name a
/// "missing field `x`" message gives when the path is the whole body.
fn describe(path: &str, message: &str) -> (String, String) {
    let field = if path.is_empty() || path == "." {
        message.split('`').nth(1).filter(|_| message.starts_with("missing field")).unwrap_or("body").to_owned()
    } else {
        path.to_owned()
    };
    (field, plain(message))
}

/// serde_json reads an integer literal too large for 64 bits as a float,
/// then refuses it as "floating point": say what it is instead.
fn plain(message: &str) -> String {
    let beyond_64_bits = message
        .strip_prefix("invalid type: floating point `")
        .and_then(|rest| rest.split_once("`, expected "))
        .filter(|(number, _)| number.parse::<f64>().is_ok_and(|n| n.fract() == 0.0 && n.abs() >= 9.2e18));
    match beyond_64_bits {
        Some((_, expected)) => {
            format!("is an integer beyond 64 bits (-9223372036854775808 to 9223372036854775807); expected {expected}")
        }
        None => message.to_owned(),
    }
}

fn invalid_body(field: String, description: String) -> Problem {
    let detail = format!("the JSON body is not valid: {description}");
    Problem::malformed("INVALID_BODY", detail, vec![FieldError::new(field, description)])
}

/// Query parameters, decoded with the same field-naming errors as bodies.
/// Unknown parameters are ignored.
pub struct QueryParams<T>(pub T);

impl<T, St> FromRequestParts<St> for QueryParams<T>
where
    T: DeserializeOwned,
    St: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(Self).map_err(|error| {
            let (field, description) = describe(&error.path().to_string(), &error.inner().to_string());
            let detail = format!("the query string is not valid: {description}");
            Problem::malformed("INVALID_QUERY", detail, vec![FieldError::new(field, description)])
        })
    }
}

/// Path segments (`{customer_id}`, `{order_id}`, ...), percent-decoded.
pub struct Segment<T>(pub T);

impl<T, St> FromRequestParts<St> for Segment<T>
where
    T: DeserializeOwned + Send,
    St: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| Self(p.0)).map_err(|rejection| {
            Problem::malformed("INVALID_PATH", format!("the path is not valid: {}", rejection.body_text()), Vec::new())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Points {
        #[allow(dead_code)]
        points: i64,
    }

    fn message_for(body: &str) -> String {
        let mut deserializer = serde_json::Deserializer::from_str(body);
        let error = serde_path_to_error::deserialize::<_, Points>(&mut deserializer).unwrap_err();
        describe(&error.path().to_string(), &error.inner().to_string()).1
    }

    #[test]
    fn an_integer_beyond_64_bits_is_not_called_floating_point() {
        for huge in ["99999999999999999999", "-9223372036854775809", "18446744073709551616"] {
            let message = message_for(&format!(r#"{{"points": {huge}}}"#));
            assert!(message.starts_with("is an integer beyond 64 bits"), "{huge}: {message}");
        }
        let fraction = message_for(r#"{"points": 1.5}"#);
        assert!(fraction.contains("floating point"), "a real fraction keeps serde's words: {fraction}");
        let in_range = message_for(r#"{"points": "7"}"#);
        assert!(in_range.contains("invalid type: string"), "{in_range}");
    }
}
