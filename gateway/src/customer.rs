//! Customer tokens: how a storefront proves which customer is signed in.
//!
//! A storefront key is public (it sits in the shop's page), so it cannot by
//! itself say who the visitor is. The shop's back end, which knows who is
//! signed in, signs the customer id and the current time with the program's
//! secret, and the widget sends that token along with the storefront key:
//!
//! ```text
//! v1.<customer id, base64url>.<issued at, Unix seconds>.<HMAC-SHA256 of everything before the last dot, base64url>
//! ```
//!
//! base64url is without padding; the HMAC key is the 32 secret bytes (shown
//! as 64 hex digits by `loyalty-gateway customer-secret rotate`). A token is
//! good for [`TokenPolicy::max_age`] after it was issued, with a little
//! allowance for clocks that disagree. It is bound to its program by the
//! program's secret: another program's secret never verifies it.
//!
//! Unlike API keys, the secret itself is stored, not a hash of it: checking
//! an HMAC needs the key. Rotating replaces it at once, so every token made
//! with the old secret stops working; tokens live for minutes, and a rotation
//! is what one does when the old secret leaked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::Row;

use loyalty_common::clock::{Clock, MICROS_PER_SECOND, Micros, SystemClock};
use loyalty_common::db::Database;
use loyalty_common::validate;

type HmacSha256 = Hmac<Sha256>;
/// A program's secret (none: the program has not made one) and when it was read.
type CachedSecret = (Option<Arc<[u8]>>, Instant);

const VERSION: &str = "v1";
const SECRET_BYTES: usize = 32;

/// How old a token may be, and how far in the future its issue time may lie.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    pub max_age: Duration,
    /// A shop server whose clock runs a little ahead must not make every token look forged.
    pub clock_skew: Duration,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the customer token is not of the form v1.<customer>.<issued at>.<signature>")]
    Malformed,
    #[error("the customer token's signature does not match")]
    Forged,
    #[error("the customer token has expired")]
    Expired,
    #[error("the customer token was issued in the future")]
    IssuedInFuture,
    #[error("the program has no customer token secret")]
    NoSecret,
}

/// Signs a token for `customer_id`, issued at `issued_at` (Unix seconds).
pub fn sign(secret: &[u8], customer_id: &str, issued_at: i64) -> String {
    let payload = format!("{VERSION}.{}.{issued_at}", URL_SAFE_NO_PAD.encode(customer_id));
    let signature = URL_SAFE_NO_PAD.encode(mac(secret, &payload).finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Checks a token against the program's secret at `now`; the customer id it proves.
pub fn verify(secret: &[u8], token: &str, now: Micros, policy: TokenPolicy) -> Result<String, TokenError> {
    let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut parts = payload.split('.');
    let (Some(VERSION), Some(customer), Some(issued_at), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    // The signature first, in constant time: nothing else in a token is worth reading before it.
    mac(secret, payload).verify_slice(&signature).map_err(|_| TokenError::Forged)?;
    let issued_at: i64 = issued_at.parse().map_err(|_| TokenError::Malformed)?;
    let issued_at = issued_at.checked_mul(MICROS_PER_SECOND).ok_or(TokenError::Malformed)?;
    if issued_at > now.saturating_add(micros(policy.clock_skew)) {
        return Err(TokenError::IssuedInFuture);
    }
    if now.saturating_sub(issued_at) > micros(policy.max_age) {
        return Err(TokenError::Expired);
    }
    let customer = URL_SAFE_NO_PAD.decode(customer).map_err(|_| TokenError::Malformed)?;
    let customer = String::from_utf8(customer).map_err(|_| TokenError::Malformed)?;
    validate::id("customer_id", &customer).map_err(|_| TokenError::Malformed)?;
    Ok(customer)
}

fn mac(secret: &[u8], payload: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac
}

fn micros(duration: Duration) -> Micros {
    Micros::try_from(duration.as_micros()).unwrap_or(Micros::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("program: {0}")]
    InvalidProgram(String),
    #[error("customer token secrets: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the stored customer token secret of program {0} is not 64 hex digits")]
    Corrupt(String),
}

/// The `customer_token_secrets` table: one signing secret per program.
#[derive(Clone, Debug)]
pub struct CustomerSecrets {
    db: Database,
}

impl CustomerSecrets {
    /// A store on the key database, whose migrations the key store applies.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Makes a new secret for the program, replacing any old one (whose tokens stop working),
    /// and returns it as hex: the only time it is shown.
    pub async fn rotate(&self, program_id: &str) -> Result<String, SecretError> {
        validate::id("program", program_id).map_err(|e| SecretError::InvalidProgram(e.description))?;
        let secret = hex(&random_secret());
        sqlx::query(
            "INSERT INTO customer_token_secrets (program_id, secret_hex, created_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (program_id) DO UPDATE SET secret_hex = excluded.secret_hex, created_at_us = excluded.created_at_us",
        )
        .bind(program_id)
        .bind(&secret)
        .bind(SystemClock.now())
        .execute(&self.db.pool)
        .await?;
        Ok(secret)
    }

    /// The program's secret, made first when it has none (the quick start's demo program).
    pub async fn ensure(&self, program_id: &str) -> Result<Vec<u8>, SecretError> {
        validate::id("program", program_id).map_err(|e| SecretError::InvalidProgram(e.description))?;
        sqlx::query(
            "INSERT INTO customer_token_secrets (program_id, secret_hex, created_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (program_id) DO NOTHING",
        )
        .bind(program_id)
        .bind(hex(&random_secret()))
        .bind(SystemClock.now())
        .execute(&self.db.pool)
        .await?;
        self.find(program_id).await?.ok_or_else(|| SecretError::Corrupt(program_id.to_owned()))
    }

    /// The program's secret, when it has one.
    pub async fn find(&self, program_id: &str) -> Result<Option<Vec<u8>>, SecretError> {
        let row = sqlx::query("SELECT secret_hex FROM customer_token_secrets WHERE program_id = $1")
            .bind(program_id)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("secret_hex")?;
        unhex(&text)
            .filter(|bytes| bytes.len() == SECRET_BYTES)
            .map(Some)
            .ok_or_else(|| SecretError::Corrupt(program_id.to_owned()))
    }
}

/// Verifies and issues tokens with the stored secrets, caching each program's
/// secret in process for a short time, so a rotation takes effect on every
/// gateway within that time.
pub struct CustomerTokens {
    secrets: CustomerSecrets,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, CachedSecret>>,
}

/// Why a token could not be checked or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot read the customer token secret")]
    Unavailable(#[source] SecretError),
}

impl CustomerTokens {
    pub fn new(secrets: CustomerSecrets, clock: Arc<dyn Clock>, policy: TokenPolicy, cache_ttl: Duration) -> Self {
        Self { secrets, clock, policy, cache_ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The customer a token proves, for this program.
    pub async fn verify(&self, program_id: &str, token: &str) -> Result<String, TokenRefusal> {
        let secret = self.secret(program_id).await?.ok_or(TokenError::NoSecret)?;
        Ok(verify(&secret, token, self.clock.now(), self.policy)?)
    }

    /// A token issued now (what a shop's back end does; the demo shop does it here).
    pub async fn issue(&self, program_id: &str, customer_id: &str) -> Result<String, TokenRefusal> {
        let secret = self.secret(program_id).await?.ok_or(TokenError::NoSecret)?;
        Ok(sign(&secret, customer_id, self.clock.now().div_euclid(MICROS_PER_SECOND)))
    }

    async fn secret(&self, program_id: &str) -> Result<Option<Arc<[u8]>>, TokenRefusal> {
        if let Some((secret, fetched)) = self.cache.lock().expect("secret cache poisoned").get(program_id)
            && fetched.elapsed() < self.cache_ttl
        {
            return Ok(secret.clone());
        }
        let secret: Option<Arc<[u8]>> =
            self.secrets.find(program_id).await.map_err(TokenRefusal::Unavailable)?.map(Arc::from);
        if !self.cache_ttl.is_zero() {
            // One entry per program that has called; programs are few.
            self.cache
                .lock()
                .expect("secret cache poisoned")
                .insert(program_id.to_owned(), (secret.clone(), Instant::now()));
        }
        Ok(secret)
    }
}

fn random_secret() -> [u8; SECRET_BYTES] {
    let mut bytes = [0u8; SECRET_BYTES];
    // Without an OS random source no secret can be made safely: failing loudly is right.
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_SECS: i64 = 1_764_000_000;
    const POLICY: TokenPolicy = TokenPolicy { max_age: Duration::from_secs(900), clock_skew: Duration::from_secs(60) };

    fn secret(byte: u8) -> [u8; SECRET_BYTES] {
        [byte; SECRET_BYTES]
    }

    fn at(secs: i64) -> Micros {
        secs * MICROS_PER_SECOND
    }

    #[test]
    fn a_fresh_token_proves_its_customer() {
        let token = sign(&secret(1), "anna", NOW_SECS);
        assert_eq!(verify(&secret(1), &token, at(NOW_SECS), POLICY), Ok("anna".to_owned()));
        // Ids with dots, spaces and non-ASCII survive the encoding.
        let token = sign(&secret(1), "jürgen.müller 7", NOW_SECS);
        assert_eq!(verify(&secret(1), &token, at(NOW_SECS + 899), POLICY), Ok("jürgen.müller 7".to_owned()));
    }

    #[test]
    fn a_token_is_good_for_max_age_then_expires() {
        let token = sign(&secret(1), "anna", NOW_SECS);
        assert!(verify(&secret(1), &token, at(NOW_SECS + 900), POLICY).is_ok());
        assert_eq!(verify(&secret(1), &token, at(NOW_SECS + 901), POLICY), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_from_the_future_is_allowed_only_within_the_skew() {
        let slightly_ahead = sign(&secret(1), "anna", NOW_SECS + 60);
        assert!(verify(&secret(1), &slightly_ahead, at(NOW_SECS), POLICY).is_ok());
        let far_ahead = sign(&secret(1), "anna", NOW_SECS + 61);
        assert_eq!(verify(&secret(1), &far_ahead, at(NOW_SECS), POLICY), Err(TokenError::IssuedInFuture));
    }

    #[test]
    fn changing_anything_signed_is_detected() {
        let token = sign(&secret(1), "anna", NOW_SECS);
        let (payload, signature) = token.rsplit_once('.').unwrap();
        let other_customer = format!("v1.{}.{NOW_SECS}.{signature}", URL_SAFE_NO_PAD.encode("ben"));
        assert_eq!(verify(&secret(1), &other_customer, at(NOW_SECS), POLICY), Err(TokenError::Forged));
        let later = payload.replace(&NOW_SECS.to_string(), &(NOW_SECS + 600).to_string());
        assert_eq!(verify(&secret(1), &format!("{later}.{signature}"), at(NOW_SECS), POLICY), Err(TokenError::Forged));
        let mut flipped = signature.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{payload}.{}", String::from_utf8(flipped).unwrap());
        assert_eq!(verify(&secret(1), &flipped, at(NOW_SECS), POLICY), Err(TokenError::Forged));
    }

    #[test]
    fn another_programs_secret_does_not_verify() {
        let token = sign(&secret(1), "anna", NOW_SECS);
        assert_eq!(verify(&secret(2), &token, at(NOW_SECS), POLICY), Err(TokenError::Forged));
    }

    #[test]
    fn malformed_tokens_are_refused_as_such() {
        let good = sign(&secret(1), "anna", NOW_SECS);
        let signature = good.rsplit_once('.').unwrap().1;
        let signed = |payload: &str| {
            format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac(&secret(1), payload).finalize().into_bytes()))
        };
        for token in [
            String::new(),
            "v1".to_owned(),
            "anna".to_owned(),
            good.replacen("v1.", "v2.", 1),
            format!("{good}.extra"),
            good.replace(signature, "not base64!"),
            // Well signed, but the parts inside are not what they should be.
            signed(&format!("v1.{}.soon", URL_SAFE_NO_PAD.encode("anna"))),
            signed(&format!("v1.{}.{NOW_SECS}", URL_SAFE_NO_PAD.encode(""))),
            signed(&format!("v1.{}.{NOW_SECS}", URL_SAFE_NO_PAD.encode([0xff, 0xfe]))),
            signed(&format!("v1.{}.{}", URL_SAFE_NO_PAD.encode("anna"), i64::MAX)),
        ] {
            assert_eq!(verify(&secret(1), &token, at(NOW_SECS), POLICY), Err(TokenError::Malformed), "{token:?}");
        }
    }

    #[test]
    fn hex_round_trips_and_rejects_odd_input() {
        let bytes = random_secret();
        assert_eq!(unhex(&hex(&bytes)).as_deref(), Some(&bytes[..]));
        assert_ne!(random_secret(), bytes);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
