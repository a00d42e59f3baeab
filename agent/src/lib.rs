//! zmesh agent library: the sans-IO data-plane core and its I/O shell.

pub mod core;
pub mod io;
