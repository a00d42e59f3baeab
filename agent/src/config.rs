//! The daemon's validated configuration, parsed once from the command line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--tun: interface name must be 1-15 characters of [A-Za-z0-9_.-], got {0:?}")]
    TunName(String),
    #[error("--mtu: must be between 1280 and 9000, got {0}")]
    Mtu(u16),
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
        })
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
    }
}
