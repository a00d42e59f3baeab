//! The console as an OpenID Connect relying party (the `openidconnect` crate): the
//! authorization code flow with PKCE (S256), `state` and `nonce`, and full ID token
//! validation (signature against the provider's JWKS, `iss`, `aud`, `exp`/`iat` with a
//! bounded clock skew, `nonce`).
//!
//! Provider metadata and keys are discovered again at every sign-in step: a sign-in is
//! rare, two small GETs are cheap, and a provider that rotated its keys (or was down
//! when the console started) just works. Nothing here logs a code, token or secret.

use std::time::Duration;

use base64::Engine;
use openidconnect::core::CoreIdToken;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, NonceVerifier, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, Scope, TokenResponse,
};
use zmesh_shared::Secret;

use super::oidc_config::OidcConfig;
use super::token_seal::TokenSealer;

/// Clock difference tolerated between the provider and the console.
pub const MAX_SKEW: Duration = Duration::from_secs(60);
/// Longest a provider request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A sign-in in progress: what the callback needs to finish it. Kept by the browser
/// (an HttpOnly cookie) between the two steps; `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// A device-login code to go on to after signing in (`/ui/login/CODE`).
    pub next_login: Option<String>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending([redacted])")
    }
}

impl Pending {
    /// `state.nonce.verifier[.code]`: all URL-safe base64 (or hex) without dots.
    pub fn to_cookie(&self) -> String {
        let mut s = format!("{}.{}.{}", self.state, self.nonce, self.pkce_verifier);
        if let Some(c) = &self.next_login {
            s.push('.');
            s.push_str(c);
        }
        s
    }

    pub fn from_cookie(v: &str) -> Option<Pending> {
        let mut it = v.split('.');
        let (s, n, p) = (it.next()?, it.next()?, it.next()?);
        let next_login = match it.next() {
            Some(c) if is_login_code(c) => Some(c.to_string()),
            Some(_) => return None,
            None => None,
        };
        let ok = |x: &str| {
            !x.is_empty()
                && x.len() <= 200
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (it.next().is_none() && ok(s) && ok(n) && ok(p)).then(|| Pending {
            state: s.into(),
            nonce: n.into(),
            pkce_verifier: p.into(),
            next_login,
        })
    }
}

/// A device-login code: 32 lower-case hex digits.
pub fn is_login_code(c: &str) -> bool {
    c.len() == 32
        && c.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a verified ID token says about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// Absent when the provider marked it unverified.
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// Why a sign-in step failed; [`OidcError::reason`] is what the audit log records.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider is unreachable or its discovery document is invalid: {0}")]
    Discovery(String),
    #[error("the identity provider refused the code: {0}")]
    Exchange(String),
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    #[error("the ID token was rejected: {0}")]
    Token(String),
}

impl OidcError {
    /// A short reason for the audit log and the sign-in page (no token contents).
    pub fn reason(&self) -> String {
        match self {
            OidcError::Discovery(_) => "identity provider unreachable".into(),
            OidcError::Exchange(e) => format!("code exchange refused ({e})"),
            OidcError::NoIdToken => "no ID token".into(),
            OidcError::Token(e) => format!("ID token rejected ({e})"),
        }
    }
}

/// What a refresh at the token endpoint brought: the new refresh token (if the provider
/// rotated it) and what the new ID token says, if it sent one (or why it was rejected).
#[derive(Debug)]
pub struct Refreshed {
    pub refresh_token: Option<Secret>,
    pub identity: Result<Option<Identity>, OidcError>,
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_grant`: the provider no longer honours the token (user disabled or
    /// removed there, grant revoked, token expired).
    #[error("refused by the identity provider ({0})")]
    Refused(String),
    /// No answer (network, timeout, 5xx, unreadable response, discovery failed).
    #[error("{0}")]
    Unreachable(String),
    /// Another error response (e.g. `invalid_client`: the console's settings).
    #[error("{0}")]
    Other(String),
}

/// The relying party of one console.
#[derive(Debug)]
pub struct Oidc {
    cfg: OidcConfig,
    redirect: RedirectUrl,
    http: openidconnect::reqwest::Client,
    sealer: TokenSealer,
}

type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

impl Oidc {
    /// `public_url` is the console's (`https://host:port`); the redirect URI is
    /// `public_url/oidc/callback`.
    pub fn new(cfg: OidcConfig, public_url: &str) -> Result<Oidc, OidcError> {
        let redirect = RedirectUrl::new(format!("{public_url}/oidc/callback"))
            .map_err(|e| OidcError::Discovery(format!("redirect URI: {e}")))?;
        let http = openidconnect::reqwest::ClientBuilder::new()
            // following redirects would open the client to SSRF
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| OidcError::Discovery(format!("HTTP client: {e}")))?;
        let sealer = TokenSealer::from_client_secret(&cfg.client_secret);
        Ok(Oidc {
            cfg,
            redirect,
            http,
            sealer,
        })
    }

    /// Seals and opens the refresh tokens kept in the database.
    pub fn sealer(&self) -> &TokenSealer {
        &self.sealer
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// How often users are re-checked at the provider; `None`: never.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.cfg.refresh_interval
    }

    pub fn redirect_uri(&self) -> &str {
        self.redirect.as_str()
    }

    pub fn rules(&self) -> &zmesh_console_core::domain::sso::SsoRules {
        &self.cfg.rules
    }

    /// The client from the provider's discovery document, and whether the provider
    /// lists the `offline_access` scope.
    async fn client(&self) -> Result<(Client, bool), OidcError> {
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        let offline = meta
            .scopes_supported()
            .is_some_and(|s| s.iter().any(|x| x.as_str() == "offline_access"));
        let client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(
                self.cfg.client_secret.expose().to_string(),
            )),
        )
        .set_redirect_uri(self.redirect.clone());
        Ok((client, offline))
    }

    /// The provider URL to send the browser to, and what the callback needs.
    pub async fn begin(&self, next_login: Option<String>) -> Result<(String, Pending), OidcError> {
        let (client, offline) = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new(self.cfg.groups_claim.clone()));
        if offline && self.cfg.refresh_interval.is_some() {
            // a refresh token for the periodic re-check
            req = req.add_scope(Scope::new("offline_access".into()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok((
            url.to_string(),
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                next_login,
            },
        ))
    }

    /// Trades the code for tokens and validates the ID token against `pending`; also
    /// answers the refresh token, if the provider issued one.
    pub async fn finish(
        &self,
        code: &str,
        pending: &Pending,
    ) -> Result<(Identity, Option<Secret>), OidcError> {
        let (client, _) = self.client().await?;
        let resp = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(token_error(&e)))?;
        let id_token = resp.id_token().ok_or(OidcError::NoIdToken)?;
        let id = self.identity(&client, id_token, &Nonce::new(pending.nonce.clone()))?;
        let refresh = resp
            .refresh_token()
            .map(|t| Secret::from_string(t.secret().clone()));
        Ok((id, refresh))
    }

    /// Uses a refresh token at the token endpoint (IdP re-check). A new ID token is
    /// validated like at sign-in (signature, `iss`, `aud`, `exp`), except for the nonce,
    /// which a refresh does not carry, and must be about `subject`.
    pub async fn refresh(&self, token: &Secret, subject: &str) -> Result<Refreshed, RefreshError> {
        let (client, _) = self
            .client()
            .await
            .map_err(|e| RefreshError::Unreachable(e.reason()))?;
        let resp = client
            .exchange_refresh_token(&RefreshToken::new(token.expose().to_string()))
            .map_err(|e| RefreshError::Other(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match &e {
                openidconnect::RequestTokenError::ServerResponse(_) => {
                    let code = token_error(&e);
                    if code == "invalid_grant" {
                        RefreshError::Refused(code)
                    } else {
                        RefreshError::Other(format!("the identity provider said {code}"))
                    }
                }
                _ => RefreshError::Unreachable(token_error(&e)),
            })?;
        let refresh_token = resp
            .refresh_token()
            .map(|t| Secret::from_string(t.secret().clone()));
        let identity = match resp.id_token() {
            None => Ok(None),
            Some(t) => self
                // no nonce in a refreshed ID token (or the first one's, repeated)
                .identity(&client, t, |_: Option<&Nonce>| Ok(()))
                .and_then(|id| {
                    if id.subject == subject {
                        Ok(Some(id))
                    } else {
                        Err(OidcError::Token("another subject".into()))
                    }
                }),
        };
        Ok(Refreshed {
            refresh_token,
            identity,
        })
    }

    /// Validates `id_token` and reads the user from it.
    fn identity(
        &self,
        client: &Client,
        id_token: &CoreIdToken,
        nonce: impl NonceVerifier,
    ) -> Result<Identity, OidcError> {
        let now = chrono::Utc::now();
        let skew = chrono::Duration::from_std(MAX_SKEW).expect("a minute fits");
        let verifier = client
            .id_token_verifier()
            // `exp` may be up to MAX_SKEW in the past by our clock...
            .set_time_fn(move || now - skew)
            // ...and `iat` up to MAX_SKEW in the future.
            .set_issue_time_verifier_fn(move |iat| {
                if iat > now + skew {
                    Err(format!("issued in the future ({iat})"))
                } else {
                    Ok(())
                }
            });
        let claims = id_token
            .claims(&verifier, nonce)
            .map_err(|e| OidcError::Token(claims_error(e)))?;
        // The signature covers the whole payload, so further claims (the groups) are
        // read from the same, now verified, token.
        let payload = payload_json(&id_token.to_string())
            .ok_or_else(|| OidcError::Token("payload is not JSON".into()))?;
        let groups = match payload.get(&self.cfg.groups_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => vec![],
        };
        let email = match claims.email_verified() {
            Some(false) => None,
            _ => claims.email().map(|e| e.as_str().to_string()),
        };
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string());
        Ok(Identity {
            issuer: claims.issuer().as_str().trim_end_matches('/').to_string(),
            subject: claims.subject().as_str().to_string(),
            email,
            name,
            groups,
        })
    }
}

fn payload_json(jwt: &str) -> Option<serde_json::Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The kind of claims failure, without token contents.
fn claims_error(e: ClaimsVerificationError) -> String {
    use ClaimsVerificationError as C;
    match e {
        C::Expired(_) => "expired".into(),
        C::InvalidAudience(_) => "wrong audience".into(),
        C::InvalidIssuer(_) => "wrong issuer".into(),
        C::InvalidNonce(_) => "nonce mismatch".into(),
        C::InvalidSubject(_) => "invalid subject".into(),
        C::InvalidAuthTime(_) | C::InvalidAuthContext(_) => "invalid auth time or context".into(),
        C::SignatureVerification(_) => "bad signature".into(),
        C::Unsupported(_) => "unsupported token".into(),
        C::Other(m) if m.contains("issued in the future") => "issued in the future".into(),
        _ => "invalid".into(),
    }
}

fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    e: &openidconnect::RequestTokenError<RE, T>,
) -> String {
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => {
            // the provider's error code (e.g. invalid_grant), never its echo of the code
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.get("error").and_then(|x| x.as_str()).map(str::to_string))
                .unwrap_or_else(|| "error response".into())
        }
        openidconnect::RequestTokenError::Request(_) => "provider unreachable".into(),
        openidconnect::RequestTokenError::Parse(..) => "unreadable response".into(),
        openidconnect::RequestTokenError::Other(m) => m.clone(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trips_and_rejects_junk() {
        let p = Pending {
            state: "abc_-1".into(),
            nonce: "n0".into(),
            pkce_verifier: "v".repeat(43),
            next_login: None,
        };
        let with_next = Pending {
            next_login: Some("0123456789abcdef0123456789abcdef".into()),
            ..p.clone()
        };
        assert_eq!(
            Pending::from_cookie(&with_next.to_cookie()),
            Some(with_next)
        );
        assert_eq!(Pending::from_cookie(&p.to_cookie()), Some(p.clone()));
        assert!(!format!("{p:?}").contains("abc"));
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "a..c",
            "a.b.c;x",
            "a.b.c d",
            "a.b.c.0123.e",
        ] {
            assert_eq!(Pending::from_cookie(bad), None, "{bad:?}");
        }
        let jwt = format!(
            "x.{}.y",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"groups":["eng"]}"#)
        );
        assert_eq!(payload_json(&jwt).unwrap()["groups"][0], "eng");
    }
}
