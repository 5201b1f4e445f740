//! What a plugin knows about the call it serves.

use serde::de::DeserializeOwned;

use crate::ToolError;

/// The Atlas user on whose behalf the host calls the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Numeric user id in Atlas.
    pub id: i64,
    /// E-mail (the token subject).
    pub email: String,
    /// First and last name, joined; may be empty.
    pub full_name: String,
    /// Role code, e.g. `ADMIN` or `TECHNICIAN`.
    pub role: String,
    /// The tenant (company).
    pub company_id: i64,
}

impl User {
    /// The name to show: the full name, else the e-mail.
    pub fn display_name(&self) -> &str {
        if self.full_name.trim().is_empty() {
            &self.email
        } else {
            &self.full_name
        }
    }
}

/// The call context handed to every tool and policy hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The calling user.
    pub user: User,
    /// The conversation this call belongs to.
    pub session_id: String,
    /// The request id (also sent to the backend as `X-Request-ID`).
    pub request_id: String,
    /// The agent id the client asked for.
    pub agent_id: String,
    /// The most results a list tool may ask the backend for.
    pub max_results: u32,
    /// The operator's `[config]` table as JSON text; read it with [`Context::config`].
    pub config_json: String,
}

impl Context {
    /// The operator's `[config]` table, deserialized into `T`.
    ///
    /// An absent table reads as `{}`, so a `T` whose fields all have serde
    /// defaults always works. A table that does not fit `T` is an
    /// [`ToolError::Internal`]: the operator, not the model, must fix it.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        let text = self.config_json.trim();
        let text = if text.is_empty() || text == "null" {
            "{}"
        } else {
            text
        };
        // Read once without tracking the path, which costs a call for every
        // value, and again with it only to name what is wrong.
        if let Ok(config) = T::deserialize(&mut serde_json::Deserializer::from_str(text)) {
            return Ok(config);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            ToolError::Internal(format!(
                "plugin config {}",
                crate::tool::describe_path_error(e)
            ))
        })
    }

    /// A result limit: `requested` if positive, else `default`, never above
    /// [`Context::max_results`] (and at least 1).
    pub fn limit(&self, requested: Option<u32>, default: u32) -> u32 {
        let wanted = match requested {
            Some(n) if n > 0 => n,
            _ => default,
        };
        wanted.min(self.max_results).max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn context(config_json: &str) -> Context {
        Context {
            user: User {
                id: 1,
                email: "a@b.test".into(),
                full_name: String::new(),
                role: "ADMIN".into(),
                company_id: 1,
            },
            session_id: "s".into(),
            request_id: "r".into(),
            agent_id: "a".into(),
            max_results: 10,
            config_json: config_json.into(),
        }
    }

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Config {
        roles: BTreeMap<String, Vec<String>>,
        limit: u32,
    }

    #[test]
    fn config_reads_the_table_and_names_the_field_it_cannot() {
        let ok: Config = context(r#"{"roles":{"ADMIN":["x"]},"limit":3}"#)
            .config()
            .unwrap();
        assert_eq!(ok.roles["ADMIN"], ["x"]);
        assert_eq!(ok.limit, 3);
        assert_eq!(context("").config::<Config>().unwrap(), Config::default());
        assert_eq!(
            context(" null ").config::<Config>().unwrap(),
            Config::default()
        );
        let err = context(r#"{"roles":{"ADMIN":["x", 5]}}"#)
            .config::<Config>()
            .unwrap_err();
        assert!(
            matches!(&err, ToolError::Internal(m) if m.starts_with("plugin config roles.ADMIN[1]: invalid type")),
            "{err:?}"
        );
    }
}
