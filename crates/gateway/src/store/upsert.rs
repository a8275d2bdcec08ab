//! `upsert_oauth`: the one way an OAuth credential obtained outside the store (a credential file, a login) becomes an
//! account — created, or written over the account it belongs to.
//!
//! Matching: same account uuid, else same email, else the same access or refresh token (OAuth accounts only, the first
//! match in listing order). A match gets the new credential and whatever identity fields the credential carries, and
//! loses `needs_reauth`, a ban and the last error, because the credential is new.

use std::collections::HashSet;

use super::{AccountUpdate, AccountWrite, Patch, Store, StoreError};
use crate::account::{Account, AccountKind, Credential, Identity, NewAccount};

/// An OAuth account as it arrives from outside the store: its credential, who it is, and how it starts if it is new.
#[derive(Debug, Clone)]
pub struct OauthAccount {
    /// The name a new account gets (with a numeric suffix if it is taken).
    pub name: String,
    pub credential: Credential,
    pub identity: Identity,
    pub disabled: bool,
    pub priority: i32,
}

/// Whether [`upsert_oauth`] created the account or updated an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Created,
    Updated,
}

impl Saved {
    /// As the admin API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Saved::Created => "created",
            Saved::Updated => "updated",
        }
    }
}

/// Creates or updates the account for every credential in `all`, as if saved one after the other (a later one for the
/// same account updates what an earlier one wrote), with one listing of the store and one batched write. `name`
/// overrides the name a new account gets.
pub async fn upsert_oauth(
    store: &dyn Store,
    all: &[OauthAccount],
    name: Option<&str>,
) -> Result<Vec<(Account, Saved)>, StoreError> {
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
    let (writes, slot) = writes(&accounts, existing, &touched);
    let written = store.write_accounts(writes).await?;
    outcome
        .into_iter()
        .map(|(i, saved)| {
            let a = written
                .get(slot[i])
                .cloned()
                .ok_or_else(|| StoreError::NotFound(accounts[i].name.clone()))?;
            Ok((a, saved))
        })
        .collect()
}

/// One credential: [`upsert_oauth`] of one.
pub async fn upsert_one(
    store: &dyn Store,
    c: &OauthAccount,
    name: Option<&str>,
) -> Result<(Account, Saved), StoreError> {
    upsert_oauth(store, std::slice::from_ref(c), name)
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound(c.name.clone()))
}

/// The batch that stores `accounts` (those from `existing` on are new; earlier ones are written when `touched`), and
/// for each account the index of its write.
fn writes(
    accounts: &[Account],
    existing: usize,
    touched: &[bool],
) -> (Vec<AccountWrite>, Vec<usize>) {
    let mut writes = Vec::new();
    let mut slot = vec![usize::MAX; accounts.len()];
    for (i, a) in accounts.iter().enumerate() {
        let write = if i >= existing {
            AccountWrite::Insert(new_account(a))
        } else if touched[i] {
            AccountWrite::Update {
                id: a.id,
                version: a.version,
                update: adopted_update(a),
            }
        } else {
            continue;
        };
        slot[i] = writes.len();
        writes.push(write);
    }
    (writes, slot)
}

/// The account `c` belongs to (see the module's matching rule).
fn matching(accounts: &[Account], c: &OauthAccount) -> Option<usize> {
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
    find(&|a| same(&a.identity.account_uuid, &c.identity.account_uuid))
        .or_else(|| find(&|a| same(&a.identity.email, &c.identity.email)))
        .or_else(|| {
            find(&|a| {
                a.credential.secret == c.credential.secret
                    || (c.credential.refresh_token.is_some()
                        && a.credential.refresh_token == c.credential.refresh_token)
            })
        })
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

/// What a matched account takes from `c`: the credential and the identity fields `c` knows; re-auth, ban and the last
/// error are cleared.
fn adopt(a: &mut Account, c: &OauthAccount) {
    a.credential = c.credential.clone();
    a.needs_reauth = None;
    a.banned = None;
    a.last_error = None;
    a.identity.learn(c.identity.clone());
}

/// The update that writes what [`adopt`] changed.
fn adopted_update(a: &Account) -> AccountUpdate {
    AccountUpdate {
        credential: Some(a.credential.clone()),
        needs_reauth: Patch::Clear,
        banned: Patch::Clear,
        last_error: Patch::Clear,
        identity: a.identity.clone(),
        ..Default::default()
    }
}

/// A not yet stored account for `c` (id 0 until written).
fn unsaved(c: &OauthAccount, name: String) -> Account {
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
        identity: c.identity.clone(),
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
        identity: a.identity.clone(),
        priority: a.priority,
        weight: a.weight,
        disabled: a.disabled,
    }
}
