//! Command line: parsing and dispatch; each subcommand lives in `cli/` (`serve`, `accounts`, `migrate`). The only place
//! that prints to stdout and uses `anyhow`.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::{Config, LogFormat};
use crate::store::{self, SharedStore};
use anyhow::Context;
use clap::{Parser, Subcommand};

mod accounts;
mod encrypt;
mod keys;
mod migrate;
mod serve;

#[derive(Debug, Parser)]
#[command(
    name = "claude-gateway",
    version,
    about = "An HTTP gateway in front of the Anthropic Claude API"
)]
pub struct Cli {
    /// Config file (TOML). Default: ./claude-gateway.toml if present, else built-in defaults.
    #[arg(long, global = true, env = "CLAUDE_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Manage upstream accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Store maintenance.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Manage client keys (tenants with limits).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Usage and cost per key, account or model.
    Usage {
        #[arg(long, value_enum, default_value = "key")]
        by: keys::By,
        /// `30m`, `24h`, `7d` before now, or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
    },
    /// Add an OAuth account by signing in (authorization code + PKCE).
    Login {
        /// Account name (default: the account's email).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every account (credentials, flags, settings) from one store to another, e.g. from the embedded store into
    /// PostgreSQL before running several replicas. Accounts whose name already exists in the target are skipped.
    Migrate {
        /// Source: a data directory (embedded SQLite store) or a postgres:// URL. Default: the configured store.
        #[arg(long)]
        from: Option<String>,
        /// Target: a postgres:// URL or a data directory.
        #[arg(long)]
        to: String,
    },
    /// Encrypt every credential in the configured store with the configured key (`CLAUDE_GATEWAY_STORE_KEY` or
    /// `store_key_file`). Stop the gateway first.
    Encrypt,
    /// Re-encrypt every credential with a new key; then configure the new key. Stop the gateway first.
    RotateKey {
        /// A file holding the new key (default: the `CLAUDE_GATEWAY_NEW_STORE_KEY` environment variable).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an Anthropic API key.
    AddKey {
        #[arg(long)]
        name: String,
        /// The API key (sk-ant-api03-…); `-` reads it from standard input.
        key: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an account (by id or name).
    Remove { account: String },
    /// Stop using an account.
    Disable { account: String },
    /// Change an account's scheduling settings.
    Set {
        account: String,
        #[arg(long)]
        name: Option<String>,
        /// Lower tiers are used first.
        #[arg(long)]
        priority: Option<i32>,
        /// Share of traffic within its tier.
        #[arg(long)]
        weight: Option<u32>,
        /// Most concurrent upstream requests (0 = unlimited).
        #[arg(long)]
        max_concurrency: Option<u32>,
    },
    /// Use an account again (also clears a needs-reauth flag set by an upstream 401/403).
    Enable { account: String },
    /// Import Claude Code `.credentials.json`, CLIProxyAPI `claude-*.json` files, directories of them, or setup tokens.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Name for the account (only with a single credential).
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CLAUDE_GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (config, origin) = Config::load(cli.config.as_deref())?;
    init_tracing(config.log_format);
    // Migrating from an explicit source never needs the configured store (which may be the one being replaced).
    if let Command::Store(StoreCommand::Migrate {
        from: Some(from),
        to,
    }) = &cli.command
    {
        return migrate::run(None, Some(from), to, &config).await;
    }
    match &cli.command {
        Command::Store(StoreCommand::Encrypt) => return encrypt::encrypt(&config).await,
        Command::Store(StoreCommand::RotateKey { new_key_file }) => {
            return encrypt::rotate(&config, new_key_file.as_deref()).await
        }
        _ => {}
    }
    let store = store::open(&config)
        .await
        .with_context(|| format!("opening the store ({origin})"))?;
    match cli.command {
        Command::Serve => serve::serve(config, origin, store).await,
        Command::Accounts(cmd) => accounts::run(cmd, store).await,
        Command::Keys(cmd) => keys::run(cmd, store).await,
        Command::Usage { by, since } => keys::usage(store, by, &since).await,
        Command::Store(StoreCommand::Migrate { from, to }) => {
            migrate::run(Some(store), from.as_deref(), &to, &config).await
        }
        Command::Store(StoreCommand::Encrypt | StoreCommand::RotateKey { .. }) => Ok(()),
        Command::Login { name } => login(&config, store, name.as_deref()).await,
    }
}

async fn login(config: &Config, store: SharedStore, name: Option<&str>) -> anyhow::Result<()> {
    let http = crate::state::http_client(config)?;
    let client = crate::oauth::OAuthClient::new(http, config.oauth.clone(), Arc::new(SystemClock));
    let (account, saved) =
        crate::login::login(&client, store.as_ref(), name, |line| println!("{line}")).await?;
    println!(
        "{} OAuth account {} (id {}){}",
        if saved == crate::store::Saved::Created {
            "Added"
        } else {
            "Updated"
        },
        account.name,
        account.id,
        account
            .identity
            .email
            .as_deref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub use migrate::migrate;
