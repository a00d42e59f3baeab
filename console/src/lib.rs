//! zmesh console library: the control plane behind the `zmesh-console` binary.
//!
//! `store`, `peermap` and `policy` hold the data model; everything else is the HTTP layer:
//! [`api::app`] builds the router (admin REST API + agent API) from one route table,
//! [`server::serve`] serves it over TLS, [`server::run`] is `zmesh-console serve`, and
//! [`cli`] is the admin command line that talks to a running console.

pub mod agent_api;
pub mod api;
pub mod audit;
pub mod bus;
pub mod cli;
pub mod config;
pub mod error;
pub mod expiry;
pub mod nat;
pub mod peermap;
pub mod policy;
pub mod relay;
pub mod server;
pub mod state;
pub mod store;
pub mod stun;
pub mod tls;
pub mod tls_pin;
pub mod view;
pub mod web;

pub use api::app;
pub use server::serve;
pub use state::AppState;
