//! Watches the plugin folder and reloads when it settles.
//!
//! Any event in the folder (a write, a rename into place, Kubernetes
//! swapping its `..data` symlink) starts a quiet period; the reload runs once
//! no event has arrived for a while and file sizes and times have stopped
//! moving, so a file still being written is not loaded half-way.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::PluginHost;

const QUIET: Duration = Duration::from_millis(250);
/// A safety net for file systems that drop events.
const RESCAN: Duration = Duration::from_secs(60);

/// Sizes and modification times of what the folder holds (symlinks followed).
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(meta) = std::fs::metadata(e.path()) {
                out.push((name, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Starts watching; the returned watcher must be kept alive.
pub fn spawn(
    host: Arc<PluginHost>,
    shutdown: crate::Shutdown,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let tx_initial = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        tracing::trace!(?event, "plugin folder event");
        // Reads (ours included, when the folder is fingerprinted) change nothing.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(host.dir(), RecursiveMode::NonRecursive)?;
    // Anything that changed between the first load and this watch is
    // caught by one pass now (unchanged files are not recompiled).
    let _ = tx_initial.try_send(());
    let dir = host.dir().to_path_buf();
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                got = rx.recv() => if got.is_none() { break },
                _ = tokio::time::sleep(RESCAN) => {}
            }
            // Let the burst of events settle.
            loop {
                tokio::time::sleep(QUIET).await;
                let before = fingerprint(&dir);
                let more = rx.try_recv().is_ok();
                tokio::time::sleep(QUIET).await;
                if !more && rx.try_recv().is_err() && fingerprint(&dir) == before {
                    break;
                }
            }
            tracing::debug!(dir = %dir.display(), "plugin folder changed; reloading");
            let report = host.reload().await;
            if !report.loaded.is_empty()
                || !report.unloaded.is_empty()
                || !report.refused.is_empty()
            {
                tracing::info!(?report, "plugin folder reloaded");
            }
        }
    });
    Ok(watcher)
}
