//! The local rotation journal: what this process knows about a token family that the store may not know yet.
//!
//! Two kinds of record, one file per account in `data_dir/rotations/` (directory 0700, files 0600, written to a
//! temporary file, fsynced, renamed, and the directory fsynced):
//! - a **rotation**: tokens the endpoint issued, written *before anything else* is done with them (before the store
//!   write, before the cell publishes them). It is forgotten once the store holds them, and replayed into the store on
//!   start and on every store sync while it exists, so neither a failed write, a panic nor a restart during a store
//!   outage loses a rotation;
//! - a **doubt**: a refresh token sent without an answer seen (connection lost, call timeout, an unparsable 200). Such
//!   a token is sent at most once more, ever: the doubt records whether that one more send was used, and outlives the
//!   flight and the process.
//!
//! Without a directory (tests, `Journal::memory`) the journal keeps the same records in memory only.
//! `Debug` never prints a token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::AccountId;
use crate::oauth::TokenResponse;

/// Tokens the endpoint issued for an account, not yet known to be in the store.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rotation {
    /// The refresh token this rotation replaced (what the store holds until the rotation is written).
    pub replaced: Option<String>,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at_ms: Option<i64>,
}

impl Rotation {
    pub fn new(replaced: Option<String>, tokens: &TokenResponse, now: DateTime<Utc>) -> Rotation {
        Rotation {
            replaced,
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            expires_at_ms: tokens.expires_at(now).map(crate::clock::to_millis),
        }
    }

    /// The rotation as a token response, its expiry counted from `now`.
    pub fn tokens(&self, now: DateTime<Utc>) -> TokenResponse {
        let expires_in = self
            .expires_at_ms
            .and_then(crate::clock::from_millis)
            .map(|at| crate::clock::wait_until(now, at).as_secs());
        TokenResponse {
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_in,
            organization: None,
            account: None,
        }
    }
}

/// A refresh token whose last send got no answer.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Doubt {
    pub refresh_token: String,
    /// Whether the one more send it is allowed has been made (or started).
    pub retried: bool,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    #[serde(default)]
    rotation: Option<Rotation>,
    #[serde(default)]
    doubt: Option<Doubt>,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.rotation.is_none() && self.doubt.is_none()
    }
}

pub struct Journal {
    dir: Option<PathBuf>,
    records: Mutex<HashMap<AccountId, Record>>,
    /// Serializes writes, so files are written in the order their records changed.
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("accounts", &self.lock().len())
            .finish()
    }
}

impl Journal {
    /// A journal that lives in memory only (tests; loses its records with the process).
    #[cfg(test)]
    pub fn memory() -> Journal {
        Journal {
            dir: None,
            records: Mutex::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens (creating when missing) `data_dir/rotations` and loads the records a previous process left.
    pub fn open(data_dir: &Path) -> std::io::Result<Journal> {
        let dir = data_dir.join("rotations");
        create_private_dir(&dir)?;
        let mut records = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<AccountId>().ok());
            let Some(id) = id else { continue };
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) if !r.is_empty() => {
                    records.insert(id, r);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(file = %path.display(), error = %e, "unreadable rotation journal record; left in place")
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read a rotation journal record")
                }
            }
        }
        Ok(Journal {
            dir: Some(dir),
            records: Mutex::new(records),
            write: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The unsaved rotation of an account, if any.
    pub fn rotation(&self, id: AccountId) -> Option<Rotation> {
        self.lock().get(&id).and_then(|r| r.rotation.clone())
    }

    /// Every account with an unsaved rotation.
    pub fn rotations(&self) -> Vec<(AccountId, Rotation)> {
        self.lock()
            .iter()
            .filter_map(|(id, r)| r.rotation.clone().map(|rot| (*id, rot)))
            .collect()
    }

    /// The doubt recorded about an account's refresh token, if any.
    pub fn doubt(&self, id: AccountId) -> Option<Doubt> {
        self.lock().get(&id).and_then(|r| r.doubt.clone())
    }

    /// Records a rotation (durably when the journal has a directory) before anything else is done with it. Settles
    /// any doubt: the token it was about has been answered.
    pub async fn record_rotation(&self, id: AccountId, rotation: Rotation) {
        self.change(id, |r| {
            r.rotation = Some(rotation);
            r.doubt = None;
        })
        .await;
    }

    /// Forgets the rotation once the store holds it (only if it is still the one named by `refresh_token`).
    pub async fn forget_rotation(&self, id: AccountId, access_token: &str) {
        self.change(id, |r| {
            if r.rotation
                .as_ref()
                .is_some_and(|x| x.access_token == access_token)
            {
                r.rotation = None;
            }
        })
        .await;
    }

    /// Records (or replaces) the doubt about an account's refresh token.
    pub async fn record_doubt(&self, id: AccountId, doubt: Option<Doubt>) {
        self.change(id, |r| r.doubt = doubt).await;
    }

    async fn change(&self, id: AccountId, f: impl FnOnce(&mut Record)) {
        let _write = self.write.lock().await;
        let record = {
            let mut all = self.lock();
            let before = all.get(&id).cloned().unwrap_or_default();
            let mut after = before.clone();
            f(&mut after);
            if after == before {
                return;
            }
            if after.is_empty() {
                all.remove(&id);
            } else {
                all.insert(id, after.clone());
            }
            after
        };
        let Some(dir) = self.dir.clone() else { return };
        let written = tokio::task::spawn_blocking(move || write_record(&dir, id, &record)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(account = id, error = %e, "could not write the rotation journal (kept in memory)")
            }
            Err(e) => {
                tracing::error!(account = id, error = %e, "could not write the rotation journal (kept in memory)")
            }
        }
    }
}

/// Writes one account's record durably: a temporary file (0600), fsync, rename over the old one, fsync the
/// directory. An empty record removes the file.
fn write_record(dir: &Path, id: AccountId, record: &Record) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(format!("{id}.json"));
    if record.is_empty() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        return sync_dir(dir);
    }
    let tmp = dir.join(format!("{id}.json.tmp"));
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let mut file = private_file(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
