//! zmesh agent library: the data plane (`core`, `io`, the inbound `filter`, the `ip`
//! parser under all three), the `dns` resolver, and the
//! control plane around it (`control` client, `daemon`, local `ipc`, the `statedir`, `cli`).

pub mod core;
pub mod dns;
pub mod filter;
pub mod io;
pub mod ip;

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod ipc;
pub mod netcheck;
pub mod prefs;
pub mod statedir;
pub mod status_text;
