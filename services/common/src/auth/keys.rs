//! API keys: each belongs to one program and has one scope. A key reads
//! `lk_<key id>_<secret>`: the key id (64 random bits, not secret) finds the
//! row, the secret (256 bits from the operating system's CSPRNG) proves
//! possession. Only the secret's SHA-256 is stored. A fast hash is enough
//! here: slow password hashes exist to make guessing low-entropy passwords
//! expensive, and nobody guesses 256 random bits, however fast the hash.
//!
//! The same keys work on the gateway's HTTP API and on every gRPC service.
//! The key store lives in the gateway's database; services only read it.
//! Verified keys (and unknown key ids) are cached in process for a short
//! TTL, so no call waits on the database, and a revoked key stops working
//! everywhere within that TTL (`LOYALTY_KEY_CACHE_TTL_SECS`, 30 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::clock::{Clock, Micros, SystemClock};
use crate::db::{self, Database, DbError};
use crate::validate;

const KEY_PREFIX: &str = "lk_";
const KEY_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// Longest label kept with a key.
pub const MAX_LABEL_BYTES: usize = 200;

crate::embedded_migrations!("../../migrations/keys":
    1 "api keys" "0001_api_keys.sql",
    2 "customer token secrets" "0002_customer_token_secrets.sql",
);

/// What a key may do. Each scope includes the ones below it:
/// `admin` ⊃ `server` ⊃ `storefront`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Scope {
    /// Read one customer's loyalty page and history: safe to embed in a storefront widget.
    Storefront,
    /// The shop's back end: record orders, refunds and activities, preview earnings.
    Server,
    /// Program settings, campaigns, audit log and manual adjustments.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Storefront => "storefront",
            Self::Server => "server",
            Self::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "storefront" => Some(Self::Storefront),
            "server" => Some(Self::Server),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// True when a key of this scope may call a route needing `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key just created: `key` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: String,
    pub key: String,
    pub program_id: String,
    pub scope: Scope,
    pub label: String,
}

/// What is kept about a key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub program_id: String,
    pub scope: Scope,
    pub label: String,
    pub created_at: Micros,
    pub revoked_at: Option<Micros>,
}

/// The program and scope of a verified key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub key_id: String,
    pub program_id: String,
    pub scope: Scope,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: {description}")]
    Invalid { field: &'static str, description: String },
    #[error("stored key {0} has an unknown scope")]
    Corrupt(String),
    #[error("key store: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why a presented key was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the API key is not valid")]
    Invalid,
    #[error("cannot check the API key")]
    Unavailable(#[source] KeyError),
}

struct StoredKey {
    info: KeyInfo,
    secret_sha256: String,
}

/// The `api_keys` table.
#[derive(Clone, Debug)]
pub struct KeyStore {
    db: Database,
}

impl KeyStore {
    /// Connects and applies the gateway's migrations (what the CLI and the server both do).
    pub async fn open(database_url: &str, max_connections: u32) -> Result<Self, DbError> {
        // An administrator's command or a start-up waits for an answer, not for a slow failure.
        let db = db::connect(database_url, db::PoolSettings::new(max_connections, 2_000)).await?;
        Self::migrate(&db).await?;
        Ok(Self { db })
    }

    pub async fn migrate(db: &Database) -> Result<(), DbError> {
        db::migrate(db, MIGRATIONS.of(db.dialect)).await
    }

    /// A store on a database whose migrations someone else applies (the
    /// gateway does; services only read keys).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Creates a key; the returned `key` is the only copy of its secret.
    pub async fn create(&self, program_id: &str, scope: Scope, label: &str) -> Result<NewKey, KeyError> {
        validate::id("program", program_id)
            .map_err(|v| KeyError::Invalid { field: "program", description: v.description })?;
        if label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
            let description = format!("must be at most {MAX_LABEL_BYTES} bytes without control characters");
            return Err(KeyError::Invalid { field: "label", description });
        }
        let key_id = hex(&random_bytes::<KEY_ID_BYTES>());
        let secret = hex(&random_bytes::<SECRET_BYTES>());
        sqlx::query(
            "INSERT INTO api_keys (key_id, program_id, scope, label, secret_sha256, created_at_us, revoked_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&key_id)
        .bind(program_id)
        .bind(scope.as_str())
        .bind(label)
        .bind(sha256_hex(&secret))
        .bind(SystemClock.now())
        .execute(&self.db.pool)
        .await?;
        let key = format!("{KEY_PREFIX}{key_id}_{secret}");
        Ok(NewKey { key_id, key, program_id: program_id.to_owned(), scope, label: label.to_owned() })
    }

    /// Every key of a program, oldest first, revoked ones included.
    pub async fn list(&self, program_id: &str) -> Result<Vec<KeyInfo>, KeyError> {
        let rows = sqlx::query(
            "SELECT key_id, program_id, scope, label, secret_sha256, created_at_us, revoked_at_us \
             FROM api_keys WHERE program_id = $1 ORDER BY created_at_us, key_id",
        )
        .bind(program_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|row| stored_key(row).map(|stored| stored.info)).collect()
    }

    /// Revokes a key; false when no such key exists. Revoking twice keeps the first time.
    pub async fn revoke(&self, key_id: &str) -> Result<bool, KeyError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at_us = COALESCE(revoked_at_us, $1) WHERE key_id = $2")
            .bind(SystemClock.now())
            .bind(key_id)
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn find(&self, key_id: &str) -> Result<Option<StoredKey>, KeyError> {
        let row = sqlx::query(
            "SELECT key_id, program_id, scope, label, secret_sha256, created_at_us, revoked_at_us \
             FROM api_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(stored_key).transpose()
    }
}

fn stored_key(row: &sqlx::any::AnyRow) -> Result<StoredKey, KeyError> {
    let key_id: String = row.try_get("key_id")?;
    let scope: String = row.try_get("scope")?;
    let scope = Scope::parse(&scope).ok_or_else(|| KeyError::Corrupt(key_id.clone()))?;
    Ok(StoredKey {
        info: KeyInfo {
            program_id: row.try_get("program_id")?,
            scope,
            label: row.try_get("label")?,
            created_at: row.try_get("created_at_us")?,
            revoked_at: row.try_get("revoked_at_us")?,
            key_id,
        },
        secret_sha256: row.try_get("secret_sha256")?,
    })
}

/// The most cache entries kept; past it the unknown ids are forgotten, so a
/// flood of made-up key ids can neither grow memory without bound nor push
/// real keys out.
const MAX_CACHED_KEYS: usize = 10_000;

/// Checks presented keys against the store, with a short-lived in-process
/// cache of what the store said (including "no such key").
pub struct KeyVerifier {
    store: KeyStore,
    ttl: Micros,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, Cached>>,
    capacity: usize,
}

/// What the store said about a key id, and when: the caller ready to hand
/// out (shared, so a hit allocates nothing), or `None` for no such key.
struct Cached {
    found: Option<(Arc<VerifiedKey>, String)>,
    fetched: Micros,
}

impl Cached {
    fn new(stored: Option<StoredKey>, fetched: Micros) -> Self {
        let found = stored.filter(|s| s.info.revoked_at.is_none()).map(|s| {
            let key = VerifiedKey { key_id: s.info.key_id, program_id: s.info.program_id, scope: s.info.scope };
            (Arc::new(key), s.secret_sha256)
        });
        Self { found, fetched }
    }

    fn check(&self, presented_hash: &[u8]) -> Result<Arc<VerifiedKey>, AuthError> {
        match &self.found {
            Some((key, secret_sha256)) if constant_time_eq(secret_sha256.as_bytes(), presented_hash) => Ok(key.clone()),
            _ => Err(AuthError::Invalid),
        }
    }
}

impl KeyVerifier {
    /// `ttl` zero: every check reads the store.
    pub fn new(store: KeyStore, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let ttl = Micros::try_from(ttl.as_micros()).unwrap_or(Micros::MAX);
        Self { store, ttl, clock, cache: Mutex::new(HashMap::new()), capacity: MAX_CACHED_KEYS }
    }

    pub async fn verify(&self, presented: &str) -> Result<Arc<VerifiedKey>, AuthError> {
        let (key_id, secret) = split_key(presented).ok_or(AuthError::Invalid)?;
        let presented_hash = sha256_hex_digits(secret);
        if let Some(verdict) = self.check_cached(key_id, &presented_hash) {
            return verdict;
        }
        let stored = self.store.find(key_id).await.map_err(AuthError::Unavailable)?;
        let cached = Cached::new(stored, self.clock.monotonic());
        let verdict = cached.check(&presented_hash);
        if self.ttl > 0 {
            let mut cache = self.cache.lock().expect("key cache poisoned");
            if cache.len() >= self.capacity {
                // A flood of made-up key ids fills the cache with "no such key": drop
                // those first, so real keys stay cached through it.
                cache.retain(|_, entry| entry.found.is_some());
                if cache.len() >= self.capacity {
                    cache.clear();
                }
            }
            cache.insert(key_id.to_owned(), cached);
        }
        verdict
    }

    fn check_cached(&self, key_id: &str, presented_hash: &[u8]) -> Option<Result<Arc<VerifiedKey>, AuthError>> {
        let mut cache = self.cache.lock().expect("key cache poisoned");
        let cached = cache.get(key_id)?;
        if self.clock.monotonic() - cached.fetched >= self.ttl {
            cache.remove(key_id);
            return None;
        }
        Some(cached.check(presented_hash))
    }
}

/// `lk_<16 hex>_<64 hex>` → (key id, secret).
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let lower_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lower_hex(key_id, KEY_ID_BYTES * 2) && lower_hex(secret, SECRET_BYTES * 2)).then_some((key_id, secret))
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without an OS random source no key can be made safely: failing loudly is right.
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    bytes
}

pub(crate) fn sha256_hex(text: &str) -> String {
    String::from_utf8(sha256_hex_digits(text).to_vec()).expect("hex digits are ASCII")
}

/// SHA-256 of `text` as 64 lowercase hex digits, on the stack: checking a
/// presented key allocates nothing.
fn sha256_hex_digits(text: &str) -> [u8; 64] {
    let mut digits = [0u8; 64];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(Sha256::digest(text.as_bytes())) {
        pair.copy_from_slice(&HEX_DIGITS_OF[usize::from(byte)]);
    }
    digits
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&byte| HEX_DIGITS_OF[usize::from(byte)].map(char::from)).collect()
}

/// The two lowercase hex digits of every byte value.
const HEX_DIGITS_OF: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0x0f]];
        byte += 1;
    }
    table
};

/// Compares without an early exit, so timing tells nothing about where two hashes differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{MICROS_PER_SECOND, ManualClock};

    #[tokio::test]
    async fn a_revoked_key_stops_working_within_the_cache_ttl() {
        let dir = std::env::temp_dir().join(format!("loyalty-keys-{}", crate::testing::unique_suffix()));
        let store = KeyStore::open(&format!("sqlite://{}/keys.db", dir.display()), 2).await.unwrap();
        let clock = ManualClock::new(1_000 * MICROS_PER_SECOND);
        let verifier = KeyVerifier::new(store.clone(), Duration::from_secs(30), Arc::new(clock.clone()));
        let key = store.create("shop", Scope::Server, "test").await.unwrap();
        let unused = store.create("shop", Scope::Server, "never cached").await.unwrap();
        assert_eq!(verifier.verify(&key.key).await.unwrap().program_id, "shop");

        assert!(store.revoke(&key.key_id).await.unwrap());
        assert!(store.revoke(&unused.key_id).await.unwrap());
        // Still trusted from the cache, for at most the TTL...
        clock.advance(29 * MICROS_PER_SECOND);
        assert!(verifier.verify(&key.key).await.is_ok());
        // ...and refused from then on; a key not yet cached is refused at once.
        clock.advance(MICROS_PER_SECOND);
        assert!(matches!(verifier.verify(&key.key).await, Err(AuthError::Invalid)));
        assert!(matches!(verifier.verify(&unused.key).await, Err(AuthError::Invalid)));

        // A cached key with the wrong secret is still refused, and unknown ids are remembered too.
        let fresh = store.create("shop", Scope::Admin, "fresh").await.unwrap();
        assert!(verifier.verify(&fresh.key).await.is_ok());
        let tampered =
            format!("{}{}", &fresh.key[..fresh.key.len() - 1], if fresh.key.ends_with('0') { '1' } else { '0' });
        assert!(matches!(verifier.verify(&tampered).await, Err(AuthError::Invalid)));
        let unknown = format!("lk_{}_{}", "0".repeat(16), "1".repeat(64));
        assert!(matches!(verifier.verify(&unknown).await, Err(AuthError::Invalid)));
        store.database().pool.close().await;
        assert!(matches!(verifier.verify(&unknown).await, Err(AuthError::Invalid)), "answered from the cache");
        assert!(verifier.verify(&fresh.key).await.is_ok(), "answered from the cache while the store is down");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_flood_of_made_up_key_ids_does_not_push_real_keys_out() {
        let dir = std::env::temp_dir().join(format!("loyalty-keys-{}", crate::testing::unique_suffix()));
        let store = KeyStore::open(&format!("sqlite://{}/keys.db", dir.display()), 2).await.unwrap();
        let mut verifier = KeyVerifier::new(store.clone(), Duration::from_secs(30), Arc::new(SystemClock));
        verifier.capacity = 4;
        let key = store.create("shop", Scope::Server, "real").await.unwrap();
        assert!(verifier.verify(&key.key).await.is_ok());
        for i in 0..10 {
            let made_up = format!("lk_{i:016x}_{}", "3".repeat(64));
            assert!(matches!(verifier.verify(&made_up).await, Err(AuthError::Invalid)));
            assert!(verifier.cache.lock().unwrap().len() <= 4, "bounded");
        }
        store.database().pool.close().await;
        assert!(verifier.verify(&key.key).await.is_ok(), "the real key is still cached");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin.allows(Scope::Server));
        assert!(Scope::Admin.allows(Scope::Storefront));
        assert!(Scope::Server.allows(Scope::Storefront));
        assert!(!Scope::Server.allows(Scope::Admin));
        assert!(!Scope::Storefront.allows(Scope::Server));
    }

    #[test]
    fn only_well_formed_keys_split() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        assert_eq!(split_key(&format!("lk_{id}_{secret}")), Some((id, secret.as_str())));
        assert_eq!(split_key(&format!("lk_{id}_{}", &secret[1..])), None);
        assert_eq!(split_key(&format!("lk_{}_{secret}", id.to_uppercase())), None);
        assert_eq!(split_key(&format!("xx_{id}_{secret}")), None);
        assert_eq!(split_key(""), None);
    }

    #[test]
    fn random_parts_differ_and_hashes_compare() {
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
        // The stored form: lowercase hex of SHA-256 (FIPS 180-2 test vector), on the stack or not.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex("abc"), abc);
        assert_eq!(&sha256_hex_digits("abc")[..], abc.as_bytes());
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert!(constant_time_eq(sha256_hex("a").as_bytes(), sha256_hex("a").as_bytes()));
        assert!(!constant_time_eq(sha256_hex("a").as_bytes(), sha256_hex("b").as_bytes()));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
