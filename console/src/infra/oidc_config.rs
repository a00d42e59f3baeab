//! `serve`'s single-sign-on flags (`--oidc-*`, each with an env twin) and their
//! validated form. The client secret comes from a file or the environment, never a
//! plain flag, and is never printed (`Debug` redacts it).

use std::path::PathBuf;

use clap::Args;
use zmesh_console_core::domain::sso::SsoRules;
use zmesh_shared::Secret;

/// Raw `--oidc-*` flags as clap sees them.
#[derive(Debug, Clone, Args, Default)]
pub struct OidcArgs {
    /// OpenID Provider issuer URL (turns single sign-on on), e.g. https://idp.example.com/realms/corp.
    #[arg(long, env = "ZMESH_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// Client id registered at the provider for this console.
    #[arg(long, env = "ZMESH_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (or set ZMESH_OIDC_CLIENT_SECRET).
    #[arg(long, env = "ZMESH_OIDC_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// ID-token claim that lists the user's groups.
    #[arg(
        long,
        env = "ZMESH_OIDC_GROUPS_CLAIM",
        default_value = "groups",
        value_name = "NAME"
    )]
    pub oidc_groups_claim: String,
    /// Email domains allowed to sign in (comma-separated; default: any).
    #[arg(
        long,
        env = "ZMESH_OIDC_ALLOWED_DOMAINS",
        value_delimiter = ',',
        value_name = "DOMAINS"
    )]
    pub oidc_allowed_domains: Vec<String>,
    /// IdP groups allowed to sign in (comma-separated; default: any).
    #[arg(
        long,
        env = "ZMESH_OIDC_ALLOWED_GROUPS",
        value_delimiter = ',',
        value_name = "GROUPS"
    )]
    pub oidc_allowed_groups: Vec<String>,
    /// IdP groups whose members are console admins (comma-separated).
    #[arg(
        long,
        env = "ZMESH_OIDC_ADMIN_GROUPS",
        value_delimiter = ',',
        value_name = "GROUPS"
    )]
    pub oidc_admin_groups: Vec<String>,
    /// IdP groups whose members are auditors (comma-separated).
    #[arg(
        long,
        env = "ZMESH_OIDC_AUDITOR_GROUPS",
        value_delimiter = ',',
        value_name = "GROUPS"
    )]
    pub oidc_auditor_groups: Vec<String>,
    /// Seconds between re-checks of each SSO user at the provider (with the refresh token
    /// of their last sign-in): users disabled or moved out of the allowed groups there are
    /// disabled here, group changes applied. 0 turns the re-check off.
    #[arg(
        long,
        env = "ZMESH_OIDC_REFRESH_INTERVAL",
        default_value = "3600",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        value_parser = parse_interval
    )]
    pub oidc_refresh_interval: u64,
}

/// `--oidc-refresh-interval`: whole seconds, 0 (off) up to 30 days.
fn parse_interval(v: &str) -> Result<u64, String> {
    const MAX: u64 = 30 * 24 * 3600;
    match v.trim().parse::<u64>() {
        Ok(n) if n <= MAX => Ok(n),
        // clap names the flag and the value before this
        _ => Err(format!("expected whole seconds from 0 (off) to {MAX}")),
    }
}

/// Single sign-on settings, validated.
#[derive(Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub groups_claim: String,
    pub rules: SsoRules,
    /// How often each SSO user is re-checked at the provider; `None`: never.
    pub refresh_interval: Option<std::time::Duration>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("groups_claim", &self.groups_claim)
            .field("rules", &self.rules)
            .field("refresh_interval", &self.refresh_interval)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    #[error("--oidc-issuer {0:?}: expected an http(s) URL without query or fragment")]
    Issuer(String),
    #[error("--oidc-client-id is required with --oidc-issuer")]
    NoClientId,
    #[error(
        "a client secret is required with --oidc-issuer: --oidc-client-secret-file FILE or ZMESH_OIDC_CLIENT_SECRET"
    )]
    NoSecret,
    #[error("reading --oidc-client-secret-file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--oidc-client-secret-file {0} is empty")]
    EmptySecret(PathBuf),
    #[error("--oidc-* flags were given without --oidc-issuer")]
    NoIssuer,
    #[error("--oidc-groups-claim must not be empty")]
    GroupsClaim,
}

fn clean(list: Vec<String>, lower: bool) -> Vec<String> {
    let mut v: Vec<String> = list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|s| if lower { s.to_lowercase() } else { s })
        .collect();
    v.sort();
    v.dedup();
    v
}

impl OidcArgs {
    /// `env_secret` is ZMESH_OIDC_CLIENT_SECRET (read by the caller, so tests need no
    /// process environment).
    pub fn validate(
        self,
        env_secret: Option<String>,
    ) -> Result<Option<OidcConfig>, OidcConfigError> {
        let Some(issuer) = self.oidc_issuer else {
            let any = self.oidc_client_id.is_some()
                || self.oidc_client_secret_file.is_some()
                || !self.oidc_allowed_domains.is_empty()
                || !self.oidc_allowed_groups.is_empty()
                || !self.oidc_admin_groups.is_empty()
                || !self.oidc_auditor_groups.is_empty();
            return if any {
                Err(OidcConfigError::NoIssuer)
            } else {
                Ok(None)
            };
        };
        let issuer = issuer.trim_end_matches('/').to_string();
        let ok = (issuer.starts_with("https://") || issuer.starts_with("http://"))
            && !issuer.contains(['?', '#', ' '])
            && issuer.split("://").nth(1).is_some_and(|h| !h.is_empty());
        if !ok {
            return Err(OidcConfigError::Issuer(issuer));
        }
        let client_id = self
            .oidc_client_id
            .filter(|c| !c.trim().is_empty())
            .ok_or(OidcConfigError::NoClientId)?;
        let secret = match (self.oidc_client_secret_file, env_secret) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(&path).map_err(|source| {
                    OidcConfigError::SecretFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                let t = text.trim().to_string();
                if t.is_empty() {
                    return Err(OidcConfigError::EmptySecret(path));
                }
                t
            }
            (None, Some(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(OidcConfigError::NoSecret),
        };
        if self.oidc_groups_claim.trim().is_empty() {
            return Err(OidcConfigError::GroupsClaim);
        }
        Ok(Some(OidcConfig {
            issuer,
            client_id,
            client_secret: Secret::from_string(secret),
            groups_claim: self.oidc_groups_claim.trim().to_string(),
            rules: SsoRules {
                allowed_domains: clean(self.oidc_allowed_domains, true),
                allowed_groups: clean(self.oidc_allowed_groups, false),
                admin_groups: clean(self.oidc_admin_groups, false),
                auditor_groups: clean(self.oidc_auditor_groups, false),
            },
            refresh_interval: (self.oidc_refresh_interval > 0)
                .then(|| std::time::Duration::from_secs(self.oidc_refresh_interval)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> OidcArgs {
        OidcArgs {
            oidc_issuer: Some("https://idp.example.com/realms/x/".into()),
            oidc_client_id: Some("zmesh".into()),
            oidc_groups_claim: "groups".into(),
            oidc_admin_groups: vec!["ops".into(), " ops ".into()],
            oidc_allowed_domains: vec!["Example.COM".into()],
            oidc_refresh_interval: 3600,
            ..Default::default()
        }
    }

    #[test]
    fn validates_and_redacts() {
        let c = args()
            .validate(Some("s3cret-value".into()))
            .unwrap()
            .unwrap();
        assert_eq!(c.issuer, "https://idp.example.com/realms/x");
        assert_eq!(c.rules.admin_groups, vec!["ops"]);
        assert_eq!(c.rules.allowed_domains, vec!["example.com"]);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(matches!(
            args().validate(None),
            Err(OidcConfigError::NoSecret)
        ));
        let mut a = args();
        a.oidc_issuer = Some("ftp://x".into());
        assert!(matches!(
            a.validate(Some("s".into())),
            Err(OidcConfigError::Issuer(_))
        ));
        let a = OidcArgs {
            oidc_admin_groups: vec!["ops".into()],
            ..Default::default()
        };
        assert!(matches!(a.validate(None), Err(OidcConfigError::NoIssuer)));
        assert!(OidcArgs::default().validate(None).unwrap().is_none());
    }

    #[test]
    fn refresh_interval() {
        let c = args().validate(Some("s".into())).unwrap().unwrap();
        assert_eq!(
            c.refresh_interval,
            Some(std::time::Duration::from_secs(3600))
        );
        let mut a = args();
        a.oidc_refresh_interval = 0;
        assert_eq!(
            a.validate(Some("s".into()))
                .unwrap()
                .unwrap()
                .refresh_interval,
            None
        );
        assert_eq!(parse_interval("2"), Ok(2));
        for bad in ["-5", "abc", "1.5", "", "99999999999"] {
            let e = parse_interval(bad).unwrap_err();
            assert!(e.contains("whole seconds"), "{e}");
        }
    }
}
