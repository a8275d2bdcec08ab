//! `claude-gateway keys …` and `claude-gateway usage`: one short function per subcommand over `keys::manage`, the
//! same path the admin API takes.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

use crate::clock::rfc3339;
use crate::keys::limits::LimitsPatch;
use crate::keys::{KeyLimits, KeyPatch};
use crate::patch::Patch;
use crate::store::tenants::{GroupBy, TenantStore, UsageQuery};
use crate::store::SharedStore;
use crate::tenants::manage::{self, KeySpec, KeyView};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a client key; the key is printed once, alone on the last line.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires: Option<DateTime<Utc>>,
    },
    /// List client keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key (by id or name): every replica refuses it within a second. Its usage records stay.
    Revoke { key: String },
    /// Change a key's name, note, limits, expiry or state. A limit of 0 (or an empty glob list) removes it.
    Set {
        key: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[arg(long, conflicts_with = "no_expiry")]
        expires: Option<DateTime<Utc>>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Model globs the key may use, comma-separated (`claude-sonnet-*,claude-haiku-*`).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Account-name globs the key may be served by, comma-separated.
    #[arg(long, value_delimiter = ',')]
    accounts: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u64>,
    /// Concurrent requests.
    #[arg(long)]
    concurrency: Option<u64>,
    /// Tokens per UTC day (input, output, cache writes and reads).
    #[arg(long)]
    tokens_per_day: Option<u64>,
    /// Spend per UTC month in USD.
    #[arg(long)]
    usd_per_month: Option<f64>,
}

fn globs(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect()
}

impl LimitArgs {
    fn limits(self) -> KeyLimits {
        KeyLimits {
            models: self.models.map(globs).unwrap_or_default(),
            accounts: self.accounts.map(globs).unwrap_or_default(),
            rpm: self.rpm.filter(|n| *n > 0),
            concurrency: self.concurrency.filter(|n| *n > 0),
            tokens_per_day: self.tokens_per_day.filter(|n| *n > 0),
            usd_per_month: self.usd_per_month,
        }
    }

    fn patch(self) -> LimitsPatch {
        // 0 means no limit: it clears.
        let nonzero = |v: Option<u64>| v.map_or(Patch::Keep, |n| Patch::to((n > 0).then_some(n)));
        LimitsPatch {
            models: self.models.map(globs),
            accounts: self.accounts.map(globs),
            rpm: nonzero(self.rpm),
            concurrency: nonzero(self.concurrency),
            tokens_per_day: nonzero(self.tokens_per_day),
            usd_per_month: self
                .usd_per_month
                .map_or(Patch::Keep, |u| Patch::to((u > 0.0).then_some(u))),
        }
    }
}

fn tenants(store: &SharedStore) -> anyhow::Result<&dyn TenantStore> {
    store
        .tenants()
        .with_context(|| format!("{} keeps no client keys", store.describe()))
}

pub async fn run(cmd: KeysCommand, store: SharedStore) -> anyhow::Result<()> {
    let t = tenants(&store)?;
    match cmd {
        KeysCommand::Create {
            name,
            note,
            limits,
            expires,
        } => {
            let spec = KeySpec {
                name,
                note,
                expires_at: expires,
                limits: limits.limits(),
            };
            let (key, secret) = manage::create(t, spec).await?;
            println!(
                "Created client key {} (id {}, prefix {}). It is shown only now:",
                key.name, key.id, key.prefix
            );
            println!("{}", secret.0);
        }
        KeysCommand::List { json } => list(t, json).await?,
        KeysCommand::Revoke { key } => {
            let k = manage::revoke(t, &key).await?;
            println!("Revoked client key {} (id {})", k.name, k.id);
        }
        KeysCommand::Set {
            key,
            name,
            note,
            limits,
            expires,
            no_expiry,
            enable,
            disable,
        } => {
            let patch = KeyPatch {
                name,
                // An empty note clears it.
                note: note.map_or(Patch::Keep, |n| Patch::to((!n.is_empty()).then_some(n))),
                enabled: (enable || disable).then_some(enable),
                expires_at: if no_expiry {
                    Patch::Clear
                } else {
                    Patch::set_some(expires)
                },
                limits: limits.patch(),
            };
            let k = manage::update(t, &key, patch).await?;
            println!(
                "Client key {} (id {}): {}",
                k.name,
                k.id,
                describe_limits(&k.limits)
            );
        }
    }
    Ok(())
}

fn describe_limits(l: &KeyLimits) -> String {
    let mut parts = Vec::new();
    if !l.models.is_empty() {
        parts.push(format!("models {}", l.models.join(",")));
    }
    if !l.accounts.is_empty() {
        parts.push(format!("accounts {}", l.accounts.join(",")));
    }
    let mut num = |label: &str, v: Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{label} {v}"));
        }
    };
    num("rpm", l.rpm.map(|n| n.to_string()));
    num("concurrency", l.concurrency.map(|n| n.to_string()));
    num("tokens/day", l.tokens_per_day.map(|n| n.to_string()));
    num("usd/month", l.usd_per_month.map(|n| format!("{n:.2}")));
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(", ")
    }
}

async fn list(t: &dyn TenantStore, json: bool) -> anyhow::Result<()> {
    let now = crate::clock::system_now();
    let views: Vec<KeyView> = t
        .list_keys()
        .await?
        .into_iter()
        .map(|k| KeyView::of(k, now))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "keys": views }))?
        );
        return Ok(());
    }
    if views.is_empty() {
        println!("No client keys. Create one with `claude-gateway keys create --name NAME`.");
        return Ok(());
    }
    println!(
        "  ID  {:<24} {:<14} {:<9} {:<21} LIMITS",
        "NAME", "PREFIX", "STATE", "LAST USED"
    );
    for v in views {
        let k = &v.key;
        println!(
            "{:>4}  {:<24} {:<14} {:<9} {:<21} {}",
            k.id,
            k.name,
            k.prefix,
            v.state,
            k.last_used_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            describe_limits(&k.limits)
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum By {
    Key,
    Account,
    Model,
}

/// `5m`, `24h`, `7d` before now, or an RFC 3339 time.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .with_context(|| format!("--since {s:?}: use 30m, 24h, 7d or an RFC 3339 time"))?;
    let d = match unit {
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => anyhow::bail!("--since {s:?}: use 30m, 24h, 7d or an RFC 3339 time"),
    };
    Ok(now - d)
}

pub async fn usage(store: SharedStore, by: By, since: &str) -> anyhow::Result<()> {
    let t = tenants(&store)?;
    let now = crate::clock::system_now();
    let from = parse_since(since, now)?;
    let group_by = match by {
        By::Key => GroupBy::Key,
        By::Account => GroupBy::Account,
        By::Model => GroupBy::Model,
    };
    let hour = |d: DateTime<Utc>| {
        DateTime::<Utc>::from_timestamp_millis(
            d.timestamp_millis().div_euclid(3_600_000) * 3_600_000,
        )
        .unwrap_or(d)
    };
    let rows = t
        .usage(UsageQuery {
            group_by,
            from: hour(from),
            to: now + chrono::Duration::hours(1),
            bucket: None,
        })
        .await?;
    println!(
        "{:<32} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        format!("{by:?}").to_uppercase(),
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHE_W_5M",
        "CACHE_W_1H",
        "CACHE_READ",
        "COST_USD"
    );
    for r in rows {
        let cost = format!("{:.6}", r.cost_nanos as f64 / 1e9);
        let cost = if r.cost_unknown_requests > 0 {
            format!("{cost}+?")
        } else {
            cost
        };
        println!(
            "{:<32} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            r.name,
            r.requests,
            r.tokens.input,
            r.tokens.output,
            r.tokens.cache_creation_5m,
            r.tokens.cache_creation_1h,
            r.tokens.cache_read,
            cost
        );
    }
    Ok(())
}
