//! Where a plugin's Wasm is turned into machine code.
//!
//! The host binary compiles in a child process: it runs itself as
//! `agent-host --compile-plugin`, writes the component to the child's
//! standard input and loads the precompiled artefact the child writes back.
//! The serving process then never runs Cranelift. Its code stays out of the
//! host's resident memory and the compiler's heap is returned to the kernel
//! when the child exits, instead of being left fragmented in the host's
//! allocator (together about 12 MB of a host's idle RSS); and a component
//! that crashes the compiler or makes it run away is refused like any other
//! bad plugin, with the old version still serving.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::runtime;

/// The argument that makes `agent-host` the plugin compiler.
pub const CHILD_FLAG: &str = "--compile-plugin";

/// How long one compilation may take before the child is killed and the
/// plugin refused. The shipped plugins take well under a second.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Stderr kept from a failed child, for the refusal message.
const STDERR_MAX: usize = 4096;

#[derive(Clone, Debug, Default)]
pub enum Compiler {
    /// In the host process, on a blocking thread (tests and embedders).
    #[default]
    Inline,
    /// In a child: `program --compile-plugin`, Wasm on stdin, the
    /// precompiled component on stdout, a message on stderr on failure.
    Process { program: PathBuf, timeout: Duration },
}

impl Compiler {
    pub fn describe(&self) -> &'static str {
        match self {
            Compiler::Inline => "inline",
            Compiler::Process { .. } => "process",
        }
    }

    /// The component, or the refusal message.
    pub async fn compile(&self, engine: &Engine, wasm: &Arc<Vec<u8>>) -> Result<Component, String> {
        match self {
            Compiler::Inline => {
                let engine = engine.clone();
                let wasm = wasm.clone();
                tokio::task::spawn_blocking(move || Component::new(&engine, &*wasm))
                    .await
                    .map_err(|e| format!("compiler task failed: {e}"))?
                    .map_err(|e| invalid(&e))
            }
            Compiler::Process { program, timeout } => {
                let artefact = run_child(program, *timeout, wasm.clone()).await?;
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || {
                    // SAFETY: the bytes are what this same program, built with
                    // the same engine settings, wrote to a pipe only this
                    // process reads; wasmtime still checks the artefact's
                    // header, version and settings before using it.
                    unsafe { Component::deserialize(&engine, &artefact) }
                })
                .await
                .map_err(|e| format!("compiler task failed: {e}"))?
                .map_err(|e| {
                    format!(
                        "the plugin compiler's output could not be loaded: {}",
                        super::root_cause(&e)
                    )
                })
            }
        }
    }
}

/// The running program, to be run as its own plugin compiler.
pub fn this_program() -> Option<PathBuf> {
    // `/proc/self/exe` still runs this binary after its file has been
    // replaced on disk, which a path from `current_exe` would not.
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_exe.exists() {
        Some(proc_exe.to_path_buf())
    } else {
        std::env::current_exe().ok()
    }
}

fn invalid(e: &wasmtime::Error) -> String {
    format!("not a valid Wasm component: {}", super::root_cause(e))
}

async fn run_child(
    program: &PathBuf,
    timeout: Duration,
    wasm: Arc<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new(program)
        .arg(CHILD_FLAG)
        // The compiler needs nothing from the host's environment, which
        // holds its secrets.
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the plugin compiler ({}): {e}",
                program.display()
            )
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written beside the wait: a child that stops reading (or exits early)
    // must not leave this side blocked on a full pipe.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&wasm).await;
        // Dropping stdin closes it: the child reads to end of file.
    });
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("the plugin compiler failed: {e}")),
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => {
            return Err(format!(
                "compiling took longer than {timeout:?}; the plugin compiler was stopped"
            ));
        }
    };
    writer.abort();
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr[..output.stderr.len().min(STDERR_MAX)])
        .trim()
        .to_string();
    if !stderr.is_empty() && output.status.code() == Some(i32::from(CHILD_REFUSED)) {
        // The child's own message, e.g. "not a valid Wasm component: ...".
        return Err(stderr);
    }
    let how = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                match output.status.signal() {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => "no exit status".to_string(),
                }
            }
            #[cfg(not(unix))]
            {
                "no exit status".to_string()
            }
        }
    };
    Err(if stderr.is_empty() {
        format!("the plugin compiler stopped ({how})")
    } else {
        format!("the plugin compiler stopped ({how}): {stderr}")
    })
}

/// The child's exit code when it refuses the component (its message is on
/// stderr); any other failure is the compiler's own.
pub const CHILD_REFUSED: u8 = 3;

/// `agent-host --compile-plugin`: a component on stdin, the precompiled
/// component on stdout. Returns the exit code.
pub fn child_main() -> u8 {
    use std::io::{Read, Write};
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        eprintln!("cannot read the component from standard input: {e}");
        return 1;
    }
    let engine = match runtime::compiler_engine() {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot set up the compiler: {e:#}");
            return 1;
        }
    };
    match engine.precompile_component(&wasm) {
        Ok(artefact) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&artefact).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("cannot write the compiled component: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("{}", invalid(&e));
            CHILD_REFUSED
        }
    }
}
