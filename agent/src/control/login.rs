//! Enrollment by login, the console's side of the conversation: the device sends its
//! public key and gets a sign-in link for its user plus a poll secret; it then
//! long-polls until the user has signed in and confirmed, and receives exactly what a
//! key enrollment answers. The whole wait is bounded by the login's expiry (at most
//! [`MAX_LOGIN_WAIT`]); network errors and console hiccups are retried with backoff
//! inside that bound. The poll secret never appears in logs or Debug output.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zmesh_shared::wire::{
    EnrollResponse, LoginStart, LoginStarted, LoginWait, ReauthProof, LOGIN_PATH, LOGIN_WAIT_PATH,
};
use zmesh_shared::{Secret, WgPublicKey, PROTOCOL_VERSION};

use super::backoff::Backoff;
use super::enroll::{hostname, http_client, parse_console_url, refused, EnrollError};
use super::tls::Trust;

/// The longest a device waits for its user, whatever the console's expiry says.
pub const MAX_LOGIN_WAIT: Duration = Duration::from_secs(600);
/// One long poll: the console holds it about 25 s; this leaves room for a slow network.
const POLL_TIMEOUT: Duration = Duration::from_secs(40);
/// A quick "pending" is followed by at least this pause, so polls never spin.
const MIN_POLL_GAP: Duration = Duration::from_secs(1);
/// Hard cap on polls, whatever the clock does (600 s / 1 s gap, with room to spare).
const MAX_POLLS: u32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error(
        "the sign-in link expired or was already used (410): run `zmesh up` again for a new one"
    )]
    Expired,
    #[error("the console does not know this sign-in (401): run `zmesh up` again for a new one")]
    Unknown,
    #[error("nobody signed in within {0} s: run `zmesh up` again for a new link")]
    TimedOut(u64),
    #[error("the console's answer to the sign-in wait is malformed: {0}")]
    BadAnswer(String),
    #[error("the console answered a login link that is not an https:// URL: {0:?}")]
    BadLink(String),
}

pub struct LoginParams<'a> {
    pub console: &'a str,
    pub trust: &'a Trust,
    pub public_key: WgPublicKey,
    pub name: Option<String>,
    /// Signing in again as this enrolled device (`zmesh up --reauth`).
    pub reauth: Option<ReauthProof>,
    /// The console's network to join, by name (`zmesh up --network`).
    pub network: Option<String>,
}

/// A started login: the link for the user and what the device needs to wait for it.
pub struct PendingLogin {
    pub login_url: String,
    pub expires_at_ms: i64,
    /// When the wait gives up: the login's expiry, at most [`MAX_LOGIN_WAIT`] from start.
    pub deadline: Instant,
    poll_secret: Secret,
    wait_url: reqwest::Url,
    client: reqwest::Client,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("login_url", &self.login_url)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("poll_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One wait call's meaning.
#[derive(Debug)]
enum Poll {
    Done(Box<EnrollResponse>),
    Pending,
    /// Worth trying again (network error, 5xx, 429); the reason is for the log.
    Retry(String),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long to wait for a login that expires at `expires_at_ms` (Unix ms), seen at
/// `now_ms`: until then, never longer than [`MAX_LOGIN_WAIT`], never negative.
pub fn wait_budget(expires_at_ms: i64, now_ms: i64) -> Duration {
    let left = expires_at_ms.saturating_sub(now_ms).max(0) as u64;
    Duration::from_millis(left).min(MAX_LOGIN_WAIT)
}

/// Asks the console for a sign-in link for this device's public key.
pub async fn start(p: LoginParams<'_>) -> Result<PendingLogin, LoginError> {
    let base = parse_console_url(p.console)?;
    let bad = || EnrollError::BadUrl(p.console.to_string());
    let url = base.join(LOGIN_PATH).map_err(|_| bad())?;
    let wait_url = base.join(LOGIN_WAIT_PATH).map_err(|_| bad())?;
    let client = http_client(p.trust, POLL_TIMEOUT)?;
    let req = LoginStart {
        protocol: PROTOCOL_VERSION,
        public_key: p.public_key,
        name: p.name,
        hostname: hostname(),
        os: Some(std::env::consts::OS.to_string()),
        reauth: p.reauth,
        network: p.network,
    };
    let resp = client
        .post(url)
        .timeout(Duration::from_secs(20))
        .json(&req)
        .send()
        .await
        .map_err(EnrollError::from)?;
    if !resp.status().is_success() {
        return Err(refused(resp).await.into());
    }
    let started: LoginStarted = resp.json().await.map_err(EnrollError::from)?;
    // The link is shown to a person: only ever an https:// URL, one line, no controls.
    let link_ok = reqwest::Url::parse(&started.login_url).is_ok_and(|u| u.scheme() == "https")
        && !started.login_url.chars().any(char::is_control);
    if !link_ok {
        return Err(LoginError::BadLink(
            started.login_url.chars().take(200).collect(),
        ));
    }
    let budget = wait_budget(started.expires_at_ms, now_ms());
    // Not the link itself: it is for the user's eyes (the CLI shows it), not the journal.
    tracing::info!(
        wait_s = budget.as_secs(),
        "login started: waiting for the user to sign in"
    );
    Ok(PendingLogin {
        login_url: started.login_url,
        expires_at_ms: started.expires_at_ms,
        deadline: Instant::now() + budget,
        poll_secret: started.poll_secret,
        wait_url,
        client,
    })
}

impl PendingLogin {
    /// Waits (bounded by [`PendingLogin::deadline`]) until the user has confirmed.
    pub async fn wait(&self) -> Result<EnrollResponse, LoginError> {
        let total = self.deadline.saturating_duration_since(Instant::now());
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10), 0.3);
        for _ in 0..MAX_POLLS {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let began = Instant::now();
            let poll = match tokio::time::timeout(left, self.poll_once()).await {
                Err(_) => break,
                Ok(p) => p?,
            };
            match poll {
                Poll::Done(resp) => {
                    if resp.protocol != PROTOCOL_VERSION {
                        return Err(EnrollError::Protocol(resp.protocol).into());
                    }
                    return Ok(*resp);
                }
                Poll::Pending => {
                    backoff.reset();
                    if let Some(gap) = MIN_POLL_GAP.checked_sub(began.elapsed()) {
                        tokio::time::sleep(gap.min(left)).await;
                    }
                }
                Poll::Retry(why) => {
                    let pause = backoff.next_delay().min(left);
                    tracing::info!(
                        reason = %why,
                        retry_in_ms = pause.as_millis() as u64,
                        "waiting for the sign-in: console not answering; retrying"
                    );
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(LoginError::TimedOut(total.as_secs()))
    }

    async fn poll_once(&self) -> Result<Poll, LoginError> {
        let body = LoginWait {
            poll_secret: self.poll_secret.clone(),
        };
        let resp = match self
            .client
            .post(self.wait_url.clone())
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            // without the URL: reqwest's text is enough, and stays short
            Err(e) => return Ok(Poll::Retry(e.without_url().to_string())),
        };
        let status = resp.status().as_u16();
        match status {
            200 => match resp.json::<EnrollResponse>().await {
                Ok(r) => Ok(Poll::Done(Box::new(r))),
                Err(e) => Err(LoginError::BadAnswer(e.without_url().to_string())),
            },
            202 => Ok(Poll::Pending),
            410 => Err(LoginError::Expired),
            401 => Err(LoginError::Unknown),
            408 | 429 | 500..=599 => Ok(Poll::Retry(format!("HTTP {status}"))),
            _ => Err(refused(resp).await.into()),
        }
    }

    /// A login waiting at `wait_url` over plain `client` (the tests' tiny HTTP server).
    #[cfg(test)]
    fn for_test(wait_url: &str, budget: Duration) -> PendingLogin {
        PendingLogin {
            login_url: "https://console.test/ui/login/x".into(),
            expires_at_ms: now_ms() + budget.as_millis() as i64,
            deadline: Instant::now() + budget,
            poll_secret: Secret::from_string("zmw_pollsecretvalue".into()),
            wait_url: wait_url.parse().unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
