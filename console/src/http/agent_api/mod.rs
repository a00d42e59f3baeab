//! The agent API: enrollment with a key (`POST /agent/v1/enroll`) or by login (and
//! re-authentication, `POST /agent/v1/login`) and the control stream
//! (`GET /agent/v1/stream`, a WebSocket), and the built-in relay (`GET /agent/v1/relay`,
//! an HTTP upgrade). Its part of the route table is here.

pub mod enroll;
pub mod login;
pub mod relay;
pub mod stream;

use axum::http::Method;
use axum::routing::{get, post};
use zmesh_shared::wire::{
    EnrollRequest, EnrollResponse, LoginPending, LoginStart, LoginStarted, LoginWait,
};

use crate::http::routes::{body, Access, Content, RouteDef, E400, E401, E409, E415, E422, ERR};

/// Every route of the agent API.
pub fn routes() -> Vec<RouteDef> {
    use Access::*;
    vec![
        RouteDef {
            method: Method::POST,
            path: zmesh_shared::wire::LOGIN_PATH,
            operation_id: "startDeviceLogin",
            summary: "Agent enrollment by login: a URL for the user and a poll secret",
            tag: "agent",
            access: Public,
            request: Some(body::<LoginStart>()),
            query: None,
            responses: vec![
                (
                    200,
                    body::<LoginStarted>(),
                    "started; the poll secret is returned only here",
                ),
                E400,
                (
                    401,
                    ERR,
                    "re-authentication: the device credential is not valid",
                ),
                (
                    403,
                    ERR,
                    "re-authentication: the device was not enrolled by a user",
                ),
                E415,
                E422,
            ],
            handler: || post(login::start),
        },
        RouteDef {
            method: Method::POST,
            path: zmesh_shared::wire::LOGIN_WAIT_PATH,
            operation_id: "waitDeviceLogin",
            summary: "Wait (about 25 s) for the user to confirm an enrollment by login",
            tag: "agent",
            access: Public,
            request: Some(body::<LoginWait>()),
            query: None,
            responses: vec![
                (
                    200,
                    body::<EnrollResponse>(),
                    "enrolled; the credential is returned only here",
                ),
                (202, body::<LoginPending>(), "not confirmed yet: wait again"),
                E400,
                E415,
                (401, ERR, "unknown poll secret"),
                (
                    410,
                    ERR,
                    "the login expired or its credential was collected",
                ),
                E422,
            ],
            handler: || post(login::wait),
        },
        RouteDef {
            method: Method::POST,
            path: zmesh_shared::wire::ENROLL_PATH,
            operation_id: "enrollDevice",
            summary: "Agent enrollment with an enrollment key",
            tag: "agent",
            access: EnrollKey,
            request: Some(body::<EnrollRequest>()),
            query: None,
            responses: vec![
                (
                    200,
                    body::<EnrollResponse>(),
                    "enrolled; the credential is returned only here",
                ),
                E400,
                E415,
                (401, ERR, "unknown enrollment key"),
                (403, ERR, "key expired, used or revoked (`code` says which)"),
                E409,
                E422,
            ],
            handler: || post(enroll::enroll),
        },
        RouteDef {
            method: Method::GET,
            path: zmesh_shared::wire::STREAM_PATH,
            operation_id: "agentStream",
            summary: "Agent control stream (WebSocket upgrade; JSON ServerMsg/ClientMsg frames)",
            tag: "agent",
            access: Device,
            request: None,
            query: None,
            responses: vec![
                (101, Content::Empty, "switching to WebSocket"),
                (400, ERR, "not a WebSocket upgrade"),
                E401,
            ],
            handler: || get(stream::stream),
        },
        RouteDef {
            method: Method::GET,
            path: zmesh_shared::wire::RELAY_PATH,
            operation_id: "agentRelay",
            summary: "Built-in relay (HTTP upgrade to `zmesh-relay`; the relay protocol \
                      authenticates with a relay token and proof of the WireGuard key)",
            tag: "agent",
            access: Public,
            request: None,
            query: None,
            responses: vec![
                (101, Content::Empty, "switching to the relay protocol"),
                (400, ERR, "not a relay upgrade"),
                (404, ERR, "the built-in relay is off (--no-builtin-relay)"),
                (
                    429,
                    ERR,
                    "too many relay connections from this address are still authenticating",
                ),
            ],
            handler: || get(relay::relay),
        },
    ]
}
