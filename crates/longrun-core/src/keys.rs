//! API keys: who is calling, for which tenant, in which role.
//!
//! A key is shown once as `lr_<id>_<secret>`; stores keep only the SHA-256 of the secret, looked
//! up by `id` and compared in constant time. The secret is 32 random bytes, so a fast hash is
//! enough: nothing can be guessed from it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits, reads, lists, cancels and deletes its own tenant's operations.
    Submitter,
    /// Claims operations and reports on them; submits children of what it runs.
    Worker,
    /// Everything, across tenants.
    Admin,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Role::Submitter, Role::Worker, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: expected submitter, worker or admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// The key's id (the part of the token before the secret).
    pub id: Uuid,
    /// Tenant id.
    pub customer: i64,
    /// Tenant name.
    pub customer_name: String,
    /// User id (`createdBy` of what it submits).
    pub user: i64,
    /// User name (`createdByName`).
    pub user_name: String,
    /// What it may do.
    pub role: Role,
    /// For worker keys: only these task names (empty: any).
    pub names: Vec<String>,
    /// For worker keys: only these queues (empty: any).
    pub queues: Vec<String>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked; a revoked key authenticates nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// What `longrun keys create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Tenant id.
    pub customer: i64,
    /// Tenant name.
    pub customer_name: String,
    /// User id.
    pub user: i64,
    /// User name.
    pub user_name: String,
    /// Role.
    pub role: Role,
    /// Worker keys: only these task names.
    pub names: Vec<String>,
    /// Worker keys: only these queues.
    pub queues: Vec<String>,
}

impl NewKey {
    /// The stored key for this request, made at `now` under `token`'s id.
    pub fn into_key(self, token: &Token, now: OffsetDateTime) -> ApiKey {
        ApiKey {
            id: token.id,
            customer: self.customer,
            customer_name: self.customer_name,
            user: self.user,
            user_name: self.user_name,
            role: self.role,
            names: self.names,
            queues: self.queues,
            created_at: now,
            revoked_at: None,
        }
    }
}

/// The token a caller presents, split into the key id and the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The key id.
    pub id: Uuid,
    /// The secret (64 hex characters).
    pub secret: String,
}

impl Token {
    /// A new random token for a new key.
    pub fn generate() -> Self {
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        Self {
            id: Uuid::now_v7(),
            secret,
        }
    }

    /// Parses `lr_<32 hex id>_<64 hex secret>`.
    pub fn parse(token: &str) -> Option<Self> {
        let rest = token.strip_prefix("lr_")?;
        let (id, secret) = rest.split_once('_')?;
        let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex(id, 32) && hex(secret, 64)) {
            return None;
        }
        Some(Self {
            id: Uuid::parse_str(id).ok()?,
            secret: secret.to_owned(),
        })
    }

    /// The SHA-256 of the secret, hex: what a store keeps.
    pub fn secret_hash(&self) -> String {
        crate::compact::lowercase_hex(&Sha256::digest(self.secret.as_bytes()))
    }

    /// Whether the secret hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        let ours = self.secret_hash();
        ours.len() == stored.len()
            && ours
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lr_{}_{}", self.id.simple(), self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_match_only_their_hash() {
        let token = Token::generate();
        let parsed = Token::parse(&token.to_string()).unwrap();
        assert_eq!(parsed, token);
        assert!(parsed.matches(&token.secret_hash()));
        assert!(!Token::generate().matches(&token.secret_hash()));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = Token::generate().to_string();
        for bad in [
            "",
            "lr_",
            &good[..good.len() - 1],
            &good.replacen("lr_", "xx_", 1),
            &format!("{good}0"),
        ] {
            assert_eq!(Token::parse(bad), None, "{bad}");
        }
    }
}
