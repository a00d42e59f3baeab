//! The daemon's validated configuration, parsed once from the command line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--tun: interface name must be 1-15 characters of [A-Za-z0-9_.-], got {0:?}")]
    TunName(String),
    #[error("--mtu: must be between 1280 and 9000, got {0}")]
    Mtu(u16),
    #[error(
        "--metrics-listen {0}: not a loopback address; the metrics endpoint takes no \
         credentials, so add --metrics-allow-remote to serve it there on purpose"
    )]
    MetricsRemote(std::net::SocketAddr),
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub tun_name: String,
    /// UDP port of the data plane; 0 picks an ephemeral one.
    pub listen_port: u16,
    pub mtu: u16,
    /// How the host is pointed at the resolver (`--host-dns`).
    pub host_dns: crate::dns::HostDns,
    /// Where to serve Prometheus metrics over HTTP (`--metrics-listen`); `None`: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl DaemonConfig {
    pub fn new(
        state_dir: PathBuf,
        tun_name: String,
        listen_port: u16,
        mtu: u16,
    ) -> Result<Self, ConfigError> {
        let ok_name = !tun_name.is_empty()
            && tun_name.len() <= 15
            && tun_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok_name {
            return Err(ConfigError::TunName(tun_name));
        }
        if !(1280..=9000).contains(&mtu) {
            return Err(ConfigError::Mtu(mtu));
        }
        Ok(DaemonConfig {
            state_dir,
            tun_name,
            listen_port,
            mtu,
            host_dns: crate::dns::HostDns::Auto,
            metrics_listen: None,
        })
    }

    /// Sets `--metrics-listen`: a loopback address, or any with `allow_remote`.
    pub fn with_metrics_listen(
        mut self,
        addr: Option<std::net::SocketAddr>,
        allow_remote: bool,
    ) -> Result<Self, ConfigError> {
        if let Some(a) = addr {
            if !a.ip().is_loopback() && !allow_remote {
                return Err(ConfigError::MetricsRemote(a));
            }
        }
        self.metrics_listen = addr;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_tun_and_mtu() {
        assert!(DaemonConfig::new("/tmp/x".into(), "zmesh0".into(), 0, 1420).is_ok());
        assert!(matches!(
            DaemonConfig::new("/tmp/x".into(), "much-too-long-name0".into(), 0, 1420),
            Err(ConfigError::TunName(_))
        ));
        assert!(DaemonConfig::new("/tmp/x".into(), "a/b".into(), 0, 1420).is_err());
        assert!(matches!(
            DaemonConfig::new("/tmp/x".into(), "zm0".into(), 0, 100),
            Err(ConfigError::Mtu(100))
        ));
        let c = || DaemonConfig::new("/tmp/x".into(), "zm0".into(), 0, 1420).unwrap();
        let a = |s: &str| Some(s.parse().unwrap());
        assert!(c().with_metrics_listen(a("127.0.0.1:9470"), false).is_ok());
        assert!(matches!(
            c().with_metrics_listen(a("0.0.0.0:9470"), false),
            Err(ConfigError::MetricsRemote(_))
        ));
        assert!(c().with_metrics_listen(a("0.0.0.0:9470"), true).is_ok());
        assert_eq!(
            c().with_metrics_listen(None, false).unwrap().metrics_listen,
            None
        );
    }
}
