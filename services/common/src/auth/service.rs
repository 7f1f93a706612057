//! Service identity: every service and the gateway share one secret
//! (`LOYALTY_SERVICE_SECRET`) and present `svc.<name>.<HMAC-SHA256(secret, name)>`.
//! Only a holder of the secret can make such a token, and API keys
//! (`lk_…`) can never be mistaken for one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::{constant_time_eq, hex, random_bytes};

/// What service identity tokens start with.
pub const SERVICE_TOKEN_PREFIX: &str = "svc.";
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ServiceSecretError {
    #[error("must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), got {0}")]
    TooShort(usize),
}

/// The shared secret, never logged.
#[derive(Clone)]
pub struct ServiceSecret(Vec<u8>);

impl std::fmt::Debug for ServiceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceSecret(..)")
    }
}

impl ServiceSecret {
    pub fn new(secret: &str) -> Result<Self, ServiceSecretError> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ServiceSecretError::TooShort(secret.len()));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// A fresh random secret, for services that start together in one process (the quick start).
    pub fn random() -> String {
        hex(&random_bytes::<32>())
    }

    /// The token service `name` presents.
    pub fn token(&self, name: &str) -> String {
        format!("{SERVICE_TOKEN_PREFIX}{name}.{}", hex(&self.mac(name)))
    }

    /// The service a token names, if the token is genuine.
    pub fn verify<'t>(&self, token: &'t str) -> Option<&'t str> {
        let (name, mac) = token.strip_prefix(SERVICE_TOKEN_PREFIX)?.rsplit_once('.')?;
        let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        (valid_name && constant_time_eq(hex(&self.mac(name)).as_bytes(), mac.as_bytes())).then_some(name)
    }

    fn mac(&self, name: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(b"loyalty service identity\0");
        mac.update(name.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_names_its_service_only_under_the_same_secret() {
        let secret = ServiceSecret::new(SECRET).unwrap();
        let token = secret.token("rewards");
        assert_eq!(secret.verify(&token), Some("rewards"));
        let other = ServiceSecret::new(&format!("{SECRET}x")).unwrap();
        assert_eq!(other.verify(&token), None);
    }

    #[test]
    fn altered_tokens_are_refused() {
        let secret = ServiceSecret::new(SECRET).unwrap();
        let token = secret.token("points");
        assert_eq!(secret.verify(&token.replace("points", "tiers")), None);
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(secret.verify(std::str::from_utf8(&flipped).unwrap()), None);
        assert_eq!(secret.verify(&token[..token.len() - 2]), None);
        assert_eq!(secret.verify("svc..abc"), None);
        assert_eq!(secret.verify("lk_0123456789abcdef_00"), None);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(ServiceSecret::new("short"), Err(ServiceSecretError::TooShort(5))));
        assert!(format!("{:?}", ServiceSecret::new(SECRET).unwrap()).contains(".."));
    }
}
