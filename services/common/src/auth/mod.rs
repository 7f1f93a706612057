//! Who may call what. One credential model for HTTP and gRPC: a program's
//! API key ([`keys`]), sent as `authorization: Bearer <key>`, opens the RPCs
//! its scope allows for its own program only; services calling each other
//! send a service identity token ([`ServiceSecret`]) that no API key can
//! forge and that also opens the internal RPCs.
//!
//! [`AuthLayer`] checks every call before it reaches a handler:
//!
//! | refusal | code |
//! |---|---|
//! | an RPC this server does not serve (another service's), with or without a key | `UNIMPLEMENTED` |
//! | no `authorization`, an unknown, malformed or revoked key, a bad service token | `UNAUTHENTICATED` |
//! | the request's `program_id` is not the key's program | `PERMISSION_DENIED` |
//! | the RPC needs a wider scope, or is internal | `PERMISSION_DENIED` |
//! | the key store does not answer (and the key is not cached) | `UNAVAILABLE` |
//!
//! The program check reads field 1 of the request message, where every RPC
//! open to API keys keeps `program_id` (a test holds every service's
//! descriptors to that), so handlers cannot forget it.

pub mod keys;
mod layer;
mod service;

use std::sync::Arc;
use std::time::Duration;

pub use layer::{AuthLayer, AuthService, UnknownRpc};
pub use service::{SERVICE_TOKEN_PREFIX, ServiceSecret, ServiceSecretError};

use crate::clock::Clock;
use crate::db::{self, DbError};
use crate::tls::TlsArgs;
use keys::{KeyStore, KeyVerifier, Scope, VerifiedKey};

/// `LOYALTY_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every call needs an API key or a service identity.
    Required,
    /// No checks at all: local development only (logged as a warning at start-up).
    Off,
}

/// What an RPC needs of an API key. Service identities may call everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A key of at least this scope, for its own program.
    Key(Scope),
    /// Only the services themselves (ledger stream, expiry runs, tier multipliers).
    Internal,
}

/// The services every loyalty server serves beside its own.
pub const SHARED: &[Policy] = &[crate::privacy::POLICY];

/// The access table of one gRPC service: every method, by name.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Fully qualified service name, e.g. `loyalty.points.v1.PointsService`.
    pub service: &'static str,
    pub methods: &'static [(&'static str, Access)],
}

impl Policy {
    /// The access `/<service>/<method>` needs; `None` for a path not in the
    /// table, nor in the services every server also serves ([`SHARED`]).
    pub fn access(&self, path: &str) -> Option<Access> {
        self.own(path).or_else(|| SHARED.iter().find_map(|shared| shared.own(path)))
    }

    fn own(&self, path: &str) -> Option<Access> {
        let method = path.strip_prefix('/')?.strip_prefix(self.service)?.strip_prefix('/')?;
        self.methods.iter().find(|(name, _)| *name == method).map(|(_, access)| *access)
    }
}

/// Who made the call, put into every request's extensions by [`AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A program's API key.
    Key(Arc<VerifiedKey>),
    /// Another loyalty service (or the gateway), by name.
    Service(String),
    /// `LOYALTY_AUTH=off`: nobody was asked.
    Unchecked,
}

impl Caller {
    /// Who to write into the audit log. A key is recorded by its id whatever
    /// the request claims; a service (the gateway acting for a key) and an
    /// unchecked caller are taken at their word, `claimed` being the request's `actor`.
    pub fn actor(&self, claimed: &str) -> String {
        match self {
            Self::Key(key) => format!("api-key:{}", key.key_id),
            Self::Service(name) if claimed.is_empty() => format!("service:{name}"),
            Self::Service(_) | Self::Unchecked => claimed.to_owned(),
        }
    }
}

/// The audit actor of a request (see [`Caller::actor`]); a request that
/// did not pass through [`AuthLayer`] (a unit test) is unchecked.
pub fn actor<T>(request: &tonic::Request<T>, claimed: &str) -> String {
    request.extensions().get::<Caller>().unwrap_or(&Caller::Unchecked).actor(claimed)
}

/// The authentication settings every service shares.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// `required`: every gRPC call needs `authorization: Bearer <API key>` or a
    /// service identity; `off`: no checks, for local development only.
    #[arg(long, env = "LOYALTY_AUTH", value_name = "LOYALTY_AUTH", value_enum, default_value = "required")]
    pub auth: AuthMode,
    /// The key database: the gateway's `DATABASE_URL` (services only read keys from it).
    #[arg(
        long,
        env = "KEYS_DATABASE_URL",
        value_name = "KEYS_DATABASE_URL",
        default_value = "sqlite://./data/gateway.db",
        hide_env_values = true
    )]
    pub keys_database_url: String,
    /// How long a verified API key is trusted without reading the key database
    /// again, in seconds: a revoked key stops working within this time.
    #[arg(long, env = "LOYALTY_KEY_CACHE_TTL_SECS", value_name = "LOYALTY_KEY_CACHE_TTL_SECS", default_value_t = 30)]
    pub key_cache_ttl_secs: u64,
    /// The secret every service and the gateway share (at least 32 bytes, e.g.
    /// `openssl rand -hex 32`); each derives from it the identity it presents to the others.
    #[arg(long, env = "LOYALTY_SERVICE_SECRET", value_name = "LOYALTY_SERVICE_SECRET", hide_env_values = true)]
    pub service_secret: Option<String>,
    /// Further secrets whose service tokens are accepted (comma-separated), for a rotation without
    /// refusals: first everywhere accept the new one here, then make it `LOYALTY_SERVICE_SECRET` and
    /// accept the old one here, then drop the old one.
    #[arg(
        long,
        env = "LOYALTY_SERVICE_SECRET_ACCEPTED",
        value_name = "LOYALTY_SERVICE_SECRET_ACCEPTED",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub accepted_service_secrets: Vec<String>,
}

impl AuthArgs {
    /// No checks (the command line's default is `required`): in-process tests and tools.
    pub fn off() -> Self {
        Self {
            auth: AuthMode::Off,
            keys_database_url: "sqlite://./data/gateway.db".into(),
            key_cache_ttl_secs: 30,
            service_secret: None,
            accepted_service_secrets: Vec::new(),
        }
    }

    /// Checks on, keys from `keys_database_url`, identity from `service_secret`.
    pub fn required(keys_database_url: &str, service_secret: &str) -> Self {
        Self {
            auth: AuthMode::Required,
            keys_database_url: keys_database_url.to_owned(),
            key_cache_ttl_secs: 30,
            service_secret: Some(service_secret.to_owned()),
            accepted_service_secrets: Vec::new(),
        }
    }
}

/// Caller checks and TLS, flattened into every service's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "LOYALTY_SERVICE_SECRET is not set: with LOYALTY_AUTH=required the services need a shared secret to \
         prove who they are to each other (the same value everywhere, e.g. `openssl rand -hex 32`); \
         or set LOYALTY_AUTH=off for local development"
    )]
    MissingServiceSecret,
    #[error("LOYALTY_SERVICE_SECRET: {0}")]
    ServiceSecret(#[from] ServiceSecretError),
    #[error("LOYALTY_SERVICE_SECRET_ACCEPTED: {0}")]
    AcceptedServiceSecret(ServiceSecretError),
    #[error("KEYS_DATABASE_URL: {0}")]
    KeysDatabase(#[from] DbError),
}

/// Everything a service needs to check callers and to present itself to other services.
#[derive(Clone)]
pub struct Security {
    pub(crate) checks: Checks,
    /// What this service presents to the others, when it has a secret.
    identity: Option<ServiceSecret>,
    /// This service's name, the identity it presents.
    name: &'static str,
}

#[derive(Clone)]
pub(crate) enum Checks {
    Off,
    /// `services`: the secret this service presents first, then the ones also accepted.
    Required {
        keys: Arc<KeyVerifier>,
        services: Arc<[ServiceSecret]>,
    },
}

impl Security {
    /// Checks the settings and connects (lazily) to the key database. With
    /// `off`, warns that every RPC is open.
    pub async fn setup(name: &'static str, args: &AuthArgs, clock: Arc<dyn Clock>) -> Result<Self, AuthSetupError> {
        let identity = args.service_secret.as_deref().map(ServiceSecret::new).transpose()?;
        let checks = match args.auth {
            AuthMode::Off => {
                tracing::warn!(
                    service = name,
                    "LOYALTY_AUTH=off: every RPC is open to anyone who can reach the port; never run so in production"
                );
                Checks::Off
            }
            AuthMode::Required => {
                let current = identity.clone().ok_or(AuthSetupError::MissingServiceSecret)?;
                let accepted = args.accepted_service_secrets.iter().filter(|s| !s.trim().is_empty());
                let services = std::iter::once(Ok(current))
                    .chain(accepted.map(|s| ServiceSecret::new(s).map_err(AuthSetupError::AcceptedServiceSecret)))
                    .collect::<Result<Arc<[_]>, _>>()?;
                // Lazily: calls between services need no key store, so its outage must not stop a start.
                // A caller waiting on this pool waits for an answer, not for a slow failure.
                let database = db::connect_lazy(&args.keys_database_url, db::PoolSettings::new(2, 2_000))?;
                let ttl = Duration::from_secs(args.key_cache_ttl_secs);
                Checks::Required { keys: Arc::new(KeyVerifier::new(KeyStore::new(database), ttl, clock)), services }
            }
        };
        Ok(Self { checks, identity, name })
    }

    pub fn mode(&self) -> AuthMode {
        match self.checks {
            Checks::Off => AuthMode::Off,
            Checks::Required { .. } => AuthMode::Required,
        }
    }

    /// The token this service sends to other services, if it has an identity.
    pub fn outbound_token(&self) -> Option<String> {
        self.identity.as_ref().map(|secret| secret.token(self.name))
    }

    /// The layer that checks callers against `policy`.
    pub fn layer(&self, policy: Policy) -> AuthLayer {
        AuthLayer::new(self.clone(), policy)
    }
}
