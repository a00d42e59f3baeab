//! The bottom layer of the console crate: configuration parsed once into validated
//! structs, files in the data directory, the console's TLS identity, and TLS client
//! configs that pin the console's certificate or trust a CA file.

pub mod config;
pub mod files;
pub mod oidc;
pub mod oidc_config;
pub mod shutdown;
pub mod tls;
pub mod tls_client;
pub mod token_seal;
