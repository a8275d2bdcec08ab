//! Importing credential files people already have: Claude Code's `.credentials.json` (also setup tokens, which have
//! no refresh token) and CLIProxyAPI's `claude-*.json` files or directories of them.
//!
//! Importing the same account twice updates it (matched by account UUID, then email, then refresh or access token)
//! and clears a `needs_reauth` flag or a ban, because the credential is new.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::account::{Credential, Identity};
use crate::store::OauthAccount;

/// One credential read from a file, ready for [`crate::store::upsert_oauth`].
#[derive(Debug, Clone)]
pub struct Imported {
    pub source: PathBuf,
    pub account: OauthAccount,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
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
        return Ok(imported(
            path,
            OauthAccount {
                name,
                credential: Credential {
                    secret: c.access_token,
                    refresh_token,
                    expires_at: c.expires_at.and_then(DateTime::from_timestamp_millis),
                },
                identity: Identity::default(),
                disabled: false,
                priority: 0,
            },
        ));
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
        let identity = Identity {
            email: non_empty(c.email),
            account_uuid: non_empty(c.account_uuid),
            organization_uuid: non_empty(c.organization_uuid),
            organization_name: non_empty(c.organization_name),
        };
        return Ok(imported(
            path,
            OauthAccount {
                name: identity.email.clone().unwrap_or(stem),
                credential: Credential {
                    secret: c.access_token,
                    refresh_token: non_empty(c.refresh_token),
                    expires_at,
                },
                identity,
                disabled: c.disabled,
                priority: c.priority.unwrap_or(0),
            },
        ));
    }
    Err(err("unrecognised credential file (expected Claude Code's .credentials.json or a CLIProxyAPI claude-*.json)".into()))
}

/// A short non-secret label derived from a token (for default names).
fn short_hash(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

fn imported(path: &Path, account: OauthAccount) -> Imported {
    Imported {
        source: path.to_path_buf(),
        account,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn reads_the_three_formats() {
        let cc = read_file(&fixture("claude-code-credentials.json"))
            .unwrap()
            .account;
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

        let cp = read_file(&fixture("cliproxyapi-claude-user@example.com.json"))
            .unwrap()
            .account;
        assert_eq!(cp.identity.email.as_deref(), Some("user@example.com"));
        assert_eq!(
            cp.identity.organization_name.as_deref(),
            Some("Example Org")
        );
        assert_eq!(
            cp.credential.expires_at.unwrap().to_rfc3339(),
            "2025-11-24T18:00:00+00:00"
        );
        assert_eq!(cp.priority, 1);

        let st = read_file(&fixture("setup-token-credentials.json"))
            .unwrap()
            .account;
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
