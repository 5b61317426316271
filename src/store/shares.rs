//! Shares in the store: inserted when made, marked when revoked, all read back at start-up.

use std::fmt;

use sqlx::Row;

use super::{SqliteStore, StoreError};
use crate::types::{TunnelId, UserName};

/// The SHA-256 of a token: what the store and the book keep.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({}…)", hex::encode(&self.0[..4]))
    }
}

/// A share as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ShareRecord {
    /// 32 lowercase hex characters; not the token.
    pub id: String,
    pub tunnel: TunnelId,
    pub owner: UserName,
    pub name: String,
    pub description: Option<String>,
    /// Upper-case method names; `None` allows every method.
    pub methods: Option<Vec<String>>,
    pub rate_per_min: Option<u32>,
    /// Unix seconds.
    pub created: u64,
    pub expires: Option<u64>,
    pub revoked: Option<u64>,
    pub digest: TokenDigest,
}

impl SqliteStore {
    pub async fn insert_share(&self, s: &ShareRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO shares (id, tunnel_id, owner, token_sha256, name, description, methods, rate_per_min, \
             created, expires, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&s.id)
        .bind(s.tunnel.to_string())
        .bind(s.owner.as_str())
        .bind(hex::encode(s.digest.0))
        .bind(&s.name)
        .bind(&s.description)
        .bind(
            s.methods
                .as_ref()
                .map(|m| serde_json::to_string(m).expect("strings serialize")),
        )
        .bind(s.rate_per_min.map(i64::from))
        .bind(s.created as i64)
        .bind(s.expires.map(|t| t as i64))
        .bind(s.revoked.map(|t| t as i64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that share `id` was revoked at `at` (Unix seconds).
    pub async fn revoke_share(&self, id: &str, at: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE shares SET revoked = $2 WHERE id = $1 AND revoked IS NULL")
            .bind(id)
            .bind(at as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every share, revoked and expired ones included.
    pub async fn shares(&self) -> Result<Vec<ShareRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM shares ORDER BY created, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(share_from_row).collect()
    }
}

fn share_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ShareRecord, StoreError> {
    let corrupt = |what: &'static str, value: String| StoreError::Corrupt { what, value };
    let tunnel: String = row.try_get("tunnel_id")?;
    let owner: String = row.try_get("owner")?;
    let digest: String = row.try_get("token_sha256")?;
    let mut digest_bytes = [0u8; 32];
    hex::decode_to_slice(&digest, &mut digest_bytes).map_err(|_| corrupt("share token digest", digest.clone()))?;
    let methods = match row.try_get::<Option<String>, _>("methods")? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|_| corrupt("share methods", text.clone()))?),
        None => None,
    };
    let rate: Option<i64> = row.try_get("rate_per_min")?;
    Ok(ShareRecord {
        id: row.try_get("id")?,
        tunnel: tunnel.parse().map_err(|_| corrupt("tunnel id", tunnel.clone()))?,
        owner: owner.parse().map_err(|_| corrupt("user name", owner.clone()))?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        methods,
        rate_per_min: rate
            .map(|r| u32::try_from(r).map_err(|_| corrupt("share rate limit", r.to_string())))
            .transpose()?,
        created: row.try_get::<i64, _>("created")? as u64,
        expires: row.try_get::<Option<i64>, _>("expires")?.map(|t| t as u64),
        revoked: row.try_get::<Option<i64>, _>("revoked")?.map(|t| t as u64),
        digest: TokenDigest(digest_bytes),
    })
}
