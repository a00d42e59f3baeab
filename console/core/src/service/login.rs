//! Enrollment by login: an agent with no enrollment key asks for a login and gets a URL
//! for its user; the user signs in (single sign-on or a local account) and confirms; the
//! agent, waiting on its poll secret, then receives its enrollment like one made with a
//! key. The device belongs to the user who confirmed.

use std::time::Duration;

use rand::RngCore;
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, WgPublicKey};

use super::{AuditCtx, Core, ServiceError};
use crate::domain::names::check_name;
use crate::store::{DeviceLogin, DeviceRow, LoginPoll, Network, NewDeviceLogin, UserRow};

/// How long a user has to open the URL, sign in and confirm.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How often a waiting agent's request is checked.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// What the agent sends to start a login.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    pub public_key: WgPublicKey,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
}

/// Starts a login: the request (its `code` goes into the URL) and the agent's poll
/// secret (returned once; stored hashed).
pub async fn start(core: &Core, req: LoginRequest) -> Result<(DeviceLogin, Secret), ServiceError> {
    if let Some(n) = &req.name {
        check_name("name", n)?;
    }
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let code = hex::encode(b);
    let poll = Secret::generate("zmw_");
    let now = now_ms();
    let l = core
        .store
        .create_device_login(NewDeviceLogin {
            code,
            poll_hash: poll.hash(),
            network_id: core.network_id,
            public_key: req.public_key,
            name: req.name,
            hostname: req.hostname,
            os: req.os,
            now_ms: now,
            expires_at_ms: now + LOGIN_TTL.as_millis() as i64,
        })
        .await?;
    tracing::info!(code_prefix = &l.code[..6], "device login started");
    Ok((l, poll))
}

/// `user` confirms the login `code`: the device is enrolled and owned by them.
pub async fn confirm(
    core: &Core,
    ctx: AuditCtx,
    user: &UserRow,
    code: &str,
    name: Option<&str>,
) -> Result<DeviceRow, ServiceError> {
    if let Some(n) = name {
        check_name("name", n)?;
    }
    let row = core
        .store
        .acting(ctx)
        .confirm_device_login(code, user, name, now_ms())
        .await?;
    tracing::info!(device = %row.id, user = %user.username, "device enrolled by login");
    core.publish_network(row.network_id).await;
    Ok(row)
}

/// What a waiting agent gets.
#[derive(Debug)]
pub enum Waited {
    /// Still waiting: ask again.
    Pending,
    /// Expired, or already collected.
    Gone,
    /// No such poll secret.
    Unknown,
    /// Enrolled: the device, its network and its stream credential (shown once).
    Enrolled {
        device: Box<DeviceRow>,
        network: Network,
        credential: Secret,
    },
}

/// Waits at most `max` for the user to confirm.
pub async fn wait(core: &Core, poll: &Secret, max: Duration) -> Result<Waited, ServiceError> {
    let deadline = tokio::time::Instant::now() + max;
    let poll_hash = poll.hash();
    loop {
        let credential = Secret::generate("zmd_");
        match core
            .store
            .collect_device_login(&poll_hash, &credential.hash(), now_ms())
            .await?
        {
            LoginPoll::Unknown => return Ok(Waited::Unknown),
            LoginPoll::Gone => return Ok(Waited::Gone),
            LoginPoll::Ready(device) => {
                // (peers heard of the device at confirmation; the credential is not
                // something they see)
                let network = core.store.get_network(device.network_id).await?;
                return Ok(Waited::Enrolled {
                    device,
                    network,
                    credential,
                });
            }
            LoginPoll::Waiting => {}
        }
        if tokio::time::Instant::now() + POLL_EVERY > deadline {
            return Ok(Waited::Pending);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
