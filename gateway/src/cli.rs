//! The command line: serving (the default) and managing API keys. The key
//! commands call the same [`KeyStore`] the tests use.

use std::io::Write;

use loyalty_common::clock::Micros;

use crate::Config;
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
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The gateway's database, where keys are kept.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://./data/gateway.db",
        hide_env_values = true
    )]
    pub database_url: String,
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
    /// Revoke a key by its id; gateways stop accepting it within GATEWAY_KEY_CACHE_TTL_SECS.
    Revoke {
        /// The key id, as `keys list` shows it.
        key_id: String,
    },
}

/// Runs a `keys` subcommand, writing results to `out` and notes to standard error.
pub async fn run_keys(args: KeysArgs, out: &mut impl Write) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = KeyStore::open(&args.database_url, 2).await.map_err(|e| format!("DATABASE_URL: {e}"))?;
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

fn when(at: Option<Micros>) -> String {
    // Whole seconds are enough for a listing.
    at.map_or_else(|| "-".to_owned(), |micros| rfc3339::format(micros - micros.rem_euclid(1_000_000)))
}
