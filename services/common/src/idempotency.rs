//! Idempotency keys as every service stores them: one row per (program,
//! method, key) in the service's `idempotency_keys` table, holding the
//! request's hash and the saved response, claimed and saved in the same
//! transaction as the write it guards.

use sha2::{Digest, Sha256};
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::clock::Micros;
use crate::db::{Database, Dialect};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("idempotency key already used for a different {method} request")]
    Reused { method: &'static str },
    #[error("idempotency key of {method} holds no saved result")]
    Corrupt { method: &'static str },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// Starts a write transaction; on SQLite it takes the write lock up front,
/// since a deferred transaction that reads first could fail to upgrade.
pub async fn begin_write(db: &Database) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match db.dialect {
        Dialect::Sqlite => db.pool.begin_with("BEGIN IMMEDIATE").await,
        Dialect::Postgres => db.pool.begin().await,
    }
}

/// SHA-256 of the program and the request, hex.
pub fn request_hash(program_id: &str, request: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(program_id.as_bytes());
    hasher.update([0]);
    hasher.update(request.to_string().as_bytes());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Claims `key` for this request. `Ok(None)`: claimed, go ahead. `Ok(Some)`:
/// a replay, here is the saved response. Concurrent claims of one key wait
/// on each other, so exactly one goes ahead.
pub async fn claim(
    tx: &mut AnyConnection,
    program_id: &str,
    method: &'static str,
    key: &str,
    hash: &str,
    now: Micros,
) -> Result<Option<String>, KeyError> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (program_id, method, idempotency_key, request_hash, created_at_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(program_id)
    .bind(method)
    .bind(key)
    .bind(hash)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (saved_hash, response) =
        stored(&mut *tx, program_id, method, key).await?.ok_or(KeyError::Corrupt { method })?;
    if saved_hash != hash {
        return Err(KeyError::Reused { method });
    }
    response.map(Some).ok_or(KeyError::Corrupt { method })
}

/// Saves the response of a claimed key, in the same transaction as the write.
pub async fn save(
    tx: &mut AnyConnection,
    program_id: &str,
    method: &'static str,
    key: &str,
    response: &str,
    transaction_id: &str,
) -> Result<(), KeyError> {
    sqlx::query(
        "UPDATE idempotency_keys SET response = $1, transaction_id = $2 \
         WHERE program_id = $3 AND method = $4 AND idempotency_key = $5",
    )
    .bind(response)
    .bind(transaction_id)
    .bind(program_id)
    .bind(method)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The request hash and saved response stored under a key, if any.
pub async fn stored<'c>(
    executor: impl sqlx::Executor<'c, Database = Any>,
    program_id: &str,
    method: &str,
    key: &str,
) -> Result<Option<(String, Option<String>)>, KeyError> {
    let row = sqlx::query(
        "SELECT request_hash, response FROM idempotency_keys \
         WHERE program_id = $1 AND method = $2 AND idempotency_key = $3",
    )
    .bind(program_id)
    .bind(method)
    .bind(key)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| Ok::<_, sqlx::Error>((r.try_get("request_hash")?, r.try_get("response")?))).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_program_and_request() {
        let a = request_hash("p1", &serde_json::json!({"points": 1}));
        assert_eq!(a.len(), 64);
        assert_eq!(a, request_hash("p1", &serde_json::json!({"points": 1})));
        assert_ne!(a, request_hash("p2", &serde_json::json!({"points": 1})));
        assert_ne!(a, request_hash("p1", &serde_json::json!({"points": 2})));
    }
}
