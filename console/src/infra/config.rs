//! `zmesh-console serve` configuration: flags and environment parsed once into a
//! validated [`ServeConfig`] that is passed down; nothing reads the environment later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--tls-cert and --tls-key must be given together")]
    TlsPair,
    #[error("--tls-san {0:?} is neither an IP address nor a DNS name")]
    BadSan(String),
    #[error("--database {0:?}: expected a sqlite:// or postgres:// URL")]
    BadDatabaseUrl(String),
    #[error("{0}")]
    Audit(String),
    #[error("{0}")]
    Nat(String),
    /// `--overlay-v4` / `--overlay-v6` out of range.
    #[error("{flag} {value:?}: {reason}")]
    Overlay {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Oidc(#[from] super::oidc_config::OidcConfigError),
    #[error(
        "--device-key-lifetime {0:?}: expected a whole number of days from 0 (never expires) \
         to {MAX_KEY_LIFETIME_DAYS}"
    )]
    KeyLifetime(String),
    #[error("--public-url {0:?}: expected https://HOST[:PORT] without a path")]
    PublicUrl(String),
    #[error(
        "--metrics-listen {0}: not a loopback address; the metrics endpoint takes no \
         credentials, so add --metrics-allow-remote to serve it there on purpose"
    )]
    MetricsRemote(SocketAddr),
    #[error(
        "--metrics-listen {0}: that is the API port; metrics are served on a port of their own"
    )]
    MetricsOnApiPort(SocketAddr),
    #[error("cannot resolve the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Raw `serve` flags as clap sees them.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for HTTPS (agents and admin API).
    #[arg(long, env = "ZMESH_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Database URL: sqlite://PATH or postgres://... (default: sqlite file DATA_DIR/zmesh.db).
    #[arg(long, env = "ZMESH_DATABASE_URL")]
    pub database: Option<String>,
    /// Extra name or IP for the self-signed certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME_OR_IP")]
    pub tls_san: Vec<String>,
    /// PEM certificate chain to serve instead of the self-signed one (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// UDP address of the built-in STUN responder.
    #[arg(long, env = "ZMESH_STUN_LISTEN", default_value = "0.0.0.0:3478")]
    pub stun_listen: SocketAddr,
    /// Second UDP port of the STUN responder, on the --stun-listen IP ("off" to run one
    /// port only). Default: the --stun-listen port + 1. Asking two ports from one socket
    /// lets agents tell a NAT that maps each destination to a new port (symmetric) from
    /// one that keeps a mapping (home router), with no second server.
    #[arg(long, env = "ZMESH_STUN_ALT_PORT", value_name = "PORT|off")]
    pub stun_alt_port: Option<String>,
    /// Do not run the STUN responder.
    #[arg(long)]
    pub no_stun: bool,
    /// Also serve the relay as plain TLS/TCP on this address, e.g. 0.0.0.0:8445 (the
    /// built-in relay is on the HTTPS port anyway; this is a second door to it, for
    /// agents from before that).
    #[arg(long, env = "ZMESH_RELAY_LISTEN")]
    pub relay_listen: Option<SocketAddr>,
    /// Do not serve the built-in relay on the HTTPS port (`GET /agent/v1/relay`
    /// upgrades): e.g. with several console replicas behind one address, where two
    /// devices may land on different replicas; give agents a standalone relay
    /// (--relay-server) instead.
    #[arg(long)]
    pub no_builtin_relay: bool,
    #[command(flatten)]
    pub nat: NatArgs,
    /// Serve Prometheus metrics (plain HTTP, `GET /metrics`, no authentication) on this
    /// address, e.g. 127.0.0.1:9469. Off by default; never on the API port. Only a
    /// loopback address unless --metrics-allow-remote is given.
    #[arg(long, env = "ZMESH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow --metrics-listen on a non-loopback address (anyone who reaches it reads the
    /// metrics: firewall it to your Prometheus).
    #[arg(long, env = "ZMESH_METRICS_ALLOW_REMOTE")]
    pub metrics_allow_remote: bool,
    /// The console's URL as browsers and agents reach it (default: from --listen); the
    /// SSO redirect URI is PUBLIC_URL/oidc/callback.
    #[arg(long, env = "ZMESH_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub oidc: super::oidc_config::OidcArgs,
    /// Days the key of a device enrolled by login lasts; then its user signs in again
    /// (`zmesh up --reauth`). 0: never expires. Devices enrolled with a key do not expire
    /// unless an admin sets an expiry.
    #[arg(
        long,
        env = "ZMESH_DEVICE_KEY_LIFETIME",
        value_name = "DAYS",
        default_value = "180"
    )]
    pub device_key_lifetime: String,
    /// Overlay IPv4 range of the first network when this console creates it (a fresh
    /// database), prefix length 8 to 30. Default 100.64.0.0/10. An existing network
    /// keeps its range (a warning says so).
    #[arg(long, env = "ZMESH_OVERLAY_V4", value_name = "CIDR")]
    pub overlay_v4: Option<String>,
    /// Overlay IPv6 range of the first network when this console creates it: a
    /// unique-local range inside fd00::/8, prefix length 32 to 64. Default: a random /48.
    #[arg(long, env = "ZMESH_OVERLAY_V6", value_name = "CIDR")]
    pub overlay_v6: Option<String>,
}

/// `--overlay-v4`: a canonical IPv4 prefix of length 8 to 30.
pub fn overlay_v4(s: &str) -> Result<ipnet::Ipv4Net, ConfigError> {
    let bad = |reason| ConfigError::Overlay {
        flag: "--overlay-v4",
        value: s.to_string(),
        reason,
    };
    let n: ipnet::Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| bad("expected an IPv4 prefix such as 10.77.0.0/16"))?;
    if !(8..=30).contains(&n.prefix_len()) {
        return Err(bad("the prefix length must be 8 to 30"));
    }
    if n.trunc() != n {
        return Err(bad("host bits are set (give the network address)"));
    }
    Ok(n)
}

/// `--overlay-v6`: a canonical unique-local (fd00::/8) prefix of length 32 to 64.
pub fn overlay_v6(s: &str) -> Result<ipnet::Ipv6Net, ConfigError> {
    let bad = |reason| ConfigError::Overlay {
        flag: "--overlay-v6",
        value: s.to_string(),
        reason,
    };
    let n: ipnet::Ipv6Net = s
        .trim()
        .parse()
        .map_err(|_| bad("expected an IPv6 prefix such as fd12:3456:789a::/48"))?;
    if n.network().octets()[0] != 0xfd {
        return Err(bad("must be a unique-local range inside fd00::/8"));
    }
    if !(32..=64).contains(&n.prefix_len()) {
        return Err(bad("the prefix length must be 32 to 64"));
    }
    if n.trunc() != n {
        return Err(bad("host bits are set (give the network address)"));
    }
    Ok(n)
}

/// The longest `--device-key-lifetime` (100 years).
pub const MAX_KEY_LIFETIME_DAYS: u64 = 36_500;

/// `--device-key-lifetime`, checked: `None` for 0 (never expires).
fn key_lifetime(days: &str) -> Result<Option<Duration>, ConfigError> {
    match days.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(d) if d <= MAX_KEY_LIFETIME_DAYS => Ok(Some(Duration::from_secs(d * 24 * 3600))),
        _ => Err(ConfigError::KeyLifetime(days.to_string())),
    }
}

/// What `serve` tells agents about STUN servers and relays.
#[derive(Debug, Clone, Default, Args)]
pub struct NatArgs {
    /// Another STUN server for agents to query (repeatable); with the built-in one, two
    /// servers let agents tell whether their NAT maps endpoint-independently.
    #[arg(long = "stun-server", value_name = "IP:PORT")]
    pub stun_servers: Vec<SocketAddr>,
    /// Name agents show for the built-in relay (`zmesh status`: "relay NAME").
    #[arg(long, default_value = "console")]
    pub relay_name: String,
    /// A standalone relay (`zmesh-console relay`) agents may use (repeatable):
    /// NAME=IP:PORT@SHA256 (the relay's certificate fingerprint, as it prints it).
    #[arg(long = "relay-server", value_name = "NAME=IP:PORT@SHA256")]
    pub relay_servers: Vec<String>,
    /// Lifetime of the relay tokens given to agents (refreshed at half of it). A revoked
    /// device keeps access to standalone relays for at most this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub relay_token_ttl: std::time::Duration,
}

/// Validated [`NatArgs`].
#[derive(Debug, Clone)]
pub struct NatConfig {
    pub stun_servers: Vec<SocketAddr>,
    pub relay_name: String,
    pub relay_servers: Vec<zmesh_shared::wire::RelayInfo>,
    pub relay_token_ttl: std::time::Duration,
}

impl NatArgs {
    pub fn validate(self) -> Result<NatConfig, ConfigError> {
        let bad = |s: &str, why: &str| ConfigError::Nat(format!("--relay-server {s:?}: {why}"));
        let mut relays = vec![];
        for r in &self.relay_servers {
            let (name, rest) = r
                .split_once('=')
                .ok_or_else(|| bad(r, "expected NAME=IP:PORT@SHA256"))?;
            let (addr, fp) = rest
                .split_once('@')
                .ok_or_else(|| bad(r, "the certificate fingerprint (@SHA256) is missing"))?;
            if name.is_empty() || name.len() > 64 || name.contains(char::is_whitespace) {
                return Err(bad(r, "the name must be 1-64 characters without spaces"));
            }
            relays.push(zmesh_shared::wire::RelayInfo {
                name: name.to_string(),
                addr: addr.parse().map_err(|_| bad(r, "IP:PORT is not valid"))?,
                cert_sha256: Some(
                    fp.parse()
                        .map_err(|_| bad(r, "the fingerprint is not 64 hex digits"))?,
                ),
                https_upgrade: None,
            });
        }
        if self.relay_name.is_empty() || self.relay_name.len() > 64 {
            return Err(ConfigError::Nat(
                "--relay-name must be 1-64 characters".into(),
            ));
        }
        if self.relay_token_ttl < std::time::Duration::from_secs(30) {
            return Err(ConfigError::Nat(
                "--relay-token-ttl must be at least 30s".into(),
            ));
        }
        Ok(NatConfig {
            stun_servers: self.stun_servers,
            relay_name: self.relay_name,
            relay_servers: relays,
            relay_token_ttl: self.relay_token_ttl,
        })
    }
}

/// Audit log flags of `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct AuditArgs {
    /// Prune audit events and flow records older than this (e.g. 365d); default: keep all.
    #[arg(long, env = "ZMESH_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    pub audit_retention: Option<std::time::Duration>,
    /// Sign an audit checkpoint after this many new events (default 1000).
    #[arg(long, value_name = "N")]
    pub audit_checkpoint_events: Option<u64>,
    /// ...or after this long with new events (default 60s).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub audit_checkpoint_interval: Option<std::time::Duration>,
    /// Forward audit events as RFC 5424 syslog: tcp://HOST:PORT or tls://HOST:PORT.
    #[arg(long, env = "ZMESH_SYSLOG", value_name = "URL")]
    pub syslog: Option<String>,
    /// CA file to verify a tls:// syslog receiver with.
    #[arg(long, value_name = "FILE")]
    pub syslog_ca: Option<PathBuf>,
}

impl AuditArgs {
    pub fn validate(self) -> Result<AuditConfig, ConfigError> {
        let mut c = AuditConfig::default();
        if let Some(n) = self.audit_checkpoint_events {
            if n == 0 {
                return Err(ConfigError::Audit(
                    "--audit-checkpoint-events must be at least 1".into(),
                ));
            }
            c.checkpoint_every_events = n;
        }
        if let Some(d) = self.audit_checkpoint_interval {
            if d < std::time::Duration::from_secs(1) {
                return Err(ConfigError::Audit(
                    "--audit-checkpoint-interval must be at least 1s".into(),
                ));
            }
            c.checkpoint_interval = d;
        }
        if let Some(r) = self.audit_retention {
            if r < std::time::Duration::from_secs(3600) {
                return Err(ConfigError::Audit(
                    "--audit-retention must be at least 1h".into(),
                ));
            }
            c.retention = Some(r);
        }
        if let Some(url) = self.syslog {
            c.syslog = Some(
                SyslogTarget::parse(&url, self.syslog_ca)
                    .map_err(|e| ConfigError::Audit(e.to_string()))?,
            );
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Generate once into DATA_DIR/tls/, then reuse.
    SelfSigned {
        extra_sans: Vec<String>,
    },
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// The STUN responder's second address: `--stun-alt-port` on the `--stun-listen` IP.
/// An ephemeral main port (0, tests) gets an ephemeral second one.
fn stun_alt(
    main: SocketAddr,
    flag: Option<&str>,
) -> Result<Option<(SocketAddr, bool)>, ConfigError> {
    let at = |port| SocketAddr::new(main.ip(), port);
    match flag.map(str::trim) {
        Some("off") => Ok(None),
        Some(p) => {
            let port: u16 = p.parse().map_err(|_| {
                ConfigError::Nat(format!(
                    "--stun-alt-port {p:?}: expected a port number or \"off\""
                ))
            })?;
            if port != 0 && port == main.port() {
                return Err(ConfigError::Nat(format!(
                    "--stun-alt-port {port} is the --stun-listen port; pick another"
                )));
            }
            Ok(Some((at(port), true)))
        }
        None if main.port() == 0 => Ok(Some((at(0), false))),
        None => Ok(main.port().checked_add(1).map(|p| (at(p), false))),
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Absolute.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: String,
    pub tls: TlsSource,
    pub audit: AuditConfig,
    /// STUN responder address; `None` when disabled.
    pub stun_listen: Option<SocketAddr>,
    /// The responder's second port, and whether it was asked for explicitly (then a
    /// failure to bind it is fatal rather than a warning).
    pub stun_alt: Option<(SocketAddr, bool)>,
    /// Address of the relay's own TLS/TCP port; `None` when not running one.
    pub relay_listen: Option<SocketAddr>,
    /// Serve the relay on the HTTPS listener (HTTP upgrade); on unless
    /// `--no-builtin-relay`.
    pub builtin_relay: bool,
    pub nat: NatConfig,
    /// The Prometheus endpoint's address (checked: loopback, or allowed explicitly, and
    /// not the API port); `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// `https://host[:port]`, no trailing slash; `None`: the local URL of the bound
    /// listener.
    pub public_url: Option<String>,
    /// Single sign-on; `None` when off.
    pub oidc: Option<super::oidc_config::OidcConfig>,
    /// Key lifetime of devices enrolled by login; `None`: never expires.
    pub device_key_lifetime: Option<Duration>,
    /// Ranges of the first network if this console creates it; `None`: the defaults.
    pub overlay_v4: Option<ipnet::Ipv4Net>,
    pub overlay_v6: Option<ipnet::Ipv6Net>,
}

impl ServeConfig {
    pub fn from_args(data_dir: &Path, a: ServeArgs) -> Result<Self, ConfigError> {
        let data_dir = absolute(data_dir)?;
        let database_url = match a.database {
            Some(u) => {
                let lower = u.to_ascii_lowercase();
                if !(lower.starts_with("sqlite:")
                    || lower.starts_with("postgres://")
                    || lower.starts_with("postgresql://"))
                {
                    return Err(ConfigError::BadDatabaseUrl(u));
                }
                u
            }
            None => default_database_url(&data_dir),
        };
        let tls = match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (None, None) => {
                for s in &a.tls_san {
                    if s.parse::<IpAddr>().is_err() && !is_dns_name(s) {
                        return Err(ConfigError::BadSan(s.clone()));
                    }
                }
                TlsSource::SelfSigned {
                    extra_sans: a.tls_san,
                }
            }
            _ => return Err(ConfigError::TlsPair),
        };
        Ok(ServeConfig {
            data_dir,
            listen: a.listen,
            database_url,
            tls,
            audit: a.audit.validate()?,
            stun_alt: if a.no_stun {
                None
            } else {
                stun_alt(a.stun_listen, a.stun_alt_port.as_deref())?
            },
            stun_listen: (!a.no_stun).then_some(a.stun_listen),
            relay_listen: a.relay_listen,
            builtin_relay: !a.no_builtin_relay,
            nat: a.nat.validate()?,
            metrics_listen: a
                .metrics_listen
                .map(|m| metrics_listen(m, a.metrics_allow_remote, a.listen))
                .transpose()?,
            public_url: a.public_url.map(public_url).transpose()?,
            oidc: a
                .oidc
                .validate(std::env::var("ZMESH_OIDC_CLIENT_SECRET").ok())?,
            device_key_lifetime: key_lifetime(&a.device_key_lifetime)?,
            overlay_v4: a.overlay_v4.as_deref().map(overlay_v4).transpose()?,
            overlay_v6: a.overlay_v6.as_deref().map(overlay_v6).transpose()?,
        })
    }

    /// The URL a CLI on this machine should use: the listen address, with an
    /// unspecified address replaced by loopback of the same family.
    pub fn local_url(&self) -> String {
        local_url(self.listen)
    }
}

pub fn local_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, listen.port()))
}

/// `--public-url`, checked.
fn public_url(u: String) -> Result<String, ConfigError> {
    let t = u.trim_end_matches('/');
    let host = t.strip_prefix("https://").unwrap_or("");
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(ConfigError::PublicUrl(u));
    }
    Ok(t.to_string())
}

/// `--metrics-listen`, checked against `--metrics-allow-remote` and the API address.
fn metrics_listen(
    m: SocketAddr,
    allow_remote: bool,
    api: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let overlaps = m.ip() == api.ip() || m.ip().is_unspecified() || api.ip().is_unspecified();
    if m.port() != 0 && m.port() == api.port() && overlaps {
        return Err(ConfigError::MetricsOnApiPort(m));
    }
    if !m.ip().is_loopback() && !allow_remote {
        return Err(ConfigError::MetricsRemote(m));
    }
    Ok(m)
}

pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("zmesh.db").display())
}

pub fn absolute(p: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(p).map_err(|source| ConfigError::DataDir {
        path: p.to_path_buf(),
        source,
    })
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: "0.0.0.0:8443".parse().unwrap(),
            database: None,
            tls_san: vec![],
            tls_cert: None,
            tls_key: None,
            audit: AuditArgs::default(),
            stun_listen: "0.0.0.0:3478".parse().unwrap(),
            stun_alt_port: None,
            no_stun: false,
            relay_listen: None,
            no_builtin_relay: false,
            nat: NatArgs {
                relay_name: "console".into(),
                relay_token_ttl: std::time::Duration::from_secs(600),
                ..Default::default()
            },
            public_url: None,
            oidc: Default::default(),
            device_key_lifetime: "180".into(),
            metrics_listen: None,
            metrics_allow_remote: false,
            overlay_v4: None,
            overlay_v6: None,
        }
    }

    #[test]
    fn overlay_ranges_are_checked() {
        let dir = std::env::temp_dir();
        let c = ServeConfig::from_args(&dir, args()).unwrap();
        assert_eq!((c.overlay_v4, c.overlay_v6), (None, None));
        let mut a = args();
        a.overlay_v4 = Some("10.77.0.0/16".into());
        a.overlay_v6 = Some("fd77:1::/48".into());
        let c = ServeConfig::from_args(&dir, a).unwrap();
        assert_eq!(c.overlay_v4.unwrap().to_string(), "10.77.0.0/16");
        assert_eq!(c.overlay_v6.unwrap().to_string(), "fd77:1::/48");
        for (v4, v6, flag) in [
            ("10.0.0.0/7", "fd00::/48", "--overlay-v4"),
            ("10.0.0.0/31", "fd00::/48", "--overlay-v4"),
            ("10.0.0.1/16", "fd00::/48", "--overlay-v4"),
            ("nonsense", "fd00::/48", "--overlay-v4"),
            ("10.0.0.0/16", "2001:db8::/48", "--overlay-v6"),
            ("10.0.0.0/16", "fd00::/31", "--overlay-v6"),
            ("10.0.0.0/16", "fd00::/65", "--overlay-v6"),
        ] {
            let mut a = args();
            a.overlay_v4 = Some(v4.into());
            a.overlay_v6 = Some(v6.into());
            let e = ServeConfig::from_args(&dir, a).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{v4} {v6}: {e}");
        }
    }

    #[test]
    fn metrics_listen_is_loopback_unless_allowed() {
        let cfg = |addr: &str, allow: bool| {
            let mut a = args();
            a.metrics_listen = Some(addr.parse().unwrap());
            a.metrics_allow_remote = allow;
            ServeConfig::from_args(Path::new("/tmp"), a).map(|c| c.metrics_listen)
        };
        assert_eq!(
            cfg("127.0.0.1:9469", false).unwrap(),
            Some("127.0.0.1:9469".parse().unwrap())
        );
        assert!(cfg("[::1]:9469", false).is_ok());
        assert!(matches!(
            cfg("0.0.0.0:9469", false),
            Err(ConfigError::MetricsRemote(_))
        ));
        assert!(matches!(
            cfg("192.0.2.7:9469", false),
            Err(ConfigError::MetricsRemote(_))
        ));
        assert!(cfg("0.0.0.0:9469", true).is_ok());
        // the API listens on 0.0.0.0:8443: its port is never the metrics port
        assert!(matches!(
            cfg("127.0.0.1:8443", true),
            Err(ConfigError::MetricsOnApiPort(_))
        ));
        assert_eq!(
            ServeConfig::from_args(Path::new("/tmp"), args())
                .unwrap()
                .metrics_listen,
            None
        );
    }

    #[test]
    fn device_key_lifetime() {
        let cfg = |days: &str| {
            let mut a = args();
            a.device_key_lifetime = days.into();
            ServeConfig::from_args(Path::new("/tmp"), a).map(|c| c.device_key_lifetime)
        };
        assert_eq!(cfg("180").unwrap(), Some(Duration::from_secs(180 * 86_400)));
        assert_eq!(cfg("1").unwrap(), Some(Duration::from_secs(86_400)));
        assert_eq!(cfg("0").unwrap(), None);
        for bad in ["-1", "x", "", "1.5", "36501", "99999999999999999999"] {
            let e = cfg(bad).unwrap_err().to_string();
            assert!(e.contains("--device-key-lifetime"), "{bad}: {e}");
        }
    }

    #[test]
    fn relay_servers_parse() {
        let fp = "ab".repeat(32);
        let mut a = args();
        a.nat.relay_servers = vec![format!("eu=192.0.2.1:8445@{fp}")];
        let c = ServeConfig::from_args(Path::new("/tmp"), a).unwrap();
        assert_eq!(c.nat.relay_servers[0].name, "eu");
        for bad in ["eu", "eu=192.0.2.1:8445", "eu=nope@00", "=1.2.3.4:5@00"] {
            let mut a = args();
            a.nat.relay_servers = vec![bad.into()];
            assert!(
                matches!(
                    ServeConfig::from_args(Path::new("/tmp"), a),
                    Err(ConfigError::Nat(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_and_validation() {
        let c = ServeConfig::from_args(Path::new("/tmp/zd"), args()).unwrap();
        assert_eq!(c.database_url, "sqlite:///tmp/zd/zmesh.db");
        assert_eq!(c.local_url(), "https://127.0.0.1:8443");
        assert_eq!(c.tls, TlsSource::SelfSigned { extra_sans: vec![] });
        let mut a = args();
        a.tls_cert = Some("c.pem".into());
        assert!(matches!(
            ServeConfig::from_args(Path::new("/tmp"), a),
            Err(ConfigError::TlsPair)
        ));
        let mut a = args();
        a.tls_san = vec!["vpn.example.com".into(), "10.0.0.1".into()];
        assert!(ServeConfig::from_args(Path::new("/tmp"), a).is_ok());
        let mut a = args();
        a.tls_san = vec!["bad name".into()];
        assert!(matches!(
            ServeConfig::from_args(Path::new("/tmp"), a),
            Err(ConfigError::BadSan(_))
        ));
        let mut a = args();
        a.database = Some("mysql://x".into());
        assert!(matches!(
            ServeConfig::from_args(Path::new("/tmp"), a),
            Err(ConfigError::BadDatabaseUrl(_))
        ));
        assert_eq!(local_url("[::]:9".parse().unwrap()), "https://[::1]:9");
    }

    #[test]
    fn stun_second_port() {
        let cfg = |listen: &str, alt: Option<&str>, off: bool| {
            let mut a = args();
            a.stun_listen = listen.parse().unwrap();
            a.stun_alt_port = alt.map(str::to_string);
            a.no_stun = off;
            ServeConfig::from_args(Path::new("/tmp"), a).map(|c| c.stun_alt)
        };
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            cfg("0.0.0.0:3478", None, false).unwrap(),
            Some((sa("0.0.0.0:3479"), false))
        );
        assert_eq!(
            cfg("127.0.0.1:0", None, false).unwrap(),
            Some((sa("127.0.0.1:0"), false))
        );
        assert_eq!(
            cfg("0.0.0.0:3478", Some("5000"), false).unwrap(),
            Some((sa("0.0.0.0:5000"), true))
        );
        assert_eq!(cfg("0.0.0.0:3478", Some("off"), false).unwrap(), None);
        assert_eq!(cfg("0.0.0.0:3478", None, true).unwrap(), None);
        assert_eq!(cfg("0.0.0.0:65535", None, false).unwrap(), None);
        for bad in ["3478", "x", "70000"] {
            let e = cfg("0.0.0.0:3478", Some(bad), false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--stun-alt-port"), "{e}");
        }
    }
}
/// Audit settings of `zmesh-console serve`, validated once.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Sign a checkpoint once this many events were appended since the last one...
    pub checkpoint_every_events: u64,
    /// ...or this much time passed with new events.
    pub checkpoint_interval: Duration,
    /// Events (and flow records) older than this are pruned; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Forward every event to a syslog receiver.
    pub syslog: Option<SyslogTarget>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every_events: 1000,
            checkpoint_interval: Duration::from_secs(60),
            retention: None,
            syslog: None,
        }
    }
}

/// Where `--syslog` forwards audit events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    /// `host:port`.
    pub addr: String,
    pub host: String,
    /// Verify the receiver against this CA file and speak TLS.
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogConfigError {
    #[error("--syslog {0:?}: expected tcp://HOST:PORT or tls://HOST:PORT")]
    Url(String),
    #[error("--syslog tls://… needs --syslog-ca FILE")]
    NoCa,
}

impl SyslogTarget {
    pub fn parse(url: &str, ca: Option<PathBuf>) -> Result<Self, SyslogConfigError> {
        let bad = || SyslogConfigError::Url(url.to_string());
        let (tls, rest) = if let Some(r) = url.strip_prefix("tcp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("tls://") {
            (true, r)
        } else {
            return Err(bad());
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        if tls && ca.is_none() {
            return Err(SyslogConfigError::NoCa);
        }
        Ok(SyslogTarget {
            addr: rest.to_string(),
            host: host.to_string(),
            tls_ca: if tls { ca } else { None },
        })
    }
}
