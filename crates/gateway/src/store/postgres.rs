//! The shared store for several replicas: PostgreSQL (13 or newer). Migrations run at start under sqlx's advisory
//! lock, so replicas starting together are safe. Every account write also sends `NOTIFY gateway_changes`, so the other
//! replicas reload within moments; they poll the change counter every second as the fallback.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::sql;
use super::{AccountUpdate, Fence, SharedCooldown, StoreError, StoreFuture};
use crate::account::{Account, AccountId, AccountKind, Credential, NewAccount};
use crate::clock::{from_millis, to_millis};
use crate::config::without_password;
use crate::store::sqlite::apply_update;

/// The channel replicas listen on.
pub const CHANNEL: &str = "gateway_changes";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    encryption: super::encryption::Encryption,
    pool: PgPool,
    description: String,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl PostgresStore {
    /// How a write transaction begins (row locks and compare-and-set do the rest).
    const BEGIN: &'static str = "BEGIN";

    /// Reads and writes credentials with `encryption` (see [`super::encryption`]).
    pub fn with_encryption(mut self, encryption: super::encryption::Encryption) -> Self {
        self.encryption = encryption;
        self
    }

    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to {}: {e}", without_password(url)))
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(PostgresStore {
            encryption: super::encryption::Encryption::none(),
            pool,
            description: format!("postgres {}", without_password(url)),
        })
    }
}

/// Listens for change notifications and wakes `changed` for each, reconnecting after failures, until `shutdown`.
pub async fn watch(
    url: String,
    changed: std::sync::Arc<tokio::sync::Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let attempt = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            loop {
                listener.recv().await?;
                changed.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = attempt => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "change listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

super::sql::sql_store!(
    PostgresStore,
    sqlx::postgres::PgRow,
    |s: &str| sql::postgres(s),
    Some("SELECT pg_notify('gateway_changes', '')"),
    // Rewrites the table, so no old row version keeps a plain or old-key credential.
    "VACUUM FULL accounts"
);

super::tenants_sql::tenant_store!(PostgresStore, sqlx::postgres::PgRow, |s: &str| {
    sql::numbered(s)
});

super::ops_sql::ops_store!(PostgresStore, |s: &str| sql::numbered(s));
