//! Everything the points service holds about one customer, as one JSON
//! document (the customer's right of access), and the audit entry saying who
//! asked for it.

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::db::Database;
use loyalty_common::idempotency::begin_write;

use crate::error::Error;

/// How a column shows in the document.
#[derive(Clone, Copy)]
enum Column {
    Text,
    Number,
    /// Microseconds since the epoch, shown as RFC 3339 under the name without `_us`; absent when NULL.
    Instant,
    /// Stored JSON, shown as JSON (absent when empty).
    Json,
}

use Column::{Instant, Json, Number, Text};

/// One part of the document: its name, its table, its columns, and its order.
struct Part {
    name: &'static str,
    table: &'static str,
    columns: &'static [(&'static str, Column)],
    order_by: &'static str,
    /// At most one row: an object (null when none), not a list.
    one: bool,
}

const PARTS: &[Part] = &[
    Part {
        name: "account",
        table: "accounts",
        columns: &[
            ("available", Number),
            ("pending", Number),
            ("lifetime_earned", Number),
            ("spent", Number),
            ("expired", Number),
            ("reversed", Number),
            ("debt", Number),
            ("version", Number),
        ],
        order_by: "customer_id",
        one: true,
    },
    Part {
        name: "lots",
        table: "point_lots",
        columns: &[
            ("lot_id", Text),
            ("original", Number),
            ("remaining", Number),
            ("consumed", Number),
            ("expired", Number),
            ("reversed", Number),
            ("state", Text),
            ("earned_at_us", Instant),
            ("pending_until_us", Instant),
            ("expires_at_us", Instant),
        ],
        order_by: "earned_at_us, lot_id",
        one: false,
    },
    Part {
        name: "ledger",
        table: "ledger_entries",
        columns: &[
            ("transaction_id", Text),
            ("kind", Text),
            ("points", Number),
            ("pending_points", Number),
            ("amount", Number),
            ("reason", Text),
            ("related_transaction_id", Text),
            ("order_id", Text),
            ("order_amount_minor", Number),
            ("actor", Text),
            ("created_at_us", Instant),
            ("pending_until_us", Instant),
            ("expires_at_us", Instant),
        ],
        order_by: "id",
        one: false,
    },
    Part {
        name: "orders",
        table: "orders",
        columns: &[
            ("order_id", Text),
            ("amount_minor", Number),
            ("currency", Text),
            ("points", Number),
            ("transaction_id", Text),
            ("refunded_minor", Number),
            ("reversed_points", Number),
            ("created_at_us", Instant),
        ],
        order_by: "created_at_us, order_id",
        one: false,
    },
    Part {
        name: "checkout_spends",
        table: "checkout_spends",
        columns: &[
            ("order_id", Text),
            ("transaction_id", Text),
            ("amount_minor", Number),
            ("currency", Text),
            ("points", Number),
            ("discount_minor", Number),
            ("refunded_minor", Number),
            ("restored_points", Number),
            ("created_at_us", Instant),
        ],
        order_by: "created_at_us, order_id",
        one: false,
    },
    Part {
        name: "activity_awards",
        table: "activity_awards",
        columns: &[
            ("activity_type", Text),
            ("activity_ref", Text),
            ("transaction_id", Text),
            ("awarded_at_us", Instant),
        ],
        order_by: "awarded_at_us, transaction_id",
        one: false,
    },
    Part {
        name: "profile",
        table: "member_profiles",
        columns: &[("body", Json), ("version", Number), ("updated_at_us", Instant)],
        order_by: "customer_id",
        one: true,
    },
];

/// The document: every part, lists oldest first (`account` and `profile`
/// are objects, null when there is none), and the profile's audit trail.
/// The export itself is audited (entity `customer_export`, by `actor`) in the
/// same transaction: no document leaves without its entry.
pub async fn customer_document(
    db: &Database,
    program_id: &str,
    customer_id: &str,
    actor: &str,
    now: Micros,
) -> Result<Value, Error> {
    let mut tx = begin_write(db).await?;
    sqlx::query(
        "INSERT INTO audit_entries (program_id, actor, changed_at_us, entity, entity_id, old_value, new_value) \
         VALUES ($1, $2, $3, 'customer_export', $4, '', '')",
    )
    .bind(program_id)
    .bind(actor)
    .bind(now)
    .bind(customer_id)
    .execute(&mut *tx)
    .await?;
    let mut document = Map::new();
    document.insert("program_id".into(), program_id.into());
    document.insert("customer_id".into(), customer_id.into());
    for part in PARTS {
        let columns: Vec<&str> = part.columns.iter().map(|(name, _)| *name).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE program_id = $1 AND customer_id = $2 ORDER BY {}",
            columns.join(", "),
            part.table,
            part.order_by
        ));
        let rows = sqlx::query(sql).bind(program_id).bind(customer_id).fetch_all(&mut *tx).await?;
        let objects = rows.iter().map(|row| object(row, part.columns)).collect::<Result<Vec<_>, Error>>()?;
        let value = match part.one {
            true => objects.into_iter().next().unwrap_or(Value::Null),
            false => Value::Array(objects),
        };
        document.insert(part.name.into(), value);
    }
    let audit = sqlx::query(
        "SELECT actor, changed_at_us, old_value, new_value FROM audit_entries \
         WHERE program_id = $1 AND entity = 'profile' AND entity_id = $2 ORDER BY audit_id",
    )
    .bind(program_id)
    .bind(customer_id)
    .fetch_all(&mut *tx)
    .await?;
    let audit_columns = [("actor", Text), ("changed_at_us", Instant), ("old_value", Json), ("new_value", Json)];
    let audit = audit.iter().map(|row| object(row, &audit_columns)).collect::<Result<Vec<_>, Error>>()?;
    document.insert("profile_changes".into(), Value::Array(audit));
    tx.commit().await?;
    Ok(Value::Object(document))
}

fn object(row: &AnyRow, columns: &[(&str, Column)]) -> Result<Value, Error> {
    let mut object = Map::new();
    for &(name, kind) in columns {
        match kind {
            Text => {
                object.insert(name.into(), row.try_get::<String, _>(name)?.into());
            }
            Number => {
                object.insert(name.into(), row.try_get::<i64, _>(name)?.into());
            }
            Instant => {
                if let Some(at) = row.try_get::<Option<Micros>, _>(name)? {
                    let name = name.strip_suffix("_us").unwrap_or(name);
                    object.insert(name.into(), to_timestamp(at).to_string().into());
                }
            }
            Json => {
                let text: String = row.try_get(name)?;
                if !text.is_empty() {
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|e| Error::Corrupt(format!("stored JSON in {name}: {e}")))?;
                    object.insert(name.into(), value);
                }
            }
        }
    }
    Ok(Value::Object(object))
}
