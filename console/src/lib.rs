//! zmesh console library: the control plane behind the `zmesh-console` binary.
//!
//! Layers, each importing only the ones below it (docs/architecture.md, "Where does my
//! change go"; `tests/layers.rs` fails on an upward or sideways import):
//!
//! 1. [`infra`]: configuration as validated structs, data-dir files, TLS identity and
//!    pinned TLS client configs.
//! 2. `zmesh_console_core` (its own crate, no axum): `store` (SQL only) < `domain`
//!    (pure logic) < `bus` < `service` (the only writers), and `metrics`. Re-exported here.
//! 3. [`http`]: `AppState`, the route table, errors to statuses, extractors and one
//!    [`http::Principal`]; `http::api`, `http::agent_api` and `http::web` sit beside
//!    each other and never import each other.
//! 4. On top: [`server`] (`zmesh-console serve`), [`relay`], [`stun`], [`syslog`],
//!    [`scrape`] (the `--metrics-listen` endpoint), [`cli`].

pub mod infra;

pub use zmesh_console_core::{bus, domain, metrics, service, store};

pub mod http;

pub mod cli;
pub mod relay;
pub mod scrape;
pub mod server;
pub mod stun;
pub mod syslog;

pub use http::{app, AppState};
pub use server::serve;
