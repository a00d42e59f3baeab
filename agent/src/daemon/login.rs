//! The daemon's half of enrollment by login: `up` without an enrollment key starts a
//! login (the device's own key pair, made here; only its public half travels) and
//! keeps it; `login_wait` waits for the user and then finishes exactly like an `up`
//! with a key: the enrollment is saved and the tunnels come up. The poll secret stays
//! in the daemon: the CLI only ever sees the link.

use std::sync::Arc;
use std::time::Instant;

use zmesh_shared::CertFingerprint;

use super::Daemon;
use crate::control::login::{self, LoginParams, PendingLogin};
use crate::control::tls::Trust;
use crate::ipc::Reply;

/// A login started by `up`, waiting for `login_wait`.
#[derive(Debug)]
pub(super) struct LoginInProgress {
    console: String,
    pin: Option<CertFingerprint>,
    ca_pem: Option<String>,
    pending: PendingLogin,
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
}

impl Daemon {
    /// Starts an enrollment by login; answers the link for the user.
    pub(super) async fn login_start(
        self: &Arc<Self>,
        console: String,
        name: Option<String>,
        ca_pem: Option<String>,
        fingerprint: Option<CertFingerprint>,
    ) -> anyhow::Result<Reply> {
        if fingerprint.is_none() && ca_pem.is_none() {
            return Err(LoginUpError::NoTrust.into());
        }
        let trust = Trust::from_parts(fingerprint, ca_pem.as_deref())?;
        let private = self.state.load_or_create_private_key()?;
        let pending = login::start(LoginParams {
            console: &console,
            trust: &trust,
            public_key: private.public_key(),
            name,
        })
        .await?;
        let reply = Reply::Login {
            login_url: pending.login_url.clone(),
            expires_at_ms: pending.expires_at_ms,
            wait_ms: pending
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        };
        // A newer `up` replaces an older login that nobody waits for.
        *self.login.lock().await = Some(LoginInProgress {
            console,
            pin: fingerprint,
            ca_pem,
            pending,
        });
        Ok(reply)
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
        let mut running = self.running.lock().await;
        match self.state.load_enrollment()? {
            Some(_) => Err(LoginUpError::EnrolledMeanwhile.into()),
            None => {
                let (enr, note) = self.save_new_enrollment(&l.console, l.pin, l.ca_pem, resp)?;
                self.bring_up(&mut running, enr, note).await
            }
        }
    }
}
