//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `plugins`: build every crate under `plugins/` into `target/plugins/`.
//! - `test-plugins`: the same for `tests/plugins/` into `target/test-plugins/`.
//! - `plugin <crate-dir> [--out DIR]`: build one plugin crate (default out `target/plugins`).
//! - `test [ARGS]`: build the plugins and test plugins, then `cargo test --workspace [ARGS]`.
//! - `local`: build and start a local stack (host, plugins, stub upstreams).
//!
//! Each plugin lands as `<dir-name>.wasm` with `<dir-name>.policy.toml` beside
//! it, written to a temporary name and renamed, so a host watching the folder
//! never sees half a file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail, ensure};

mod stack;
use serde_json::Value;

/// Plugins are built for this target unless they ask for WASI: the
/// component then imports only the plugin's own interfaces, which makes each
/// fresh instance cheaper to create (see `docs/performance.md`).
const LEAN_TARGET: &str = "wasm32-unknown-unknown";
/// For a crate with `[package.metadata.atlas-plugin] wasi = true`: Rust's
/// standard library on WASI (the host gives such a guest an empty sandbox).
const WASI_TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";
/// Said when a plugin does not build or link without WASI.
const WASI_HINT: &str = "\n(a plugin crate that needs WASI, or a dependency that does, can be built \
     for wasm32-wasip2: add `[package.metadata.atlas-plugin]` with `wasi = true` to its Cargo.toml)";

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  plugins                        build plugins/* into target/plugins/
  test-plugins                   build tests/plugins/* into target/test-plugins/
  plugin <crate-dir> [--out DIR] build one plugin crate (default out: target/plugins)
  test [ARGS]                    build all plugins, then cargo test --workspace [ARGS]
  local                          run the host with the plugins and stub upstreams on 127.0.0.1";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("plugins") => build_dir(&root, "plugins", &root.join("target/plugins")),
        Some("test-plugins") => {
            build_dir(&root, "tests/plugins", &root.join("target/test-plugins"))
        }
        Some("plugin") => {
            let mut crate_dir = None;
            let mut out = root.join("target/plugins");
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--out" => out = PathBuf::from(rest.next().context("--out needs a directory")?),
                    other if crate_dir.is_none() && !other.starts_with('-') => {
                        crate_dir = Some(PathBuf::from(other))
                    }
                    other => bail!("unexpected argument {other:?}\n\n{USAGE}"),
                }
            }
            let crate_dir = crate_dir.with_context(|| format!("which crate?\n\n{USAGE}"))?;
            let crate_dir = if crate_dir.is_absolute() {
                crate_dir
            } else {
                current_dir()?.join(crate_dir)
            };
            let crate_dir = crate_dir
                .canonicalize()
                .with_context(|| format!("no such directory: {}", crate_dir.display()))?;
            let out = if out.is_absolute() {
                out
            } else {
                current_dir()?.join(out)
            };
            build(&root, &[crate_dir], &out)
        }
        Some("test") => stack::test(&root, &args[1..]),
        Some("local") => stack::local(&root),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().context("reading the current directory")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Build every crate directly under `dir` (those with a Cargo.toml).
fn build_dir(root: &Path, dir: &str, out: &Path) -> Result<()> {
    let mut crates: Vec<PathBuf> = fs::read_dir(root.join(dir))
        .with_context(|| format!("reading {dir}/"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.canonicalize())
        .collect::<Result<_, _>>()?;
    crates.sort();
    ensure!(!crates.is_empty(), "no plugin crates under {dir}/");
    build(root, &crates, out)
}

/// A workspace package that builds a plugin.
struct Plugin {
    package: String,
    /// The cdylib's file stem (`atlas_plugin_assets`).
    lib: String,
    dir: PathBuf,
    /// The crate directory's name, which names the output files.
    name: String,
    /// Built for `WASI_TARGET` rather than `LEAN_TARGET`.
    wasi: bool,
}

impl Plugin {
    fn target(&self) -> &'static str {
        if self.wasi { WASI_TARGET } else { LEAN_TARGET }
    }
}

/// Build `crate_dirs` (one cargo invocation per target) and copy the
/// results to `out`; a plugin built for `LEAN_TARGET` is a core module, made
/// a component here as `wasm32-wasip2`'s linker does it for the others.
fn build(root: &Path, crate_dirs: &[PathBuf], out: &Path) -> Result<()> {
    let (plugins, target_dir) = find_plugins(root, crate_dirs)?;
    for target in [LEAN_TARGET, WASI_TARGET] {
        let group: Vec<&Plugin> = plugins.iter().filter(|p| p.target() == target).collect();
        if group.is_empty() {
            continue;
        }
        ensure_target(root, target)?;
        let mut cmd = cargo();
        cmd.current_dir(root)
            .args(["build", "--target", target, "--profile", PROFILE]);
        for p in &group {
            cmd.args(["-p", &p.package]);
        }
        let status = cmd.status().context("running cargo build")?;
        ensure!(
            status.success(),
            "cargo build for {target} failed ({status}){}",
            if target == LEAN_TARGET { WASI_HINT } else { "" }
        );
    }

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for p in &plugins {
        let wasm = target_dir
            .join(p.target())
            .join(PROFILE)
            .join(format!("{}.wasm", p.lib));
        let mut bytes = fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
        if !p.wasi {
            bytes = componentize(&bytes)
                .with_context(|| format!("making a component of {}{WASI_HINT}", wasm.display()))?;
        }
        let world = check_world(&bytes)
            .with_context(|| format!("{} is not a usable plugin", wasm.display()))?;

        // The policy first: a host that sees the new .wasm reads the policy beside it.
        let policy = p.dir.join(format!("{}.policy.toml", p.name));
        if policy.is_file() {
            let text =
                fs::read(&policy).with_context(|| format!("reading {}", policy.display()))?;
            let dest = out.join(format!("{}.policy.toml", p.name));
            let note = install(&text, &dest)?;
            println!("{:>10}  {}", note, shown(root, &dest));
        }
        let dest = out.join(format!("{}.wasm", p.name));
        let note = install(&bytes, &dest)?;
        println!(
            "{:>10}  {}  ({} KiB, {})",
            note,
            shown(root, &dest),
            bytes.len().div_ceil(1024),
            world
        );
    }
    Ok(())
}

/// A core module built with wit-bindgen as a component: its world comes
/// from the type information wit-bindgen embeds in the module.
fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)?
        .encode()
}

/// `path` relative to the workspace when inside it.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Write `bytes` to `dest` through a temporary file and a rename; leave an
/// identical file alone so watchers do not reload for nothing.
fn install(bytes: &[u8], dest: &Path) -> Result<&'static str> {
    if fs::read(dest).is_ok_and(|old| old == bytes) {
        return Ok("unchanged");
    }
    let file_name = dest
        .file_name()
        .context("destination has no file name")?
        .to_string_lossy();
    // A dot-name with a .tmp suffix: neither *.wasm nor *.policy.toml to a watcher.
    let tmp = dest.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok("wrote")
}

/// Map crate directories to workspace packages with a cdylib target.
fn find_plugins(root: &Path, crate_dirs: &[PathBuf]) -> Result<(Vec<Plugin>, PathBuf)> {
    let output = cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: Value = serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    let target_dir = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .context("no target_directory")?,
    );
    let packages = meta["packages"].as_array().context("no packages")?;

    let mut plugins = Vec::new();
    for dir in crate_dirs {
        let manifest = dir.join("Cargo.toml");
        let package = packages
            .iter()
            .find(|p| p["manifest_path"].as_str().map(PathBuf::from).as_deref() == Some(&manifest))
            .with_context(|| {
                format!(
                    "{} is not a workspace member: add it to `members` in the root Cargo.toml",
                    dir.display()
                )
            })?;
        let lib = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
            })
            .and_then(|t| t["name"].as_str())
            .with_context(|| {
                format!(
                    "{}: add `crate-type = [\"cdylib\", \"rlib\"]` under [lib]",
                    manifest.display()
                )
            })?;
        let wasi = match &package["metadata"]["atlas-plugin"]["wasi"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            other => bail!(
                "{}: [package.metadata.atlas-plugin] wasi must be true or false, not {other}",
                manifest.display()
            ),
        };
        plugins.push(Plugin {
            wasi,
            package: package["name"]
                .as_str()
                .context("package without a name")?
                .to_owned(),
            lib: lib.replace('-', "_"),
            dir: dir.clone(),
            name: dir
                .file_name()
                .context("crate dir has no name")?
                .to_string_lossy()
                .into_owned(),
        });
    }
    Ok((plugins, target_dir))
}

/// Install a wasm target when rustup lacks it (rust-toolchain.toml names
/// both, but toolchains installed before those lines existed lack them).
fn ensure_target(root: &Path, target: &str) -> Result<()> {
    let installed = match Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            eprintln!("note: rustup not found; assuming the {target} target is installed");
            return Ok(());
        }
    };
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("installing the {target} target");
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", target])
        .status()
        .context("running rustup target add")?;
    ensure!(status.success(), "rustup target add {target} failed");
    Ok(())
}

/// Check that `bytes` is a component exporting exactly one of the plugin
/// interfaces and importing nothing but WASI and `atlas:agent`; describe it.
fn check_world(bytes: &[u8]) -> Result<String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    let mut component = false;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        use wasmparser::Payload::*;
        match payload? {
            Version { encoding, .. } if depth == 0 => {
                component = encoding == wasmparser::Encoding::Component
            }
            ModuleSection { .. } | ComponentSection { .. } => depth += 1,
            End(_) => depth = depth.saturating_sub(1),
            ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    imports.push(import?.name.full_name().into_owned());
                }
            }
            ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    exports.push(export?.name.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    ensure!(component, "not a component");
    let kind = match exports
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["atlas:agent/tool@0.2.0"] => "tool plugin",
        ["atlas:agent/policy@0.2.0"] => "policy plugin",
        other => {
            bail!("exports {other:?}; expected exactly atlas:agent/tool or atlas:agent/policy")
        }
    };
    if let Some(odd) = imports
        .iter()
        .find(|i| !i.starts_with("wasi:") && !i.starts_with("atlas:agent/"))
    {
        bail!("imports {odd}, which no host provides");
    }
    let atlas: Vec<&str> = imports
        .iter()
        .filter_map(|i| i.strip_prefix("atlas:agent/"))
        .map(|i| i.split('@').next().unwrap_or(i))
        .collect();
    let wasi = match imports.iter().filter(|i| i.starts_with("wasi:")).count() {
        0 => "no WASI".to_owned(),
        n => format!("{n} WASI"),
    };
    let atlas = if atlas.is_empty() {
        "-".to_owned()
    } else {
        atlas.join(", ")
    };
    Ok(format!("{kind}, imports {atlas} + {wasi}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_atomically_and_skips_identical_files() {
        let dir = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("p.wasm");
        assert_eq!(install(b"one", &dest).unwrap(), "wrote");
        assert_eq!(install(b"one", &dest).unwrap(), "unchanged");
        assert_eq!(install(b"two", &dest).unwrap(), "wrote");
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["p.wasm"], "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn core_modules_and_garbage_are_not_plugins() {
        let core_module = b"\0asm\x01\0\0\0";
        assert!(
            check_world(core_module)
                .unwrap_err()
                .to_string()
                .contains("not a component")
        );
        assert!(check_world(b"hello").is_err());
    }
}
