//! Who is calling: the bearer token checked locally (when `JWT_SECRET_KEY` is
//! set), the user looked up on Atlas's `/auth/me` (cached per token), then
//! role and tenant checks.
//!
//! A token's signature is checked once: its SHA-256 digest is then kept with
//! its expiry, and the same token bytes later only have their expiry checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::sync::Cache;
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
    /// Seconds since the Unix epoch (required by the validation).
    exp: f64,
}

/// How long a checked signature is remembered (the token's own expiry is
/// checked on every use).
const VERIFIED_TTL: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct Cached {
    user: Arc<User>,
    until: Instant,
}

pub struct Identity {
    key: Option<(DecodingKey, Validation)>,
    /// Tokens whose signature checked out, by digest: their `exp`.
    verified: Cache<[u8; 32], u64>,
    cache: Cache<[u8; 32], Cached>,
    ttl: Duration,
    backend: Backend,
    allowed_roles: Vec<String>,
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::Unauthorized(msg.to_string())
}

/// A bearer token that passed [`Identity::verify`], with its SHA-256 digest.
#[derive(Clone, Copy, Debug)]
pub struct Verified<'a> {
    token: &'a str,
    digest: [u8; 32],
}

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
            verified: Cache::builder()
                .max_capacity(config.auth_cache_max_entries)
                .time_to_live(VERIFIED_TTL)
                .build(),
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
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((key, validation)) = &self.key {
            match self.verified.get(&digest) {
                // The same bytes passed before, so only time can refuse them
                // now: jsonwebtoken's expiry rule, with the same leeway.
                Some(exp) => {
                    let now = jsonwebtoken::get_current_timestamp();
                    if exp < now.saturating_sub(validation.leeway) {
                        tracing::info!(reason = "ExpiredSignature", "token refused locally");
                        return Err(unauthorized("Invalid or expired token"));
                    }
                }
                None => {
                    let data =
                        jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
                            tracing::info!(reason = %e, "token refused locally");
                            unauthorized("Invalid or expired token")
                        })?;
                    self.verified.insert(digest, data.claims.exp as u64);
                }
            }
        }
        Ok(Verified { token, digest })
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
        Verified { token, digest }: Verified<'_>,
        agent_id: &str,
        request_id: &str,
    ) -> Result<Caller, ApiError> {
        let authorization = format!("Bearer {token}");
        let user = match self.cache.get(&digest) {
            Some(c) if c.until > Instant::now() => c.user,
            _ => {
                let user = Arc::new(self.lookup(&authorization, request_id).await?);
                if !self.ttl.is_zero() {
                    let until = Instant::now() + self.ttl;
                    self.cache.insert(
                        digest,
                        Cached {
                            user: user.clone(),
                            until,
                        },
                    );
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

    #[tokio::test]
    async fn a_checked_signature_is_remembered_but_the_expiry_is_checked_each_time() {
        use jsonwebtoken::{EncodingKey, Header};
        let map = std::collections::HashMap::<&str, String>::new();
        let mut config = Config::from_source(&map).unwrap();
        config.jwt_secret = Some(b"the signing secret".to_vec());
        let metrics = crate::telemetry::Metrics::new();
        let backend = Backend::new("http://127.0.0.1:9", Duration::from_secs(1), metrics).unwrap();
        let identity = Identity::new(&config, backend);
        let mint = |exp: u64, secret: &[u8]| {
            let claims = json!({ "sub": "ann@example.com", "exp": exp });
            let key = EncodingKey::from_secret(secret);
            format!(
                "Bearer {}",
                jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
            )
        };
        let now = jsonwebtoken::get_current_timestamp();

        let good = mint(now + 3600, b"the signing secret");
        let checked = identity.verify(Some(&good)).unwrap();
        assert_eq!(identity.verified.get(&checked.digest), Some(now + 3600));
        assert!(
            identity.verify(Some(&good)).is_ok(),
            "again, from the cache"
        );

        // Another signature over the same claims is other bytes: checked, refused.
        let forged = mint(now + 3600, b"another secret");
        assert!(matches!(
            identity.verify(Some(&forged)),
            Err(ApiError::Unauthorized(_))
        ));
        let corrupt = format!("{}x", good);
        assert!(identity.verify(Some(&corrupt)).is_err());

        // Time passes: the remembered token expires like any other (the
        // same 5 s leeway as the first check).
        identity.verified.insert(checked.digest, now - 4);
        assert!(identity.verify(Some(&good)).is_ok(), "within the leeway");
        identity.verified.insert(checked.digest, now - 6);
        assert!(matches!(
            identity.verify(Some(&good)),
            Err(ApiError::Unauthorized(_))
        ));
    }

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
