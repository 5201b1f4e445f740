//! Who is calling: the bearer token checked locally (when `JWT_SECRET_KEY` is
//! set), the user looked up on Atlas's `/auth/me` (cached per token), then
//! role and tenant checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backend::{Backend, CallError};
use crate::config::Config;
use crate::error::ApiError;

/// The Atlas user behind a request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub full_name: String,
    pub first_name: String,
    pub role_code: String,
    pub role_name: String,
    pub company_id: i64,
}

/// An authenticated caller: the user and the header to forward.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: Arc<User>,
    pub authorization: String,
}

#[derive(Deserialize)]
struct Claims {
    #[allow(dead_code)]
    sub: String,
}

#[derive(Clone)]
struct Cached {
    user: Arc<User>,
    until: Instant,
}

pub struct Identity {
    key: Option<(DecodingKey, Validation)>,
    cache: Cache<[u8; 32], Cached>,
    ttl: Duration,
    backend: Backend,
    allowed_roles: Vec<String>,
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::Unauthorized(msg.to_string())
}

/// A bearer token that passed [`Identity::verify`].
#[derive(Clone, Copy, Debug)]
pub struct Verified<'a>(&'a str);

/// `Bearer <token>`, scheme case-insensitive; anything else is malformed.
pub fn bearer_token(header: Option<&str>) -> Result<&str, ApiError> {
    let header = header.ok_or_else(|| unauthorized("Missing Authorization header"))?;
    let (scheme, token) = header
        .split_once(' ')
        .ok_or_else(|| unauthorized("Malformed Authorization header, expected 'Bearer <token>'"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(unauthorized(
            "Malformed Authorization header, expected 'Bearer <token>'",
        ));
    }
    Ok(token)
}

impl Identity {
    pub fn new(config: &Config, backend: Backend) -> Self {
        let key = config.jwt_secret.as_ref().map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.leeway = 5;
            validation.set_required_spec_claims(&["exp", "sub"]);
            (DecodingKey::from_secret(secret), validation)
        });
        Identity {
            key,
            cache: Cache::builder()
                .max_capacity(config.auth_cache_max_entries)
                .time_to_live(config.auth_cache_ttl.max(Duration::from_millis(1)))
                .build(),
            ttl: config.auth_cache_ttl,
            backend,
            allowed_roles: config.allowed_roles.clone(),
        }
    }

    /// The bearer token from the `Authorization` header, with its signature
    /// and expiry checked when `JWT_SECRET_KEY` is set. Local work only, so a
    /// forged or expired token is refused before anything else is done.
    pub fn verify<'h>(&self, header: Option<&'h str>) -> Result<Verified<'h>, ApiError> {
        let token = bearer_token(header)?;
        if let Some((key, validation)) = &self.key {
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
                tracing::info!(reason = %e, "token refused locally");
                unauthorized("Invalid or expired token")
            })?;
        }
        Ok(Verified(token))
    }

    /// Checks the token ([`Identity::verify`]), finds the user, and applies
    /// the role and tenant rules.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        agent_id: &str,
        request_id: &str,
    ) -> Result<Caller, ApiError> {
        let token = self.verify(header)?;
        self.caller(token, agent_id, request_id).await
    }

    /// The user behind a verified token (from the cache or `/auth/me`),
    /// with the role and tenant rules applied.
    pub async fn caller(
        &self,
        Verified(token): Verified<'_>,
        agent_id: &str,
        request_id: &str,
    ) -> Result<Caller, ApiError> {
        let authorization = format!("Bearer {token}");
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let user = match self.cache.get(&digest).await {
            Some(c) if c.until > Instant::now() => c.user,
            _ => {
                let user = Arc::new(self.lookup(&authorization, request_id).await?);
                if !self.ttl.is_zero() {
                    let until = Instant::now() + self.ttl;
                    self.cache
                        .insert(
                            digest,
                            Cached {
                                user: user.clone(),
                                until,
                            },
                        )
                        .await;
                }
                user
            }
        };
        self.authorize(&user, agent_id)?;
        Ok(Caller {
            user,
            authorization,
        })
    }

    async fn lookup(&self, authorization: &str, request_id: &str) -> Result<User, ApiError> {
        match self.backend.auth_me(authorization, request_id).await {
            Ok((200..=299, Some(body))) => parse_user(&body)
                .ok_or_else(|| ApiError::Upstream("Atlas returned an unreadable user".into())),
            Ok((200..=299, None)) => Err(ApiError::Upstream(
                "Atlas returned an unreadable user".into(),
            )),
            // Atlas answers 403 for unknown tokens and 500 for bad or expired ones.
            Ok((401 | 403 | 500, _)) => Err(unauthorized("Token rejected by Atlas")),
            Ok((status, _)) => {
                tracing::warn!(status, "unexpected /auth/me status");
                Err(ApiError::Upstream("Atlas identity lookup failed".into()))
            }
            Err(CallError::Timeout) => Err(ApiError::Upstream(
                "Atlas did not answer the identity lookup in time".into(),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "/auth/me failed");
                Err(ApiError::Upstream("Atlas backend is unreachable".into()))
            }
        }
    }

    fn authorize(&self, user: &User, agent_id: &str) -> Result<(), ApiError> {
        let allowed = |r: &str| !r.is_empty() && self.allowed_roles.iter().any(|a| a == r);
        if !allowed(&user.role_code.to_ascii_uppercase())
            && !allowed(&user.role_name.to_ascii_uppercase())
        {
            return Err(ApiError::Forbidden {
                message: format!(
                    "Your role ({}) is not allowed to use the assistant",
                    if user.role_code.is_empty() {
                        "none"
                    } else {
                        &user.role_code
                    }
                ),
                agent_id: agent_id.to_string(),
            });
        }
        if user.company_id <= 0 {
            return Err(ApiError::Forbidden {
                message: "Your account is not linked to a company".into(),
                agent_id: agent_id.to_string(),
            });
        }
        Ok(())
    }
}

/// Reads the fields of Atlas's `/auth/me` answer the host needs.
pub fn parse_user(v: &Value) -> Option<User> {
    let id = v.get("id")?.as_i64()?;
    let email = v.get("email").and_then(Value::as_str).unwrap_or_default();
    let first = v
        .get("firstName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = v
        .get("lastName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let company_id = v
        .get("companyId")
        .and_then(Value::as_i64)
        .or_else(|| v.get("company")?.get("id")?.as_i64())
        .unwrap_or(0);
    let (role_code, role_name) = match v.get("role") {
        Some(Value::String(s)) => (s.clone(), s.clone()),
        Some(role) => (
            role.get("code")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            role.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        None => (String::new(), String::new()),
    };
    Some(User {
        id,
        email: email.to_string(),
        full_name: format!("{first} {last}").trim().to_string(),
        first_name: first.to_string(),
        role_code,
        role_name,
        company_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer abc")).unwrap(), "abc");
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic abc"),
            Some("Bearer a b"),
        ] {
            assert!(
                matches!(bearer_token(bad), Err(ApiError::Unauthorized(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn user_fields_and_company_fallback() {
        let u = parse_user(
            &json!({"id": 7, "email": "a@b", "firstName": "Ann", "lastName": "Lee",
            "company": {"id": 3}, "role": {"code": "ADMIN", "name": "Administrator"}}),
        )
        .unwrap();
        assert_eq!(
            (u.id, u.company_id, u.full_name.as_str()),
            (7, 3, "Ann Lee")
        );
        assert_eq!(u.role_code, "ADMIN");
        let none = parse_user(&json!({"id": 8, "companyId": null})).unwrap();
        assert_eq!(none.company_id, 0);
        assert!(parse_user(&json!({"email": "x"})).is_none());
    }
}
