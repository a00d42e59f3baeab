//! zmesh agent library.
