//! The hub's persistent state behind the [`Store`] trait, implemented on embedded SQLite
//! (sqlx) by [`SqliteStore`]: users with hashed access keys, tunnel records, shares and
//! webhooks, so a hub restart keeps identities, leases, ports and subscriptions.
//!
//! Queries are runtime-checked (no DATABASE_URL at build time) and use `$N` placeholders,
//! which SQLite and PostgreSQL both accept, to keep one dialect. The schema is versioned:
//! `migrations/NNNN_*.sql`, embedded at build time and applied in order at open.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod shares;

pub use shares::{ShareRecord, TokenDigest};

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::types::{Protocol, Secret, TunnelId, TunnelName, UserName};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

/// The schema's versions, applied in order by sqlx and recorded in `_sqlx_migrations`.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A webhook: where a user's events are POSTed, which ones, and the secret that signs them.
#[derive(Clone, Debug)]
pub struct WebhookRecord {
    pub id: String,
    pub owner: UserName,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Secret,
    pub created: u64,
}

/// PBKDF2 iterations for access keys. Keys are verified once per agent connection and then
/// cached, so a slow hash costs little.
const PBKDF2_ROUNDS: u32 = 60_000;

/// A tunnel as persisted: everything but live state (members, counters).
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelRecord {
    pub id: TunnelId,
    pub owner: UserName,
    pub name: TunnelName,
    pub protocol: Protocol,
    pub target: String,
    pub hub_port: Option<u16>,
    pub public: bool,
    pub pool: bool,
    pub shared_all: bool,
    pub metadata: BTreeMap<String, String>,
    pub creation_time: u64,
    pub launch_time: Option<u64>,
    pub last_connected: Option<u64>,
    pub shutdown_time: Option<u64>,
    pub shutdown_reason: Option<String>,
    pub user_shutdown: Option<bool>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

pub struct SqliteStore {
    pool: SqlitePool,
    /// SHA-256 of keys already verified with PBKDF2, so reconnect storms stay cheap.
    verified: Mutex<HashMap<UserName, [u8; 32]>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/burrow.db` and applies the schema.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("burrow.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        // One connection: SQLite serialises writers anyway, the queries here are a few per
        // agent connection, and each pooled connection is a worker thread with its own
        // malloc arena and SQLite caches (a second one cost the hub 0.2 MB of RSS,
        // measured 2026-12-02). Nothing here holds a connection while asking
        // for another, so one cannot deadlock.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Adds a user or replaces its key.
    pub async fn put_user(&self, name: &UserName, key: &Secret) -> Result<(), StoreError> {
        let salt: [u8; 16] = rand::random();
        let hash = hash_key(&salt, key);
        sqlx::query(
            "INSERT INTO users (name, key_salt, key_hash, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET key_salt = excluded.key_salt, key_hash = excluded.key_hash",
        )
        .bind(name.as_str())
        .bind(&salt[..])
        .bind(&hash[..])
        .bind(unix_now() as i64)
        .execute(&self.pool)
        .await?;
        self.verified.lock().expect("cache lock").remove(name);
        Ok(())
    }

    pub async fn verify_user(&self, name: &UserName, key: &Secret) -> Result<bool, StoreError> {
        let digest: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.expose().as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let cached = self.verified.lock().expect("cache lock").get(name).copied();
        if cached.is_some_and(|known| aws_lc_rs::constant_time::verify_slices_are_equal(&known, &digest).is_ok()) {
            return Ok(true);
        }
        let row = sqlx::query("SELECT key_salt, key_hash FROM users WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let salt: Vec<u8> = row.try_get(0)?;
        let hash: Vec<u8> = row.try_get(1)?;
        // Tens of milliseconds of CPU: off the async threads, so other tunnels keep flowing.
        let candidate = key.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let rounds = std::num::NonZeroU32::new(PBKDF2_ROUNDS).expect("non-zero");
            let password = candidate.expose().as_bytes();
            aws_lc_rs::pbkdf2::verify(aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password, &hash).is_ok()
        })
        .await
        .unwrap_or(false);
        if ok {
            self.verified.lock().expect("cache lock").insert(name.clone(), digest);
        }
        Ok(ok)
    }

    pub async fn insert_tunnel(&self, t: &TunnelRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tunnels (id, owner, name, protocol, target, hub_port, public, pool, shared_all,
                metadata, creation_time, launch_time, last_connected, shutdown_time, shutdown_reason, user_shutdown)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(t.id.to_string())
        .bind(t.owner.as_str())
        .bind(t.name.as_str())
        .bind(t.protocol.as_str())
        .bind(&t.target)
        .bind(t.hub_port.map(i64::from))
        .bind(t.public)
        .bind(t.pool)
        .bind(t.shared_all)
        .bind(serde_json::to_string(&t.metadata).expect("string map serializes"))
        .bind(t.creation_time as i64)
        .bind(t.launch_time.map(|v| v as i64))
        .bind(t.last_connected.map(|v| v as i64))
        .bind(t.shutdown_time.map(|v| v as i64))
        .bind(&t.shutdown_reason)
        .bind(t.user_shutdown)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a (re)connection of an agent serving the tunnel, with its current settings.
    pub async fn touch_tunnel(&self, t: &TunnelRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tunnels SET target = $2, protocol = $3, metadata = $4, launch_time = $5, last_connected = $6,
             name = $7 WHERE id = $1",
        )
        .bind(t.id.to_string())
        .bind(&t.target)
        .bind(t.protocol.as_str())
        .bind(serde_json::to_string(&t.metadata).expect("string map serializes"))
        .bind(t.launch_time.map(|v| v as i64))
        .bind(t.last_connected.map(|v| v as i64))
        .bind(t.name.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn end_tunnel(&self, id: TunnelId, reason: &str, by_user: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE tunnels SET shutdown_time = $2, shutdown_reason = $3, user_shutdown = $4 WHERE id = $1")
            .bind(id.to_string())
            .bind(unix_now() as i64)
            .bind(reason)
            .bind(by_user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO webhooks (id, owner, url, events, secret, created) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&w.id)
            .bind(w.owner.as_str())
            .bind(&w.url)
            .bind(serde_json::to_string(&w.events).expect("strings serialize"))
            .bind(w.secret.expose())
            .bind(w.created as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes `owner`'s webhook `id`; whether there was one.
    pub async fn delete_webhook(&self, owner: &UserName, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `owner`'s webhooks, oldest first.
    pub async fn webhooks(&self, owner: &UserName) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhooks WHERE owner = $1 ORDER BY created, id")
            .bind(owner.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let events: String = row.try_get("events")?;
                let owner: String = row.try_get("owner")?;
                Ok(WebhookRecord {
                    id: row.try_get("id")?,
                    owner: owner.parse().map_err(|_| StoreError::Corrupt {
                        what: "user name",
                        value: owner.clone(),
                    })?,
                    url: row.try_get("url")?,
                    events: serde_json::from_str(&events).map_err(|_| StoreError::Corrupt {
                        what: "webhook events",
                        value: events.clone(),
                    })?,
                    secret: Secret::new(row.try_get::<String, _>("secret")?),
                    created: row.try_get::<i64, _>("created")? as u64,
                })
            })
            .collect()
    }

    /// Records whether the owner paused the tunnel.
    pub async fn set_paused(&self, id: TunnelId, paused: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE tunnels SET paused = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(paused)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Live tunnels their owners paused.
    pub async fn paused_tunnels(&self) -> Result<Vec<TunnelId>, StoreError> {
        let rows = sqlx::query("SELECT id FROM tunnels WHERE paused != 0 AND shutdown_time IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                id.parse().map_err(|_| StoreError::Corrupt {
                    what: "tunnel id",
                    value: id,
                })
            })
            .collect()
    }

    /// One tunnel's record, live or ended.
    pub async fn tunnel(&self, id: TunnelId) -> Result<Option<TunnelRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tunnels WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Tunnels not yet shut down: after a restart these are leases waiting for their agents.
    pub async fn live_tunnels(&self) -> Result<Vec<TunnelRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tunnels WHERE shutdown_time IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }
}

fn hash_key(salt: &[u8], key: &Secret) -> [u8; 32] {
    let mut out = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(PBKDF2_ROUNDS).expect("non-zero");
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        key.expose().as_bytes(),
        &mut out,
    );
    out
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<TunnelRecord, StoreError> {
    fn parse<T: std::str::FromStr>(what: &'static str, value: String) -> Result<T, StoreError> {
        value.parse().map_err(|_| StoreError::Corrupt { what, value })
    }
    let opt_u64 =
        |col: &str| -> Result<Option<u64>, StoreError> { Ok(row.try_get::<Option<i64>, _>(col)?.map(|v| v as u64)) };
    let metadata: String = row.try_get("metadata")?;
    Ok(TunnelRecord {
        id: parse("tunnel id", row.try_get("id")?)?,
        owner: parse("user name", row.try_get("owner")?)?,
        name: parse("tunnel name", row.try_get("name")?)?,
        protocol: parse("protocol", row.try_get("protocol")?)?,
        target: row.try_get("target")?,
        hub_port: row
            .try_get::<Option<i64>, _>("hub_port")?
            .and_then(|p| u16::try_from(p).ok()),
        public: row.try_get("public")?,
        pool: row.try_get("pool")?,
        shared_all: row.try_get("shared_all")?,
        metadata: serde_json::from_str(&metadata).map_err(|_| StoreError::Corrupt {
            what: "metadata",
            value: metadata,
        })?,
        creation_time: row.try_get::<i64, _>("creation_time")? as u64,
        launch_time: opt_u64("launch_time")?,
        last_connected: opt_u64("last_connected")?,
        shutdown_time: opt_u64("shutdown_time")?,
        shutdown_reason: row.try_get("shutdown_reason")?,
        user_shutdown: row.try_get("user_shutdown")?,
    })
}

/// The hub's persistent state, as the hub uses it. [`SqliteStore`] is the implementation;
/// the queries keep to what SQLite and PostgreSQL share (`$N` placeholders, plain types) so
/// that a PostgreSQL one can follow behind this trait. Methods return boxed futures so the
/// hub can hold any implementation as `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    fn user_count<'a>(&'a self) -> BoxFuture<'a, Result<i64, StoreError>>;
    fn put_user<'a>(&'a self, name: &'a UserName, key: &'a Secret) -> BoxFuture<'a, Result<(), StoreError>>;
    fn verify_user<'a>(&'a self, name: &'a UserName, key: &'a Secret) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn insert_tunnel<'a>(&'a self, t: &'a TunnelRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    fn touch_tunnel<'a>(&'a self, t: &'a TunnelRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    fn end_tunnel<'a>(&'a self, id: TunnelId, reason: &'a str, by_user: bool) -> BoxFuture<'a, Result<(), StoreError>>;
    fn insert_webhook<'a>(&'a self, w: &'a WebhookRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    fn delete_webhook<'a>(&'a self, owner: &'a UserName, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn webhooks<'a>(&'a self, owner: &'a UserName) -> BoxFuture<'a, Result<Vec<WebhookRecord>, StoreError>>;
    fn set_paused<'a>(&'a self, id: TunnelId, paused: bool) -> BoxFuture<'a, Result<(), StoreError>>;
    fn paused_tunnels<'a>(&'a self) -> BoxFuture<'a, Result<Vec<TunnelId>, StoreError>>;
    fn tunnel<'a>(&'a self, id: TunnelId) -> BoxFuture<'a, Result<Option<TunnelRecord>, StoreError>>;
    fn live_tunnels<'a>(&'a self) -> BoxFuture<'a, Result<Vec<TunnelRecord>, StoreError>>;
    fn insert_share<'a>(&'a self, s: &'a ShareRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    fn revoke_share<'a>(&'a self, id: &'a str, at: u64) -> BoxFuture<'a, Result<(), StoreError>>;
    fn shares<'a>(&'a self) -> BoxFuture<'a, Result<Vec<ShareRecord>, StoreError>>;
}

impl Store for SqliteStore {
    fn user_count<'a>(&'a self) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(SqliteStore::user_count(self))
    }

    fn put_user<'a>(&'a self, name: &'a UserName, key: &'a Secret) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::put_user(self, name, key))
    }

    fn verify_user<'a>(&'a self, name: &'a UserName, key: &'a Secret) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SqliteStore::verify_user(self, name, key))
    }

    fn insert_tunnel<'a>(&'a self, t: &'a TunnelRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::insert_tunnel(self, t))
    }

    fn touch_tunnel<'a>(&'a self, t: &'a TunnelRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::touch_tunnel(self, t))
    }

    fn end_tunnel<'a>(&'a self, id: TunnelId, reason: &'a str, by_user: bool) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::end_tunnel(self, id, reason, by_user))
    }

    fn insert_webhook<'a>(&'a self, w: &'a WebhookRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::insert_webhook(self, w))
    }

    fn delete_webhook<'a>(&'a self, owner: &'a UserName, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SqliteStore::delete_webhook(self, owner, id))
    }

    fn webhooks<'a>(&'a self, owner: &'a UserName) -> BoxFuture<'a, Result<Vec<WebhookRecord>, StoreError>> {
        Box::pin(SqliteStore::webhooks(self, owner))
    }

    fn set_paused<'a>(&'a self, id: TunnelId, paused: bool) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::set_paused(self, id, paused))
    }

    fn paused_tunnels<'a>(&'a self) -> BoxFuture<'a, Result<Vec<TunnelId>, StoreError>> {
        Box::pin(SqliteStore::paused_tunnels(self))
    }

    fn tunnel<'a>(&'a self, id: TunnelId) -> BoxFuture<'a, Result<Option<TunnelRecord>, StoreError>> {
        Box::pin(SqliteStore::tunnel(self, id))
    }

    fn live_tunnels<'a>(&'a self) -> BoxFuture<'a, Result<Vec<TunnelRecord>, StoreError>> {
        Box::pin(SqliteStore::live_tunnels(self))
    }

    fn insert_share<'a>(&'a self, s: &'a ShareRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::insert_share(self, s))
    }

    fn revoke_share<'a>(&'a self, id: &'a str, at: u64) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SqliteStore::revoke_share(self, id, at))
    }

    fn shares<'a>(&'a self) -> BoxFuture<'a, Result<Vec<ShareRecord>, StoreError>> {
        Box::pin(SqliteStore::shares(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made before the schema was versioned (its tables, no `_sqlx_migrations`)
    /// opens, keeps its rows and gains the later columns.
    #[tokio::test]
    async fn an_unversioned_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join("burrow.db"))
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new().connect_with(options).await.unwrap();
            let initial = include_str!("../../migrations/0001_initial.sql");
            sqlx::raw_sql(initial).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO users (name, key_salt, key_hash, created) VALUES ('old', x'00', x'00', 1)")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.user_count().await.unwrap(), 1);
        assert!(store.paused_tunnels().await.unwrap().is_empty());
        assert!(store.webhooks(&"old".parse().unwrap()).await.unwrap().is_empty());
        drop(store);
        // Opening again applies nothing twice.
        SqliteStore::open(dir.path()).await.unwrap();
    }

    #[tokio::test]
    async fn users_verify_only_with_their_key_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let alice: UserName = "alice".parse().unwrap();
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.put_user(&alice, &Secret::new("right")).await.unwrap();
            assert!(store.verify_user(&alice, &Secret::new("right")).await.unwrap());
            assert!(!store.verify_user(&alice, &Secret::new("wrong")).await.unwrap());
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.user_count().await.unwrap(), 1);
        assert!(store.verify_user(&alice, &Secret::new("right")).await.unwrap());
        assert!(!store
            .verify_user(&"bob".parse().unwrap(), &Secret::new("right"))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn tunnel_records_round_trip_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let record = TunnelRecord {
            id: TunnelId::random(),
            owner: "alice".parse().unwrap(),
            name: "web".parse().unwrap(),
            protocol: Protocol::Tcp,
            target: "127.0.0.1:80".into(),
            hub_port: Some(20001),
            public: true,
            pool: false,
            shared_all: false,
            metadata: BTreeMap::from([("team".into(), "qa".into())]),
            creation_time: 1,
            launch_time: Some(2),
            last_connected: Some(3),
            shutdown_time: None,
            shutdown_reason: None,
            user_shutdown: None,
        };
        store.insert_tunnel(&record).await.unwrap();
        assert_eq!(store.live_tunnels().await.unwrap(), vec![record.clone()]);
        store.end_tunnel(record.id, "lease expired", false).await.unwrap();
        assert!(store.live_tunnels().await.unwrap().is_empty());
    }
}
