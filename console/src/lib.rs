//! zmesh-console library: the store and the peer map builder (the HTTP layer, config,
//! TLS and change bus are added by their owners next to these modules).

pub mod peermap;
pub mod store;
