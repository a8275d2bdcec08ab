//! The embedded store: one SQLite file in `data_dir`, WAL mode, created 0600 in a 0700 directory.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql;
use super::{AccountUpdate, Fence, Patch, SharedCooldown, StoreError, StoreFuture};
use crate::account::{Account, AccountId, AccountKind, Credential, NewAccount};
use crate::clock::{from_millis, to_millis};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    encryption: super::encryption::Encryption,
    pool: SqlitePool,
    description: String,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// How a write transaction begins: with the write lock taken, so that a transaction that reads before it writes
    /// waits (`busy_timeout`) for another connection's commit (another of the pool's, or the CLI's while the gateway
    /// runs) instead of failing with "database is locked" when its snapshot went stale (WAL's SQLITE_BUSY_SNAPSHOT).
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    /// Reads and writes credentials with `encryption` (see [`super::encryption`]).
    pub fn with_encryption(mut self, encryption: super::encryption::Encryption) -> Self {
        self.encryption = encryption;
        self
    }

    /// Opens (creating when missing) `data_dir/gateway.db` and runs pending migrations.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join("gateway.db");
        create_private_file(&path)?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            // Overwritten credentials (a rotation, `store encrypt`) leave no old bytes behind in the file.
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(SqliteStore {
            encryption: super::encryption::Encryption::none(),
            pool,
            description: format!("sqlite {}", path.display()),
        })
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io =
        |e: std::io::Error| StoreError::Unavailable(format!("data dir {}: {e}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Unavailable(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // SQLite creates its -wal and -shm files with the database file's mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Unavailable(format!("data dir {}: {e}", dir.display())))
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Applies an update to an in-memory account (the merge step of compare-and-set).
pub(crate) fn apply_update(account: &mut Account, u: AccountUpdate) {
    if let Some(v) = u.name {
        account.name = v;
    }
    if let Some(v) = u.credential {
        account.credential = v;
    }
    if let Some(v) = u.disabled {
        account.disabled = v;
    }
    u.needs_reauth.apply(&mut account.needs_reauth);
    u.banned.apply(&mut account.banned);
    u.last_error.apply(&mut account.last_error);
    account.identity.learn(u.identity);
    if let Some(v) = u.priority {
        account.priority = v;
    }
    if let Some(v) = u.weight {
        account.weight = v;
    }
    u.max_concurrency.apply(&mut account.max_concurrency);
    if let Some(v) = u.tags {
        account.tags = v;
    }
    match u.refresh_block {
        Patch::Keep => {}
        Patch::Set((until, reason)) => {
            account.refresh_blocked_until = Some(until);
            account.refresh_block_reason = Some(reason);
        }
        Patch::Clear => {
            account.refresh_blocked_until = None;
            account.refresh_block_reason = None;
        }
    }
}

super::sql::sql_store!(
    SqliteStore,
    sqlx::sqlite::SqliteRow,
    |s: &str| sql::sqlite(s),
    None,
    // With `secure_delete`, overwritten rows are zeroed in the file; the WAL still holds old pages until emptied.
    "PRAGMA wal_checkpoint(TRUNCATE)"
);

super::tenants_sql::tenant_store!(SqliteStore, sqlx::sqlite::SqliteRow, |s: &str| s
    .to_string());

super::ops_sql::ops_store!(SqliteStore, |s: &str| s.to_string());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn new_oauth(name: &str, rt: &str) -> NewAccount {
        NewAccount {
            name: name.into(),
            kind: AccountKind::Oauth,
            credential: Credential {
                secret: "at".into(),
                refresh_token: Some(rt.into()),
                expires_at: None,
            },
            identity: Default::default(),
            priority: 0,
            weight: 1,
            disabled: false,
        }
    }

    /// The bundled SQLite is built as `.cargo/config.toml` says: without memory statistics (a process-wide mutex on
    /// every allocation otherwise).
    #[tokio::test]
    async fn sqlite_is_built_without_memory_statistics() {
        let dir = std::env::temp_dir().join(format!("cgw-store-options-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir).await.unwrap();
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch is one transaction: one change-counter bump for all of it, and a stale version anywhere writes nothing.
    #[tokio::test]
    async fn a_batch_of_account_writes_is_one_transaction() {
        use crate::store::AccountWrite;
        let dir = std::env::temp_dir().join(format!("cgw-store-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir).await.unwrap();
        let a = store.insert_account(new_oauth("a", "rt1")).await.unwrap();
        let seq = store.change_seq().await.unwrap();
        let rename = |version| AccountWrite::Update {
            id: a.id,
            version,
            update: AccountUpdate {
                name: Some("a2".into()),
                ..Default::default()
            },
        };
        let written = store
            .write_accounts(vec![
                AccountWrite::Insert(new_oauth("b", "rt2")),
                rename(a.version),
                AccountWrite::Insert(new_oauth("c", "rt3")),
            ])
            .await
            .unwrap();
        let names: Vec<&str> = written.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["b", "a2", "c"]);
        assert_eq!(store.change_seq().await.unwrap(), seq + 1);
        let stale = store
            .write_accounts(vec![
                AccountWrite::Insert(new_oauth("d", "rt4")),
                rename(a.version),
            ])
            .await;
        assert!(
            matches!(stale, Err(StoreError::Conflict { .. })),
            "{stale:?}"
        );
        assert_eq!(
            store.list_accounts().await.unwrap().len(),
            3,
            "nothing of the batch was written"
        );
        assert_eq!(store.change_seq().await.unwrap(), seq + 1);
    }

    /// Two stores on one file (the CLI importing while the gateway serves, or two of the pool's connections) write at
    /// once, each transaction reading before it writes (an update checks the version it replaces): one whose snapshot
    /// the other's commit made stale waits for the lock, it never fails with "database is locked".
    #[tokio::test]
    async fn concurrent_writers_on_one_file_wait_for_each_other() {
        use crate::store::AccountWrite;
        let dir = std::env::temp_dir().join(format!("cgw-store-writers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let gateway = std::sync::Arc::new(SqliteStore::open(&dir).await.unwrap());
        let cli = std::sync::Arc::new(SqliteStore::open(&dir).await.unwrap());
        let writer = |store: std::sync::Arc<SqliteStore>, who: &'static str| async move {
            let mut account = store.insert_account(new_oauth(who, who)).await.unwrap();
            let mut errors = Vec::new();
            for i in 0..100 {
                let rename = AccountWrite::Update {
                    id: account.id,
                    version: account.version,
                    update: AccountUpdate {
                        name: Some(format!("{who}-{i}")),
                        ..Default::default()
                    },
                };
                match store.write_accounts(vec![rename]).await {
                    Ok(mut written) => account = written.remove(0),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        };
        // Both in one task: their transactions interleave at every await, each on its own pool's connection.
        let (a, b) = tokio::join!(writer(gateway, "gateway"), writer(cli, "cli"));
        let errors: Vec<String> = a.into_iter().chain(b).collect();
        assert!(
            errors.is_empty(),
            "{} writes failed: {:?}",
            errors.len(),
            errors.first()
        );
    }

    #[tokio::test]
    async fn compare_and_set_and_permissions() {
        let dir = std::env::temp_dir().join(format!("cgw-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir.join("d")).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join("d")), 0o700);
            assert_eq!(mode(&dir.join("d/gateway.db")), 0o600);
        }
        let seq0 = store.change_seq().await.unwrap();
        let a = store.insert_account(new_oauth("a", "rt1")).await.unwrap();
        assert_eq!(a.version, 1);
        assert!(store.change_seq().await.unwrap() > seq0);
        assert!(matches!(
            store.insert_account(new_oauth("a", "x")).await,
            Err(StoreError::DuplicateName(_))
        ));

        let cred = Credential {
            secret: "at2".into(),
            refresh_token: Some("rt2".into()),
            expires_at: None,
        };
        let b = store
            .update_account(
                a.id,
                1,
                AccountUpdate {
                    credential: Some(cred.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(b.version, 2);
        assert_eq!(b.credential, cred);
        // A writer holding the old version loses.
        let stale = store
            .update_account(
                a.id,
                1,
                AccountUpdate {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
        assert!(!store.get_account(a.id).await.unwrap().unwrap().disabled);

        // Survives reopening.
        drop(store);
        let store = SqliteStore::open(&dir.join("d")).await.unwrap();
        let again = store.get_account(a.id).await.unwrap().unwrap();
        assert_eq!(again.credential.refresh_token.as_deref(), Some("rt2"));
        store.remove_account(a.id).await.unwrap();
        assert!(store.list_accounts().await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Keeping a response (on every `store: true` Responses request) and finding one never scan the responses table:
    /// each is an index lookup or range, whatever the table holds (it used to scan and sort all of it, up to
    /// `MAX_STORED` rows, on every request).
    #[tokio::test]
    async fn keeping_and_finding_a_response_use_indexes_not_table_scans() {
        let dir = std::env::temp_dir().join(format!("cgw-store-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir).await.unwrap();
        let put = sql::put_responses_sql(2);
        for statement in [sql::PRUNE_RESPONSES, sql::GET_RESPONSE, &put] {
            let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(
                format!("EXPLAIN QUERY PLAN {statement}"),
            ));
            for i in 0..10 {
                query = query.bind(i);
            }
            let plan = query.fetch_all(&store.pool).await.unwrap();
            let steps: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
            assert!(
                steps
                    .iter()
                    // A multi-row insert reads its own VALUES rows ("SCAN 2-ROW VALUES CLAUSE"), not a table.
                    .all(
                        |s| (!s.starts_with("SCAN") || s.ends_with("-ROW VALUES CLAUSE"))
                            && !s.contains("TEMP B-TREE")
                    ),
                "{statement}: {steps:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
