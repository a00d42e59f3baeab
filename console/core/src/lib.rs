//! zmesh console below HTTP, in layers that only point down:
//!
//! - [`store`]: SQL only (SQLite or PostgreSQL through one `AnyPool`); every mutation is
//!   one transaction with its audit event and, when peers can see it, a revision bump.
//! - [`domain`]: pure logic with its own error type (policy glue, peer maps and views,
//!   NAT settings, names, passwords); takes rows, runs no SQL.
//! - [`bus`]: change fan-out to agent streams and the per-network view cache.
//! - [`service`]: the only writers, one function per use case, then a publish.
//! - [`metrics`]: the Prometheus registry, held by [`Core`]; a leaf every layer may count in.
//!
//! This crate does not depend on axum: the compiler refuses any import of the HTTP
//! layer from here (see docs/architecture.md).

pub mod bus;
pub mod domain;
pub mod metrics;
pub mod service;
pub mod store;

pub use service::{Core, ServiceError};
