use atlas_stubs::token::{self, DEFAULT_JWT_SECRET, TokenError};

#[test]
fn default_secret_is_a_long_enough_key() {
    let key = token::decode_secret(DEFAULT_JWT_SECRET).unwrap();
    assert!(key.len() >= 32, "HS256 key of {} bytes", key.len());
}

#[test]
fn minted_token_verifies_with_atlas_claims() {
    let jwt = token::mint(DEFAULT_JWT_SECRET, "admin@acme.test", 3600);
    let claims = token::verify(DEFAULT_JWT_SECRET, &jwt).unwrap();
    assert_eq!(claims.sub, "admin@acme.test");
    assert_eq!(claims.auth.len(), 1);
    assert_eq!(claims.auth[0].authority, "ROLE_CLIENT");
    assert_eq!(claims.exp - claims.iat, 3600);
}

#[test]
fn header_is_hs256() {
    use base64::Engine as _;
    let jwt = token::mint(DEFAULT_JWT_SECRET, "a@b.test", 60);
    let header = jwt.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["alg"], "HS256");
}

#[test]
fn expired_and_forged_tokens_are_refused() {
    let expired = token::mint(DEFAULT_JWT_SECRET, "admin@acme.test", -10);
    assert_eq!(
        token::verify(DEFAULT_JWT_SECRET, &expired),
        Err(TokenError::Expired)
    );

    let other = "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci1zZWNyZXQ=";
    let forged = token::mint(other, "admin@acme.test", 3600);
    assert_eq!(
        token::verify(DEFAULT_JWT_SECRET, &forged),
        Err(TokenError::BadSignature)
    );

    assert_eq!(
        token::verify(DEFAULT_JWT_SECRET, "not.a.jwt"),
        Err(TokenError::Malformed)
    );
}

#[test]
fn secret_decoding_is_lenient_like_the_backend() {
    let padded = token::decode_secret("c2VjcmV0LWtleQ==").unwrap();
    assert_eq!(padded, b"secret-key");
    assert_eq!(token::decode_secret("c2VjcmV0LWtleQ").unwrap(), padded);
    // URL-safe alphabet decodes to the same bytes as the standard one.
    assert_eq!(
        token::decode_secret("-_-_").unwrap(),
        token::decode_secret("+/+/").unwrap()
    );
    assert!(token::decode_secret("not base64 !!").is_err());
}
