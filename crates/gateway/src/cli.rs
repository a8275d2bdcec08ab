//! Command line: `serve`, `accounts …`, `login`. The only place that prints to stdout and uses `anyhow`.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::account::NewAccount;
use crate::clock::{rfc3339, SystemClock};
use crate::config::{Config, LogFormat};
use crate::store::{self, AccountUpdate, SharedStore};

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
    if let Command::Store(StoreCommand::Migrate {
        from: Some(from),
        to,
    }) = &cli.command
    {
        let (source, target) = (open_location(from).await?, open_location(to).await?);
        let (copied, skipped) = migrate(source.as_ref(), target.as_ref()).await?;
        println!(
            "Copied {copied} account(s) from {} to {}; skipped {skipped} already present",
            source.describe(),
            target.describe()
        );
        return Ok(());
    }
    let store = store::open(&config)
        .await
        .with_context(|| format!("opening the store ({origin})"))?;
    match cli.command {
        Command::Serve => serve(config, origin, store).await,
        Command::Accounts(cmd) => accounts(cmd, store).await,
        Command::Store(StoreCommand::Migrate { from, to }) => {
            let source = match from {
                Some(from) => open_location(&from).await?,
                None => store,
            };
            let target = open_location(&to).await?;
            let (copied, skipped) = migrate(source.as_ref(), target.as_ref()).await?;
            println!(
                "Copied {copied} account(s) from {} to {}; skipped {skipped} already present",
                source.describe(),
                target.describe()
            );
            Ok(())
        }
        Command::Login { name } => {
            let http = crate::state::http_client(&config)?;
            let client =
                crate::oauth::OAuthClient::new(http, config.oauth.clone(), Arc::new(SystemClock));
            let (account, saved) =
                crate::login::login(&client, store.as_ref(), name.as_deref(), |line| {
                    println!("{line}")
                })
                .await?;
            println!(
                "{} OAuth account {} (id {}){}",
                if saved == crate::import::Saved::Created {
                    "Added"
                } else {
                    "Updated"
                },
                account.name,
                account.id,
                account
                    .email
                    .as_deref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}

async fn serve(config: Config, origin: String, store: SharedStore) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let listen = config.listen;
    let open = config.client_keys.is_empty();
    let state = crate::state::build_state(config, store.clone(), Arc::new(SystemClock), metrics)?;
    state.pool().sync().await.context("loading accounts")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let accounts = state.pool().entries().len();
    tracing::info!(config = %origin, store = %store.describe(), accounts, "listening on http://{addr}");
    if open {
        tracing::warn!("no client_keys configured: any local client may use the gateway (allowed on loopback only)");
    }
    if accounts == 0 {
        tracing::warn!(
            "no upstream accounts yet. Add one with:\n  claude-gateway accounts add-key --name NAME sk-ant-api03-…\n  claude-gateway login\n  claude-gateway accounts import ~/.claude/.credentials.json"
        );
    }
    let shutdown = CancellationToken::new();
    #[allow(clippy::disallowed_methods)] // awaited below at shutdown
    let background = tokio::spawn(crate::server::background(state.clone(), shutdown.clone()));
    let engine = state.pool().engine().clone();
    let app = crate::server::router(state);
    let signal = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        })
        .await?;
    shutdown.cancel();
    let _ = background.await;
    // A refresh in flight must finish (and persist its rotation) before the process exits.
    engine.tasks().close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), engine.tasks().wait()).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn accounts(cmd: AccountsCommand, store: SharedStore) -> anyhow::Result<()> {
    match cmd {
        AccountsCommand::AddKey {
            name,
            key,
            priority,
            weight,
        } => {
            let key = if key == "-" {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                s.trim().to_string()
            } else {
                key
            };
            anyhow::ensure!(!key.is_empty(), "the API key is empty");
            anyhow::ensure!(weight > 0, "--weight must be at least 1");
            let a = store
                .insert_account(NewAccount {
                    priority,
                    weight,
                    ..NewAccount::api_key(name, key)
                })
                .await?;
            println!("Added API-key account {} (id {})", a.name, a.id);
        }
        AccountsCommand::List { json } => {
            let accounts = store.list_accounts().await?;
            if json {
                let list: Vec<_> = accounts
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "id": a.id, "name": a.name, "kind": a.kind.as_str(), "disabled": a.disabled,
                            "needs_reauth": a.needs_reauth, "expires_at": a.credential.expires_at.map(rfc3339),
                            "email": a.email, "organization": a.organization_name, "priority": a.priority,
                            "weight": a.weight, "max_concurrency": a.max_concurrency, "last_error": a.last_error,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "accounts": list }))?
                );
            } else if accounts.is_empty() {
                println!("No accounts. Add one with `claude-gateway accounts add-key --name NAME KEY`, `claude-gateway login` or `claude-gateway accounts import PATH`.");
            } else {
                println!(
                    "  ID  {:<32} {:<8} {:<13} {:<21} EMAIL",
                    "NAME", "KIND", "STATE", "EXPIRES"
                );
                for a in accounts {
                    let state = if a.disabled {
                        "disabled"
                    } else if a.needs_reauth.is_some() {
                        "needs_reauth"
                    } else {
                        "enabled"
                    };
                    println!(
                        "{:>4}  {:<32} {:<8} {:<13} {:<21} {}",
                        a.id,
                        a.name,
                        a.kind.as_str(),
                        state,
                        a.credential
                            .expires_at
                            .map(rfc3339)
                            .unwrap_or_else(|| "-".into()),
                        a.email.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        AccountsCommand::Remove { account } => {
            let a = store::find_account(store.as_ref(), &account).await?;
            store.remove_account(a.id).await?;
            println!("Removed account {} (id {})", a.name, a.id);
        }
        AccountsCommand::Disable { account } => {
            let a = store::find_account(store.as_ref(), &account).await?;
            store
                .update_account(
                    a.id,
                    a.version,
                    AccountUpdate {
                        disabled: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            println!("Disabled account {} (id {})", a.name, a.id);
        }
        AccountsCommand::Set {
            account,
            name,
            priority,
            weight,
            max_concurrency,
        } => {
            anyhow::ensure!(weight != Some(0), "--weight must be at least 1");
            let a = store::find_account(store.as_ref(), &account).await?;
            let update = AccountUpdate {
                name,
                priority,
                weight,
                max_concurrency: max_concurrency.map(|n| (n > 0).then_some(n)),
                ..Default::default()
            };
            let a = store.update_account(a.id, a.version, update).await?;
            println!(
                "Account {} (id {}): priority {}, weight {}, max concurrency {}",
                a.name,
                a.id,
                a.priority,
                a.weight,
                a.max_concurrency
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "unlimited".into())
            );
        }
        AccountsCommand::Enable { account } => {
            let a = store::find_account(store.as_ref(), &account).await?;
            let update = AccountUpdate {
                disabled: Some(false),
                needs_reauth: Some(None),
                ..Default::default()
            };
            store.update_account(a.id, a.version, update).await?;
            println!("Enabled account {} (id {})", a.name, a.id);
        }
        AccountsCommand::Import { paths, name } => {
            let mut all = Vec::new();
            for p in &paths {
                let (found, skipped) = crate::import::read_path(p)?;
                for s in skipped {
                    println!("skipped {s}");
                }
                all.extend(found);
            }
            anyhow::ensure!(
                !all.is_empty(),
                "no Claude credentials found in {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            anyhow::ensure!(
                name.is_none() || all.len() == 1,
                "--name needs exactly one credential, found {}",
                all.len()
            );
            for c in &all {
                let (a, saved) = crate::import::save(store.as_ref(), c, name.as_deref()).await?;
                let kind = if c.credential.refresh_token.is_some() {
                    "OAuth"
                } else {
                    "setup-token"
                };
                println!(
                    "{} {kind} account {} (id {}) from {}",
                    if saved == crate::import::Saved::Created {
                        "Imported"
                    } else {
                        "Updated"
                    },
                    a.name,
                    a.id,
                    c.source.display()
                );
            }
        }
    }
    Ok(())
}

/// Opens a store named by a postgres:// URL or a data directory.
async fn open_location(location: &str) -> anyhow::Result<SharedStore> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(Arc::new(
            crate::store::postgres::PostgresStore::connect(location).await?,
        ))
    } else {
        Ok(Arc::new(
            crate::store::sqlite::SqliteStore::open(std::path::Path::new(location)).await?,
        ))
    }
}

/// Copies accounts, preserving credentials and state; returns (copied, skipped).
pub async fn migrate(
    source: &dyn store::Store,
    target: &dyn store::Store,
) -> anyhow::Result<(usize, usize)> {
    let existing: std::collections::HashSet<String> = target
        .list_accounts()
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect();
    let (mut copied, mut skipped) = (0, 0);
    for a in source.list_accounts().await? {
        if existing.contains(&a.name) {
            skipped += 1;
            continue;
        }
        let created = target
            .insert_account(NewAccount {
                name: a.name.clone(),
                kind: a.kind,
                credential: a.credential.clone(),
                email: a.email.clone(),
                account_uuid: a.account_uuid.clone(),
                organization_uuid: a.organization_uuid.clone(),
                organization_name: a.organization_name.clone(),
                priority: a.priority,
                weight: a.weight,
                disabled: a.disabled,
            })
            .await?;
        let update = AccountUpdate {
            needs_reauth: Some(a.needs_reauth.clone()),
            last_error: Some(a.last_error.clone()),
            max_concurrency: Some(a.max_concurrency),
            ..Default::default()
        };
        target
            .update_account(created.id, created.version, update)
            .await?;
        copied += 1;
    }
    Ok((copied, skipped))
}
