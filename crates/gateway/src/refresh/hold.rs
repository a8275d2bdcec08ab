//! A rotation this process holds but the store does not: keeping the refresh lease while it is unsaved, and
//! replaying journaled rotations into the store (on start and on every store sync).

use crate::account::AccountId;
use crate::store::{AccountUpdate, Fence};

use super::*;

impl RefreshEngine {
    /// Keeps the refresh lease while the account's rotation is unsaved, so no other replica sends the refresh token
    /// it replaced (that token is rotated out: the answer would be `invalid_grant`). Ends when the journal no longer
    /// holds the rotation (then releases the lease), when another flight took the lease over (a later flight of ours
    /// retakes it to persist the rotation), or at shutdown (the lease then expires on its own; the journal survives).
    pub(super) fn spawn_keep_held(&self, id: AccountId, fence: Fence) {
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.keep_held(id, fence).await });
    }

    async fn keep_held(&self, id: AccountId, fence: Fence) {
        let inner = &self.inner;
        let every = inner.settings.lease_ttl / 3;
        loop {
            if inner.journal.rotation(id).is_none() {
                break;
            }
            if inner.tasks.is_closed() {
                return;
            }
            match inner
                .store
                .renew_refresh_lease(id, &fence, inner.settings.lease_ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::debug!(account = id, error = %e, "could not renew the lease of a held rotation")
                }
            }
            tokio::time::sleep(every).await;
        }
        if let Err(e) = inner.store.release_refresh_lease(id, &fence).await {
            tracing::debug!(account = id, error = %e, "could not release the refresh lease; it expires on its own");
        }
    }

    /// Writes every journaled rotation the store does not hold yet; returns how many were written. A rotation is
    /// written only over the refresh token it replaced (compare-and-set on the version), and clears a `needs_reauth`
    /// another replica recorded about that older token. A row that holds another credential (re-import, login) wins.
    pub async fn replay_journal(&self) -> usize {
        let inner = &self.inner;
        let mut written = 0;
        for (id, rotation) in inner.journal.rotations() {
            let stored = match inner.store.get_account(id).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    inner
                        .journal
                        .forget_rotation(id, &rotation.access_token)
                        .await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "store unavailable; journaled rotations wait");
                    return written;
                }
            };
            if stored.credential.refresh_token != rotation.replaced {
                // Already stored (by us), or superseded by a credential someone stored on purpose.
                inner
                    .journal
                    .forget_rotation(id, &rotation.access_token)
                    .await;
                continue;
            }
            let credential = crate::account::Credential {
                secret: rotation.access_token.clone(),
                refresh_token: rotation
                    .refresh_token
                    .clone()
                    .or_else(|| stored.credential.refresh_token.clone()),
                expires_at: rotation.expires_at_ms.and_then(crate::clock::from_millis),
            };
            let update = AccountUpdate {
                credential: Some(credential),
                needs_reauth: crate::store::Patch::Clear,
                last_error: crate::store::Patch::Clear,
                refresh_block: crate::store::Patch::Clear,
                ..Default::default()
            };
            match inner.store.update_account(id, stored.version, update).await {
                Ok(a) => {
                    tracing::info!(account = %a.name, "journaled rotation written to the store");
                    inner
                        .journal
                        .forget_rotation(id, &rotation.access_token)
                        .await;
                    written += 1;
                }
                Err(e) => {
                    tracing::warn!(account = id, error = %e, "could not write a journaled rotation; kept for the next sync")
                }
            }
        }
        written
    }
}
