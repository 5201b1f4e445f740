//! A tool plugin that misbehaves on purpose, for the host's sandbox tests:
//! endless loops, CPU burn, memory hogging, panics, bad output, floods, raw
//! backend calls, and a look at what WASI shows it. Never deploy it.

use std::hint::black_box;

use atlas_agent_sdk::backend::{self, BackendError, Method};
use atlas_agent_sdk::prelude::*;

/// Loop forever (tests the host's time limit).
#[derive(Deserialize, JsonSchema)]
pub struct SpinArgs {}

/// Burn CPU for a number of iterations and return the result (tests fuel).
#[derive(Deserialize, JsonSchema)]
pub struct BurnArgs {
    /// Loop iterations.
    pub iterations: u64,
}

/// Allocate and touch this many MiB of memory (tests the memory limit).
#[derive(Deserialize, JsonSchema)]
pub struct HogArgs {
    /// Mebibytes to allocate.
    pub mib: u32,
}

/// Panic (tests trap handling).
#[derive(Deserialize, JsonSchema)]
pub struct CrashArgs {}

/// Return content that is not JSON.
#[derive(Deserialize, JsonSchema)]
pub struct GarbageArgs {}

/// Return a JSON string exactly this many bytes long (tests the output limit).
#[derive(Deserialize, JsonSchema)]
pub struct FloodArgs {
    /// Size of the content in bytes (at least 2, the quotes).
    pub bytes: u32,
}

/// Call the backend and return its status and body, or the host's refusal.
#[derive(Deserialize, JsonSchema)]
pub struct FetchArgs {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// Raw path segments, e.g. ["api", "agent", "tools", "assets", "search"].
    pub path: Vec<String>,
    /// Body to send: a string is sent as is (e.g. "{}"), anything else as JSON.
    pub body: Option<Value>,
}

/// Report what WASI shows the guest: environment, arguments, the root
/// folder, and whether writing to stdout is accepted.
#[derive(Deserialize, JsonSchema)]
pub struct PeekArgs {}

/// Return the arguments and the call context as JSON.
#[derive(Deserialize, JsonSchema)]
pub struct EchoArgs(pub serde_json::Map<String, Value>);

pub fn spin(_: &Context, _: SpinArgs) -> Result<Output, ToolError> {
    loop {
        black_box(());
    }
}

pub fn burn(_: &Context, args: BurnArgs) -> Result<Output, ToolError> {
    // xorshift over a black-boxed seed: the optimiser cannot fold the loop away.
    let mut x: u64 = black_box(0x9E37_79B9_7F4A_7C15);
    for i in 0..black_box(args.iterations) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    Ok(Output::json(
        &json!({ "iterations": args.iterations, "result": black_box(x) }),
    ))
}

pub fn hog(_: &Context, args: HogArgs) -> Result<Output, ToolError> {
    let bytes = args.mib as usize * 1024 * 1024;
    let mut block: Vec<u8> = Vec::with_capacity(bytes);
    // Write every page so the memory is really used, not just reserved.
    block.resize(bytes, 1);
    let mut sum: u64 = 0;
    for page in (0..bytes).step_by(4096) {
        block[page] = (page / 4096) as u8;
        sum += u64::from(black_box(block[page]));
    }
    Ok(Output::json(
        &json!({ "mib": args.mib, "checksum": black_box(sum) }),
    ))
}

pub fn crash(_: &Context, _: CrashArgs) -> Result<Output, ToolError> {
    panic!("crash requested by the test");
}

pub fn garbage(_: &Context, _: GarbageArgs) -> Result<Output, ToolError> {
    Ok(Output::raw("this is {not json"))
}

pub fn flood(_: &Context, args: FloodArgs) -> Result<Output, ToolError> {
    let inner = (args.bytes as usize).saturating_sub(2);
    let mut content = String::with_capacity(inner + 2);
    content.push('"');
    content.extend(std::iter::repeat_n('x', inner));
    content.push('"');
    Ok(Output::raw(content))
}

pub fn fetch(_: &Context, args: FetchArgs) -> Result<Output, ToolError> {
    let method = Method::parse(&args.method)
        .ok_or_else(|| ToolError::invalid(format!("unknown method {:?}", args.method)))?;
    let path: Vec<&str> = args.path.iter().map(String::as_str).collect();
    let body = args.body.map(|b| match b {
        Value::String(text) => text,
        other => other.to_string(),
    });
    let result = match backend::send(method, &path, body) {
        Ok(r) => {
            let body = serde_json::from_str::<Value>(&r.body).unwrap_or(Value::String(r.body));
            json!({ "status": r.status, "body": body })
        }
        Err(e) => {
            let kind = match &e {
                BackendError::NotGranted(_) => "not-granted",
                BackendError::InvalidPath(_) => "invalid-path",
                BackendError::Timeout => "timeout",
                BackendError::Unavailable(_) => "unavailable",
                BackendError::TooLarge => "too-large",
                BackendError::InvalidBody(_) => "invalid-body",
            };
            json!({ "error": kind, "message": e.to_string() })
        }
    };
    Ok(Output::json(&result))
}

pub fn peek(_: &Context, _: PeekArgs) -> Result<Output, ToolError> {
    use std::io::Write;
    let env: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    let args: Vec<String> = std::env::args().collect();
    let root = match std::fs::read_dir("/") {
        Ok(_) => "listed".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let stdout = std::io::stdout().write_all(b"peek\n").is_ok();
    Ok(Output::json(&json!({
        "env": env, "args": args, "root": root, "stdout": stdout
    })))
}

pub fn echo(ctx: &Context, args: EchoArgs) -> Result<Output, ToolError> {
    let config: Value = ctx.config()?;
    Ok(Output::json(&json!({
        "arguments": args.0,
        "ctx": {
            "user": {
                "id": ctx.user.id,
                "email": ctx.user.email,
                "fullName": ctx.user.full_name,
                "role": ctx.user.role,
                "companyId": ctx.user.company_id,
            },
            "sessionId": ctx.session_id,
            "requestId": ctx.request_id,
            "agentId": ctx.agent_id,
            "maxResults": ctx.max_results,
            "config": config,
        }
    })))
}

pub fn tools() -> Tools {
    Tools::new()
        .context("spin", spin)
        .context("burn", burn)
        .context("hog", hog)
        .context("crash", crash)
        .context("garbage", garbage)
        .context("flood", flood)
        .read("fetch", fetch)
        .context("echo", echo)
        .context("peek", peek)
}

atlas_agent_sdk::export_tools!(tools);

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_agent_sdk::testing::Harness;

    #[test]
    fn describes_all_tools() {
        let names: Vec<_> = Harness::new(tools())
            .describe()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "spin", "burn", "hog", "crash", "garbage", "flood", "fetch", "echo", "peek"
            ]
        );
    }

    #[test]
    fn burn_depends_on_iterations() {
        let h = Harness::new(tools());
        let a = h
            .invoke("burn", json!({ "iterations": 1000 }))
            .unwrap()
            .json();
        let b = h
            .invoke("burn", json!({ "iterations": 1001 }))
            .unwrap()
            .json();
        assert_ne!(a["result"], b["result"]);
    }

    #[test]
    fn hog_allocates() {
        let out = Harness::new(tools())
            .invoke("hog", json!({ "mib": 2 }))
            .unwrap()
            .json();
        assert_eq!(out["mib"], 2);
    }

    #[test]
    fn flood_is_exact_and_garbage_is_not_json() {
        let h = Harness::new(tools());
        let out = h.invoke("flood", json!({ "bytes": 1000 })).unwrap();
        assert_eq!(out.content.len(), 1000);
        assert!(out.json().is_string());
        let out = h.invoke("garbage", json!({})).unwrap();
        assert!(serde_json::from_str::<Value>(&out.content).is_err());
    }

    #[test]
    #[should_panic(expected = "crash requested")]
    fn crash_panics() {
        let _ = Harness::new(tools()).invoke("crash", json!({}));
    }

    #[test]
    fn fetch_reports_answers_and_refusals() {
        let h = Harness::new(tools())
            .policy_file("[[allow]]\nmethod = \"GET\"\npath = \"/api/ok/{x}\"\n")
            .on(Method::Get, "/api/ok/{x}", |req| {
                (201, json!({ "got": req.segments[2] }))
            });
        let ok = h
            .invoke(
                "fetch",
                json!({ "method": "get", "path": ["api", "ok", "a/b"] }),
            )
            .unwrap()
            .json();
        assert_eq!(ok, json!({ "status": 201, "body": { "got": "a/b" } }));
        for (body, sent) in [(json!("{}"), "{}"), (json!({ "a": 1 }), r#"{"a":1}"#)] {
            let args = json!({ "method": "GET", "path": ["api", "ok", "x"], "body": body });
            h.invoke("fetch", args).unwrap();
            assert_eq!(h.requests().last().unwrap().body.as_deref(), Some(sent));
        }
        let refused = h
            .invoke("fetch", json!({ "method": "GET", "path": ["auth", "me"] }))
            .unwrap()
            .json();
        assert_eq!(refused["error"], "not-granted");
        let bad = h
            .invoke("fetch", json!({ "method": "GET", "path": ["api", ".."] }))
            .unwrap()
            .json();
        assert_eq!(bad["error"], "invalid-path");
    }

    #[test]
    fn echo_returns_arguments_and_context() {
        let out = Harness::new(tools())
            .config(json!({ "k": 1 }))
            .invoke("echo", json!({ "a": [1, 2], "b": "c" }))
            .unwrap()
            .json();
        assert_eq!(out["arguments"], json!({ "a": [1, 2], "b": "c" }));
        assert_eq!(out["ctx"]["user"]["id"], 7);
        assert_eq!(out["ctx"]["config"], json!({ "k": 1 }));
        assert_eq!(out["ctx"]["maxResults"], 10);
    }
}
