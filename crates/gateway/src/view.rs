//! The one account view, shared by the admin API (`GET /admin/accounts`) and `accounts list --json`, so the same state
//! never has two names. The shape is a contract: fields may be added, not renamed.

use serde::Serialize;

use crate::account::{Account, AccountId};
use crate::clock::{instant_to_wall, rfc3339, Clock};
use crate::pool::AccountEntry;
use crate::refresh::CredentialState;

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub id: AccountId,
    pub name: String,
    pub kind: &'static str,
    /// `ready`, `cooling_down`, `refresh_backoff`, `needs_reauth`, `banned` (Anthropic refuses the organization for
    /// good; `last_error` has its message) or `disabled`.
    pub state: &'static str,
    pub expires_at: Option<String>,
    pub cooldown_until: Option<String>,
    pub refresh_retry_at: Option<String>,
    pub last_error: Option<String>,
    pub email: Option<String>,
    pub organization: Option<String>,
    pub priority: i32,
    pub weight: u32,
    pub max_concurrency: Option<u32>,
    pub in_flight: usize,
    pub requests: u64,
    pub refreshing: bool,
    /// Highest utilization of the account-wide windows last reported (0..1).
    pub utilization: Option<f64>,
    /// Every rate-limit window the last answer reported.
    pub windows: Vec<WindowView>,
    /// Models this account is cooling for, with when each ends.
    pub model_cooldowns: Vec<ModelCooldownView>,
    /// Usage totals from the store (all replicas), as of their last batch.
    pub usage: Option<crate::store::Usage>,
    /// Operators' labels.
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct WindowView {
    pub name: String,
    pub status: Option<String>,
    pub utilization: Option<f64>,
    pub reset: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelCooldownView {
    pub model: String,
    pub until: String,
}

/// The one naming of account states. `credential` and `cooling` are what a running gateway knows beyond the stored
/// row (`None`/`false` when only the store is read, as `accounts list` does).
pub fn state_name(
    account: &Account,
    credential: Option<CredentialState>,
    cooling: bool,
) -> &'static str {
    if account.disabled {
        return "disabled";
    }
    if account.banned.is_some() {
        return "banned";
    }
    if account.needs_reauth.is_some() {
        return "needs_reauth";
    }
    match credential {
        Some(CredentialState::NeedsReauth) => "needs_reauth",
        Some(CredentialState::RefreshBackoff | CredentialState::Held) => "refresh_backoff",
        Some(CredentialState::Ready) | None if cooling => "cooling_down",
        Some(CredentialState::Ready) | None => "ready",
    }
}

/// A running gateway's state name for `entry`, as [`AccountView::live`] names it, without building the view (the alert
/// check reads it for every account every few seconds).
pub fn live_state(entry: &AccountEntry, account: &Account) -> &'static str {
    state_name(
        account,
        Some(entry.cell.credential_state()),
        entry.cooling_until(None).is_some(),
    )
}

impl AccountView {
    /// What the stored row alone says (no live pool state): `accounts list --json`.
    pub fn stored(account: &Account) -> AccountView {
        AccountView {
            id: account.id,
            name: account.name.clone(),
            kind: account.kind.as_str(),
            state: state_name(account, None, false),
            expires_at: account.credential.expires_at.map(rfc3339),
            cooldown_until: None,
            refresh_retry_at: None,
            last_error: account
                .banned
                .clone()
                .or_else(|| account.needs_reauth.clone())
                .or_else(|| account.last_error.clone()),
            email: account.identity.email.clone(),
            organization: account.identity.organization_name.clone(),
            priority: account.priority,
            weight: account.weight,
            max_concurrency: account.max_concurrency,
            in_flight: 0,
            requests: 0,
            refreshing: false,
            utilization: None,
            windows: Vec::new(),
            model_cooldowns: Vec::new(),
            usage: None,
            tags: account.tags.clone(),
        }
    }

    /// A running gateway's view of a pool entry: the stored row plus cooldowns, refresh state, load and windows.
    pub fn live(entry: &AccountEntry, clock: &dyn Clock) -> AccountView {
        let account = entry.cell.account();
        let (cred_state, retry_at, cred_error) = entry.cell.state();
        let cooling = entry.cooling_until(None);
        let state_name = state_name(&account, Some(cred_state), cooling.is_some());
        AccountView {
            id: account.id,
            name: account.name.clone(),
            kind: account.kind.as_str(),
            state: state_name,
            expires_at: account.credential.expires_at.map(rfc3339),
            cooldown_until: cooling.map(|t| rfc3339(instant_to_wall(clock, t))),
            refresh_retry_at: retry_at.map(|t| rfc3339(instant_to_wall(clock, t))),
            last_error: account
                .banned
                .clone()
                .or(cred_error)
                .or_else(|| entry.cooldown_reason())
                .or_else(|| account.last_error.clone()),
            email: account.identity.email.clone(),
            organization: account.identity.organization_name.clone(),
            priority: account.priority,
            weight: account.weight,
            max_concurrency: account.max_concurrency,
            in_flight: entry.in_flight(),
            requests: entry.served(),
            refreshing: entry.cell.refreshing(),
            utilization: entry.utilization(),
            windows: entry
                .limits()
                .map(|l| {
                    l.windows
                        .into_iter()
                        .map(|w| WindowView {
                            name: w.name.into_owned(),
                            status: w.status.map(std::borrow::Cow::into_owned),
                            utilization: w.utilization,
                            reset: w.reset.map(rfc3339),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            model_cooldowns: entry
                .model_cooldowns()
                .into_iter()
                .map(|(model, t)| ModelCooldownView {
                    model,
                    until: rfc3339(instant_to_wall(clock, t)),
                })
                .collect(),
            usage: None,
            tags: account.tags.clone(),
        }
    }
}
