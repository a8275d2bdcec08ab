//! Importing credential files people already have: Claude Code's `.credentials.json` (also setup tokens, which have
//! no refresh token) and CLIProxyAPI's `claude-*.json` files or directories of them.
//!
//! Importing the same account twice updates it (matched by account UUID, then email, then refresh or access token)
//! and clears a `needs_reauth` flag or a ban, because the credential is new.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::account::{Account, AccountKind, Credential, NewAccount};
use crate::store::Patch;
use crate::store::{AccountUpdate, AccountWrite, Store, StoreError};

/// One credential read from a file.
#[derive(Debug, Clone)]
pub struct Imported {
    pub source: PathBuf,
    pub name: String,
    pub credential: Credential,
    pub email: Option<String>,
    pub account_uuid: Option<String>,
    pub organization_uuid: Option<String>,
    pub organization_name: Option<String>,
    pub disabled: bool,
    pub priority: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaudeCodeOauth {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    subscription_type: Option<String>,
}

#[derive(Deserialize)]
struct CliProxyFile {
    #[serde(rename = "type")]
    kind: String,
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    account_uuid: Option<String>,
    #[serde(default)]
    organization_uuid: Option<String>,
    #[serde(default)]
    organization_name: Option<String>,
    #[serde(default)]
    expired: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    priority: Option<i32>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Reads every credential under `path` (a file, or the `*.json` files of a directory). Files of other providers in a
/// directory are skipped and reported in the second list.
pub fn read_path(path: &Path) -> Result<(Vec<Imported>, Vec<String>), ImportError> {
    let err = |message: String| ImportError::File {
        path: path.to_path_buf(),
        message,
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for f in files {
            match read_file(&f) {
                Ok(c) => out.push(c),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        return Ok((out, skipped));
    }
    Ok((vec![read_file(path)?], Vec::new()))
}

pub fn read_file(path: &Path) -> Result<Imported, ImportError> {
    let err = |message: String| ImportError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    read_value(value, path)
}

/// Reads one credential from a file's parsed content (the admin API takes files in a request body); `source` names it
/// in errors and gives the default name.
pub fn read_value(value: serde_json::Value, path: &Path) -> Result<Imported, ImportError> {
    let err = |message: String| ImportError::File {
        path: path.to_path_buf(),
        message,
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "imported".into());
    if let Some(oauth) = value.get("claudeAiOauth") {
        let c: ClaudeCodeOauth = serde_json::from_value(oauth.clone())
            .map_err(|e| err(format!("not a Claude Code credentials file: {e}")))?;
        let refresh_token = non_empty(c.refresh_token);
        let name = match (&refresh_token, &c.subscription_type) {
            (None, _) => format!("setup-token-{}", short_hash(&c.access_token)),
            (Some(_), Some(t)) => format!("claude-{t}-{}", short_hash(&c.access_token)),
            (Some(_), None) => format!("claude-{}", short_hash(&c.access_token)),
        };
        return Ok(Imported {
            source: path.to_path_buf(),
            name,
            credential: Credential {
                secret: c.access_token,
                refresh_token,
                expires_at: c.expires_at.and_then(DateTime::from_timestamp_millis),
            },
            email: None,
            account_uuid: None,
            organization_uuid: None,
            organization_name: None,
            disabled: false,
            priority: 0,
        });
    }
    if value.get("type").is_some() {
        let c: CliProxyFile = serde_json::from_value(value)
            .map_err(|e| err(format!("not a CLIProxyAPI auth file: {e}")))?;
        if c.kind != "claude" {
            return Err(err(format!(
                "a {:?} credential, not a Claude one; skipped",
                c.kind
            )));
        }
        let expires_at = match non_empty(c.expired) {
            Some(s) => Some(
                DateTime::parse_from_rfc3339(&s)
                    .map_err(|e| err(format!("`expired` is not RFC 3339: {e}")))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let email = non_empty(c.email);
        return Ok(Imported {
            source: path.to_path_buf(),
            name: email.clone().unwrap_or(stem),
            credential: Credential {
                secret: c.access_token,
                refresh_token: non_empty(c.refresh_token),
                expires_at,
            },
            email,
            account_uuid: non_empty(c.account_uuid),
            organization_uuid: non_empty(c.organization_uuid),
            organization_name: non_empty(c.organization_name),
            disabled: c.disabled,
            priority: c.priority.unwrap_or(0),
        });
    }
    Err(err("unrecognised credential file (expected Claude Code's .credentials.json or a CLIProxyAPI claude-*.json)".into()))
}

/// A short non-secret label derived from a token (for default names).
fn short_hash(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Created,
    Updated,
}

/// Finds the account an imported credential belongs to: same account uuid, else same email, else the same access or
/// refresh token (OAuth accounts only; the first match in `accounts`' order).
fn matching(accounts: &[Account], c: &Imported) -> Option<usize> {
    let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
    let oauth = |a: &&Account| a.kind == AccountKind::Oauth;
    let find = |pred: &dyn Fn(&Account) -> bool| {
        accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| oauth(a))
            .find(|(_, a)| pred(a))
            .map(|(i, _)| i)
    };
    find(&|a| same(&a.account_uuid, &c.account_uuid))
        .or_else(|| find(&|a| same(&a.email, &c.email)))
        .or_else(|| {
            find(&|a| {
                a.credential.secret == c.credential.secret
                    || (c.credential.refresh_token.is_some()
                        && a.credential.refresh_token == c.credential.refresh_token)
            })
        })
}

/// Creates or updates the account for `c`. A name already used by another account gets a numeric suffix.
pub async fn save(
    store: &dyn Store,
    c: &Imported,
    name: Option<&str>,
) -> Result<(Account, Saved), ImportError> {
    let mut saved = save_all(store, std::slice::from_ref(c), name).await?;
    saved
        .pop()
        .ok_or_else(|| ImportError::Store(StoreError::NotFound("the imported account".into())))
}

/// Creates or updates the accounts for every credential in `all`, as if saved one after the other (a later file for
/// the same account updates what an earlier one wrote), with one listing of the store and one batched write.
pub async fn save_all(
    store: &dyn Store,
    all: &[Imported],
    name: Option<&str>,
) -> Result<Vec<(Account, Saved)>, ImportError> {
    let mut accounts = store.list_accounts().await?;
    let existing = accounts.len();
    let mut names: HashSet<String> = accounts.iter().map(|a| a.name.clone()).collect();
    let mut touched = vec![false; existing];
    // Per credential: the index of its account in `accounts` (new ones are appended), and how it was saved.
    let mut outcome = Vec::with_capacity(all.len());
    for c in all {
        match matching(&accounts, c) {
            Some(i) => {
                adopt(&mut accounts[i], c);
                if i < existing {
                    touched[i] = true;
                }
                outcome.push((i, Saved::Updated));
            }
            None => {
                let fresh = unsaved(c, unique_name(&names, name.unwrap_or(&c.name)));
                names.insert(fresh.name.clone());
                accounts.push(fresh);
                outcome.push((accounts.len() - 1, Saved::Created));
            }
        }
    }
    let mut writes = Vec::new();
    let mut slot = vec![usize::MAX; accounts.len()];
    for (i, a) in accounts.iter().enumerate() {
        let write = if i >= existing {
            AccountWrite::Insert(new_account(a))
        } else if touched[i] {
            AccountWrite::Update {
                id: a.id,
                version: a.version,
                update: import_update(a),
            }
        } else {
            continue;
        };
        slot[i] = writes.len();
        writes.push(write);
    }
    let written = store.write_accounts(writes).await?;
    outcome
        .into_iter()
        .map(|(i, saved)| {
            let a = written.get(slot[i]).cloned().ok_or_else(|| {
                ImportError::Store(StoreError::NotFound(accounts[i].name.clone()))
            })?;
            Ok((a, saved))
        })
        .collect()
}

/// `base`, or `base-2`, `base-3`, … whichever is not taken.
fn unique_name(names: &HashSet<String>, base: &str) -> String {
    let mut candidate = base.to_string();
    let mut n = 2;
    while names.contains(&candidate) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

/// What an import changes on an account it matched: the credential, the identity fields it carries; re-auth, ban and
/// the last error are cleared.
fn adopt(a: &mut Account, c: &Imported) {
    a.credential = c.credential.clone();
    a.needs_reauth = None;
    a.banned = None;
    a.last_error = None;
    let set = |field: &mut Option<String>, v: &Option<String>| {
        if v.is_some() {
            field.clone_from(v);
        }
    };
    set(&mut a.email, &c.email);
    set(&mut a.account_uuid, &c.account_uuid);
    set(&mut a.organization_uuid, &c.organization_uuid);
    set(&mut a.organization_name, &c.organization_name);
}

/// The update that writes what [`adopt`] changed.
fn import_update(a: &Account) -> AccountUpdate {
    AccountUpdate {
        credential: Some(a.credential.clone()),
        needs_reauth: Patch::Clear,
        banned: Patch::Clear,
        last_error: Patch::Clear,
        email: Patch::set_some(a.email.clone()),
        account_uuid: Patch::set_some(a.account_uuid.clone()),
        organization_uuid: Patch::set_some(a.organization_uuid.clone()),
        organization_name: Patch::set_some(a.organization_name.clone()),
        ..Default::default()
    }
}

/// A not yet stored account for `c` (id 0 until written).
fn unsaved(c: &Imported, name: String) -> Account {
    let now = crate::clock::system_now();
    Account {
        id: 0,
        name,
        kind: AccountKind::Oauth,
        credential: c.credential.clone(),
        disabled: c.disabled,
        needs_reauth: None,
        banned: None,
        last_error: None,
        email: c.email.clone(),
        account_uuid: c.account_uuid.clone(),
        organization_uuid: c.organization_uuid.clone(),
        organization_name: c.organization_name.clone(),
        priority: c.priority,
        weight: 1,
        max_concurrency: None,
        refresh_blocked_until: None,
        refresh_block_reason: None,
        tags: Vec::new(),
        version: 0,
        created_at: now,
        updated_at: now,
    }
}

fn new_account(a: &Account) -> NewAccount {
    NewAccount {
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
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn reads_the_three_formats() {
        let cc = read_file(&fixture("claude-code-credentials.json")).unwrap();
        assert!(cc
            .credential
            .refresh_token
            .as_deref()
            .unwrap()
            .starts_with("sk-ant-ort01-"));
        assert_eq!(
            cc.credential.expires_at.unwrap().timestamp_millis(),
            1764000000000
        );
        assert!(cc.name.starts_with("claude-max-"));

        let cp = read_file(&fixture("cliproxyapi-claude-user@example.com.json")).unwrap();
        assert_eq!(cp.email.as_deref(), Some("user@example.com"));
        assert_eq!(cp.organization_name.as_deref(), Some("Example Org"));
        assert_eq!(
            cp.credential.expires_at.unwrap().to_rfc3339(),
            "2025-11-24T18:00:00+00:00"
        );
        assert_eq!(cp.priority, 1);

        let st = read_file(&fixture("setup-token-credentials.json")).unwrap();
        assert!(st.credential.refresh_token.is_none());
        assert!(st.name.starts_with("setup-token-"));

        let (all, skipped) = read_path(&fixture("")).unwrap();
        assert_eq!(all.len(), 3, "{skipped:?}");
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("cgw-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        std::fs::write(&p, "{\"type\":\"gemini\",\"access_token\":\"a\"}").unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(e.contains("x.json") && e.contains("gemini"), "{e}");
        std::fs::write(&p, "nope").unwrap();
        assert!(read_file(&p).unwrap_err().to_string().contains("not JSON"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
