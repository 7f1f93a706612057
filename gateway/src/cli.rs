//! The command line: serving (the default), managing API keys and rotating
//! customer token secrets. The commands call the same stores the tests use.

use std::io::Write;

use loyalty_common::clock::Micros;

use crate::Config;
use crate::customer::CustomerSecrets;
use crate::keys::{KeyInfo, KeyStore, Scope};
use crate::rfc3339;

#[derive(Debug, clap::Parser)]
#[command(
    name = "loyalty-gateway",
    version,
    about = "The loyalty HTTP/JSON API for shops and storefront widgets, in front of the gRPC services.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving settings, when no subcommand is given.
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve(Box<Config>),
    /// Create, list and revoke API keys.
    Keys(KeysArgs),
    /// Manage the secret a shop's back end signs customer tokens with.
    CustomerSecret(CustomerSecretArgs),
}

/// The gateway's database, where API keys and customer token secrets are kept.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The gateway's database (also the services' `KEYS_DATABASE_URL`).
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://./data/gateway.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct CustomerSecretArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: CustomerSecretAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum CustomerSecretAction {
    /// Make a new secret for a program and print it once (64 hex digits) on standard output.
    /// Tokens signed with the old secret stop working within GATEWAY_CUSTOMER_SECRET_CACHE_TTL_SECS.
    Rotate {
        /// The program (tenant) the secret belongs to.
        #[arg(long)]
        program: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysAction {
    /// Create a key and print it once on standard output; only its hash is kept.
    Create {
        /// The program (tenant) the key belongs to.
        #[arg(long)]
        program: String,
        /// What the key may do; each scope includes the ones below it (admin > server > storefront).
        #[arg(long, value_enum)]
        scope: Scope,
        /// A note for people, e.g. which shop or widget uses the key.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a program's keys (never their secrets).
    List {
        #[arg(long)]
        program: String,
    },
    /// Revoke a key by its id; the gateway and every service stop accepting it within their key cache TTL
    /// (GATEWAY_KEY_CACHE_TTL_SECS, LOYALTY_KEY_CACHE_TTL_SECS: 30 s by default).
    Revoke {
        /// The key id, as `keys list` shows it.
        key_id: String,
    },
}

/// Runs a `keys` subcommand, writing results to `out` and notes to standard error.
pub async fn run_keys(args: KeysArgs, out: &mut impl Write) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = KeyStore::open(&args.store.database_url, 2).await.map_err(|e| format!("DATABASE_URL: {e}"))?;
    match args.action {
        KeysAction::Create { program, scope, label } => {
            let key = store.create(&program, scope, &label).await?;
            // The key alone on standard output, so scripts can capture it.
            writeln!(out, "{}", key.key)?;
            eprintln!(
                "created key {} for program {} with scope {}; it is shown only now, store it safely",
                key.key_id, key.program_id, key.scope
            );
        }
        KeysAction::List { program } => {
            writeln!(out, "{:<16}  {:<10}  {:<20}  {:<20}  label", "key id", "scope", "created", "revoked")?;
            for key in store.list(&program).await? {
                let KeyInfo { key_id, scope, created_at, revoked_at, label, .. } = key;
                writeln!(
                    out,
                    "{key_id:<16}  {scope:<10}  {:<20}  {:<20}  {label}",
                    when(Some(created_at)),
                    when(revoked_at)
                )?;
            }
        }
        KeysAction::Revoke { key_id } => {
            if !store.revoke(&key_id).await? {
                return Err(format!("no key {key_id:?}").into());
            }
            writeln!(out, "revoked key {key_id}")?;
        }
    }
    Ok(())
}

/// Runs a `customer-secret` subcommand, writing the secret to `out` and notes to standard error.
pub async fn run_customer_secret(
    args: CustomerSecretArgs,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Opening the key store applies the migrations the secrets table is part of.
    let store = KeyStore::open(&args.store.database_url, 2).await.map_err(|e| format!("DATABASE_URL: {e}"))?;
    let secrets = CustomerSecrets::new(store.database().clone());
    match args.action {
        CustomerSecretAction::Rotate { program } => {
            let secret = secrets.rotate(&program).await?;
            writeln!(out, "{secret}")?;
            eprintln!(
                "new customer token secret for program {program}; it is shown only now: give it to the shop's \
                 back end, which signs customer tokens with it"
            );
        }
    }
    Ok(())
}

fn when(at: Option<Micros>) -> String {
    // Whole seconds are enough for a listing.
    at.map_or_else(|| "-".to_owned(), |micros| rfc3339::format(micros - micros.rem_euclid(1_000_000)))
}
