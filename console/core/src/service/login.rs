//! Enrollment by login: an agent with no enrollment key asks for a login and gets a URL
//! for its user; the user signs in (single sign-on or a local account) and confirms; the
//! agent, waiting on its poll secret, then receives its enrollment like one made with a
//! key. The device belongs to the user who confirmed; its key expires after the
//! console's device key lifetime.
//!
//! Re-authentication is the same conversation started by an enrolled device, with its
//! current credential as proof: only the device's owner may confirm it, and confirming
//! gives the device the login's new public key and a renewed expiry, keeping its id,
//! name and addresses. The old key stops working at once (peers are told the new one)
//! and the old credential when the agent collects its new one.

use std::time::Duration;

use rand::RngCore;
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, Secret, WgPublicKey};

use super::audit::record_refusal;
use super::{AuditCtx, Core, ServiceError};
use crate::domain::names::check_name;
use crate::store::{
    user_owner, DeviceLogin, DeviceRow, LoginPoll, Network, NewDeviceLogin, UserRow,
};

/// How long a user has to open the URL, sign in and confirm.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Default lifetime of the key of a device enrolled by login (`--device-key-lifetime`).
pub const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(180 * 24 * 3600);
/// How often a waiting agent's request is checked.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// What the agent sends to start a login.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    pub public_key: WgPublicKey,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    /// A re-authentication: the enrolled device and its current credential.
    pub reauth: Option<(DeviceId, Secret)>,
    /// The network to join, by name; `None`: the first network (or, at confirmation,
    /// the confirming account's own network if it is scoped to one).
    pub network: Option<String>,
}

/// Starts a login: the request (its `code` goes into the URL) and the agent's poll
/// secret (returned once; stored hashed). A re-authentication whose proof is refused
/// is recorded (`auth.failed`, or `auth.forbidden` for a device no user owns).
pub async fn start(
    core: &Core,
    ctx: AuditCtx,
    req: LoginRequest,
) -> Result<(DeviceLogin, Secret), ServiceError> {
    if let Some(n) = &req.name {
        check_name("name", n)?;
    }
    let (reauth_device_id, network_id) = match &req.reauth {
        None => match req.network.as_deref() {
            None => (None, core.network_id),
            Some(name) => {
                let net = core.store.network_by_name(name).await?.ok_or_else(|| {
                    ServiceError::invalid(
                        "network",
                        format!("no network named {name:?} on this console"),
                    )
                })?;
                (None, net.id)
            }
        },
        // the device stays in its network
        Some((id, credential)) => {
            let d = check_proof(core, ctx, *id, credential).await?;
            (Some(d.id), d.network_id)
        }
    };
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
            network_id,
            public_key: req.public_key,
            name: req.name,
            hostname: req.hostname,
            os: req.os,
            now_ms: now,
            expires_at_ms: now + LOGIN_TTL.as_millis() as i64,
            reauth_device_id,
        })
        .await?;
    tracing::info!(
        code_prefix = &l.code[..6],
        reauth = reauth_device_id.is_some(),
        "device login started"
    );
    Ok((l, poll))
}

/// The device a re-authentication is for, if `credential` is its current one (an
/// expired device qualifies; a revoked or deleted one does not) and a user owns it.
async fn check_proof(
    core: &Core,
    ctx: AuditCtx,
    id: DeviceId,
    credential: &Secret,
) -> Result<DeviceRow, ServiceError> {
    let path = zmesh_shared::wire::LOGIN_PATH;
    let Some(d) = core.store.device_for_reauth(id, &credential.hash()).await? else {
        let detail = serde_json::json!({"reason": "re-authentication proof refused",
            "device": id, "path": path});
        record_refusal(&core.store, ctx, "auth.failed", detail).await;
        return Err(ServiceError::Unauthorized {
            code: "unauthorized",
            message: "this device's credential is not valid (revoked or deleted?):                       run `zmesh logout` and enroll again"
                .into(),
        });
    };
    if !d.owner.starts_with("user:") || d.agentless {
        let detail = serde_json::json!({"reason": "re-authentication of a device no user owns",
            "device": id, "owner": d.owner, "path": path});
        record_refusal(&core.store, ctx, "auth.forbidden", detail).await;
        return Err(ServiceError::Forbidden {
            code: "not_a_user_device",
            message: "this device was enrolled with a key, not by a user's sign-in;                       an admin renews its key expiry instead"
                .into(),
        });
    }
    Ok(d)
}

/// What a confirmation did.
#[derive(Debug)]
pub struct Confirmed {
    pub device: DeviceRow,
    /// A re-authentication (the device existed; its key was rotated).
    pub reauth: bool,
}

/// `user` confirms the login `code`: the device is enrolled and owned by them, or, for
/// a re-authentication (only by the device's owner), gets its new key and expiry.
pub async fn confirm(
    core: &Core,
    ctx: AuditCtx,
    user: &UserRow,
    code: &str,
    name: Option<&str>,
) -> Result<Confirmed, ServiceError> {
    if let Some(n) = name {
        check_name("name", n)?;
    }
    let now = now_ms();
    let l = core.store.device_login(code, now).await?;
    if let Some(id) = l.reauth_device_id {
        let d = core.store.get_device(id).await?;
        if d.owner != user_owner(user) {
            let detail = serde_json::json!({
                "reason": "re-authentication confirmed by someone other than the device's owner",
                "device": id, "owner": d.owner, "user": user.username});
            record_refusal(&core.store, ctx, "auth.forbidden", detail).await;
            return Err(ServiceError::Forbidden {
                code: "not_owner",
                message: format!(
                    "device {} belongs to another user; only its owner can sign in again for it",
                    d.name
                ),
            });
        }
    }
    // An account scoped to one network enrolls devices there only: a login that asked
    // for no network (so the first) joins the account's network; one that asked for
    // another network is refused.
    let mut network = l.network_id;
    if let (Some(own), None) = (user.network_id, l.reauth_device_id) {
        if l.network_id != own {
            let first = core.store.default_network().await?;
            if l.network_id != first.id {
                let detail = serde_json::json!({
                    "reason": "login asks for a network the confirming account is not scoped to",
                    "user": user.username, "network": l.network_id});
                record_refusal(&core.store, ctx, "auth.forbidden", detail).await;
                return Err(ServiceError::Forbidden {
                    code: "other_network",
                    message: "this device asks to join a network your account is not in".into(),
                });
            }
            network = own;
        }
    }
    let expires = core
        .device_key_lifetime
        .map(|d| now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64));
    let row = core
        .store
        .acting(ctx)
        .confirm_device_login(code, network, user, name, now, expires)
        .await?;
    let reauth = l.reauth_device_id.is_some();
    if reauth {
        tracing::info!(device = %row.id, user = %user.username, "device re-authenticated; key rotated");
    } else {
        core.metrics.enrolled("login");
        tracing::info!(device = %row.id, user = %user.username, "device enrolled by login");
    }
    core.publish_network(row.network_id).await;
    Ok(Confirmed {
        device: row,
        reauth,
    })
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
