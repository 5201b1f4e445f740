//! The operator's file beside a plugin (`<name>.policy.toml`): which backend
//! methods and paths the plugin may use (deny by default), limit overrides,
//! the plugin's own configuration, and a policy plugin's order.

use std::time::Duration;

use serde::Deserialize;

use crate::config::PluginLimits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<Grant>,
    #[serde(default)]
    limits: LimitOverrides,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    policy: Option<PolicySection>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitOverrides {
    timeout_ms: Option<u64>,
    fuel: Option<u64>,
    memory_mb: Option<usize>,
    output_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    #[serde(default = "default_order")]
    order: i32,
}

fn default_order() -> i32 {
    100
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The parsed, checked operator file.
pub struct Manifest {
    pub grants: Vec<Grant>,
    routes: Vec<(String, matchit::Router<()>)>,
    pub limits: PluginLimits,
    /// The `[config]` table as a JSON object.
    pub config_json: String,
    pub policy_order: i32,
    /// The file has a `[policy]` table (a policy plugin must).
    pub declares_policy: bool,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("grants", &self.grants)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Manifest {
    /// No file: no grants, host default limits, empty config.
    pub fn empty(defaults: &PluginLimits) -> Self {
        Manifest::parse("", defaults).expect("empty manifest parses")
    }

    pub fn parse(text: &str, defaults: &PluginLimits) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => format!(
                "line {}: {}",
                text[..span.start.min(text.len())].matches('\n').count() + 1,
                e.message()
            ),
            None => e.message().to_string(),
        })?;
        let mut routes: Vec<(String, matchit::Router<()>)> = Vec::new();
        for g in &file.allow {
            let method = g.method.to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(format!("allow: unknown method {:?}", g.method));
            }
            if !g.path.starts_with('/') || g.path.contains(['?', '#']) || g.path.contains("..") {
                return Err(format!(
                    "allow: path {:?} must be absolute, without '?', '#' or '..'",
                    g.path
                ));
            }
            // No call path has more segments than this, so a longer grant
            // could never match; refusing it also keeps the file away from
            // matchit's parameter limit, which panics.
            let segments = g.path[1..].split('/').count();
            if segments > crate::backend::MAX_SEGMENTS {
                return Err(format!(
                    "allow: path {:?} has {segments} segments, more than a call can have ({})",
                    g.path,
                    crate::backend::MAX_SEGMENTS
                ));
            }
            let router = match routes.iter_mut().find(|(m, _)| *m == method) {
                Some((_, r)) => r,
                None => {
                    routes.push((method.clone(), matchit::Router::new()));
                    &mut routes.last_mut().expect("just pushed").1
                }
            };
            router
                .insert(g.path.as_str(), ())
                .map_err(|e| format!("allow: path {:?}: {e}", g.path))?;
        }
        let l = &file.limits;
        let limits = PluginLimits {
            timeout: l
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.timeout),
            fuel: l.fuel.unwrap_or(defaults.fuel),
            memory_bytes: match l.memory_mb {
                None => defaults.memory_bytes,
                Some(m @ 1..=1024) => m << 20,
                Some(m) => {
                    return Err(format!("limits: memory_mb {m} is out of range (1 to 1024)"));
                }
            },
            output_bytes: l.output_bytes.unwrap_or(defaults.output_bytes),
        };
        if limits.timeout.is_zero() || limits.fuel == 0 || limits.output_bytes == 0 {
            return Err("limits: timeout_ms, fuel and output_bytes must be above zero".into());
        }
        let config_json = serde_json::to_string(&file.config.unwrap_or_default())
            .map_err(|e| format!("config: {e}"))?;
        Ok(Manifest {
            grants: file.allow,
            routes,
            limits,
            config_json,
            declares_policy: file.policy.is_some(),
            policy_order: file.policy.map(|p| p.order).unwrap_or_else(default_order),
        })
    }

    /// Whether `method` on the encoded absolute `path` was granted.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.routes
            .iter()
            .find(|(m, _)| m == method)
            .is_some_and(|(_, r)| r.at(path).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> PluginLimits {
        PluginLimits {
            timeout: Duration::from_secs(5),
            fuel: 1000,
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        }
    }

    #[test]
    fn grants_match_one_segment_per_parameter() {
        let m = Manifest::parse(
            r#"
            [[allow]]
            method = "post"
            path = "/api/agent/tools/work-orders/{id}/details"
            [limits]
            timeout_ms = 100
            [config]
            max = 3
            "#,
            &defaults(),
        )
        .unwrap();
        assert!(m.allows("POST", "/api/agent/tools/work-orders/WO1/details"));
        assert!(m.allows("POST", "/api/agent/tools/work-orders/..%2F..%2Fx/details"));
        assert!(!m.allows("GET", "/api/agent/tools/work-orders/WO1/details"));
        assert!(!m.allows("POST", "/api/agent/tools/work-orders/a/b/details"));
        assert!(!m.allows("POST", "/auth/me"));
        assert_eq!(m.limits.timeout, Duration::from_millis(100));
        assert_eq!(m.limits.fuel, 1000);
        assert_eq!(m.config_json, r#"{"max":3}"#);
    }

    #[test]
    fn limits_out_of_range_are_refused_and_errors_name_the_line() {
        for (text, want) in [
            (
                "[limits]\nmemory_mb = 2048\n",
                "memory_mb 2048 is out of range",
            ),
            ("[limits]\nmemory_mb = 0\n", "memory_mb 0 is out of range"),
            (
                "[limits]\noutput_bytes = 0\n",
                "output_bytes must be above zero",
            ),
            ("# comment\n[limits]\ntimeout_ms = \"5s\"\n", "line 3: "),
            ("[limit]\n", "line 1: "),
        ] {
            let err = Manifest::parse(text, &defaults()).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let m = Manifest::parse("[limits]\nmemory_mb = 1024\n[policy]\n", &defaults()).unwrap();
        assert_eq!(m.limits.memory_bytes, 1 << 30);
        assert!(m.declares_policy);
        assert!(!Manifest::empty(&defaults()).declares_policy);
    }

    #[test]
    fn a_grant_longer_than_any_call_path_is_refused_not_a_panic() {
        // matchit panics on a route with too many parameters; a file like
        // this once took the host (or its folder watcher) down.
        let params: String = (0..30).map(|i| format!("/{{p{i}}}")).collect();
        let text = format!("[[allow]]\nmethod = \"GET\"\npath = \"{params}\"\n");
        let err = Manifest::parse(&text, &defaults()).unwrap_err();
        assert!(err.contains("30 segments"), "{err}");
        let sixteen: String = (0..16).map(|i| format!("/{{p{i}}}")).collect();
        let text = format!("[[allow]]\nmethod = \"GET\"\npath = \"{sixteen}\"\n");
        let m = Manifest::parse(&text, &defaults()).unwrap();
        let call: String = (0..16).map(|i| format!("/v{i}")).collect();
        assert!(m.allows("GET", &call));
    }

    #[test]
    fn empty_denies_everything() {
        let m = Manifest::empty(&defaults());
        assert!(!m.allows("GET", "/"));
        assert_eq!(m.config_json, "{}");
    }

    #[test]
    fn bad_files_say_why() {
        for (text, needle) in [
            (
                "[[allow]]\nmethod = \"FETCH\"\npath = \"/x\"",
                "unknown method",
            ),
            ("[[allow]]\nmethod = \"GET\"\npath = \"x\"", "absolute"),
            (
                "[[allow]]\nmethod = \"GET\"\npath = \"/a/../b\"",
                "absolute",
            ),
            ("[limits]\nfuel = 0", "above zero"),
            ("surprise = 1", "unknown field"),
        ] {
            let err = Manifest::parse(text, &defaults()).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
