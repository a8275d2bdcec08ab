//! The state every HTTP surface shares, and how it is assembled around a store.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::oauth::OAuthClient;
use crate::pool::Pool;
use crate::pricing::PriceTable;
use crate::proxy::Proxy;
use crate::refresh::{RefreshEngine, RefreshSettings};
use crate::store::SharedStore;
use crate::tenants::KeyRing;
use crate::usage::UsageLog;

/// The shared state; cloned for every request by the routes and middleware, so one `Arc` (the parts are in
/// [`Shared`], reached through `Deref`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub proxy: Proxy,
    pub clock: SharedClock,
    pub metrics: Option<PrometheusHandle>,
    /// The memory request bodies held at once may take together.
    pub bodies: BodyBudget,
    pub operator: Arc<crate::operator::Operator>,
    /// Writes the Responses API's stored conversations (`previous_response_id`).
    pub stored_responses: crate::openai::responses::stored::Keeper,
}

impl AppState {
    pub fn pool(&self) -> &Arc<Pool> {
        self.proxy.pool()
    }

    /// The client keys this replica knows (static and managed).
    pub fn keys(&self) -> &Arc<KeyRing> {
        self.proxy.usage().ring()
    }

    /// Reloads managed keys when the store changed.
    pub async fn sync_keys(&self) -> Result<bool, crate::store::StoreError> {
        let Some(tenants) = self.store.tenants() else {
            return Ok(false);
        };
        let seq = self.store.change_seq().await?;
        self.keys().sync(seq, tenants).await
    }
}

/// Builds the reqwest client of the calls off the request path (OAuth, credential checks, alerts, login): connect and
/// per-read timeouts, never a total deadline. The request path has its own (`crate::upstream`).
pub fn http_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(config.upstream.connect_timeout())
        .read_timeout(config.upstream.read_timeout())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("claude-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why the gateway's state could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("building the upstream client: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
}

/// Assembles the gateway around a store.
pub fn build_state(
    config: Config,
    store: SharedStore,
    clock: SharedClock,
    metrics: Option<PrometheusHandle>,
    journal: crate::refresh::Journal,
) -> Result<AppState, BuildError> {
    let http = http_client(&config)?;
    let oauth = OAuthClient::new(http.clone(), config.oauth.clone(), clock.clone());
    let operator = crate::operator::Operator::new(
        OAuthClient::new(http.clone(), config.oauth.clone(), clock.clone()),
        clock.now(),
        crate::alerts::Alerts::new(config.alerts.clone(), http.clone()),
    );
    let engine = RefreshEngine::with_journal(
        store.clone(),
        Arc::new(oauth),
        clock.clone(),
        RefreshSettings::from(&config.refresh),
        journal,
    );
    let pool = Arc::new(Pool::new(
        store.clone(),
        engine,
        crate::pool::PoolSettings::from(&config.pool),
    ));
    let ring = Arc::new(KeyRing::new(&config.client_keys));
    let usage = Arc::new(UsageLog::new(
        PriceTable::new(&config.prices),
        ring,
        clock.clone(),
    ));
    // One upstream client per connection worker (`crate::listener::workers`), so that no pooled upstream connection
    // is shared between threads.
    let timeouts = crate::upstream::Timeouts::from(&config.upstream);
    let workers = (0..config.listener.worker_count())
        .map(|_| crate::upstream::Client::new(timeouts))
        .collect::<Result<Vec<_>, _>>()?;
    let proxy = Proxy::new(
        crate::proxy::Upstream::new(http, crate::upstream::Client::new(timeouts)?, workers),
        config.upstream.base_url.clone(),
        pool,
        &config.pool,
        usage,
    );
    let bodies = BodyBudget::new(config.listener.max_body_memory_bytes);
    Ok(AppState(Arc::new(Shared {
        bodies,
        config: Arc::new(config),
        stored_responses: crate::openai::responses::stored::Keeper::new(store.clone()),
        store,
        proxy,
        clock,
        metrics,
        operator: Arc::new(operator),
    })))
}

/// The memory all request bodies held at once may take together.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub fn new(total: u64) -> BodyBudget {
        let total = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(total)),
            total,
        }
    }

    /// Takes `n` more bytes of the budget into `held`, or says the budget is spent.
    pub(crate) fn take(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        n: usize,
    ) -> Result<(), crate::error::GatewayError> {
        if n == 0 {
            return Ok(());
        }
        let more = u32::try_from(n)
            .ok()
            .and_then(|n| Arc::clone(&self.bytes).try_acquire_many_owned(n).ok())
            .ok_or_else(|| crate::error::GatewayError::Unavailable {
                message: format!(
                    "the gateway holds as many request bodies as it may ({} bytes, listener.max_body_memory_bytes); \
                     retry shortly",
                    self.total
                ),
                retry_after_secs: Some(1),
            })?;
        match held {
            Some(h) => h.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}
