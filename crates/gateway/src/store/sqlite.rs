//! The embedded store: one SQLite file in `data_dir`, WAL mode, created 0600 in a 0700 directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;

use super::{AccountUpdate, StoreError, StoreFuture};
use crate::account::{Account, AccountId, AccountKind, Credential, NewAccount};
use crate::clock::{from_millis, to_millis};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
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
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(SqliteStore { pool, path })
    }

    async fn fetch(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| account_from_row(&r)).transpose()
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

fn account_from_row(r: &SqliteRow) -> Result<Account, StoreError> {
    let get_err = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let kind: String = r.try_get("kind").map_err(get_err)?;
    let kind = AccountKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown account kind {kind:?}")))?;
    let millis = |col: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let v: Option<i64> = r.try_get(col).map_err(get_err)?;
        Ok(v.and_then(from_millis))
    };
    let required = |col: &str| -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        millis(col)?.ok_or_else(|| StoreError::Corrupt(format!("{col} missing")))
    };
    let weight: i64 = r.try_get("weight").map_err(get_err)?;
    Ok(Account {
        id: r.try_get("id").map_err(get_err)?,
        name: r.try_get("name").map_err(get_err)?,
        kind,
        credential: Credential {
            secret: r.try_get("secret").map_err(get_err)?,
            refresh_token: r.try_get("refresh_token").map_err(get_err)?,
            expires_at: millis("expires_at_ms")?,
        },
        disabled: r.try_get::<i64, _>("disabled").map_err(get_err)? != 0,
        needs_reauth: r.try_get("needs_reauth").map_err(get_err)?,
        last_error: r.try_get("last_error").map_err(get_err)?,
        email: r.try_get("email").map_err(get_err)?,
        account_uuid: r.try_get("account_uuid").map_err(get_err)?,
        organization_uuid: r.try_get("organization_uuid").map_err(get_err)?,
        organization_name: r.try_get("organization_name").map_err(get_err)?,
        priority: r.try_get::<i64, _>("priority").map_err(get_err)? as i32,
        weight: u32::try_from(weight).unwrap_or(1),
        version: r.try_get("version").map_err(get_err)?,
        created_at: required("created_at_ms")?,
        updated_at: required("updated_at_ms")?,
    })
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
    if let Some(v) = u.needs_reauth {
        account.needs_reauth = v;
    }
    if let Some(v) = u.last_error {
        account.last_error = v;
    }
    if let Some(v) = u.email {
        account.email = v;
    }
    if let Some(v) = u.account_uuid {
        account.account_uuid = v;
    }
    if let Some(v) = u.organization_uuid {
        account.organization_uuid = v;
    }
    if let Some(v) = u.organization_name {
        account.organization_name = v;
    }
    if let Some(v) = u.priority {
        account.priority = v;
    }
    if let Some(v) = u.weight {
        account.weight = v;
    }
}

const BUMP_SEQ: &str = "UPDATE store_meta SET value = value + 1 WHERE key = 'change_seq'";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl super::Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM accounts ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter().map(account_from_row).collect()
        })
    }

    fn get_account(&self, id: AccountId) -> StoreFuture<'_, Option<Account>> {
        Box::pin(self.fetch(id))
    }

    fn insert_account(&self, a: NewAccount) -> StoreFuture<'_, Account> {
        Box::pin(async move {
            let now = to_millis(chrono::Utc::now());
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let result = sqlx::query(
                "INSERT INTO accounts (name, kind, secret, refresh_token, expires_at_ms, disabled, email, account_uuid, \
                 organization_uuid, organization_name, priority, weight, version, created_at_ms, updated_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            )
            .bind(&a.name)
            .bind(a.kind.as_str())
            .bind(&a.credential.secret)
            .bind(&a.credential.refresh_token)
            .bind(a.credential.expires_at.map(to_millis))
            .bind(i64::from(a.disabled))
            .bind(&a.email)
            .bind(&a.account_uuid)
            .bind(&a.organization_uuid)
            .bind(&a.organization_name)
            .bind(i64::from(a.priority))
            .bind(i64::from(a.weight))
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { StoreError::DuplicateName(a.name.clone()) } else { unavailable(e) })?;
            sqlx::query(BUMP_SEQ)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            let id = result.last_insert_rowid();
            self.fetch(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))
        })
    }

    fn update_account(
        &self,
        id: AccountId,
        expected_version: i64,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account> {
        Box::pin(async move {
            let mut account = self
                .fetch(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            if account.version != expected_version {
                return Err(StoreError::Conflict {
                    id,
                    expected: expected_version,
                });
            }
            apply_update(&mut account, update);
            let now = to_millis(chrono::Utc::now());
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let done = sqlx::query(
                "UPDATE accounts SET name = ?, secret = ?, refresh_token = ?, expires_at_ms = ?, disabled = ?, \
                 needs_reauth = ?, last_error = ?, email = ?, account_uuid = ?, organization_uuid = ?, \
                 organization_name = ?, priority = ?, weight = ?, version = version + 1, updated_at_ms = ? \
                 WHERE id = ? AND version = ?",
            )
            .bind(&account.name)
            .bind(&account.credential.secret)
            .bind(&account.credential.refresh_token)
            .bind(account.credential.expires_at.map(to_millis))
            .bind(i64::from(account.disabled))
            .bind(&account.needs_reauth)
            .bind(&account.last_error)
            .bind(&account.email)
            .bind(&account.account_uuid)
            .bind(&account.organization_uuid)
            .bind(&account.organization_name)
            .bind(i64::from(account.priority))
            .bind(i64::from(account.weight))
            .bind(now)
            .bind(id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { StoreError::DuplicateName(account.name.clone()) } else { unavailable(e) })?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict {
                    id,
                    expected: expected_version,
                });
            }
            sqlx::query(BUMP_SEQ)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            self.fetch(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))
        })
    }

    fn remove_account(&self, id: AccountId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let done = sqlx::query("DELETE FROM accounts WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(id.to_string()));
            }
            sqlx::query(BUMP_SEQ)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)
        })
    }

    fn change_seq(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'change_seq'")
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
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
            email: None,
            account_uuid: None,
            organization_uuid: None,
            organization_name: None,
            priority: 0,
            weight: 1,
            disabled: false,
        }
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
}
