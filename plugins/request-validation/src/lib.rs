//! Validation policy for incoming chat requests: prompt length within the
//! operator's limits and a well-formed `metadata.sessionId` when one is given
//! (the backend stores session ids in a varchar(100)).

use atlas_agent_sdk::prelude::*;

/// Longest session id the backend can store.
const MAX_SESSION_ID: usize = 100;

/// The `[config]` table of `request-validation.policy.toml`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most characters a prompt may have, after trimming.
    pub max_prompt_chars: usize,
    /// Fewest characters a prompt must have, after trimming.
    pub min_prompt_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_prompt_chars: 10_000,
            min_prompt_chars: 1,
        }
    }
}

/// Whether `id` is 1..=100 characters of `[A-Za-z0-9._:-]`.
pub fn valid_session_id(id: &str) -> bool {
    (1..=MAX_SESSION_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub struct RequestValidation;

impl Policy for RequestValidation {
    fn hooks(&self) -> &'static [Hook] {
        &[Hook::Request]
    }

    fn check_request(&self, ctx: &Context, prompt: &str, metadata: &Value) -> Decision {
        let config: Config = match ctx.config() {
            Ok(c) => c,
            // Fail closed: a broken policy must not wave requests through.
            Err(e) => {
                return Decision::deny(format!(
                    "request validation is misconfigured: {}",
                    e.message()
                ));
            }
        };
        let length = prompt.trim().chars().count();
        if length < config.min_prompt_chars.max(1) {
            return Decision::deny(if config.min_prompt_chars <= 1 {
                "The prompt is empty.".to_owned()
            } else {
                format!(
                    "The prompt is too short: at least {} characters are needed.",
                    config.min_prompt_chars
                )
            });
        }
        if length > config.max_prompt_chars {
            return Decision::deny(format!(
                "The prompt is too long: {length} characters, at most {} are allowed.",
                config.max_prompt_chars
            ));
        }
        match metadata.get("sessionId") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if valid_session_id(id) => {}
            Some(Value::String(_)) => {
                return Decision::deny(
                    "metadata.sessionId must be 1 to 100 characters of letters, digits, '.', '_', ':' or '-'.",
                );
            }
            Some(_) => return Decision::deny("metadata.sessionId must be a string."),
        }
        Decision::Allow
    }
}

atlas_agent_sdk::export_policy!(RequestValidation);

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_agent_sdk::testing::Harness;

    fn harness() -> Harness {
        Harness::policy(RequestValidation)
            .policy_file(include_str!("../request-validation.policy.toml"))
    }

    fn denied(d: Decision) -> String {
        match d {
            Decision::Deny(reason) => reason,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_requests_pass() {
        let h = harness();
        assert_eq!(
            h.check_request("Show my open work orders", json!({})),
            Decision::Allow
        );
        assert_eq!(
            h.check_request("hi", json!({ "sessionId": "3f0c-a1.b_c:d" })),
            Decision::Allow
        );
        assert_eq!(
            h.check_request("hi", json!({ "sessionId": null, "source": "web" })),
            Decision::Allow
        );
        assert_eq!(
            h.check_request("x", json!({ "sessionId": "a".repeat(100) })),
            Decision::Allow
        );
    }

    #[test]
    fn blank_and_long_prompts_are_denied() {
        let h = harness();
        assert!(denied(h.check_request("   \n ", json!({}))).contains("empty"));
        let long = "é".repeat(10_001);
        assert!(denied(h.check_request(&long, json!({}))).contains("too long"));
        // Exactly the limit, counted in characters (not bytes), after trimming.
        assert_eq!(
            h.check_request(&format!("  {}  ", "é".repeat(10_000)), json!({})),
            Decision::Allow
        );
    }

    #[test]
    fn limits_come_from_config() {
        let h = Harness::policy(RequestValidation)
            .config(json!({ "max_prompt_chars": 5, "min_prompt_chars": 3 }));
        assert!(denied(h.check_request("ab", json!({}))).contains("at least 3"));
        assert_eq!(h.check_request("abc", json!({})), Decision::Allow);
        assert!(denied(h.check_request("abcdef", json!({}))).contains("at most 5"));
        // Without any config the defaults apply.
        let h = Harness::policy(RequestValidation).config(json!({}));
        assert_eq!(
            h.check_request(&"a".repeat(10_000), json!({})),
            Decision::Allow
        );
        assert!(denied(h.check_request(&"a".repeat(10_001), json!({}))).contains("too long"));
    }

    #[test]
    fn bad_session_ids_are_denied() {
        let h = harness();
        for bad in [
            json!(""),
            json!("a b"),
            json!("../x/y"),
            json!("a".repeat(101)),
            json!("ü"),
        ] {
            assert!(
                denied(h.check_request("hi", json!({ "sessionId": bad }))).contains("sessionId")
            );
        }
        assert!(denied(h.check_request("hi", json!({ "sessionId": 5 }))).contains("string"));
    }

    #[test]
    fn broken_config_fails_closed() {
        let h = Harness::policy(RequestValidation).config(json!({ "max_prompt_chars": "lots" }));
        assert!(denied(h.check_request("hi", json!({}))).contains("misconfigured"));
        let h = Harness::policy(RequestValidation).config(json!({ "max_chars": 5 }));
        assert!(denied(h.check_request("hi", json!({}))).contains("misconfigured"));
    }

    #[test]
    fn runs_on_requests_only() {
        assert_eq!(harness().hooks(), [Hook::Request]);
    }
}
