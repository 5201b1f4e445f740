//! The host's integration tests, in one test binary: one link instead of one
//! per file, which keeps a clean build's time and disk use down. OTLP export
//! has its own binary (`tests/otlp.rs`), as the tracing subscriber it installs
//! is process-global.

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod compile;
mod hot_reload;
mod operability;
mod policies;
mod redis_sessions;
mod sandbox;
