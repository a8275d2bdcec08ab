//! A store whose every call has a deadline. The refresh engine talks to the store through it, so a store that accepts
//! a connection and never answers cannot stall a flight — which would keep renewing its refresh lease forever (the
//! renewal runs beside the work) and hold every other replica off the account.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    AccountUpdate, Fence, SharedCooldown, SharedStore, Store, StoreError, StoreFuture,
    StoredResponse, Usage,
};
use crate::account::{Account, AccountId, NewAccount};

#[derive(Debug)]
pub struct DeadlineStore {
    inner: SharedStore,
    deadline: Duration,
}

impl DeadlineStore {
    pub fn new(inner: SharedStore, deadline: Duration) -> DeadlineStore {
        DeadlineStore { inner, deadline }
    }

    fn bounded<'a, T: Send + 'a>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let deadline = self.deadline;
        Box::pin(async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "the store did not answer within {}s",
                    deadline.as_secs_f64()
                ))),
            }
        })
    }
}

impl Store for DeadlineStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.bounded(self.inner.ping())
    }
    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        self.bounded(self.inner.list_accounts())
    }
    fn get_account(&self, id: AccountId) -> StoreFuture<'_, Option<Account>> {
        self.bounded(self.inner.get_account(id))
    }
    fn insert_account(&self, account: NewAccount) -> StoreFuture<'_, Account> {
        self.bounded(self.inner.insert_account(account))
    }
    fn update_account(
        &self,
        id: AccountId,
        expected_version: i64,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account> {
        self.bounded(self.inner.update_account(id, expected_version, update))
    }
    fn remove_account(&self, id: AccountId) -> StoreFuture<'_, ()> {
        self.bounded(self.inner.remove_account(id))
    }
    fn change_seq(&self) -> StoreFuture<'_, i64> {
        self.bounded(self.inner.change_seq())
    }
    fn acquire_refresh_lease(
        &self,
        id: AccountId,
        holder: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, Option<i64>> {
        let holder = holder.to_string();
        let inner = self.inner.clone();
        self.bounded(async move { inner.acquire_refresh_lease(id, &holder, ttl).await })
    }
    fn release_refresh_lease(&self, id: AccountId, fence: &Fence) -> StoreFuture<'_, ()> {
        let fence = fence.clone();
        let inner = self.inner.clone();
        self.bounded(async move { inner.release_refresh_lease(id, &fence).await })
    }
    fn renew_refresh_lease(
        &self,
        id: AccountId,
        fence: &Fence,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let fence = fence.clone();
        let inner = self.inner.clone();
        self.bounded(async move { inner.renew_refresh_lease(id, &fence, ttl).await })
    }
    fn update_account_fenced(
        &self,
        id: AccountId,
        expected_version: i64,
        fence: &Fence,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account> {
        let fence = fence.clone();
        let inner = self.inner.clone();
        self.bounded(async move {
            inner
                .update_account_fenced(id, expected_version, &fence, update)
                .await
        })
    }
    fn take_token_call(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
        window: Duration,
    ) -> StoreFuture<'_, super::TokenCallSlot> {
        self.bounded(self.inner.take_token_call(now, interval, window))
    }
    fn pause_token_endpoint(&self, until: DateTime<Utc>, reason: &str) -> StoreFuture<'_, ()> {
        let reason = reason.to_string();
        let inner = self.inner.clone();
        self.bounded(async move { inner.pause_token_endpoint(until, &reason).await })
    }
    fn token_endpoint_state(&self) -> StoreFuture<'_, super::TokenEndpointState> {
        self.bounded(self.inner.token_endpoint_state())
    }
    fn put_cooldown(&self, cooldown: SharedCooldown) -> StoreFuture<'_, ()> {
        self.bounded(self.inner.put_cooldown(cooldown))
    }
    fn list_cooldowns(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<SharedCooldown>> {
        self.bounded(self.inner.list_cooldowns(now))
    }
    fn clear_cooldowns(&self, id: AccountId) -> StoreFuture<'_, ()> {
        self.bounded(self.inner.clear_cooldowns(id))
    }
    fn add_usage(&self, batch: Vec<(AccountId, Usage)>) -> StoreFuture<'_, ()> {
        self.bounded(self.inner.add_usage(batch))
    }
    fn usage_totals(&self) -> StoreFuture<'_, Vec<(AccountId, Usage)>> {
        self.bounded(self.inner.usage_totals())
    }
    fn put_responses(&self, responses: Vec<StoredResponse>, keep: u64) -> StoreFuture<'_, ()> {
        self.bounded(self.inner.put_responses(responses, keep))
    }
    fn get_response(
        &self,
        id: String,
        owner: String,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, Option<String>> {
        self.bounded(self.inner.get_response(id, owner, now))
    }
}
