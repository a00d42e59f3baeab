//! zmesh agent library: the sans-IO data-plane core, its I/O shell, and the inbound
//! packet filter.

pub mod core;
pub mod filter;
pub mod io;
