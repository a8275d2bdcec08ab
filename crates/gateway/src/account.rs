//! The account model: one upstream credential and what the pool knows about it.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub type AccountId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    ApiKey,
    Oauth,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::ApiKey => "api_key",
            AccountKind::Oauth => "oauth",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "api_key" => Some(AccountKind::ApiKey),
            "oauth" => Some(AccountKind::Oauth),
            _ => None,
        }
    }
}

/// The secret part of an account. `Debug` never prints a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The API key, or the OAuth access token.
    pub secret: String,
    /// OAuth only; `None` for API keys and setup tokens (which are used until they expire and never refreshed).
    pub refresh_token: Option<String>,
    /// OAuth only; when the access token stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret", &redact(&self.secret))
            .field("refresh_token", &self.refresh_token.as_deref().map(redact))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A short, non-reversible label for a secret, safe for logs: its prefix family and length.
pub fn redact(secret: &str) -> String {
    let family: String = secret.chars().take_while(|c| *c != '-').take(3).collect();
    format!("{family}…({} chars)", secret.len())
}

/// Everything stored about an account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub kind: AccountKind,
    pub credential: Credential,
    pub disabled: bool,
    /// Set when the credential can no longer be refreshed; the token endpoint is not called again until the account is
    /// re-imported or logged in again.
    pub needs_reauth: Option<String>,
    /// Set when Anthropic refuses the account's organization permanently (banned, disabled, OAuth not allowed for it):
    /// the upstream message. A new login does not help; `accounts enable` or a re-import clears it.
    pub banned: Option<String>,
    /// The last error worth showing an operator (upstream message, refresh failure), secrets never included.
    pub last_error: Option<String>,
    pub identity: Identity,
    /// Lower first.
    pub priority: i32,
    /// Share of traffic within a priority tier.
    pub weight: u32,
    /// Most concurrent upstream requests this account may carry (`None` = unlimited).
    pub max_concurrency: Option<u32>,
    /// No token-endpoint call for this account before this moment (a 429's Retry-After or a failure backoff), shared by
    /// every process using the store.
    pub refresh_blocked_until: Option<DateTime<Utc>>,
    pub refresh_block_reason: Option<String>,
    /// Operators' labels (no effect on routing).
    pub tags: Vec<String>,
    /// Bumped on every write: compare-and-set updates name the version they read.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new account is created with.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub kind: AccountKind,
    pub credential: Credential,
    pub identity: Identity,
    pub priority: i32,
    pub weight: u32,
    pub disabled: bool,
}

impl NewAccount {
    /// An API-key account with default scheduling (priority 0, weight 1) and no identity fields.
    pub fn api_key(name: String, key: String) -> Self {
        NewAccount {
            name,
            kind: AccountKind::ApiKey,
            credential: Credential {
                secret: key,
                refresh_token: None,
                expires_at: None,
            },
            identity: Identity::default(),
            priority: 0,
            weight: 1,
            disabled: false,
        }
    }
}

impl Account {
    /// An OAuth account that can be refreshed (has a refresh token).
    pub fn refreshable(&self) -> bool {
        self.kind == AccountKind::Oauth && self.credential.refresh_token.is_some()
    }
}

/// Who an OAuth account is: the fields that travel together from the token endpoint, the profile and credential files
/// into the account row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub email: Option<String>,
    pub account_uuid: Option<String>,
    pub organization_uuid: Option<String>,
    pub organization_name: Option<String>,
}

impl Identity {
    /// Fills what `self` lacks from `other`, field by field.
    pub fn or(self, other: Identity) -> Identity {
        Identity {
            email: self.email.or(other.email),
            account_uuid: self.account_uuid.or(other.account_uuid),
            organization_uuid: self.organization_uuid.or(other.organization_uuid),
            organization_name: self.organization_name.or(other.organization_name),
        }
    }

    /// Takes every field `known` has, keeping the others.
    pub fn learn(&mut self, known: Identity) {
        let take = |field: &mut Option<String>, v: Option<String>| {
            if v.is_some() {
                *field = v;
            }
        };
        take(&mut self.email, known.email);
        take(&mut self.account_uuid, known.account_uuid);
        take(&mut self.organization_uuid, known.organization_uuid);
        take(&mut self.organization_name, known.organization_name);
    }
}

/// Tags as stored: trimmed, non-empty, comma-separated.
pub fn join_tags(tags: &[String]) -> String {
    tags.iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}
