//! Program configuration in SQL: settings, campaigns and the audit log of
//! every change to them. Admin writes are idempotent like ledger writes, and
//! each one writes its audit entry in the same transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, Micros};
use loyalty_common::db::{self, Database};

use crate::domain::profile::{Profile, ProfileChange};
use crate::domain::rules::{Campaign, ProgramSettings};
use crate::error::Error;
use loyalty_common::db::{from_json, to_json};
use loyalty_common::idempotency::{self, begin_write, request_hash};

/// A member whose birthday may be today somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthdayMember {
    pub program_id: String,
    pub customer_id: String,
    pub time_zone: String,
}

/// Which audit entries a listing wants: empty fields match every entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditFilter<'a> {
    pub actor: &'a str,
    pub entity: &'a str,
}

/// One change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub audit_id: i64,
    pub actor: String,
    pub changed_at: Micros,
    pub entity: String,
    pub entity_id: String,
    pub old_value: String,
    pub new_value: String,
}

/// Who asks for which admin write, under which idempotency key.
#[derive(Clone, Copy)]
struct AdminCall<'a> {
    program_id: &'a str,
    method: &'static str,
    key: &'a str,
    actor: &'a str,
}

/// What an admin write changed, for the audit log.
struct Change {
    entity: &'static str,
    entity_id: String,
    old_value: String,
    new_value: String,
}

/// How long a program's settings and campaigns are served from memory
/// before they are read again: a change made through this process applies
/// at once (it empties the cache), one made through another replica within
/// this long.
pub const CONFIG_CACHE_TTL: Duration = Duration::from_secs(1);
/// Programs kept in memory; past it the cache starts over.
const CONFIG_CACHE_PROGRAMS: usize = 10_000;
/// A program with more campaigns than this is read from the database each time.
const CONFIG_CACHE_CAMPAIGNS: usize = 1_000;

#[derive(Clone, Debug)]
pub struct ProgramStore {
    db: Database,
    clock: Arc<dyn Clock>,
    cache: Arc<ConfigCache>,
}

/// Settings and campaigns by program, as last read, for the order and
/// activity paths that need both on every call.
#[derive(Debug, Default)]
struct ConfigCache {
    programs: Mutex<HashMap<String, Arc<CachedConfig>>>,
    /// Bumped by every admin write: a read that began before one is not cached.
    generation: AtomicU64,
}

#[derive(Debug)]
struct CachedConfig {
    read_at: Instant,
    settings: ProgramSettings,
    /// Every campaign of the program, ended ones included (an order may be
    /// back-dated), ordered by id.
    campaigns: Vec<Campaign>,
}

impl ProgramStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock, cache: Arc::default() }
    }

    /// The program's settings and campaigns, from memory when read within
    /// [`CONFIG_CACHE_TTL`].
    /// Shared, so that a lookup on the hot path copies a pointer, not the configuration.
    async fn config(&self, program_id: &str) -> Result<Arc<CachedConfig>, Error> {
        if let Some(cached) = self.cache.programs.lock().expect("config cache").get(program_id)
            && cached.read_at.elapsed() < CONFIG_CACHE_TTL
        {
            return Ok(cached.clone());
        }
        let generation = self.cache.generation.load(Ordering::Acquire);
        let read_at = Instant::now();
        let settings = self.stored_settings(program_id).await?;
        let rows = sqlx::query("SELECT body FROM campaigns WHERE program_id = $1 ORDER BY campaign_id")
            .bind(program_id)
            .fetch_all(&self.db.pool)
            .await?;
        let campaigns = rows.iter().map(campaign_from_row).collect::<Result<_, _>>()?;
        let config = Arc::new(CachedConfig { read_at, settings, campaigns });
        let mut programs = self.cache.programs.lock().expect("config cache");
        if self.cache.generation.load(Ordering::Acquire) == generation
            && config.campaigns.len() <= CONFIG_CACHE_CAMPAIGNS
        {
            if programs.len() >= CONFIG_CACHE_PROGRAMS {
                programs.clear();
            }
            programs.insert(program_id.to_owned(), config.clone());
        }
        Ok(config)
    }

    /// Forgets every cached program after a change.
    fn changed(&self) {
        self.cache.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.programs.lock().expect("config cache").clear();
    }

    /// The program's settings, or the defaults when it has none.
    pub async fn settings(&self, program_id: &str) -> Result<ProgramSettings, Error> {
        Ok(self.config(program_id).await?.settings.clone())
    }

    /// When points earned at `earned_at` expire under the program's policy (`None`: never).
    pub async fn policy_expiry(&self, program_id: &str, earned_at: Micros) -> Result<Option<Micros>, Error> {
        Ok(self.config(program_id).await?.settings.expires_at(earned_at))
    }

    async fn stored_settings(&self, program_id: &str) -> Result<ProgramSettings, Error> {
        let row = sqlx::query("SELECT settings FROM program_settings WHERE program_id = $1")
            .bind(program_id)
            .fetch_optional(&self.db.pool)
            .await?;
        match row {
            Some(row) => Ok(from_json(&row.try_get::<String, _>("settings")?)?),
            None => Ok(ProgramSettings::default()),
        }
    }

    /// Replaces the settings (already validated); refused when
    /// `expected_version` is given and no longer matches.
    pub async fn put_settings(
        &self,
        program_id: &str,
        settings: ProgramSettings,
        actor: &str,
        key: &str,
        expected_version: Option<i64>,
    ) -> Result<ProgramSettings, Error> {
        let request = serde_json::json!({ "settings": settings, "expected_version": expected_version });
        let dialect = self.db.dialect;
        let (program_id, actor) = (program_id.to_owned(), actor.to_owned());
        let call =
            AdminCall { program_id: &program_id.clone(), method: "PutProgramSettings", key, actor: &actor.clone() };
        self.admin_write(call, &request, move |tx, now| {
            Box::pin(async move {
                // Make sure the row exists, so that locking it serialises concurrent puts.
                sqlx::query(
                    "INSERT INTO program_settings (program_id, settings, version, updated_at_us, updated_by) \
                     VALUES ($1, $2, 0, $3, '') ON CONFLICT DO NOTHING",
                )
                .bind(&program_id)
                .bind(to_json(&ProgramSettings::default()))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT settings, version FROM program_settings WHERE program_id = $1{}",
                    dialect.for_update()
                ));
                let row = sqlx::query(sql).bind(&program_id).fetch_one(&mut *tx).await?;
                let old_json: String = row.try_get("settings")?;
                let version: i64 = row.try_get("version")?;
                if let Some(expected) = expected_version
                    && expected != version
                {
                    return Err(Error::VersionMismatch { expected, actual: version });
                }
                let stored = ProgramSettings { version: version + 1, ..settings };
                let new_json = to_json(&stored);
                sqlx::query(
                    "UPDATE program_settings SET settings = $1, version = $2, updated_at_us = $3, updated_by = $4 \
                     WHERE program_id = $5",
                )
                .bind(&new_json)
                .bind(stored.version)
                .bind(now)
                .bind(&actor)
                .bind(&program_id)
                .execute(&mut *tx)
                .await?;
                let change =
                    Change { entity: "settings", entity_id: program_id, old_value: old_json, new_value: new_json };
                Ok((stored, change))
            })
        })
        .await
    }

    /// Campaigns not yet ended (or all), earliest start first.
    pub async fn campaigns(&self, program_id: &str, include_ended: bool) -> Result<Vec<Campaign>, Error> {
        let after = if include_ended { i64::MIN } else { self.clock.now() };
        let rows = sqlx::query(
            "SELECT body FROM campaigns WHERE program_id = $1 AND ends_at_us > $2 ORDER BY starts_at_us, campaign_id",
        )
        .bind(program_id)
        .bind(after)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// Campaigns whose window contains `at`, ordered by id.
    pub async fn active_campaigns(&self, program_id: &str, at: Micros) -> Result<Vec<Campaign>, Error> {
        let config = self.config(program_id).await?;
        Ok(config.campaigns.iter().filter(|c| c.starts_at <= at && at < c.ends_at).cloned().collect())
    }

    /// Stores a new campaign (already validated) under a fresh id.
    pub async fn create_campaign(
        &self,
        program_id: &str,
        campaign: Campaign,
        actor: &str,
        key: &str,
    ) -> Result<Campaign, Error> {
        let request = serde_json::json!({ "campaign": Campaign { campaign_id: String::new(), ..campaign.clone() } });
        let owner = program_id.to_owned();
        let call = AdminCall { program_id, method: "CreateCampaign", key, actor };
        self.admin_write(call, &request, move |tx, now| {
            Box::pin(async move {
                let campaign = Campaign { campaign_id: format!("cmp_{}", uuid::Uuid::now_v7().simple()), ..campaign };
                let body = to_json(&campaign);
                sqlx::query(
                    "INSERT INTO campaigns (campaign_id, program_id, body, starts_at_us, ends_at_us, updated_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&campaign.campaign_id)
                .bind(&owner)
                .bind(&body)
                .bind(campaign.starts_at)
                .bind(campaign.ends_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let change = Change {
                    entity: "campaign",
                    entity_id: campaign.campaign_id.clone(),
                    old_value: String::new(),
                    new_value: body,
                };
                Ok((campaign, change))
            })
        })
        .await
    }

    /// Replaces a campaign (already validated) with the same id.
    pub async fn update_campaign(
        &self,
        program_id: &str,
        campaign: Campaign,
        actor: &str,
        key: &str,
    ) -> Result<Campaign, Error> {
        let request = serde_json::json!({ "campaign": campaign });
        let call = AdminCall { program_id, method: "UpdateCampaign", key, actor };
        self.replace_campaign(call, &request, campaign.campaign_id.clone(), move |_, _| campaign).await
    }

    /// Cuts the campaign's window short at now (a campaign that has not
    /// started yet gets an empty window).
    pub async fn end_campaign(
        &self,
        program_id: &str,
        campaign_id: &str,
        actor: &str,
        key: &str,
    ) -> Result<Campaign, Error> {
        let request = serde_json::json!({ "campaign_id": campaign_id });
        let call = AdminCall { program_id, method: "EndCampaign", key, actor };
        let end = |old: Campaign, now: Micros| Campaign { ends_at: old.ends_at.min(now.max(old.starts_at)), ..old };
        self.replace_campaign(call, &request, campaign_id.to_owned(), end).await
    }

    /// Audit entries, newest first, strictly before `before_id`, only those `filter` lets through.
    pub async fn audit_entries(
        &self,
        program_id: &str,
        filter: AuditFilter<'_>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, Error> {
        let select =
            "SELECT audit_id, actor, changed_at_us, entity, entity_id, old_value, new_value FROM audit_entries";
        let mut columns = vec![("program_id", program_id)];
        columns.extend([("actor", filter.actor), ("entity", filter.entity)].into_iter().filter(|(_, v)| !v.is_empty()));
        let rows = db::newest_first(&self.db, select, &columns, "audit_id", before_id, limit).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    audit_id: r.try_get("audit_id")?,
                    actor: r.try_get("actor")?,
                    changed_at: r.try_get("changed_at_us")?,
                    entity: r.try_get("entity")?,
                    entity_id: r.try_get("entity_id")?,
                    old_value: r.try_get("old_value")?,
                    new_value: r.try_get("new_value")?,
                })
            })
            .collect()
    }

    /// Locks the campaign, lets `change` derive its new form, stores and audits it.
    async fn replace_campaign(
        &self,
        call: AdminCall<'_>,
        request: &serde_json::Value,
        campaign_id: String,
        change: impl FnOnce(Campaign, Micros) -> Campaign + Send + 'static,
    ) -> Result<Campaign, Error> {
        let dialect = self.db.dialect;
        let owner = call.program_id.to_owned();
        self.admin_write(call, request, move |tx, now| {
            Box::pin(async move {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT body FROM campaigns WHERE program_id = $1 AND campaign_id = $2{}",
                    dialect.for_update()
                ));
                let row = sqlx::query(sql).bind(&owner).bind(&campaign_id).fetch_optional(&mut *tx).await?;
                let row = row.ok_or_else(|| Error::CampaignNotFound(campaign_id.clone()))?;
                let old_json: String = row.try_get("body")?;
                let updated = change(from_json(&old_json)?, now);
                let new_json = to_json(&updated);
                sqlx::query(
                    "UPDATE campaigns SET body = $1, starts_at_us = $2, ends_at_us = $3, updated_at_us = $4 \
                     WHERE campaign_id = $5",
                )
                .bind(&new_json)
                .bind(updated.starts_at)
                .bind(updated.ends_at)
                .bind(now)
                .bind(&campaign_id)
                .execute(&mut *tx)
                .await?;
                Ok((
                    updated,
                    Change { entity: "campaign", entity_id: campaign_id, old_value: old_json, new_value: new_json },
                ))
            })
        })
        .await
    }

    /// The member's profile, if one was written.
    pub async fn profile(&self, program_id: &str, customer_id: &str) -> Result<Option<Profile>, Error> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM member_profiles WHERE program_id = $1 AND customer_id = $2")
                .bind(program_id)
                .bind(customer_id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(body.as_deref().map(from_json).transpose()?)
    }

    /// Members of every program born on `month`/`day`, with their time zones.
    pub async fn birthdays_on(&self, month: u32, day: u32) -> Result<Vec<BirthdayMember>, Error> {
        let rows = sqlx::query(
            "SELECT program_id, customer_id, time_zone FROM member_profiles WHERE birth_month = $1 AND birth_day = $2",
        )
        .bind(i64::from(month))
        .bind(i64::from(day))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BirthdayMember {
                    program_id: r.try_get("program_id")?,
                    customer_id: r.try_get("customer_id")?,
                    time_zone: r.try_get("time_zone")?,
                })
            })
            .collect()
    }

    /// Replaces the member's profile (the first write is the enrolment),
    /// audited as entity `profile`, under the idempotency key; with
    /// `expected_version` (0: none yet), a profile changed meanwhile is refused.
    pub async fn put_profile(
        &self,
        program_id: &str,
        customer_id: &str,
        change: ProfileChange,
        expected_version: Option<i64>,
        actor: &str,
        key: &str,
    ) -> Result<Profile, Error> {
        let request = serde_json::json!({
            "customer_id": customer_id, "profile": change, "expected_version": expected_version,
        });
        let dialect = self.db.dialect;
        let (program, customer) = (program_id.to_owned(), customer_id.to_owned());
        let call = AdminCall { program_id, method: "UpdateProfile", key, actor };
        self.admin_write(call, &request, move |tx, now| {
            Box::pin(async move {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT body FROM member_profiles WHERE program_id = $1 AND customer_id = $2{}",
                    dialect.for_update()
                ));
                let old_json: Option<String> =
                    sqlx::query_scalar(sql).bind(&program).bind(&customer).fetch_optional(&mut *tx).await?;
                let current: Option<Profile> = old_json.as_deref().map(from_json).transpose()?;
                let version = current.as_ref().map_or(0, |p| p.version);
                if let Some(expected) = expected_version
                    && expected != version
                {
                    return Err(Error::VersionMismatch { expected, actual: version });
                }
                let stored = change.apply(current.as_ref(), now);
                let new_json = to_json(&stored);
                sqlx::query(
                    "INSERT INTO member_profiles (program_id, customer_id, body, birth_month, birth_day, time_zone, \
                     version, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (program_id, customer_id) DO UPDATE SET body = excluded.body, \
                     birth_month = excluded.birth_month, birth_day = excluded.birth_day, \
                     time_zone = excluded.time_zone, version = excluded.version, updated_at_us = excluded.updated_at_us",
                )
                .bind(&program)
                .bind(&customer)
                .bind(&new_json)
                .bind(i64::from(stored.birth_month))
                .bind(i64::from(stored.birth_day))
                .bind(&stored.time_zone)
                .bind(stored.version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let change = Change {
                    entity: "profile",
                    entity_id: customer,
                    old_value: old_json.unwrap_or_default(),
                    new_value: new_json,
                };
                Ok((stored, change))
            })
        })
        .await
    }

    /// Runs `op` in one transaction under the idempotency key, writes its
    /// audit entry, and saves its result for replays.
    async fn admin_write<T, F>(&self, call: AdminCall<'_>, request: &serde_json::Value, op: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: for<'c> FnOnce(&'c mut AnyConnection, Micros) -> BoxFuture<'c, Result<(T, Change), Error>>,
    {
        let AdminCall { program_id, method, key, actor } = call;
        // Whatever happens from here (a commit, a refusal, a caller who
        // gives up after the commit), the cached configuration goes.
        let _forget = ForgetOnDrop(self);
        let now = self.clock.now();
        let hash = request_hash(program_id, request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, method, key, &hash, now).await? {
            tx.rollback().await?;
            return Ok(from_json(&saved)?);
        }
        let (result, change) = op(&mut tx, now).await?;
        sqlx::query(
            "INSERT INTO audit_entries (program_id, actor, changed_at_us, entity, entity_id, old_value, new_value) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(program_id)
        .bind(actor)
        .bind(now)
        .bind(change.entity)
        .bind(&change.entity_id)
        .bind(&change.old_value)
        .bind(&change.new_value)
        .execute(&mut *tx)
        .await?;
        // What the write changed, beside its answer: `profile:<customer>` lets an
        // erasure find the saved answers that hold the customer's profile.
        let changed = format!("{}:{}", change.entity, change.entity_id);
        idempotency::save(&mut tx, program_id, method, key, &to_json(&result), &changed).await?;
        tx.commit().await?;
        Ok(result)
    }
}

/// Empties the configuration cache when dropped, which a future that is
/// cancelled after its commit still does.
struct ForgetOnDrop<'a>(&'a ProgramStore);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.changed();
    }
}

fn campaign_from_row(row: &AnyRow) -> Result<Campaign, Error> {
    Ok(from_json(&row.try_get::<String, _>("body")?)?)
}
