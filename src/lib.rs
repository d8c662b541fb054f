//! The `batchgrid` command line, as a library so a team can build its own worker binary with
//! its own processors: call [`main_with`] with a registry that holds them. `batchgrid run`
//! starts its workers from the running executable, so they get the same processors.
//!
//! The CLI stays thin: it parses arguments, resolves settings, and calls the library crates.

mod cli;
pub mod env;

pub use cli::main_with;
