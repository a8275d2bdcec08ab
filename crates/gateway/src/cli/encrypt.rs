//! `store encrypt` and `store rotate-key`: sealing the credentials of an existing store, and moving them to a new key.

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::store::encryption::{Encryption, KEY_ENV};
use crate::store::{self, AccountUpdate, Store};

/// The environment variable `store rotate-key` reads the new key from when `--new-key-file` is not given.
pub const NEW_KEY_ENV: &str = "CLAUDE_GATEWAY_NEW_STORE_KEY";

/// Writes every account's credentials sealed with the configured key (plain ones become encrypted).
pub(super) async fn encrypt(config: &Config) -> anyhow::Result<()> {
    let key = configured_key(config)?;
    let store = store::open_with(config, key.clone())
        .await
        .context("opening the store")?;
    let n = reseal(store.as_ref()).await?;
    println!(
        "Encrypted the credentials of {n} account(s) in {} with key {}",
        store.describe(),
        key.key_id().unwrap_or("?")
    );
    Ok(())
}

/// Moves every account's credentials from the configured key to the new one.
pub(super) async fn rotate(config: &Config, new_key_file: Option<&Path>) -> anyhow::Result<()> {
    let old = configured_key(config)?;
    let new = match new_key_file {
        Some(path) => Encryption::from_file(path)?,
        None => match std::env::var(NEW_KEY_ENV) {
            Ok(text) => Encryption::from_text(&text, NEW_KEY_ENV)?,
            Err(_) => anyhow::bail!(
                "store rotate-key needs the new key: pass --new-key-file PATH or set {NEW_KEY_ENV}"
            ),
        },
    };
    anyhow::ensure!(
        new.key_id() != old.key_id(),
        "the new key is the configured key"
    );
    let store = store::open_with(config, new.clone().reading(&old))
        .await
        .context("opening the store")?;
    let n = reseal(store.as_ref()).await?;
    println!(
        "Moved the credentials of {n} account(s) in {} from key {} to key {}; configure the new key before the next start",
        store.describe(),
        old.key_id().unwrap_or("?"),
        new.key_id().unwrap_or("?")
    );
    Ok(())
}

fn configured_key(config: &Config) -> anyhow::Result<Encryption> {
    let key = Encryption::from_env_or_file(config.store_key_file.as_deref())?;
    anyhow::ensure!(
        key.is_enabled(),
        "no store key is configured: set {KEY_ENV} or store_key_file (a file holding 32 bytes as 64 hex digits or base64)"
    );
    Ok(key)
}

/// Rewrites every account's credentials through `store` (which seals with its key), then scrubs what the store keeps
/// of the old values. Returns how many accounts were rewritten.
async fn reseal(store: &dyn Store) -> anyhow::Result<usize> {
    let accounts = store.list_accounts().await?;
    for a in &accounts {
        let update = AccountUpdate {
            credential: Some(a.credential.clone()),
            ..Default::default()
        };
        store
            .update_account(a.id, a.version, update)
            .await
            .with_context(|| format!("rewriting account {}", a.name))?;
    }
    store.scrub().await?;
    Ok(accounts.len())
}
