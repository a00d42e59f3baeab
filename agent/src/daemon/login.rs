//! The daemon's half of enrollment by login: `up` without an enrollment key starts a
//! login (the device's own key pair, made here; only its public half travels) and
//! keeps it; `login_wait` waits for the user and then finishes exactly like an `up`
//! with a key: the enrollment is saved and the tunnels come up. The poll secret stays
//! in the daemon: the CLI only ever sees the link.
//!
//! `up --reauth` is the same conversation for an enrolled device (its key may have
//! expired): it makes a new key pair, kept in memory, and proves which device it is
//! with its current credential. Only when the user has confirmed does anything local
//! change: the tunnels stop, the new credential and then the new key are written (in
//! that order: a crash in between leaves a valid credential to sign in again with),
//! and the tunnels come back with the same device id and addresses.

use std::sync::Arc;
use std::time::Instant;

use zmesh_shared::wire::{EnrollResponse, ReauthProof};
use zmesh_shared::{CertFingerprint, DeviceId, WgPrivateKey};

use super::Daemon;
use crate::control::login::{self, LoginParams, PendingLogin};
use crate::control::tls::Trust;
use crate::ipc::Reply;

/// A login started by `up`, waiting for `login_wait`.
#[derive(Debug)]
pub(super) struct LoginInProgress {
    /// The profile it enrolls (or re-authenticates).
    profile: super::Prof,
    console: String,
    pin: Option<CertFingerprint>,
    ca_pem: Option<String>,
    pending: PendingLogin,
    /// A re-authentication: which device, and its new key (not on disk until success).
    reauth: Option<Reauth>,
}

#[derive(Debug)]
pub(super) struct Reauth {
    device_id: DeviceId,
    key: WgPrivateKey,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LoginUpError {
    #[error(
        "enrolling by login needs a way to trust the console: pass --fingerprint SHA256 \
         (the console certificate's fingerprint, as `zmesh-console serve` prints it) \
         or --ca-file PEM"
    )]
    NoTrust,
    #[error("no sign-in in progress: run `zmesh up --console URL --fingerprint SHA256` first")]
    NothingPending,
    #[error("this device was enrolled meanwhile (by another `zmesh up`); the sign-in is not used")]
    EnrolledMeanwhile,
    #[error(
        "not enrolled: --reauth signs in again as an enrolled device; to enroll, run \
         `zmesh up --console URL --fingerprint SHA256`"
    )]
    NotEnrolled,
    #[error("this device was revoked by the console; run `zmesh logout` and enroll again")]
    Revoked,
    #[error(
        "the console answered the sign-in for device {got}, not this device ({want}); \
         nothing was changed"
    )]
    OtherDevice { want: DeviceId, got: DeviceId },
    #[error("this device's enrollment changed during the sign-in; nothing was changed")]
    EnrollmentChanged,
}

/// What `up` asks of an enrollment: the device name, and for a login the network.
#[derive(Debug, Default)]
pub(super) struct LoginArgs {
    pub name: Option<String>,
    pub network: Option<String>,
}

impl Daemon {
    /// Starts an enrollment by login; answers the link for the user.
    pub(super) async fn login_start(
        self: &Arc<Self>,
        p: &super::Prof,
        console: String,
        login: LoginArgs,
        ca_pem: Option<String>,
        fingerprint: Option<CertFingerprint>,
    ) -> anyhow::Result<Reply> {
        if fingerprint.is_none() && ca_pem.is_none() {
            return Err(LoginUpError::NoTrust.into());
        }
        let trust = Trust::from_parts(fingerprint, ca_pem.as_deref())?;
        let private = p.state.load_or_create_private_key()?;
        let pending = login::start(LoginParams {
            console: &console,
            trust: &trust,
            public_key: private.public_key(),
            name: login.name,
            reauth: None,
            network: login.network,
        })
        .await?;
        Ok(self
            .keep_login(LoginInProgress {
                profile: p.clone(),
                console,
                pin: fingerprint,
                ca_pem,
                pending,
                reauth: None,
            })
            .await)
    }

    /// Starts signing in again as the enrolled device, with a new key pair; answers
    /// the link for the user. Works with tunnels up, down or expired.
    pub(super) async fn reauth_start(self: &Arc<Self>, p: &super::Prof) -> anyhow::Result<Reply> {
        let enr = p
            .state
            .load_enrollment()?
            .ok_or(LoginUpError::NotEnrolled)?;
        if enr.revoked {
            return Err(LoginUpError::Revoked.into());
        }
        let trust = Trust::from_parts(enr.pin, enr.ca_pem.as_deref())?;
        let key = WgPrivateKey::generate();
        let pending = login::start(LoginParams {
            console: &enr.console,
            trust: &trust,
            public_key: key.public_key(),
            name: None,
            network: None,
            reauth: Some(ReauthProof {
                device_id: enr.device_id,
                credential: enr.credential.clone(),
            }),
        })
        .await?;
        tracing::info!(device_id = %enr.device_id, new_public_key = %key.public_key(), "re-authentication started");
        Ok(self
            .keep_login(LoginInProgress {
                profile: p.clone(),
                console: enr.console,
                pin: enr.pin,
                ca_pem: enr.ca_pem,
                pending,
                reauth: Some(Reauth {
                    device_id: enr.device_id,
                    key,
                }),
            })
            .await)
    }

    /// Keeps the login for `login_wait`; the link for the CLI.
    async fn keep_login(&self, l: LoginInProgress) -> Reply {
        let reply = Reply::Login {
            login_url: l.pending.login_url.clone(),
            expires_at_ms: l.pending.expires_at_ms,
            wait_ms: l
                .pending
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        };
        // A newer `up` replaces an older login that nobody waits for.
        *self.login.lock().await = Some(l);
        reply
    }

    /// Waits (bounded by the login's expiry) for the user, then enrolls and comes up.
    pub(super) async fn login_wait(self: &Arc<Self>) -> anyhow::Result<String> {
        let l = self
            .login
            .lock()
            .await
            .take()
            .ok_or(LoginUpError::NothingPending)?;
        let resp = l.pending.wait().await?;
        tracing::info!(device_id = %resp.device_id, "the user confirmed the sign-in");
        let p = l.profile;
        if let Some(r) = l.reauth {
            return self.finish_reauth(&p, r, resp).await;
        }
        let mut g = self.profiles.lock().await;
        match p.state.load_enrollment()? {
            Some(_) => Err(LoginUpError::EnrolledMeanwhile.into()),
            None => {
                let (enr, note) =
                    self.save_new_enrollment(&p, &l.console, l.pin, l.ca_pem, resp)?;
                self.bring_up(&mut g, &p, enr, note).await
            }
        }
    }

    /// The user confirmed a re-authentication: same device, new credential, new key.
    async fn finish_reauth(
        self: &Arc<Self>,
        p: &super::Prof,
        r: Reauth,
        resp: EnrollResponse,
    ) -> anyhow::Result<String> {
        if resp.device_id != r.device_id {
            return Err(LoginUpError::OtherDevice {
                want: r.device_id,
                got: resp.device_id,
            }
            .into());
        }
        let mut g = self.profiles.lock().await;
        let mut enr = match p.state.load_enrollment()? {
            Some(e) if e.device_id == r.device_id => e,
            _ => return Err(LoginUpError::EnrollmentChanged.into()),
        };
        let same_addrs = resp.overlay_v4 == enr.overlay_v4 && resp.overlay_v6 == enr.overlay_v6;
        if !same_addrs {
            tracing::warn!(old = %enr.overlay_v4, new = %resp.overlay_v4, "the console gave other addresses on re-authentication");
        }
        if let Some(run) = g.get_mut(&p.name).and_then(|s| s.running.take()) {
            Self::shutdown(run).await;
        }
        enr.credential = resp.credential;
        enr.name = resp.name;
        enr.overlay_v4 = resp.overlay_v4;
        enr.overlay_v6 = resp.overlay_v6;
        enr.expired = false;
        enr.down = false;
        // The credential first: with it the device can sign in again should the key
        // not get written.
        p.state.save_enrollment(&enr)?;
        p.state.save_private_key(&r.key)?;
        tracing::info!(device_id = %enr.device_id, public_key = %r.key.public_key(), "re-authenticated: key rotated");
        let run = self.start_tunnels(p, enr.clone()).await?;
        let slot = g.entry(p.name.clone()).or_default();
        slot.admitted = Some(super::supervise::Admitted::of(&run));
        slot.running = Some(run);
        slot.blocked = None;
        self.update_crossnet(&mut g);
        Ok(format!(
            "{} re-authenticated: same device {}, addresses {}, {}{}; new WireGuard key {}; up",
            enr.name,
            enr.device_id,
            enr.overlay_v4,
            enr.overlay_v6,
            if same_addrs {
                ""
            } else {
                " (changed by the console)"
            },
            r.key.public_key(),
        ))
    }
}
