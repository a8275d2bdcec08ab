//! Creating, changing and revoking keys: the one path the CLI (`keys …`) and the admin API (`/admin/keys`) share, so
//! both validate alike and show the same view.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::{valid_name, ClientKey, KeyLimits, KeyPatch, NewKey, Secret};
use crate::store::tenants::{find_key, TenantStore};
use crate::store::StoreError;

/// What a new key is: name, note, limits, expiry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub limits: KeyLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The view of a key the CLI and the admin API show (never the key or its hash).
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    #[serde(flatten)]
    pub key: ClientKey,
    /// `active`, `disabled` or `expired`.
    pub state: &'static str,
}

impl KeyView {
    pub fn of(key: ClientKey, now: DateTime<Utc>) -> KeyView {
        let state = if !key.enabled {
            "disabled"
        } else if key.expired(now) {
            "expired"
        } else {
            "active"
        };
        KeyView { key, state }
    }
}

/// Creates a key; the secret is returned once and never stored.
pub async fn create(
    store: &dyn TenantStore,
    spec: KeySpec,
) -> Result<(ClientKey, Secret), KeyError> {
    let name = valid_name(&spec.name).map_err(KeyError::Invalid)?;
    spec.limits.validate().map_err(KeyError::Invalid)?;
    let (new, secret) = NewKey::generate(name, spec.note, spec.limits, spec.expires_at);
    let key = store.insert_key(new).await?;
    Ok((key, secret))
}

/// Applies `patch` to the key named or numbered `id_or_name`.
pub async fn update(
    store: &dyn TenantStore,
    id_or_name: &str,
    patch: KeyPatch,
) -> Result<ClientKey, KeyError> {
    let mut key = find_key(store, id_or_name).await?;
    patch.apply(&mut key).map_err(KeyError::Invalid)?;
    Ok(store.update_key(key).await?)
}

/// Deletes the key: every replica refuses it after its next reload (within a second). Its usage records stay.
pub async fn revoke(store: &dyn TenantStore, id_or_name: &str) -> Result<ClientKey, KeyError> {
    let key = find_key(store, id_or_name).await?;
    store.remove_key(key.id).await?;
    Ok(key)
}
