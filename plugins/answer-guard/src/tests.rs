use super::*;
use atlas_agent_sdk::testing::Harness;

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqb0BleGFtcGxlLmNvbSJ9.c2lnbmF0dXJlLWJ5dGVz";

fn guard() -> Harness {
    Harness::policy(AnswerGuard).policy_file(include_str!("../answer-guard.policy.toml"))
}

fn rewritten(d: Decision) -> String {
    match d {
        Decision::Rewrite(text) => text,
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

#[test]
fn clean_answers_pass_unchanged() {
    let h = guard();
    for answer in [
        "You have **3** open work orders: WO000101, WO000102 and WO000103.",
        "Call 555-123-4567 or see order 1234567890 (10 digits).",
        "The asset sk-1 is fine; skip-ahead and task-42 too.",
        "Dates 2026-11-28 and amounts 1 000 000 stay.",
        "Random long id 12345678901234567890123 is not a card.",
        "",
    ] {
        assert_eq!(h.check_answer(answer), Decision::Allow, "{answer}");
    }
}

#[test]
fn bearer_tokens_and_jwts_are_masked() {
    let h = guard();
    let out = rewritten(h.check_answer(&format!("Use Authorization: Bearer {JWT} to call it.")));
    assert_eq!(
        out,
        format!("Use Authorization: Bearer {TOKEN_MASK} to call it.")
    );
    let out = rewritten(h.check_answer("header bearer abcdefgh12345678.xyz here"));
    assert_eq!(out, format!("header bearer {TOKEN_MASK} here"));
    let out = rewritten(h.check_answer(&format!("token={JWT}; and \"{JWT}\"")));
    assert_eq!(out, format!("token={TOKEN_MASK}; and \"{TOKEN_MASK}\""));
    assert!(!out.contains("eyJ"));
    // Too short to be a token.
    assert_eq!(h.check_answer("the bearer of bad news"), Decision::Allow);
    assert_eq!(h.check_answer("bearerabcdefghijklmnop"), Decision::Allow);
}

#[test]
fn api_keys_are_masked() {
    let h = guard();
    let out =
        rewritten(h.check_answer("key: sk-proj-AbCdEf0123456789xyz, old sk-abcdefghijklmnop."));
    assert_eq!(out, format!("key: {KEY_MASK}, old {KEY_MASK}."));
    assert_eq!(
        h.check_answer("risk-abcdefghijklmnopqrst"),
        Decision::Allow,
        "not at a word start"
    );
}

#[test]
fn card_numbers_are_masked() {
    let h = guard();
    for (card, last4) in [
        ("4111111111111111", "1111"),
        ("4111 1111 1111 1111", "1111"),
        ("5500-0000-0000-0004", "0004"),
        ("378282246310005", "0005"),
    ] {
        let out = rewritten(h.check_answer(&format!("Card {card} on file.")));
        assert_eq!(
            out,
            format!("Card [REDACTED CARD ending {last4}] on file."),
            "{card}"
        );
    }
    // Luhn-invalid numbers and digits glued to letters stay.
    assert_eq!(
        h.check_answer("Card 4111 1111 1111 1112 on file."),
        Decision::Allow
    );
    assert_eq!(h.check_answer("ref X4111111111111111"), Decision::Allow);
    // A card followed by a year in the same run of groups.
    let out = rewritten(h.check_answer("4111 1111 1111 1111 2026"));
    assert_eq!(out, "[REDACTED CARD ending 1111] 2026");
}

#[test]
fn everything_at_once() {
    let h = guard();
    let answer = format!("Bearer {JWT} sk-abcdefghijklmnopqrstuvwx 4111111111111111");
    let out = rewritten(h.check_answer(&answer));
    assert_eq!(
        out,
        format!("Bearer {TOKEN_MASK} {KEY_MASK} [REDACTED CARD ending 1111]")
    );
    assert!(h.logs().iter().any(|(_, m)| m.contains("masked")));
}

#[test]
fn config_switches_and_prefixes() {
    let h = Harness::policy(AnswerGuard)
        .config(json!({ "mask_cards": false, "key_prefixes": ["sk-", "ghp_"] }));
    assert_eq!(h.check_answer("4111111111111111"), Decision::Allow);
    let out = rewritten(h.check_answer("ghp_abcdefghijklmnop1234"));
    assert_eq!(out, KEY_MASK);
    let h = Harness::policy(AnswerGuard).config(json!({ "mask_cards": "yes" }));
    assert!(matches!(h.check_answer("x"), Decision::Deny(r) if r.contains("misconfigured")));
}

#[test]
fn luhn() {
    assert!(luhn_valid(b"79927398713"));
    assert!(!luhn_valid(b"79927398710"));
}

#[test]
fn runs_on_answers_only() {
    assert_eq!(guard().hooks(), [Hook::Answer]);
}

#[test]
fn scans_past_near_misses_to_the_secret() {
    let h = guard();
    // First letters of the needles that do not start them, any case for
    // `bearer`, and a needle cut short by the end of the text.
    let out =
        rewritten(h.check_answer("bb Bea BEARER abcdefgh12345678 eye sk sk-abcdefghijklmnopq"));
    assert_eq!(out, format!("bb Bea BEARER {TOKEN_MASK} eye sk {KEY_MASK}"));
    assert_eq!(h.check_answer("ends with beare"), Decision::Allow);
    assert_eq!(h.check_answer("ends with ey"), Decision::Allow);
    // `eyJ` is matched in its case only: a JWT shape starting `eyj` stays.
    assert_eq!(
        h.check_answer(&format!("x {}", JWT.replacen("eyJ", "eyj", 1))),
        Decision::Allow
    );
    // Thirteen Luhn-valid digits are a card, also after many short runs
    // (dates, times, ids) that are passed over.
    let listing = "WO000101 2026-11-28T10:00:00 due 2026-12-01, 3 of 12; ".repeat(40);
    assert_eq!(h.check_answer(&listing), Decision::Allow);
    let out = rewritten(h.check_answer(&format!("{listing}card 4222222222222")));
    assert_eq!(out, format!("{listing}card [REDACTED CARD ending 2222]"));
}
