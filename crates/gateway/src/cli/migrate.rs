//! `store migrate`: copy every account from one store to another.

use std::sync::Arc;

use crate::account::NewAccount;
use crate::store::{self, AccountUpdate, SharedStore};

/// Copies accounts from `source` (the configured store when `None`) to `to`, and says what it did.
pub(super) async fn run(
    configured: Option<SharedStore>,
    from: Option<&str>,
    to: &str,
    config: &crate::config::Config,
) -> anyhow::Result<()> {
    // Both ends use the configured store key (none: plain text).
    let encryption = store::configured_encryption(config)?;
    let source = match (from, configured) {
        (Some(from), _) => open_location(from, &encryption).await?,
        (None, Some(store)) => store,
        (None, None) => anyhow::bail!("no source store: pass --from"),
    };
    let target = open_location(to, &encryption).await?;
    let (copied, skipped) = migrate(source.as_ref(), target.as_ref()).await?;
    println!(
        "Copied {copied} account(s) from {} to {}; skipped {skipped} already present",
        source.describe(),
        target.describe()
    );
    Ok(())
}

/// Opens a store named by a postgres:// URL or a data directory.
async fn open_location(
    location: &str,
    encryption: &store::encryption::Encryption,
) -> anyhow::Result<SharedStore> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(Arc::new(
            crate::store::postgres::PostgresStore::connect(location)
                .await?
                .with_encryption(encryption.clone()),
        ))
    } else {
        Ok(Arc::new(
            crate::store::sqlite::SqliteStore::open(std::path::Path::new(location))
                .await?
                .with_encryption(encryption.clone()),
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
                identity: a.identity.clone(),
                priority: a.priority,
                weight: a.weight,
                disabled: a.disabled,
            })
            .await?;
        let update = AccountUpdate {
            needs_reauth: store::Patch::to(a.needs_reauth.clone()),
            banned: store::Patch::to(a.banned.clone()),
            last_error: store::Patch::to(a.last_error.clone()),
            max_concurrency: store::Patch::to(a.max_concurrency),
            ..Default::default()
        };
        target
            .update_account(created.id, created.version, update)
            .await?;
        copied += 1;
    }
    Ok((copied, skipped))
}
