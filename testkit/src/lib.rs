//! Test harnesses shared by the workspace's tests. Each starts the real thing on loopback (or
//! uses the one already running) and fails with a clear message when it cannot; none skips.

pub mod metadata;
pub mod moto;
pub mod postgres;
pub mod proxy;
pub mod tls;

pub use metadata::MetadataServer;
pub use moto::Moto;
pub use proxy::StallingProxy;
