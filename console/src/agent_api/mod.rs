//! The agent-facing API: enrollment (`POST /agent/v1/enroll`) and the control stream
//! (`GET /agent/v1/stream`, WebSocket). Message types live in `zmesh_shared::wire`.

pub mod enroll;
pub mod stream;
