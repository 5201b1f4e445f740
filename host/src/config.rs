//! One typed configuration, read from the environment through a seam.
//!
//! Every variable name is a constant here; tests pass a map instead of
//! touching the process environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where configuration values come from.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Source for HashMap<&str, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

pub const PORT: &str = "PORT";
pub const BIND_ADDRESS: &str = "BIND_ADDRESS";
pub const API_BASE: &str = "API_BASE";
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
pub const OPENAI_MODEL: &str = "OPENAI_MODEL";
pub const OPENAI_ORG_ID: &str = "OPENAI_ORG_ID";
pub const OPENAI_PROJECT_ID: &str = "OPENAI_PROJECT_ID";
pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
pub const OPENAI_TIMEOUT_MS: &str = "OPENAI_TIMEOUT_MS";
pub const OPENAI_MAX_RETRIES: &str = "OPENAI_MAX_RETRIES";
pub const AGENT_CHATKIT_AGENT_ID: &str = "AGENT_CHATKIT_AGENT_ID";
pub const AGENT_MAX_TOOL_RESULTS: &str = "AGENT_MAX_TOOL_RESULTS";
pub const AGENT_MAX_TURNS: &str = "AGENT_MAX_TURNS";
pub const AGENT_MAX_HISTORY_MESSAGES: &str = "AGENT_MAX_HISTORY_MESSAGES";
pub const AGENT_ALLOWED_ROLES: &str = "AGENT_ALLOWED_ROLES";
pub const JWT_SECRET_KEY: &str = "JWT_SECRET_KEY";
pub const AUTH_CACHE_TTL_MS: &str = "AUTH_CACHE_TTL_MS";
pub const AUTH_CACHE_MAX_ENTRIES: &str = "AUTH_CACHE_MAX_ENTRIES";
pub const BACKEND_TIMEOUT_MS: &str = "BACKEND_TIMEOUT_MS";
pub const REDIS_URL: &str = "REDIS_URL";
pub const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
pub const REDIS_TIMEOUT_MS: &str = "REDIS_TIMEOUT_MS";
pub const CONVERSATION_TTL_MS: &str = "CONVERSATION_TTL_MS";
pub const CONVERSATION_MAX_MESSAGES: &str = "CONVERSATION_MAX_MESSAGES";
pub const CONVERSATION_MAX_BYTES: &str = "CONVERSATION_MAX_BYTES";
pub const TOOL_RESULT_MAX_BYTES: &str = "TOOL_RESULT_MAX_BYTES";
pub const BODY_LIMIT_BYTES: &str = "BODY_LIMIT_BYTES";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
pub const LOG_FORMAT: &str = "LOG_FORMAT";
pub const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";
pub const RATE_LIMIT_MAX: &str = "RATE_LIMIT_MAX";
pub const RATE_LIMIT_WINDOW_MS: &str = "RATE_LIMIT_WINDOW_MS";
pub const FLOOD_GUARD_PER_SECOND: &str = "FLOOD_GUARD_PER_SECOND";
pub const MAX_CONCURRENT_REQUESTS: &str = "MAX_CONCURRENT_REQUESTS";
pub const REQUEST_TIMEOUT_MS: &str = "REQUEST_TIMEOUT_MS";
pub const SHUTDOWN_GRACE_MS: &str = "SHUTDOWN_GRACE_MS";
pub const PLUGIN_DIR: &str = "PLUGIN_DIR";
pub const PLUGIN_TIMEOUT_MS: &str = "PLUGIN_TIMEOUT_MS";
pub const PLUGIN_FUEL: &str = "PLUGIN_FUEL";
pub const PLUGIN_MEMORY_MB: &str = "PLUGIN_MEMORY_MB";
pub const PLUGIN_OUTPUT_MAX_BYTES: &str = "PLUGIN_OUTPUT_MAX_BYTES";
pub const PLUGIN_WATCH: &str = "PLUGIN_WATCH";
pub const PLUGIN_COMPILE: &str = "PLUGIN_COMPILE";
pub const PLUGIN_PROFILER: &str = "PLUGIN_PROFILER";
pub const WORKER_THREADS: &str = "WORKER_THREADS";
pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

/// Limits applied to every plugin call unless a plugin's policy file lowers
/// or raises them.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginLimits {
    pub timeout: Duration,
    pub fuel: u64,
    pub memory_bytes: usize,
    pub output_bytes: usize,
}

/// Where plugins are compiled (`PLUGIN_COMPILE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginCompile {
    /// In a child process running the host's own program, when the host
    /// knows it (`Config::compiler_program`); otherwise inline.
    Process,
    /// In the host process.
    Inline,
}

/// Whether the plugin engine tells a profiler where compiled plugin code
/// lives (`PLUGIN_PROFILER`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PluginProfiler {
    /// Nothing is written.
    #[default]
    None,
    /// `/tmp/perf-<pid>.map` names each compiled plugin function, so `perf`
    /// shows guest frames by name instead of as unknown addresses.
    PerfMap,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    /// The address the listener binds (all interfaces by default, as a
    /// container needs).
    pub bind_address: std::net::IpAddr,
    pub api_base: String,
    pub openai_api_key: Option<String>,
    /// Sent as `OpenAI-Organization` / `OpenAI-Project` when not empty.
    pub openai_org_id: String,
    pub openai_project_id: String,
    pub openai_model: String,
    pub openai_base_url: String,
    pub openai_timeout: Duration,
    pub openai_max_retries: usize,
    pub default_agent_id: String,
    pub max_tool_results: u32,
    pub max_turns: usize,
    pub max_history_messages: usize,
    pub allowed_roles: Vec<String>,
    pub jwt_secret: Option<Vec<u8>>,
    pub auth_cache_ttl: Duration,
    pub auth_cache_max_entries: u64,
    pub backend_timeout: Duration,
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    pub conversation_ttl: Duration,
    pub conversation_max_messages: usize,
    pub conversation_max_bytes: usize,
    pub tool_result_max_bytes: usize,
    pub body_limit_bytes: usize,
    pub log_level: String,
    pub log_json: bool,
    pub allowed_origins: Vec<String>,
    pub rate_limit_max: u32,
    pub rate_limit_window: Duration,
    pub flood_guard_per_second: u32,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub plugin_dir: PathBuf,
    pub plugin_limits: PluginLimits,
    pub plugin_watch: bool,
    pub plugin_compile: PluginCompile,
    pub plugin_profiler: PluginProfiler,
    /// The program run as `<program> --compile-plugin` when `plugin_compile`
    /// is `Process`. Not read from the environment: the `agent-host` binary
    /// sets it to itself; embedders and tests leave it `None` and compile
    /// inline.
    pub compiler_program: Option<PathBuf>,
    /// Threads that run requests (`WORKER_THREADS`); `None`: one per CPU the
    /// process may use, container CPU limits included.
    pub worker_threads: Option<usize>,
    pub admin_token: Option<String>,
    pub otlp_endpoint: Option<String>,
}

struct Reader<'a> {
    source: &'a dyn Source,
}

impl Reader<'_> {
    /// A set, non-blank value.
    fn opt(&self, name: &str) -> Option<String> {
        self.source
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.opt(name).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.opt(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError {
                name,
                problem: format!("{raw:?}: {e}"),
            }),
        }
    }

    /// A duration in milliseconds, at most a year: larger values are
    /// mistakes, and some (cache lifetimes, the model's total timeout) would
    /// overflow further on.
    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        let ms = self.parse(name, default)?;
        if ms > YEAR_MS {
            return Err(ConfigError {
                name,
                problem: format!("{ms} ms is more than a year ({YEAR_MS} ms)"),
            });
        }
        Ok(Duration::from_millis(ms))
    }

    /// A number in `range`.
    fn bounded<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let v = self.parse(name, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError {
                name,
                problem: format!("{v} is out of range ({} to {})", range.start(), range.end()),
            })
        }
    }

    /// One of the words in `choices` (any case), or `default` when unset.
    fn choice<T: Copy>(
        &self,
        name: &'static str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.opt(name) else {
            return Ok(default);
        };
        let word = raw.to_ascii_lowercase();
        match choices.iter().find(|(w, _)| *w == word) {
            Some((_, v)) => Ok(*v),
            None => {
                let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
                Err(ConfigError {
                    name,
                    problem: format!("{word:?}: expected {}", words.join(" or ")),
                })
            }
        }
    }

    fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.string(name, default)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.opt(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError {
                name,
                problem: format!("{v:?} is not a boolean"),
            }),
        }
    }
}

pub const DEFAULT_ALLOWED_ROLES: &str =
    "ADMIN,LIMITED_ADMIN,TECHNICIAN,LIMITED_TECHNICIAN,MANAGER,SUPERVISOR";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader { source };
        let jwt_secret = match r.opt(JWT_SECRET_KEY) {
            None => None,
            Some(raw) => Some(decode_jwt_secret(&raw).ok_or_else(|| ConfigError {
                name: JWT_SECRET_KEY,
                problem: "not base64 (Atlas signs with the base64-decoded secret)".into(),
            })?),
        };
        let log_json = r.choice(LOG_FORMAT, true, &[("json", true), ("pretty", false)])?;
        let config = Config {
            port: r.parse(PORT, 4005)?,
            bind_address: r.parse(BIND_ADDRESS, std::net::IpAddr::from([0, 0, 0, 0]))?,
            api_base: r
                .string(API_BASE, "http://api:8080")
                .trim_end_matches('/')
                .to_string(),
            openai_api_key: r.opt(OPENAI_API_KEY),
            openai_org_id: r.string(OPENAI_ORG_ID, ""),
            openai_project_id: r.string(OPENAI_PROJECT_ID, ""),
            openai_model: r.string(OPENAI_MODEL, "gpt-4o-mini"),
            openai_base_url: r
                .string(OPENAI_BASE_URL, "https://api.openai.com/v1")
                .trim_end_matches('/')
                .to_string(),
            openai_timeout: r.millis(OPENAI_TIMEOUT_MS, 30_000)?,
            openai_max_retries: r.bounded(OPENAI_MAX_RETRIES, 2, 0..=10)?,
            default_agent_id: r.string(AGENT_CHATKIT_AGENT_ID, "default-agent"),
            max_tool_results: r.parse(AGENT_MAX_TOOL_RESULTS, 10u32)?.clamp(1, 50),
            max_turns: r.parse(AGENT_MAX_TURNS, 10usize)?.max(1),
            max_history_messages: r.parse(AGENT_MAX_HISTORY_MESSAGES, 40usize)?.max(1),
            allowed_roles: r
                .list(AGENT_ALLOWED_ROLES, DEFAULT_ALLOWED_ROLES)
                .into_iter()
                .map(|s| s.to_ascii_uppercase())
                .collect(),
            jwt_secret,
            auth_cache_ttl: r.millis(AUTH_CACHE_TTL_MS, 60_000)?,
            auth_cache_max_entries: r.parse(AUTH_CACHE_MAX_ENTRIES, 10_000)?,
            backend_timeout: r.millis(BACKEND_TIMEOUT_MS, 10_000)?,
            redis_url: r.opt(REDIS_URL),
            redis_key_prefix: r.string(REDIS_KEY_PREFIX, "agents:"),
            redis_timeout: r.millis(REDIS_TIMEOUT_MS, 500)?,
            conversation_ttl: r.millis(CONVERSATION_TTL_MS, 900_000)?,
            conversation_max_messages: r.parse(CONVERSATION_MAX_MESSAGES, 200usize)?.max(2),
            conversation_max_bytes: r.parse(CONVERSATION_MAX_BYTES, 256 * 1024usize)?,
            tool_result_max_bytes: r.parse(TOOL_RESULT_MAX_BYTES, 16 * 1024usize)?.max(256),
            body_limit_bytes: r.parse(BODY_LIMIT_BYTES, 64 * 1024usize)?,
            log_level: r.string(LOG_LEVEL, "info"),
            log_json,
            allowed_origins: r.list(
                ALLOWED_ORIGINS,
                "http://localhost:3000,http://localhost:8080",
            ),
            rate_limit_max: r.parse(RATE_LIMIT_MAX, 30u32)?,
            rate_limit_window: r.millis(RATE_LIMIT_WINDOW_MS, 60_000)?,
            flood_guard_per_second: r.parse(FLOOD_GUARD_PER_SECOND, 50u32)?,
            max_concurrent_requests: r.bounded(MAX_CONCURRENT_REQUESTS, 512usize, 1..=1_000_000)?,
            request_timeout: r.millis(REQUEST_TIMEOUT_MS, 120_000)?,
            shutdown_grace: r.millis(SHUTDOWN_GRACE_MS, 25_000)?,
            plugin_dir: PathBuf::from(r.string(PLUGIN_DIR, "target/plugins")),
            plugin_limits: PluginLimits {
                timeout: r.millis(PLUGIN_TIMEOUT_MS, 5_000)?,
                fuel: r.parse(PLUGIN_FUEL, 500_000_000u64)?,
                memory_bytes: r.bounded(PLUGIN_MEMORY_MB, 64usize, 1..=1024)? << 20,
                output_bytes: r.parse(PLUGIN_OUTPUT_MAX_BYTES, 1usize << 20)?,
            },
            plugin_watch: r.flag(PLUGIN_WATCH, true)?,
            plugin_compile: r.choice(
                PLUGIN_COMPILE,
                PluginCompile::Process,
                &[
                    ("process", PluginCompile::Process),
                    ("inline", PluginCompile::Inline),
                ],
            )?,
            plugin_profiler: r.choice(
                PLUGIN_PROFILER,
                PluginProfiler::None,
                &[
                    ("none", PluginProfiler::None),
                    ("perfmap", PluginProfiler::PerfMap),
                ],
            )?,
            compiler_program: None,
            worker_threads: match r.opt(WORKER_THREADS) {
                None => None,
                Some(_) => Some(r.bounded(WORKER_THREADS, 1usize, 1..=1024)?),
            },
            admin_token: r.opt(ADMIN_TOKEN),
            otlp_endpoint: r.opt(OTEL_EXPORTER_OTLP_ENDPOINT),
        };
        // A zero here would refuse every request or every plugin later
        // (a plugin limit of 0 fails every policy file that leaves it out).
        let zero = [
            (RATE_LIMIT_MAX, config.rate_limit_max == 0),
            (RATE_LIMIT_WINDOW_MS, config.rate_limit_window.is_zero()),
            (PLUGIN_TIMEOUT_MS, config.plugin_limits.timeout.is_zero()),
            (PLUGIN_FUEL, config.plugin_limits.fuel == 0),
            (
                PLUGIN_OUTPUT_MAX_BYTES,
                config.plugin_limits.output_bytes == 0,
            ),
        ];
        if let Some((name, _)) = zero.into_iter().find(|(_, zero)| *zero) {
            return Err(ConfigError {
                name,
                problem: "must be at least 1".into(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log_level) {
            return Err(ConfigError {
                name: LOG_LEVEL,
                problem: format!(
                    "{:?} is not a level (error..trace) or a tracing filter: {e}",
                    config.log_level
                ),
            });
        }
        if let Some(url) = &config.redis_url {
            check_redis_url(url)?;
        }
        // Checked here so that the host refuses to start, without echoing
        // the value (it may carry credentials).
        if let Err(problem) = crate::backend::base_url(&config.api_base) {
            return Err(ConfigError {
                name: API_BASE,
                problem,
            });
        }
        // The model client builds these headers once, at start, and panics
        // on a value a header cannot hold (a newline left by `kubectl create
        // secret --from-file`, say): refuse it here, without echoing it.
        let key = config
            .openai_api_key
            .as_deref()
            .map(|k| format!("Bearer {k}"));
        for (name, value) in [
            (OPENAI_API_KEY, key.as_deref()),
            (OPENAI_ORG_ID, Some(config.openai_org_id.as_str())),
            (OPENAI_PROJECT_ID, Some(config.openai_project_id.as_str())),
        ] {
            if value.is_some_and(|v| axum::http::HeaderValue::from_str(v).is_err()) {
                return Err(ConfigError {
                    name,
                    problem: "holds a character an HTTP header cannot carry (a line break or \
                              another control character?)"
                        .into(),
                });
            }
        }
        if let Some(token) = &config.admin_token {
            check_admin_token(token)?;
        }
        Ok(config)
    }
}

impl Config {
    /// Requests per second per client address before the flood guard
    /// answers 429; `None` when turned off (`FLOOD_GUARD_PER_SECOND=0`).
    pub fn flood_guard_per_second(&self) -> Option<u32> {
        (self.flood_guard_per_second > 0).then_some(self.flood_guard_per_second)
    }
}

/// Atlas's JWT library decodes the configured secret as base64, leniently
/// (standard or URL-safe alphabet, padding optional).
pub fn decode_jwt_secret(raw: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    let lenient = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let cleaned: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
    standard
        .decode(&cleaned)
        .or_else(|_| url_safe.decode(&cleaned))
        .ok()
        .filter(|k| !k.is_empty())
}

/// The admin API reloads plugins: its token must not be guessable, and an
/// unedited placeholder (`<...>`) must not turn it on.
fn check_admin_token(token: &str) -> Result<(), ConfigError> {
    const MIN: usize = 16;
    let problem = if token.chars().count() < MIN {
        format!("must be at least {MIN} characters (e.g. `openssl rand -hex 32`)")
    } else if token.contains(['<', '>']) || token.chars().any(char::is_whitespace) {
        "looks like a placeholder (it holds '<', '>' or spaces); set a random token".into()
    } else {
        return Ok(());
    };
    Err(ConfigError {
        name: ADMIN_TOKEN,
        problem,
    })
}

/// The Redis client's own parse, so a bad URL stops the start with the
/// variable's name. The password is not echoed.
fn check_redis_url(url: &str) -> Result<(), ConfigError> {
    use redis::IntoConnectionInfo;
    let problem = |detail: &str| ConfigError {
        name: REDIS_URL,
        problem: format!("not a usable Redis URL ({detail})"),
    };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("rediss" | "valkeys")) {
        return Err(problem(
            "TLS is not built into this host; use redis:// over a trusted network or a TLS sidecar",
        ));
    }
    url.into_connection_info()
        .map(drop)
        .map_err(|e| problem(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<&str, String> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::from_source(&map)
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 4005);
        assert_eq!(c.api_base, "http://api:8080");
        assert_eq!(c.default_agent_id, "default-agent");
        assert_eq!(c.max_tool_results, 10);
        assert_eq!(c.redis_key_prefix, "agents:");
        assert_eq!(c.conversation_ttl, Duration::from_secs(900));
        assert_eq!(c.rate_limit_max, 30);
        assert_eq!(
            c.allowed_origins,
            vec!["http://localhost:3000", "http://localhost:8080"]
        );
        assert!(c.openai_api_key.is_none());
        assert!(c.allowed_roles.contains(&"LIMITED_TECHNICIAN".to_string()));
        assert!(!c.allowed_roles.contains(&"VIEW_ONLY".to_string()));
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = cfg(&[(PORT, "forty")]).unwrap_err();
        assert_eq!(err.name, PORT);
        assert!(err.to_string().contains("forty"));
    }

    #[test]
    fn out_of_range_values_are_refused_not_left_to_panic_later() {
        // Each of these once reached arithmetic or a cache builder that
        // panics; now the start stops with the variable's name.
        for (name, value) in [
            (OPENAI_MAX_RETRIES, "4294967295"),
            (OPENAI_TIMEOUT_MS, "18446744073709551615"),
            (AUTH_CACHE_TTL_MS, "40000000000000"),
            (RATE_LIMIT_WINDOW_MS, "40000000000000"),
            (PLUGIN_MEMORY_MB, "17592186044416"),
            (PLUGIN_MEMORY_MB, "0"),
            // A zero plugin limit used to refuse every plugin that left it
            // to the default, and to panic on a plugin without a policy file.
            (PLUGIN_TIMEOUT_MS, "0"),
            (PLUGIN_FUEL, "0"),
            (PLUGIN_OUTPUT_MAX_BYTES, "0"),
            (RATE_LIMIT_MAX, "0"),
            (RATE_LIMIT_WINDOW_MS, "0"),
            // Past tokio's semaphore limit, which panics.
            (MAX_CONCURRENT_REQUESTS, "18446744073709551615"),
            (MAX_CONCURRENT_REQUESTS, "0"),
        ] {
            let err = cfg(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
        let c = cfg(&[
            (PLUGIN_TIMEOUT_MS, "1"),
            (PLUGIN_FUEL, "1"),
            (PLUGIN_OUTPUT_MAX_BYTES, "1"),
            (OPENAI_MAX_RETRIES, "10"),
            (CONVERSATION_TTL_MS, "31536000000"),
        ])
        .unwrap();
        assert_eq!(c.openai_max_retries, 10);
        assert_eq!(c.conversation_ttl, Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn worker_threads_plugin_compile_and_profiler_are_checked() {
        // tokio panics on a bad TOKIO_WORKER_THREADS; ours is checked first.
        for (name, value) in [
            (WORKER_THREADS, "0"),
            (WORKER_THREADS, "many"),
            (WORKER_THREADS, "100000"),
            (PLUGIN_COMPILE, "jit"),
            (PLUGIN_PROFILER, "jitdump"),
        ] {
            let err = cfg(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
        let c = cfg(&[]).unwrap();
        assert_eq!(c.worker_threads, None);
        assert_eq!(c.plugin_compile, PluginCompile::Process);
        assert_eq!(c.plugin_profiler, PluginProfiler::None);
        assert_eq!(
            c.compiler_program, None,
            "only the binary knows its program"
        );
        let c = cfg(&[
            (WORKER_THREADS, " 3 "),
            (PLUGIN_COMPILE, "Inline"),
            (PLUGIN_PROFILER, " PerfMap "),
        ])
        .unwrap();
        assert_eq!(c.worker_threads, Some(3));
        assert_eq!(c.plugin_compile, PluginCompile::Inline);
        assert_eq!(c.plugin_profiler, PluginProfiler::PerfMap);
    }

    #[test]
    fn word_settings_take_any_case_and_name_the_words_they_accept() {
        assert!(cfg(&[]).unwrap().log_json);
        assert!(!cfg(&[(LOG_FORMAT, " Pretty ")]).unwrap().log_json);
        let err = cfg(&[(LOG_FORMAT, "XML")]).unwrap_err();
        assert_eq!(err.name, LOG_FORMAT);
        assert!(
            err.to_string().contains("\"xml\": expected json or pretty"),
            "{err}"
        );
        let err = cfg(&[(PLUGIN_PROFILER, "jitdump")]).unwrap_err();
        assert!(
            err.to_string().contains("expected none or perfmap"),
            "{err}"
        );
    }

    #[test]
    fn a_log_level_that_does_not_parse_stops_the_start() {
        // It used to become `info` without a word.
        let err = cfg(&[(LOG_LEVEL, "agent_host=loud")]).unwrap_err();
        assert_eq!(err.name, LOG_LEVEL);
        assert!(err.to_string().contains("agent_host=loud"), "{err}");
        for ok in ["debug", "warn", "agent_host=debug,tower_http=info"] {
            assert_eq!(cfg(&[(LOG_LEVEL, ok)]).unwrap().log_level, ok);
        }
    }

    #[test]
    fn a_redis_url_the_client_cannot_use_stops_the_start() {
        for bad in [
            "localhost:6379",
            "redis://",
            "rediss://cache.example:6380",
            "redis://0.0.0.0:6379",
        ] {
            let err = cfg(&[(REDIS_URL, bad)]).unwrap_err();
            assert_eq!(err.name, REDIS_URL, "{bad}: {err}");
        }
        let err = cfg(&[(REDIS_URL, "rediss://:secret@cache.example:6380")]).unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        for ok in ["redis://127.0.0.1:6379", "redis://:pw@redis:6379/2"] {
            assert_eq!(
                cfg(&[(REDIS_URL, ok)]).unwrap().redis_url.as_deref(),
                Some(ok)
            );
        }
    }

    #[test]
    fn an_api_base_that_is_not_an_http_base_url_stops_the_start() {
        for bad in [
            "api:8080",
            "file:///srv/atlas",
            "https://user:secret@atlas.example/?x=1",
            "http://",
        ] {
            let err = cfg(&[(API_BASE, bad)]).unwrap_err();
            assert_eq!(err.name, API_BASE, "{bad}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        for ok in ["http://api:8080", "https://atlas.example/base/"] {
            assert!(cfg(&[(API_BASE, ok)]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_short_or_placeholder_admin_token_stops_the_start() {
        for bad in [
            "admin",
            "<random string of at least 32 characters>",
            "change me please, it is long",
        ] {
            let err = cfg(&[(ADMIN_TOKEN, bad)]).unwrap_err();
            assert_eq!(err.name, ADMIN_TOKEN, "{bad}");
            assert!(
                !err.to_string().contains(bad),
                "the token is not echoed: {err}"
            );
        }
        let ok = "3f9c1d0e8b7a6f5e4d3c2b1a09f8e7d6";
        assert_eq!(
            cfg(&[(ADMIN_TOKEN, ok)]).unwrap().admin_token.as_deref(),
            Some(ok)
        );
        assert!(cfg(&[]).unwrap().admin_token.is_none());
    }

    #[test]
    fn model_header_values_a_header_cannot_carry_stop_the_start() {
        // async-openai builds these headers with `unwrap` on every call.
        for (name, bad) in [
            (OPENAI_API_KEY, "sk-one\ntwo"),
            (OPENAI_ORG_ID, "org\u{7}x"),
            (OPENAI_PROJECT_ID, "proj\r\nX-Injected: 1"),
        ] {
            let err = cfg(&[(name, bad)]).unwrap_err();
            assert_eq!(err.name, name, "{err}");
            assert!(!err.to_string().contains(bad), "not echoed: {err}");
        }
        // Surrounding white space (a trailing newline) is trimmed, as for
        // every variable.
        let c = cfg(&[(OPENAI_API_KEY, "sk-test\n"), (OPENAI_ORG_ID, " org-1 ")]).unwrap();
        assert_eq!(c.openai_api_key.as_deref(), Some("sk-test"));
        assert_eq!(c.openai_org_id, "org-1");
        assert_eq!(c.openai_project_id, "");
    }

    #[test]
    fn bind_address_defaults_to_all_interfaces() {
        assert_eq!(cfg(&[]).unwrap().bind_address.to_string(), "0.0.0.0");
        let c = cfg(&[(BIND_ADDRESS, "127.0.0.1")]).unwrap();
        assert!(c.bind_address.is_loopback());
        assert_eq!(
            cfg(&[(BIND_ADDRESS, "localhost")]).unwrap_err().name,
            BIND_ADDRESS
        );
    }

    #[test]
    fn jwt_secret_is_base64_decoded_leniently() {
        let c = cfg(&[(JWT_SECRET_KEY, "c2VjcmV0LWtleQ")]).unwrap();
        assert_eq!(c.jwt_secret.as_deref(), Some(&b"secret-key"[..]));
        assert!(cfg(&[(JWT_SECRET_KEY, "***")]).is_err());
    }

    #[test]
    fn blank_values_fall_back_to_defaults() {
        let c = cfg(&[(OPENAI_API_KEY, "  "), (OPENAI_MODEL, "")]).unwrap();
        assert!(c.openai_api_key.is_none());
        assert_eq!(c.openai_model, "gpt-4o-mini");
    }
}
