//! Atlas-style HS256 tokens.
//!
//! Atlas signs with the base64-*decoded* bytes of `JWT_SECRET_KEY`, and its
//! JWT library decodes leniently (padding optional, URL-safe alphabet
//! accepted); the stub does the same so a secret shared with the host means
//! the same key on both sides.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Default secret, in the form of Atlas's `JWT_SECRET_KEY`: base64 of 48 random bytes.
pub const DEFAULT_JWT_SECRET: &str =
    "Z+k3jbeGpqd8bdRLoQqUm82wzzpUuULRLlVeB7EeaqgswABhwx/xoES7nCiMkBzC";

/// The claims Atlas puts in its tokens (no user id, company, issuer or audience).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub auth: Vec<Authority>,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    pub authority: String,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or claims of the wrong shape.
    Malformed,
    /// Signed with another key or algorithm.
    BadSignature,
    Expired,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "invalid token signature",
            TokenError::Expired => "expired token",
        })
    }
}

impl std::error::Error for TokenError {}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes a `JWT_SECRET_KEY`-style secret into the HMAC key bytes.
pub fn decode_secret(secret_b64: &str) -> anyhow::Result<Vec<u8>> {
    let cleaned: String = secret_b64
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    let key = LENIENT
        .decode(cleaned.as_bytes())
        .map_err(|e| anyhow::anyhow!("JWT secret is not valid base64: {e}"))?;
    anyhow::ensure!(!key.is_empty(), "JWT secret is empty");
    Ok(key)
}

/// Mints a token like Atlas issues: `sub` = e-mail, `auth` = ROLE_CLIENT,
/// `exp` = now + `ttl_secs` (negative gives an already expired token).
///
/// Panics when `secret_b64` is not base64; callers pass constants or
/// configuration already checked with [`decode_secret`].
pub fn mint(secret_b64: &str, email: &str, ttl_secs: i64) -> String {
    let key = decode_secret(secret_b64).expect("invalid JWT secret");
    mint_with_key(&key, email, ttl_secs)
}

/// [`mint`] with already decoded key bytes.
pub fn mint_with_key(key: &[u8], email: &str, ttl_secs: i64) -> String {
    let now = crate::time::unix_now();
    let claims = Claims {
        sub: email.to_owned(),
        auth: vec![Authority {
            authority: "ROLE_CLIENT".to_owned(),
        }],
        iat: now,
        exp: now + ttl_secs,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
    .expect("HS256 signing does not fail")
}

/// Checks signature and expiry (no leeway, as the backend) and returns the claims.
pub fn verify(secret_b64: &str, token: &str) -> Result<Claims, TokenError> {
    let key = decode_secret(secret_b64).map_err(|_| TokenError::BadSignature)?;
    verify_with_key(&key, token)
}

/// [`verify`] with already decoded key bytes.
pub fn verify_with_key(key: &[u8], token: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })
}
