//! API tokens. Only a SHA-256 digest of each token is stored: tokens are
//! 256 random bits, so a slow password hash would add nothing.

use super::Result;
use super::{now_ms, Db};
use crate::ids::{CircleId, ElementId};
use crate::model::Reach;
use crate::model::Role;
use crate::model::State;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    /// The platform, or one circle (bound to its id once it exists).
    pub reach: Reach,
    pub role: Role,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The api-token element that made it (None: the CLI).
    pub element_id: Option<ElementId>,
    pub last_used_at: Option<i64>,
}

pub fn hash_token(secret: &str) -> String {
    // Into a buffer: `hex::encode` collects its 64 characters one by one.
    let mut text = [0u8; 64];
    let _ = hex::encode_to_slice(Sha256::digest(secret.as_bytes()), &mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn token(r: &AnyRow) -> sqlx::Result<TokenRow> {
    let role: String = r.try_get("role")?;
    Ok(TokenRow {
        id: r.try_get("id")?,
        reach: Reach::parse(&r.try_get::<String, _>("circle")?, r.try_get("circle_id")?),
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        element_id: r.try_get("element_id")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

const COLS: &str = "id, circle, circle_id, role, name, created_at, expires_at, revoked_at, \
                    element_id, last_used_at";

impl Db {
    /// Creates a token and returns its row and the secret, shown once.
    pub async fn create_token(
        &self,
        circle: &str,
        role: Role,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenRow, String)> {
        self.mint(circle, role, name, expires_at, None).await
    }

    /// A token made by an api-token element: named by its slug, bound to
    /// its circle.
    pub async fn create_element_token(
        &self,
        el: &crate::model::Element,
        role: Role,
        expires_at: Option<i64>,
    ) -> Result<(TokenRow, String)> {
        self.mint(el.circle(), role, &el.slug, expires_at, Some(&el.id))
            .await
    }

    async fn mint(
        &self,
        circle: &str,
        role: Role,
        name: &str,
        expires_at: Option<i64>,
        element_id: Option<&ElementId>,
    ) -> Result<(TokenRow, String)> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("edt_{}", hex::encode(bytes));
        let id = format!("tok_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let circle_id = match circle {
            "*" => None,
            slug => self
                .find_circle(slug)
                .await?
                .filter(|c| c.state != State::Deleted)
                .map(|c| c.circle_id),
        };
        let row = TokenRow {
            id,
            reach: Reach::parse(circle, circle_id),
            role,
            name: name.to_string(),
            created_at: now_ms(),
            expires_at,
            revoked_at: None,
            element_id: element_id.cloned(),
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO tokens (id, hash, circle, circle_id, role, name, created_at, expires_at, \
             element_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        )
        .bind(&row.id)
        .bind(hash_token(&secret))
        .bind(row.reach.label())
        .bind(match &row.reach {
            Reach::Circle { id, .. } => id.clone(),
            Reach::Platform => None,
        })
        .bind(role.as_str())
        .bind(&row.name)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(&row.element_id)
        .execute(&self.pool)
        .await?;
        Ok((row, secret))
    }

    pub async fn token_by_secret(&self, secret: &str) -> Result<Option<TokenRow>> {
        let sql = format!("SELECT {COLS} FROM tokens WHERE hash = $1");
        let row = sqlx::query(&sql)
            .bind(hash_token(secret))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(token).transpose()?)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!("SELECT {COLS} FROM tokens ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(token).collect::<sqlx::Result<_>>()?)
    }

    /// Revokes a token; false when no such token is active.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        self.forget_tokens();
        let r =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The tokens an api-token element made, newest first.
    pub async fn element_tokens(&self, element_id: &ElementId) -> Result<Vec<TokenRow>> {
        let sql = format!(
            "SELECT {COLS} FROM tokens WHERE element_id = $1 ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(element_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(token).collect::<sqlx::Result<_>>()?)
    }

    /// Per api-token element of `ids` that made any: whether one of its
    /// secrets was revoked, and how many still work at `now`. One grouped
    /// query for a whole page of elements.
    pub async fn token_states(
        &self,
        ids: &[&ElementId],
        now: i64,
    ) -> Result<Vec<(ElementId, bool, i64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT element_id, \
             CAST(MAX(CASE WHEN revoked_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS revoked, \
             CAST(SUM(CASE WHEN revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) \
             THEN 1 ELSE 0 END) AS BIGINT) AS working \
             FROM tokens WHERE element_id IN ({}) GROUP BY element_id",
            super::params(2, ids.len())
        );
        let mut q = sqlx::query(&sql).bind(now);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("element_id")?,
                    r.try_get::<i64, _>("revoked")? > 0,
                    r.try_get("working")?,
                ))
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Into::into)
    }

    /// Ends a token at `at` (a rotation's grace) unless it ends sooner.
    pub async fn end_token_at(&self, id: &str, at: i64) -> Result<()> {
        self.forget_tokens();
        sqlx::query(
            "UPDATE tokens SET expires_at = $1 WHERE id = $2 AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes every token an api-token element made; how many.
    pub async fn revoke_element_tokens(&self, element_id: &ElementId) -> Result<u64> {
        self.forget_tokens();
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE element_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(element_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Writes when tokens were last used, in one transaction.
    pub async fn touch_tokens(&self, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let used = used.to_vec();
        self.unit(move |tx| {
            Box::pin(async move {
                for (id, at) in &used {
                    sqlx::query(
                        "UPDATE tokens SET last_used_at = $1 WHERE id = $2 \
                         AND (last_used_at IS NULL OR last_used_at < $1)",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Revokes every token of a circle (by id): deleting a circle ends
    /// its tokens. Answers how many.
    pub async fn revoke_circle_tokens(&self, circle_id: &CircleId) -> Result<u64> {
        self.forget_tokens();
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE circle_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(circle_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

/// Binds tokens made for a circle's slug before the circle existed to the
/// circle now being created (inside its transaction).
pub async fn bind_pending(tx: &mut super::Tx, slug: &str, circle_id: &CircleId) -> Result<()> {
    sqlx::query(
        "UPDATE tokens SET circle_id = $1 \
         WHERE circle = $2 AND circle_id IS NULL AND revoked_at IS NULL",
    )
    .bind(circle_id)
    .bind(slug)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// Stored hashes were written with `hex::encode`: the text must not change.
    #[test]
    fn a_token_hashes_to_the_text_stored_before() {
        for secret in ["", "edt_0123456789abcdef", &"x".repeat(300), "é∂ƒ"] {
            let want = hex::encode(Sha256::digest(secret.as_bytes()));
            assert_eq!(super::hash_token(secret), want, "{secret:?}");
        }
        assert_eq!(super::hash_token("a").len(), 64);
    }
}
