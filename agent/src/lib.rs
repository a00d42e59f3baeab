//! zmesh agent library.
pub mod filter;
