//! Fuzz target: the STUN decoder (`zmesh_shared::stun`) on arbitrary datagrams.
//!
//! Never a panic; whatever decodes is a STUN message by the cheap demultiplexing test,
//! and re-encoding what was decoded gives a message that decodes to the same thing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zmesh_shared::stun::{self, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = stun::decode(data) else {
        return;
    };
    // The socket demultiplexer must route everything the decoder accepts to STUN.
    assert!(stun::is_stun(data), "decoded a datagram is_stun rejects");
    let again = match &msg {
        Message::BindingRequest { tid } => stun::binding_request(*tid),
        Message::BindingSuccess { tid, mapped } => stun::binding_success(*tid, *mapped, "zmesh"),
    };
    assert_eq!(
        stun::decode(&again).as_ref(),
        Ok(&msg),
        "round trip changed the message"
    );
});
