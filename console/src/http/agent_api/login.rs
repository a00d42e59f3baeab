//! Enrollment by login over the agent API: `POST /agent/v1/login` starts one and
//! answers the URL for the user (`To sign in, visit: URL`) and a poll secret;
//! `POST /agent/v1/login/wait` waits (about 25 s at a time) for the user to confirm and
//! then answers the enrollment, as `POST /agent/v1/enroll` does with a key.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use zmesh_shared::wire::{EnrollResponse, LoginPending, LoginStart, LoginStarted, LoginWait};
use zmesh_shared::PROTOCOL_VERSION;

use super::enroll::check_agent;
use crate::http::{ApiError, ApiJson, AppState, Source};
use crate::service::login::{self as svc, LoginRequest, Waited};
use crate::store::AuditCtx;

/// One wait call's longest hold; agents call again after a `202 pending`.
pub const WAIT: Duration = Duration::from_secs(25);

/// The console's URL as the client addressed it, for the login link when no
/// `--public-url` is set.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.public_url {
        return u.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("CONSOLE");
    format!("https://{host}")
}

pub async fn start(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginStart>,
) -> Result<Json<LoginStarted>, ApiError> {
    check_agent(req.protocol, &req.hostname, &req.os)?;
    let (login, poll) = svc::start(
        &state,
        AuditCtx::new("anonymous", source),
        LoginRequest {
            public_key: req.public_key,
            name: req.name,
            hostname: req.hostname,
            os: req.os,
            reauth: req.reauth.map(|p| (p.device_id, p.credential)),
            network: req.network,
        },
    )
    .await?;
    Ok(Json(LoginStarted {
        login_url: format!("{}/ui/login/{}", base_url(&state, &headers), login.code),
        poll_secret: poll,
        expires_at_ms: login.expires_at_ms,
    }))
}

pub async fn wait(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginWait>,
) -> Result<Response, ApiError> {
    match svc::wait(&state, &req.poll_secret, WAIT).await? {
        Waited::Pending => Ok((
            StatusCode::ACCEPTED,
            Json(LoginPending {
                status: "pending".into(),
            }),
        )
            .into_response()),
        Waited::Unknown => Err(ApiError::unauthorized(
            "unauthorized",
            "unknown poll secret",
        )),
        Waited::Gone => Err(ApiError::Gone {
            code: "login_gone",
            message: "the login expired or was completed already; run `zmesh up` again".into(),
        }),
        Waited::Enrolled {
            device,
            network,
            credential,
        } => Ok(Json(EnrollResponse {
            protocol: PROTOCOL_VERSION,
            device_id: device.id,
            network_id: device.network_id,
            name: device.name.clone(),
            state: device.state,
            overlay_v4: device.overlay_v4,
            overlay_v6: device.overlay_v6,
            network_v4: network.prefix_v4,
            network_v6: network.prefix_v6,
            credential,
            signing_key: state.signing_key.public_key(),
        })
        .into_response()),
    }
}
