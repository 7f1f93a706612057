//! A customer's rights over their data, as every service serves them
//! (`loyalty.privacy.v1.CustomerDataService`, admin keys only): **export**
//! everything the service holds about one customer as one JSON document,
//! and **erase** it.
//!
//! Each service says what it holds in a [`Subject`]: one [`Holding`] per
//! kind of record, with the SQL condition that finds the customer's rows,
//! the columns the export shows, and what erasure does to them. Records
//! that program totals are made of (ledger entries, orders, memberships,
//! redemptions) are kept, moved to an anonymous id and stripped of free
//! text; everything else is deleted. One transaction per call: an erasure
//! is whole or not at all, and an export is read with its audit entry.
//!
//! SQL in a holding names its arguments, replaced by numbered parameters in
//! order of appearance (so each statement binds exactly what it uses, in
//! both dialects): `{program}`, `{customer}`, `{anonymous}`, `{quoted}` and
//! `{anonymous_quoted}` (the ids as JSON strings, quotes included, to find
//! and replace them inside stored JSON: `replace(data, {quoted}, '') <>
//! data` finds, in both dialects), `{hash}` ([`customer_hash`]), `{actor}`
//! and `{now}`.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use tonic::{Request, Response, Status};

use loyalty_proto::privacy::v1 as pb;
use loyalty_proto::privacy::v1::customer_data_service_server::{CustomerDataService, CustomerDataServiceServer};

use crate::auth::keys::Scope;
use crate::auth::{self, Access, Policy};
use crate::clock::{Clock, Micros, to_timestamp};
use crate::db::Database;
use crate::idempotency::begin_write;
use crate::status::{Fault, ServiceError};
use crate::validate::{Check, FieldViolation};

/// The shared service's gRPC name.
pub const SERVICE: &str = "loyalty.privacy.v1.CustomerDataService";

/// Who may call it: the shop's back office (admin keys) and the gateway.
pub const POLICY: Policy = Policy {
    service: SERVICE,
    methods: &[("ExportCustomer", Access::Key(Scope::Admin)), ("EraseCustomer", Access::Key(Scope::Admin))],
};

/// `ErrorInfo.domain` of its errors.
pub const DOMAIN: &str = "privacy.loyalty";

/// How a column shows in the export.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    /// Text; absent when NULL.
    Text,
    /// An integer; absent when NULL.
    Number,
    /// Microseconds since the epoch, shown as RFC 3339 under the name without `_us`; absent when NULL.
    Instant,
    /// Stored JSON, shown as JSON; absent when NULL or empty.
    Json,
}

/// What erasure does to a holding's rows.
#[derive(Debug, Clone, Copy)]
pub enum Erase {
    /// Kept for the totals: `UPDATE ... SET <this>` (which moves them to `{anonymous}` and blanks free text).
    Keep(&'static str),
    /// Deleted.
    Delete,
}

/// One kind of record a service holds about a customer.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    /// Its name in the export document; empty: not exported (it holds nothing
    /// the customer gave or that is not already in another part).
    pub part: &'static str,
    pub table: &'static str,
    /// The SQL condition that finds the customer's rows.
    pub filter: &'static str,
    pub columns: &'static [(&'static str, Column)],
    pub order_by: &'static str,
    /// At most one row: exported as an object (null when none), not a list.
    pub one: bool,
    pub erase: Erase,
}

impl Holding {
    /// The rows of `table` whose `customer_id` is the customer's, in the
    /// customer's program: exported as a list, kept under the anonymous id.
    pub const fn rows(
        part: &'static str,
        table: &'static str,
        columns: &'static [(&'static str, Column)],
        order_by: &'static str,
    ) -> Self {
        Self {
            part,
            table,
            filter: "program_id = {program} AND customer_id = {customer}",
            columns,
            order_by,
            one: false,
            erase: Erase::Keep("customer_id = {anonymous}"),
        }
    }

    /// Rows found by another condition than `customer_id`.
    pub const fn filter(self, filter: &'static str) -> Self {
        Self { filter, ..self }
    }

    /// At most one row, exported as an object.
    pub const fn one(self) -> Self {
        Self { one: true, ..self }
    }

    /// What erasure does instead of moving `customer_id`.
    pub const fn erase(self, erase: Erase) -> Self {
        Self { erase, ..self }
    }

    /// Found and erased, never exported.
    pub const fn unexported(table: &'static str, filter: &'static str, erase: Erase) -> Self {
        Self { part: "", table, filter, columns: &[], order_by: "", one: false, erase }
    }
}

/// The customer's events in a transactional outbox (`outbox`:
/// `customer_id`, JSON `data`): deleted, published or not (their data may
/// hold anything the customer gave; an event not yet delivered is not sent,
/// as webhooks' pending deliveries are not).
pub const OUTBOX: Holding =
    Holding::unexported("outbox", "program_id = {program} AND customer_id = {customer}", Erase::Delete);

/// Other customers' events in the outbox that name the customer (a
/// referral's other side): kept, the id replaced by the anonymous one.
pub const OUTBOX_MENTIONS: Holding = Holding::unexported(
    "outbox",
    "program_id = {program} AND replace(data, {quoted}, '') <> data",
    Erase::Keep("data = replace(data, {quoted}, {anonymous_quoted})"),
);

/// Saved answers of idempotent writes that name the customer: deleted (a
/// retry after the erasure runs again, as a new request).
pub const SAVED_ANSWERS: Holding = Holding::unexported(
    "idempotency_keys",
    "program_id = {program} AND replace(response, {quoted}, '') <> response",
    Erase::Delete,
);

/// Everything one service holds about a customer, and what exporting and
/// erasing also do.
#[derive(Debug)]
pub struct Subject {
    /// The service's name, e.g. `points`.
    pub service: &'static str,
    /// In the order erasure runs them (rows another holding's filter reads come later).
    pub holdings: &'static [Holding],
    /// Statements run before an export is read (its audit entry).
    pub on_export: &'static [&'static str],
    /// Statements run before the holdings are erased (e.g. a copy under the
    /// anonymous id that other rows' foreign keys can move to).
    pub erase_first: &'static [&'static str],
    /// Statements run after (the erasure's audit entry, a tombstone, the original of a copy).
    pub erase_last: &'static [&'static str],
}

/// What a tombstone holds instead of the customer's id: SHA-256 of the
/// program and the id, hex. It answers "was this customer erased?" for an
/// id someone already has, and names nobody by itself.
pub fn customer_hash(program_id: &str, customer_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(program_id.as_bytes());
    hasher.update([0]);
    hasher.update(customer_id.as_bytes());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh anonymous id: `anon-` and 32 random lowercase hex digits.
pub fn anonymous_id() -> String {
    format!("anon-{}", uuid::Uuid::new_v4().simple())
}

/// True for what [`anonymous_id`] makes.
pub fn is_anonymous_id(id: &str) -> bool {
    id.strip_prefix("anon-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The values a statement may name.
struct Arguments<'a> {
    program: &'a str,
    customer: &'a str,
    anonymous: &'a str,
    quoted: String,
    anonymous_quoted: String,
    hash: String,
    actor: &'a str,
    now: Micros,
}

/// One bound value.
enum Argument<'a> {
    Text(&'a str),
    Number(i64),
}

impl<'a> Arguments<'a> {
    fn new(program: &'a str, customer: &'a str, anonymous: &'a str, actor: &'a str, now: Micros) -> Self {
        let quoted = serde_json::to_string(customer).expect("a string serialises");
        let anonymous_quoted = serde_json::to_string(anonymous).expect("a string serialises");
        Self {
            program,
            customer,
            anonymous,
            quoted,
            anonymous_quoted,
            hash: customer_hash(program, customer),
            actor,
            now,
        }
    }

    fn value(&self, name: &str) -> Option<Argument<'_>> {
        Some(match name {
            "program" => Argument::Text(self.program),
            "customer" => Argument::Text(self.customer),
            "anonymous" => Argument::Text(self.anonymous),
            "quoted" => Argument::Text(&self.quoted),
            "anonymous_quoted" => Argument::Text(&self.anonymous_quoted),
            "hash" => Argument::Text(&self.hash),
            "actor" => Argument::Text(self.actor),
            "now" => Argument::Number(self.now),
            _ => return None,
        })
    }

    /// `sql` with `$1`, `$2`, ... for its `{name}`s, and the values to bind, in order.
    fn bind(&self, sql: &str) -> (String, Vec<Argument<'_>>) {
        let mut text = String::with_capacity(sql.len());
        let mut names: Vec<&str> = Vec::new();
        let mut rest = sql;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c).expect("a closed {name} in privacy SQL");
            let name = &rest[open + 1..close];
            let number = match names.iter().position(|n| *n == name) {
                Some(i) => i + 1,
                None => {
                    names.push(name);
                    names.len()
                }
            };
            text.push_str(&rest[..open]);
            text.push_str(&format!("${number}"));
            rest = &rest[close + 1..];
        }
        text.push_str(rest);
        let values = names.iter().map(|n| self.value(n).unwrap_or_else(|| panic!("no argument {{{n}}}"))).collect();
        (text, values)
    }
}

/// `sql` as a query with its arguments bound.
macro_rules! prepared {
    ($arguments:expr, $sql:expr) => {{
        let (text, values) = $arguments.bind($sql);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(text));
        for value in values {
            query = match value {
                Argument::Text(t) => query.bind(t.to_owned()),
                Argument::Number(n) => query.bind(n),
            };
        }
        query
    }};
}

/// Runs one statement; the rows it touched.
async fn run(tx: &mut sqlx::AnyConnection, arguments: &Arguments<'_>, sql: &str) -> Result<u64, sqlx::Error> {
    Ok(prepared!(arguments, sql).execute(&mut *tx).await?.rows_affected())
}

/// The export: one member per exported holding.
pub async fn export(
    db: &Database,
    subject: &Subject,
    program_id: &str,
    customer_id: &str,
    actor: &str,
    now: Micros,
) -> Result<Value, sqlx::Error> {
    let arguments = Arguments::new(program_id, customer_id, "", actor, now);
    let mut tx = begin_write(db).await?;
    for statement in subject.on_export {
        run(&mut tx, &arguments, statement).await?;
    }
    let mut document = Map::new();
    for holding in subject.holdings.iter().filter(|h| !h.part.is_empty()) {
        let columns: Vec<&str> = holding.columns.iter().map(|(name, _)| *name).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {}",
            columns.join(", "),
            holding.table,
            holding.filter,
            holding.order_by
        );
        let rows = prepared!(arguments, &sql).fetch_all(&mut *tx).await?;
        let objects = rows.iter().map(|row| object(row, holding.columns)).collect::<Result<Vec<_>, _>>()?;
        let value = match holding.one {
            true => objects.into_iter().next().unwrap_or(Value::Null),
            false => Value::Array(objects),
        };
        document.insert(holding.part.into(), value);
    }
    tx.commit().await?;
    Ok(Value::Object(document))
}

/// What an erasure did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub anonymized: u64,
    pub deleted: u64,
}

/// The erasure, in one transaction.
pub async fn erase(
    db: &Database,
    subject: &Subject,
    program_id: &str,
    customer_id: &str,
    anonymous_id: &str,
    actor: &str,
    now: Micros,
) -> Result<Erased, sqlx::Error> {
    let arguments = Arguments::new(program_id, customer_id, anonymous_id, actor, now);
    let mut tx = begin_write(db).await?;
    for statement in subject.erase_first {
        run(&mut tx, &arguments, statement).await?;
    }
    let mut erased = Erased::default();
    for holding in subject.holdings {
        match holding.erase {
            Erase::Keep(set) => {
                let sql = format!("UPDATE {} SET {set} WHERE {}", holding.table, holding.filter);
                erased.anonymized += run(&mut tx, &arguments, &sql).await?;
            }
            Erase::Delete => {
                let sql = format!("DELETE FROM {} WHERE {}", holding.table, holding.filter);
                erased.deleted += run(&mut tx, &arguments, &sql).await?;
            }
        }
    }
    for statement in subject.erase_last {
        run(&mut tx, &arguments, statement).await?;
    }
    tx.commit().await?;
    Ok(erased)
}

fn object(row: &AnyRow, columns: &[(&str, Column)]) -> Result<Value, sqlx::Error> {
    let mut object = Map::new();
    for &(name, kind) in columns {
        let shown = match kind {
            Column::Text => row.try_get::<Option<String>, _>(name)?.map(Value::from),
            Column::Number => row.try_get::<Option<i64>, _>(name)?.map(Value::from),
            Column::Instant => row.try_get::<Option<Micros>, _>(name)?.map(|at| to_timestamp(at).to_string().into()),
            Column::Json => match row.try_get::<Option<String>, _>(name)? {
                Some(text) if !text.is_empty() => Some(
                    serde_json::from_str(&text)
                        .map_err(|e| sqlx::Error::Decode(format!("stored JSON in {name}: {e}").into()))?,
                ),
                _ => None,
            },
        };
        if let Some(value) = shown {
            let name = match kind {
                Column::Instant => name.strip_suffix("_us").unwrap_or(name),
                _ => name,
            };
            object.insert(name.into(), value);
        }
    }
    Ok(Value::Object(object))
}

/// What a service does after an erasure committed (e.g. drop a cached
/// balance). An error makes the call UNAVAILABLE: the caller retries the
/// erasure, which finds nothing left in the database and runs this again.
#[tonic::async_trait]
pub trait AfterErase: Send + Sync + 'static {
    async fn erased(&self, program_id: &str, customer_id: &str) -> Result<(), String>;
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Cache(String),
}

impl ServiceError for Error {
    const DOMAIN: &'static str = DOMAIN;

    fn fault(&self) -> Fault {
        match self {
            Self::Invalid(violations) => Fault::Invalid(violations.clone()),
            Self::Database(e) => Fault::database(e),
            Self::Cache(_) => Fault::Unavailable("the cache"),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.into_status()
    }
}

/// The gRPC service over one service's [`Subject`].
#[derive(Clone)]
pub struct CustomerDataApi {
    subject: &'static Subject,
    db: Database,
    clock: Arc<dyn Clock>,
    after_erase: Option<Arc<dyn AfterErase>>,
}

impl CustomerDataApi {
    pub fn new(subject: &'static Subject, db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { subject, db, clock, after_erase: None }
    }

    pub fn after_erase(self, hook: Arc<dyn AfterErase>) -> Self {
        Self { after_erase: Some(hook), ..self }
    }

    pub fn into_server(self) -> CustomerDataServiceServer<Self> {
        CustomerDataServiceServer::new(self)
    }
}

fn checked(program_id: &str, customer_id: &str, actor: &str, more: impl FnOnce(&mut Check)) -> Result<(), Error> {
    let mut check = Check::default();
    check.id("program_id", program_id).id("customer_id", customer_id).id("actor", actor);
    more(&mut check);
    check.finish().map_err(Error::Invalid)
}

#[tonic::async_trait]
impl CustomerDataService for CustomerDataApi {
    async fn export_customer(
        &self,
        request: Request<pb::ExportCustomerRequest>,
    ) -> Result<Response<pb::ExportCustomerResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        checked(&r.program_id, &r.customer_id, &actor, |_| {})?;
        let now = self.clock.now();
        let document =
            export(&self.db, self.subject, &r.program_id, &r.customer_id, &actor, now).await.map_err(Error::from)?;
        Ok(Response::new(pb::ExportCustomerResponse {
            service: self.subject.service.to_owned(),
            document: document.to_string(),
        }))
    }

    async fn erase_customer(
        &self,
        request: Request<pb::EraseCustomerRequest>,
    ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        checked(&r.program_id, &r.customer_id, &actor, |check| {
            if !is_anonymous_id(&r.anonymous_id) {
                check.add(Err(FieldViolation::new("anonymous_id", "must be `anon-` and 32 lowercase hex digits")));
            }
            if is_anonymous_id(&r.customer_id) {
                check.add(Err(FieldViolation::new("customer_id", "is already an anonymous id")));
            }
        })?;
        let now = self.clock.now();
        let erased = erase(&self.db, self.subject, &r.program_id, &r.customer_id, &r.anonymous_id, &actor, now)
            .await
            .map_err(Error::from)?;
        if let Some(hook) = &self.after_erase {
            hook.erased(&r.program_id, &r.customer_id).await.map_err(Error::Cache)?;
        }
        tracing::info!(
            service = self.subject.service,
            anonymized = erased.anonymized,
            deleted = erased.deleted,
            "customer erased"
        );
        Ok(Response::new(pb::EraseCustomerResponse {
            service: self.subject.service.to_owned(),
            anonymized: i64::try_from(erased.anonymized).unwrap_or(i64::MAX),
            deleted: i64::try_from(erased.deleted).unwrap_or(i64::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dense_numbered_parameters_in_order_of_appearance() {
        let arguments = Arguments::new("p", "c\"1", "anon-x", "api-key:k", 7);
        let (text, values) =
            arguments.bind("a = {customer} AND b = {program} OR c = {customer} AND d = {quoted}, {now}");
        assert_eq!(text, "a = $1 AND b = $2 OR c = $1 AND d = $3, $4");
        let shown: Vec<String> = values
            .iter()
            .map(|v| match v {
                Argument::Text(t) => t.to_string(),
                Argument::Number(n) => n.to_string(),
            })
            .collect();
        assert_eq!(shown, ["c\"1", "p", "\"c\\\"1\"", "7"]);
    }

    #[test]
    fn anonymous_ids_are_recognised_and_fresh() {
        let a = anonymous_id();
        assert!(is_anonymous_id(&a), "{a}");
        assert_ne!(a, anonymous_id());
        for not in ["anon-", "anon-XYZ", "customer-1", &format!("{a}0"), &a.to_uppercase()] {
            assert!(!is_anonymous_id(not), "{not}");
        }
    }

    #[test]
    fn the_hash_depends_on_program_and_customer() {
        assert_eq!(customer_hash("p", "c").len(), 64);
        assert_ne!(customer_hash("p", "c"), customer_hash("q", "c"));
        assert_ne!(customer_hash("p", "c"), customer_hash("p", "d"));
        assert_ne!(customer_hash("p1", "c"), customer_hash("p", "1c"));
    }
}
