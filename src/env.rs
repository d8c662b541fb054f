//! Environment variables the CLI reads, named once so clap's `env =` and the docs agree.

/// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,batchgrid_core=debug`).
pub const LOG: &str = "BATCHGRID_LOG";
/// `text` (default) or `json` log lines.
pub const LOG_FORMAT: &str = "BATCHGRID_LOG_FORMAT";
/// State directory of an embedded grid.
pub const STATE_DIR: &str = "BATCHGRID_STATE_DIR";
