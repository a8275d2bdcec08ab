//! The SQL shared by the SQLite and PostgreSQL stores. Statements are written once with `?` placeholders;
//! PostgreSQL gets them numbered (`$1`, `$2`, …). The `Store` implementation is generated for both backends by
//! [`sql_store!`], so the two cannot drift apart.

/// Rewrites `?` placeholders as `$1`, `$2`, … (PostgreSQL). Statements here contain no `?` inside literals.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The database's clock in milliseconds since the epoch, written `{now_ms}` in statements and replaced per backend
/// ([`sqlite`], [`postgres`]). Leases and refresh blocks are compared with this clock only, never with a replica's:
/// replicas whose clocks disagree still agree on when a lease expires and a block ends.
pub const NOW_MS: &str = "{now_ms}";
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
const POSTGRES_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// A statement in SQLite's dialect.
pub fn sqlite(sql: &str) -> String {
    sql.replace(NOW_MS, SQLITE_NOW_MS)
}

/// A statement in PostgreSQL's dialect.
pub fn postgres(sql: &str) -> String {
    numbered(&sql.replace(NOW_MS, POSTGRES_NOW_MS))
}

/// Accounts with the time left on their refresh block by the database's clock (`block_left_ms`), which the reader
/// turns into its own clock's time: the block ends at the same moment for every replica.
pub const SELECT_ACCOUNTS: &str =
    "SELECT *, refresh_blocked_until_ms - {now_ms} AS block_left_ms FROM accounts ORDER BY id";
pub const SELECT_ACCOUNT: &str =
    "SELECT *, refresh_blocked_until_ms - {now_ms} AS block_left_ms FROM accounts WHERE id = ?";
pub const INSERT_ACCOUNT: &str = "INSERT INTO accounts (name, kind, secret, refresh_token, expires_at_ms, disabled, email, \
     account_uuid, organization_uuid, organization_name, priority, weight, version, created_at_ms, updated_at_ms) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING id";
pub const UPDATE_ACCOUNT: &str = "UPDATE accounts SET name = ?, secret = ?, refresh_token = ?, expires_at_ms = ?, \
     disabled = ?, needs_reauth = ?, last_error = ?, email = ?, account_uuid = ?, organization_uuid = ?, \
     organization_name = ?, priority = ?, weight = ?, max_concurrency = ?, \
     refresh_blocked_until_ms = CASE WHEN ? IS NULL THEN NULL ELSE {now_ms} + ? END, \
     refresh_block_reason = ?, banned = ?, tags = ?, version = version + 1, updated_at_ms = ? WHERE id = ? AND version = ?";
/// Locks the lease row for the rest of the transaction if `fence` still holds it (PostgreSQL: a row lock a concurrent
/// takeover waits on; SQLite: the write lock). So a takeover cannot slip between the fence check and the commit: the
/// new holder's re-read, after its takeover, sees the credential written under the old fence.
pub const LOCK_FENCE: &str =
    "UPDATE refresh_leases SET fence = fence WHERE account_id = ? AND holder = ? AND fence = ?";
pub const FENCE_CONDITION: &str =
    " AND EXISTS (SELECT 1 FROM refresh_leases WHERE account_id = ? AND holder = ? AND fence = ?)";
pub const DELETE_ACCOUNT: &str = "DELETE FROM accounts WHERE id = ?";
pub const BUMP_SEQ: &str = "UPDATE store_meta SET value = value + 1 WHERE key = 'change_seq'";
pub const SELECT_SEQ: &str = "SELECT value FROM store_meta WHERE key = 'change_seq'";
/// Takes the lease when free, expired, or already ours (a process runs one flight per account at a time, so taking
/// its own lease again is safe); the fence grows with every taking.
/// Binds: account, holder, time-to-live (ms). Expiry is by the database's clock.
pub const ACQUIRE_LEASE: &str = "INSERT INTO refresh_leases (account_id, holder, fence, expires_at_ms) \
     VALUES (?, ?, 1, {now_ms} + ?) \
     ON CONFLICT (account_id) DO UPDATE SET holder = excluded.holder, fence = refresh_leases.fence + 1, \
     expires_at_ms = excluded.expires_at_ms \
     WHERE refresh_leases.expires_at_ms < {now_ms} OR refresh_leases.holder = excluded.holder \
     RETURNING fence";
/// Binds: time-to-live (ms), account, holder, fence.
pub const RENEW_LEASE: &str =
    "UPDATE refresh_leases SET expires_at_ms = {now_ms} + ? WHERE account_id = ? AND holder = ? AND fence = ?";
pub const RELEASE_LEASE: &str =
    "UPDATE refresh_leases SET expires_at_ms = 0 WHERE account_id = ? AND holder = ? AND fence = ?";
/// One token-endpoint call against the shared budget (GCRA, see `store::budget_decision`), in one statement so that
/// concurrent takers cannot both pass. Binds: now, now, interval, now, now, now, interval, window, now (ms).
pub const TAKE_TOKEN_CALL: &str = "UPDATE token_endpoint SET spent_until_ms = \
     (CASE WHEN spent_until_ms > ? THEN spent_until_ms ELSE ? END) + ? \
     WHERE id = 1 AND paused_until_ms <= ? \
     AND (CASE WHEN spent_until_ms > ? THEN spent_until_ms ELSE ? END) + ? - ? <= ? RETURNING spent_until_ms";
pub const SELECT_TOKEN_ENDPOINT: &str =
    "SELECT spent_until_ms, paused_until_ms, pause_reason FROM token_endpoint WHERE id = 1";
pub const PAUSE_TOKEN_ENDPOINT: &str =
    "UPDATE token_endpoint SET paused_until_ms = ?, pause_reason = ? WHERE id = 1 AND paused_until_ms < ?";
pub const PUT_COOLDOWN: &str = "INSERT INTO cooldowns (account_id, model, until_ms, reason) VALUES (?, ?, ?, ?) \
     ON CONFLICT (account_id, model) DO UPDATE SET until_ms = excluded.until_ms, reason = excluded.reason";
pub const PRUNE_COOLDOWNS: &str = "DELETE FROM cooldowns WHERE until_ms < ?";
pub const LIST_COOLDOWNS: &str =
    "SELECT account_id, model, until_ms, reason FROM cooldowns WHERE until_ms > ?";
pub const CLEAR_COOLDOWNS: &str = "DELETE FROM cooldowns WHERE account_id = ?";
/// Totals saturate at the largest 64-bit integer instead of overflowing (a PostgreSQL bigint overflow would fail the
/// whole batch on every flush; SQLite would turn the total into a float).
pub const ADD_USAGE: &str = concat!(
    "INSERT INTO usage (account_id, requests, input_tokens, output_tokens, cache_read_tokens, \
     cache_creation_tokens) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET ",
    "requests = CASE WHEN usage.requests > 9223372036854775807 - excluded.requests THEN 9223372036854775807 \
     ELSE usage.requests + excluded.requests END, ",
    "input_tokens = CASE WHEN usage.input_tokens > 9223372036854775807 - excluded.input_tokens \
     THEN 9223372036854775807 ELSE usage.input_tokens + excluded.input_tokens END, ",
    "output_tokens = CASE WHEN usage.output_tokens > 9223372036854775807 - excluded.output_tokens \
     THEN 9223372036854775807 ELSE usage.output_tokens + excluded.output_tokens END, ",
    "cache_read_tokens = CASE WHEN usage.cache_read_tokens > 9223372036854775807 - excluded.cache_read_tokens \
     THEN 9223372036854775807 ELSE usage.cache_read_tokens + excluded.cache_read_tokens END, ",
    "cache_creation_tokens = CASE WHEN usage.cache_creation_tokens > 9223372036854775807 - excluded.cache_creation_tokens \
     THEN 9223372036854775807 ELSE usage.cache_creation_tokens + excluded.cache_creation_tokens END"
);
pub const SELECT_USAGE: &str =
    "SELECT account_id, requests, input_tokens, output_tokens, cache_read_tokens, \
     cache_creation_tokens FROM usage ORDER BY account_id";

/// The longest span, in milliseconds, a stored time may be from now (`clock::MAX_WAIT`): bounds the arithmetic.
pub const MAX_MS: i64 = crate::clock::MAX_WAIT.as_millis() as i64;

/// A lease's time-to-live in milliseconds, bounded.
pub fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(crate::clock::bounded(ttl).as_millis()).unwrap_or(MAX_MS)
}

/// Keeps the newest rows only (the table is bounded whatever clients do) and drops the expired: every row inserted
/// `keep` or more rows before the one just kept (a range of the insertion sequence `seq`) and every row expired (a
/// range of the index on `expires_at_ms`). Two index ranges, never a scan or a sort of the table.
pub const PRUNE_RESPONSES: &str = "DELETE FROM responses WHERE seq <= ? OR expires_at_ms < ?";
/// The insert of `rows` responses in one statement; returns each row's insertion sequence (a rewritten id keeps its
/// place).
pub fn put_responses_sql(rows: usize) -> String {
    format!(
        "INSERT INTO responses (id, owner, body, created_at_ms, expires_at_ms) VALUES {} \
         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, body = excluded.body, \
         created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms RETURNING seq",
        placeholder_rows(rows, 5)
    )
}

/// Most rows per multi-row insert statement (a request-log row has 18 parameters, a stored response 5). A row costs its binds and its insert whatever the chunk, but
/// every statement is a round trip to the database's thread (SQLite: a wake-up of its worker thread and one of the
/// runtime's back): 16-row statements doubled the futex calls per request at 1,000 req/s. A larger statement holds that
/// thread, and a core, longer at a time: with 256-row statements (about 1.5 ms each) the added p99 at 500 req/s was
/// +4.6 and +2.2 ms in two runs. 64 rows: 16 statements a second at 1,000 req/s, each under half a millisecond; each
/// size is prepared once per connection.
pub const INSERT_CHUNK: usize = 64;
/// Distinct chunk sizes (powers of two up to [`INSERT_CHUNK`]): one statement text each.
pub const CHUNK_SIZES: usize = INSERT_CHUNK.ilog2() as usize + 1;

/// The records of one flush in statement-sized chunks: as many full chunks as fit, then powers of two, so a flush uses
/// at most [`CHUNK_SIZES`] distinct statements and each is prepared once per connection (sqlx caches them by their text).
pub fn insert_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(INSERT_CHUNK);
        let n = 1 << n.ilog2();
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}
/// The placeholders of a multi-row `VALUES`: `rows` groups of `columns` (`(?, ?), (?, ?)`).
pub fn placeholder_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// `rows` without the earlier of two with the same id (one statement may not write a row twice), in their order.
pub fn last_of_each_id(mut rows: Vec<super::StoredResponse>) -> Vec<super::StoredResponse> {
    let mut seen = std::collections::HashSet::new();
    rows.reverse();
    rows.retain(|r| seen.insert(r.id.clone()));
    rows.reverse();
    rows
}
pub const GET_RESPONSE: &str =
    "SELECT body FROM responses WHERE id = ? AND owner = ? AND expires_at_ms > ?";

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn usage_values(u: &super::Usage) -> [i64; 5] {
    [
        to_i64(u.requests),
        to_i64(u.input_tokens),
        to_i64(u.output_tokens),
        to_i64(u.cache_read_tokens),
        to_i64(u.cache_creation_tokens),
    ]
}

/// Generates `impl Store` for a sqlx backend. `$q` turns a statement into the backend's dialect.
macro_rules! sql_store {
    ($store:ty, $row:ty, $q:expr, $notify:expr, $scrub:expr) => {
        /// Bumps the change counter (and notifies listeners, where the backend can) inside a transaction.
        async fn bump_seq(
            conn: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
        ) -> Result<(), StoreError> {
            sqlx::query(sql::BUMP_SEQ).execute(&mut *conn).await.map_err(unavailable)?;
            let notify: Option<&str> = $notify;
            if let Some(n) = notify {
                sqlx::query(n).execute(&mut *conn).await.map_err(unavailable)?;
            }
            Ok(())
        }

        /// Inserts `a` inside a transaction; returns its id.
        async fn insert_in(
            conn: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
            enc: &super::encryption::Encryption,
            a: &NewAccount,
        ) -> Result<AccountId, StoreError> {
            use sqlx::Row;
            let now = to_millis(crate::clock::system_now());
            let row = sqlx::query(sqlx::AssertSqlSafe($q(sql::INSERT_ACCOUNT)))
                .bind(&a.name)
                .bind(a.kind.as_str())
                .bind(enc.seal("secret", &a.credential.secret)?)
                .bind(enc.seal_opt("refresh_token", a.credential.refresh_token.as_deref())?)
                .bind(a.credential.expires_at.map(to_millis))
                .bind(i64::from(a.disabled))
                .bind(&a.identity.email)
                .bind(&a.identity.account_uuid)
                .bind(&a.identity.organization_uuid)
                .bind(&a.identity.organization_name)
                .bind(i64::from(a.priority))
                .bind(i64::from(a.weight))
                .bind(now)
                .bind(now)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::DuplicateName(a.name.clone())
                    } else {
                        unavailable(e)
                    }
                })?;
            row.try_get(0).map_err(|e| StoreError::Corrupt(e.to_string()))
        }

        /// Applies `update` inside a transaction if the account is still at `expected_version` (no fence: the batch
        /// path of imports).
        async fn update_in(
            conn: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
            enc: &super::encryption::Encryption,
            id: AccountId,
            expected_version: i64,
            update: AccountUpdate,
        ) -> Result<(), StoreError> {
            let row = sqlx::query(sqlx::AssertSqlSafe($q(sql::SELECT_ACCOUNT)))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
            let mut account =
                row.map(|r| account_from_row(&r, enc)).transpose()?.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            if account.version != expected_version {
                return Err(StoreError::Conflict { id, expected: expected_version });
            }
            apply_update(&mut account, update);
            let done = update_row(&mut *conn, enc, &account, id, expected_version, None).await?;
            if done != 1 {
                return Err(StoreError::Conflict { id, expected: expected_version });
            }
            Ok(())
        }

        /// Writes `account` over the row `id` if it is still at `expected_version` (and, with `fence`, the lease is
        /// still held); returns the number of rows written (0 or 1).
        async fn update_row(
            conn: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
            enc: &super::encryption::Encryption,
            account: &Account,
            id: AccountId,
            expected_version: i64,
            fence: Option<&Fence>,
        ) -> Result<u64, StoreError> {
            let now = to_millis(crate::clock::system_now());
            // A block is stored by the database's clock: as the time left by ours.
            let block_left = account
                .refresh_blocked_until
                .map(|t| to_millis(t).saturating_sub(now).clamp(-sql::MAX_MS, sql::MAX_MS));
            let mut statement = sql::UPDATE_ACCOUNT.to_string();
            if fence.is_some() {
                statement.push_str(sql::FENCE_CONDITION);
            }
            let statement = $q(&statement);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .bind(&account.name)
                .bind(enc.seal("secret", &account.credential.secret)?)
                .bind(enc.seal_opt("refresh_token", account.credential.refresh_token.as_deref())?)
                .bind(account.credential.expires_at.map(to_millis))
                .bind(i64::from(account.disabled))
                .bind(&account.needs_reauth)
                .bind(&account.last_error)
                .bind(&account.identity.email)
                .bind(&account.identity.account_uuid)
                .bind(&account.identity.organization_uuid)
                .bind(&account.identity.organization_name)
                .bind(i64::from(account.priority))
                .bind(i64::from(account.weight))
                .bind(account.max_concurrency.map(i64::from))
                .bind(block_left)
                .bind(block_left)
                .bind(&account.refresh_block_reason)
                .bind(&account.banned)
                .bind(crate::account::join_tags(&account.tags))
                .bind(now)
                .bind(id)
                .bind(expected_version);
            if let Some(f) = fence {
                query = query.bind(id).bind(&f.holder).bind(f.token);
            }
            let done = query.execute(&mut *conn).await.map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::DuplicateName(account.name.clone())
                } else {
                    unavailable(e)
                }
            })?;
            Ok(done.rows_affected())
        }

        fn account_from_row(r: &$row, enc: &super::encryption::Encryption) -> Result<Account, StoreError> {
            use sqlx::Row;
            let get_err = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            let kind: String = r.try_get("kind").map_err(get_err)?;
            let kind =
                AccountKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("unknown account kind {kind:?}")))?;
            let millis = |col: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
                let v: Option<i64> = r.try_get(col).map_err(get_err)?;
                Ok(v.and_then(from_millis))
            };
            let required = |col: &str| -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
                millis(col)?.ok_or_else(|| StoreError::Corrupt(format!("{col} missing")))
            };
            let weight: i64 = r.try_get("weight").map_err(get_err)?;
            let max_concurrency: Option<i64> = r.try_get("max_concurrency").map_err(get_err)?;
            Ok(Account {
                id: r.try_get("id").map_err(get_err)?,
                name: r.try_get("name").map_err(get_err)?,
                kind,
                credential: Credential {
                    secret: enc.open("secret", r.try_get("secret").map_err(get_err)?)?,
                    refresh_token: enc.open_opt("refresh_token", r.try_get("refresh_token").map_err(get_err)?)?,
                    expires_at: millis("expires_at_ms")?,
                },
                disabled: r.try_get::<i64, _>("disabled").map_err(get_err)? != 0,
                needs_reauth: r.try_get("needs_reauth").map_err(get_err)?,
                banned: r.try_get("banned").map_err(get_err)?,
                last_error: r.try_get("last_error").map_err(get_err)?,
                identity: crate::account::Identity {
                    email: r.try_get("email").map_err(get_err)?,
                    account_uuid: r.try_get("account_uuid").map_err(get_err)?,
                    organization_uuid: r.try_get("organization_uuid").map_err(get_err)?,
                    organization_name: r.try_get("organization_name").map_err(get_err)?,
                },
                priority: i32::try_from(r.try_get::<i64, _>("priority").map_err(get_err)?).unwrap_or(0),
                weight: u32::try_from(weight).unwrap_or(1),
                max_concurrency: max_concurrency.and_then(|v| u32::try_from(v).ok()),
                refresh_blocked_until: {
                    let left: Option<i64> = r.try_get("block_left_ms").map_err(get_err)?;
                    left.map(|ms| crate::clock::system_now() + chrono::Duration::milliseconds(ms.clamp(-sql::MAX_MS, sql::MAX_MS)))
                },
                refresh_block_reason: r.try_get("refresh_block_reason").map_err(get_err)?,
                tags: crate::account::split_tags(&r.try_get::<String, _>("tags").map_err(get_err)?),
                version: r.try_get("version").map_err(get_err)?,
                created_at: required("created_at_ms")?,
                updated_at: required("updated_at_ms")?,
            })
        }

        impl $store {
            async fn fetch(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe($q(sql::SELECT_ACCOUNT)))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                row.map(|r| account_from_row(&r, &self.encryption)).transpose()
            }

            async fn write_update(
                &self,
                id: AccountId,
                expected_version: i64,
                fence: Option<&Fence>,
                update: AccountUpdate,
            ) -> Result<Account, StoreError> {
                let mut account = self.fetch(id).await?.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
                if account.version != expected_version {
                    return Err(StoreError::Conflict { id, expected: expected_version });
                }
                apply_update(&mut account, update);
                let mut tx = self.pool.begin_with(<$store>::BEGIN).await.map_err(unavailable)?;
                if let Some(f) = fence {
                    let locked = sqlx::query(sqlx::AssertSqlSafe($q(sql::LOCK_FENCE)))
                        .bind(id)
                        .bind(&f.holder)
                        .bind(f.token)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    if locked.rows_affected() != 1 {
                        return Err(StoreError::Fenced(id));
                    }
                }
                let done = update_row(&mut *tx, &self.encryption, &account, id, expected_version, fence).await?;
                if done != 1 {
                    drop(tx);
                    let current = self.fetch(id).await?;
                    return Err(match current {
                        Some(a) if a.version == expected_version && fence.is_some() => StoreError::Fenced(id),
                        Some(_) => StoreError::Conflict { id, expected: expected_version },
                        None => StoreError::NotFound(id.to_string()),
                    });
                }
                bump_seq(&mut *tx).await?;
                tx.commit().await.map_err(unavailable)?;
                self.fetch(id).await?.ok_or_else(|| StoreError::NotFound(id.to_string()))
            }
        }

        impl $store {
            async fn read_token_endpoint(&self) -> Result<super::TokenEndpointState, StoreError> {
                let row: Option<(i64, i64, Option<String>)> =
                    sqlx::query_as(sql::SELECT_TOKEN_ENDPOINT).fetch_optional(&self.pool).await.map_err(unavailable)?;
                let (spent, paused, reason) = row.ok_or_else(|| StoreError::Corrupt("token_endpoint row missing".into()))?;
                let at = |ms: i64| (ms > 0).then(|| from_millis(ms)).flatten();
                Ok(super::TokenEndpointState { spent_until: at(spent), paused_until: at(paused), pause_reason: reason })
            }
        }

        fn is_unique_violation(e: &sqlx::Error) -> bool {
            matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
        }

        impl super::Store for $store {
            fn describe(&self) -> String {
                self.description.clone()
            }

            fn scrub(&self) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    let scrub: &'static str = $scrub;
                    sqlx::query(scrub).execute(&self.pool).await.map_err(unavailable)?;
                    Ok(())
                })
            }

            fn tenants(&self) -> Option<&dyn super::tenants::TenantStore> {
                Some(self)
            }

            fn ops(&self) -> Option<&dyn super::ops::OpsStore> {
                Some(self)
            }

            fn ping(&self) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
                    Ok(())
                })
            }

            fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
                Box::pin(async move {
                    let rows = sqlx::query(sqlx::AssertSqlSafe($q(sql::SELECT_ACCOUNTS))).fetch_all(&self.pool).await.map_err(unavailable)?;
                    rows.iter().map(|r| account_from_row(r, &self.encryption)).collect()
                })
            }

            fn get_account(&self, id: AccountId) -> StoreFuture<'_, Option<Account>> {
                Box::pin(self.fetch(id))
            }

            fn insert_account(&self, a: NewAccount) -> StoreFuture<'_, Account> {
                Box::pin(async move {
                    let mut tx = self.pool.begin_with(<$store>::BEGIN).await.map_err(unavailable)?;
                    let id = insert_in(&mut *tx, &self.encryption, &a).await?;
                    bump_seq(&mut *tx).await?;
                    tx.commit().await.map_err(unavailable)?;
                    self.fetch(id).await?.ok_or_else(|| StoreError::NotFound(id.to_string()))
                })
            }

            fn write_accounts(&self, writes: Vec<super::AccountWrite>) -> StoreFuture<'_, Vec<Account>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin_with(<$store>::BEGIN).await.map_err(unavailable)?;
                    let mut ids = Vec::with_capacity(writes.len());
                    for w in writes {
                        ids.push(match w {
                            super::AccountWrite::Insert(a) => insert_in(&mut *tx, &self.encryption, &a).await?,
                            super::AccountWrite::Update { id, version, update } => {
                                update_in(&mut *tx, &self.encryption, id, version, update).await?;
                                id
                            }
                        });
                    }
                    bump_seq(&mut *tx).await?;
                    tx.commit().await.map_err(unavailable)?;
                    let mut written: std::collections::HashMap<AccountId, Account> =
                        self.list_accounts().await?.into_iter().map(|a| (a.id, a)).collect();
                    ids.iter()
                        .map(|id| written.remove(id).ok_or_else(|| StoreError::NotFound(id.to_string())))
                        .collect()
                })
            }

            fn update_account(
                &self,
                id: AccountId,
                expected_version: i64,
                update: AccountUpdate,
            ) -> StoreFuture<'_, Account> {
                Box::pin(self.write_update(id, expected_version, None, update))
            }

            fn update_account_fenced(
                &self,
                id: AccountId,
                expected_version: i64,
                fence: &Fence,
                update: AccountUpdate,
            ) -> StoreFuture<'_, Account> {
                let fence = fence.clone();
                Box::pin(async move { self.write_update(id, expected_version, Some(&fence), update).await })
            }

            fn remove_account(&self, id: AccountId) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin_with(<$store>::BEGIN).await.map_err(unavailable)?;
                    let done =
                        sqlx::query(sqlx::AssertSqlSafe($q(sql::DELETE_ACCOUNT))).bind(id).execute(&mut *tx).await.map_err(unavailable)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(id.to_string()));
                    }
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::CLEAR_COOLDOWNS))).bind(id).execute(&mut *tx).await.map_err(unavailable)?;
                    bump_seq(&mut *tx).await?;
                    tx.commit().await.map_err(unavailable)
                })
            }

            fn change_seq(&self) -> StoreFuture<'_, i64> {
                Box::pin(async move {
                    sqlx::query_scalar(sql::SELECT_SEQ).fetch_one(&self.pool).await.map_err(unavailable)
                })
            }

            fn acquire_refresh_lease(
                &self,
                id: AccountId,
                holder: &str,
                ttl: std::time::Duration,
            ) -> StoreFuture<'_, Option<i64>> {
                let holder = holder.to_string();
                Box::pin(async move {
                    let fence: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe($q(sql::ACQUIRE_LEASE)))
                        .bind(id)
                        .bind(&holder)
                        .bind(sql::ttl_ms(ttl))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(fence)
                })
            }

            fn renew_refresh_lease(
                &self,
                id: AccountId,
                fence: &Fence,
                ttl: std::time::Duration,
            ) -> StoreFuture<'_, bool> {
                let fence = fence.clone();
                Box::pin(async move {
                    let done = sqlx::query(sqlx::AssertSqlSafe($q(sql::RENEW_LEASE)))
                        .bind(sql::ttl_ms(ttl))
                        .bind(id)
                        .bind(&fence.holder)
                        .bind(fence.token)
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn release_refresh_lease(&self, id: AccountId, fence: &Fence) -> StoreFuture<'_, ()> {
                let fence = fence.clone();
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::RELEASE_LEASE)))
                        .bind(id)
                        .bind(&fence.holder)
                        .bind(fence.token)
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(())
                })
            }

            fn take_token_call(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                interval: std::time::Duration,
                window: std::time::Duration,
            ) -> StoreFuture<'_, super::TokenCallSlot> {
                Box::pin(async move {
                    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
                    let (t, i, w) = (to_millis(now), ms(interval), ms(window));
                    let taken: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe($q(sql::TAKE_TOKEN_CALL)))
                        .bind(t).bind(t).bind(i).bind(t).bind(t).bind(t).bind(i).bind(w).bind(t)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    if taken.is_some() {
                        return Ok(super::TokenCallSlot::Granted);
                    }
                    let state = self.read_token_endpoint().await?;
                    let never = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
                    let paused = state.paused_until.filter(|p| *p > now);
                    let until = match super::budget_decision(
                        state.spent_until.unwrap_or(never),
                        paused.unwrap_or(never),
                        now,
                        interval,
                        window,
                    ) {
                        Ok(_) => now, // freed meanwhile: ask again at once
                        Err(at) => at,
                    };
                    Ok(super::TokenCallSlot::Wait {
                        until,
                        paused: paused.map(|_| state.pause_reason.unwrap_or_else(|| "token endpoint paused".into())),
                    })
                })
            }

            fn pause_token_endpoint(&self, until: chrono::DateTime<chrono::Utc>, reason: &str) -> StoreFuture<'_, ()> {
                let reason = reason.to_string();
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::PAUSE_TOKEN_ENDPOINT)))
                        .bind(to_millis(until))
                        .bind(&reason)
                        .bind(to_millis(until))
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(())
                })
            }

            fn token_endpoint_state(&self) -> StoreFuture<'_, super::TokenEndpointState> {
                Box::pin(self.read_token_endpoint())
            }

            fn put_cooldown(&self, c: SharedCooldown) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    let now = crate::clock::system_now();
                    let retention = chrono::Duration::from_std(crate::store::COOLDOWN_RETENTION).unwrap_or_default();
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::PRUNE_COOLDOWNS)))
                        .bind(to_millis(now - retention))
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::PUT_COOLDOWN)))
                        .bind(c.account_id)
                        .bind(c.model.clone().unwrap_or_default())
                        .bind(to_millis(c.until))
                        .bind(&c.reason)
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(())
                })
            }

            fn list_cooldowns(&self, now: chrono::DateTime<chrono::Utc>) -> StoreFuture<'_, Vec<SharedCooldown>> {
                Box::pin(async move {
                    let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe($q(sql::LIST_COOLDOWNS)))
                        .bind(to_millis(now))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(rows
                        .into_iter()
                        .filter_map(|(account_id, model, until, reason)| {
                            Some(SharedCooldown {
                                account_id,
                                model: (!model.is_empty()).then_some(model),
                                until: from_millis(until)?,
                                reason,
                            })
                        })
                        .collect())
                })
            }

            fn clear_cooldowns(&self, id: AccountId) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::CLEAR_COOLDOWNS))).bind(id).execute(&self.pool).await.map_err(unavailable)?;
                    Ok(())
                })
            }

            fn add_usage(&self, batch: Vec<(AccountId, super::Usage)>) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    let statement = $q(sql::ADD_USAGE);
                    let mut tx = self.pool.begin_with(<$store>::BEGIN).await.map_err(unavailable)?;
                    for (id, u) in &batch {
                        let v = sql::usage_values(u);
                        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                            .bind(*id)
                            .bind(v[0])
                            .bind(v[1])
                            .bind(v[2])
                            .bind(v[3])
                            .bind(v[4])
                            .execute(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                    }
                    tx.commit().await.map_err(unavailable)
                })
            }

            fn put_responses(&self, rows: Vec<super::StoredResponse>, keep: u64) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    let rows = sql::last_of_each_id(rows);
                    let Some(newest) = rows.iter().map(|r| r.created_at).max() else {
                        return Ok(());
                    };
                    // One statement text per chunk size (a power of two up to INSERT_CHUNK), built once.
                    static SQL: [std::sync::OnceLock<String>; super::sql::CHUNK_SIZES] =
                        [const { std::sync::OnceLock::new() }; super::sql::CHUNK_SIZES];
                    let mut tx = self.pool.begin_with(<$store>::BEGIN).await.map_err(unavailable)?;
                    let mut last_seq = 0;
                    for chunk in super::sql::insert_chunks(&rows) {
                        let text = SQL[chunk.len().ilog2() as usize]
                            .get_or_init(|| String::from($q(&sql::put_responses_sql(chunk.len()))));
                        let mut query = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(text.as_str()));
                        for r in chunk {
                            query = query
                                .bind(&r.id)
                                .bind(&r.owner)
                                .bind(&r.body)
                                .bind(to_millis(r.created_at))
                                .bind(to_millis(r.expires_at));
                        }
                        let seqs = query.fetch_all(&mut *tx).await.map_err(unavailable)?;
                        last_seq = seqs.iter().map(|(s,)| *s).fold(last_seq, i64::max);
                    }
                    sqlx::query(sqlx::AssertSqlSafe($q(sql::PRUNE_RESPONSES)))
                        .bind(last_seq.saturating_sub(sql::to_i64(keep)))
                        .bind(to_millis(newest))
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    tx.commit().await.map_err(unavailable)
                })
            }

            fn get_response(
                &self,
                id: String,
                owner: String,
                now: chrono::DateTime<chrono::Utc>,
            ) -> StoreFuture<'_, Option<String>> {
                Box::pin(async move {
                    let row: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe($q(sql::GET_RESPONSE)))
                        .bind(&id)
                        .bind(&owner)
                        .bind(to_millis(now))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(row.map(|(body,)| body))
                })
            }

            fn usage_totals(&self) -> StoreFuture<'_, Vec<(AccountId, super::Usage)>> {
                Box::pin(async move {
                    let rows: Vec<(i64, i64, i64, i64, i64, i64)> =
                        sqlx::query_as(sql::SELECT_USAGE).fetch_all(&self.pool).await.map_err(unavailable)?;
                    let u = |v: i64| u64::try_from(v).unwrap_or(0);
                    Ok(rows
                        .into_iter()
                        .map(|(id, r, i, o, cr, cc)| {
                            (
                                id,
                                super::Usage {
                                    requests: u(r),
                                    input_tokens: u(i),
                                    output_tokens: u(o),
                                    cache_read_tokens: u(cr),
                                    cache_creation_tokens: u(cc),
                                },
                            )
                        })
                        .collect())
                })
            }
        }
    };
}

pub(crate) use sql_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_is_cut_into_full_chunks_then_powers_of_two_in_order() {
        let sizes = |n: usize| {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = insert_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "order and every row kept");
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(130), [64, 64, 2]);
        assert_eq!(sizes(63), [32, 16, 8, 4, 2, 1]);
        assert_eq!(
            sizes(1000),
            [64; 15].into_iter().chain([32, 8]).collect::<Vec<_>>()
        );
        let distinct: std::collections::BTreeSet<usize> = (0..1000).flat_map(sizes).collect();
        assert_eq!(distinct, (0..CHUNK_SIZES).map(|i| 1 << i).collect());
    }

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(super::numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }
}
