//! Writing a rotation: compare-and-set on the version, fenced by the refresh lease.

use std::sync::Arc;

use crate::account::{Account, Credential};
use crate::oauth::TokenResponse;
use crate::store::Patch;
use crate::store::{AccountUpdate, Fence, StoreError};

use super::*;

use super::flight::Outcome;
use super::journal::Rotation;

impl RefreshEngine {
    /// New tokens from the endpoint: journaled before anything else is done with them, then persisted.
    pub(super) async fn keep_rotation(
        &self,
        stored: Account,
        tokens: TokenResponse,
        fence: &Fence,
    ) -> Outcome {
        let rotation = Rotation::new(stored.credential.refresh_token.clone(), &tokens, self.now());
        self.inner
            .journal
            .record_rotation(stored.id, rotation)
            .await;
        self.persist_journaled(stored, tokens, fence).await
    }

    /// [`Self::persist`], and the journal forgets the rotation unless it is still unsaved (held).
    pub(super) async fn persist_journaled(
        &self,
        stored: Account,
        tokens: TokenResponse,
        fence: &Fence,
    ) -> Outcome {
        let (id, access) = (stored.id, tokens.access_token.clone());
        let outcome = self.persist(stored, tokens, fence).await;
        if !matches!(outcome, Outcome::Held { .. }) {
            self.inner.journal.forget_rotation(id, &access).await;
        }
        outcome
    }

    /// The journal's unsaved rotation of this account, if it replaced the refresh token the store still holds.
    pub(super) fn journal_pending(&self, stored: &Account) -> Option<TokenResponse> {
        self.inner
            .journal
            .rotation(stored.id)
            .filter(|r| r.replaced == stored.credential.refresh_token)
            .map(|r| r.tokens(self.now()))
    }

    /// Writes new tokens with compare-and-set on the version read at the start of the flight, fenced by the refresh
    /// lease, and lifts any refresh block.
    pub(super) async fn persist(
        &self,
        stored: Account,
        tokens: TokenResponse,
        fence: &Fence,
    ) -> Outcome {
        let inner = &self.inner;
        let update = rotation_update(&stored, &tokens, inner.clock.now());
        let mut expected = stored.version;
        for _ in 0..3 {
            match inner
                .store
                .update_account_fenced(stored.id, expected, fence, update.clone())
                .await
            {
                Ok(account) => {
                    tracing::info!(account = %account.name, expires_at = ?account.credential.expires_at, "token refreshed");
                    return Outcome::Refreshed(Arc::new(account));
                }
                Err(StoreError::Conflict { .. }) => {
                    match inner.store.get_account(stored.id).await {
                        // Only metadata changed under us (disable, rename): retry on the new version.
                        Ok(Some(now_stored))
                            if now_stored.credential.refresh_token
                                == stored.credential.refresh_token =>
                        {
                            expected = now_stored.version;
                        }
                        // Someone stored another credential (re-import, login): theirs is the newer intent.
                        Ok(Some(now_stored)) => return Outcome::Refreshed(Arc::new(now_stored)),
                        Ok(None) => return Outcome::Removed,
                        Err(e) => {
                            return Outcome::Held {
                                tokens,
                                cause: e.to_string(),
                            }
                        }
                    }
                }
                Err(StoreError::NotFound(_)) => return Outcome::Removed,
                Err(StoreError::Fenced(_)) => {
                    return match inner.store.get_account(stored.id).await {
                        // The lease passed to another holder who already stored a newer credential: theirs stands.
                        Ok(Some(now_stored))
                            if now_stored.credential.refresh_token
                                != stored.credential.refresh_token =>
                        {
                            Outcome::Refreshed(Arc::new(now_stored))
                        }
                        _ => Outcome::Held {
                            tokens,
                            cause: "the refresh lease expired before the rotation was written"
                                .into(),
                        },
                    };
                }
                Err(e) => {
                    return Outcome::Held {
                        tokens,
                        cause: e.to_string(),
                    }
                }
            }
        }
        Outcome::Held {
            tokens,
            cause: "the account kept changing while the rotation was written".into(),
        }
    }
}

/// The row change a rotation makes: the new credential (keeping our refresh token when the provider does not rotate),
/// re-auth and refresh block lifted, and whatever identity the endpoint reported.
fn rotation_update(
    stored: &Account,
    tokens: &TokenResponse,
    now: chrono::DateTime<chrono::Utc>,
) -> AccountUpdate {
    let credential = Credential {
        secret: tokens.access_token.clone(),
        refresh_token: tokens
            .refresh_token
            .clone()
            .or_else(|| stored.credential.refresh_token.clone()),
        expires_at: tokens.expires_at(now),
    };
    let identity = tokens.identity();
    AccountUpdate {
        credential: Some(credential),
        needs_reauth: Patch::Clear,
        last_error: Patch::Clear,
        refresh_block: Patch::Clear,
        // The token answer's email and organization name; the uuids stay as stored.
        identity: crate::account::Identity {
            email: identity.email,
            organization_name: identity.organization_name,
            ..Default::default()
        },
        ..Default::default()
    }
}
