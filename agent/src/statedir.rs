//! The agent's state directory: private key, enrollment record, peer-map cache and the
//! control socket. Every file is written atomically (temp file + rename) with mode 0600
//! and the directory itself is 0700, because the key and the credential live here.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use zmesh_shared::peermap::{CachedMap, PeerMap};
use zmesh_shared::{
    CertFingerprint, DeviceId, NetworkId, Secret, SigningKey, SigningPublicKey, WgPrivateKey,
};

pub const PRIVATE_KEY_FILE: &str = "private.key";
/// The device's Ed25519 key for signing its flow reports (the access log's evidence).
pub const REPORT_KEY_FILE: &str = "report.key";
pub const ENROLLMENT_FILE: &str = "enrollment.json";
pub const PEERMAP_FILE: &str = "peermap.json";
pub const NAT_FILE: &str = "nat.json";
pub const SOCKET_FILE: &str = "zmesh.sock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("peer map cache does not verify against the console signing key: {0}")]
    CacheUntrusted(zmesh_shared::peermap::MapError),
}

/// What enrollment produced; everything the agent needs to reconnect to its console.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// Base URL of the console, e.g. `https://10.0.0.1:8443`.
    pub console: String,
    /// SHA-256 of the console's certificate, when it was pinned by the enrollment key.
    pub pin: Option<CertFingerprint>,
    /// PEM roots to verify the console by instead of a pin.
    #[serde(default)]
    pub ca_pem: Option<String>,
    pub device_id: DeviceId,
    pub network_id: NetworkId,
    pub name: String,
    pub credential: Secret,
    pub overlay_v4: Ipv4Addr,
    pub overlay_v6: Ipv6Addr,
    pub network_v4: Ipv4Net,
    pub network_v6: Ipv6Net,
    pub signing_key: SigningPublicKey,
    /// The console revoked this device; it never reconnects.
    #[serde(default)]
    pub revoked: bool,
    /// `zmesh down` was the last word: a daemon restart leaves tunnels down.
    #[serde(default)]
    pub down: bool,
    /// The console said the device's key expired: tunnels stay down until the user signs
    /// in again (`zmesh up --reauth`).
    #[serde(default)]
    pub expired: bool,
    /// Routes offered and used (`zmesh up --advertise-routes`, `--exit-node`, ...).
    #[serde(default)]
    pub routes: crate::prefs::RoutePrefs,
}

/// The console's last NAT settings (STUN servers, relays, relay token) as it sent them,
/// so an agent restarted while the console is down still knows its relays. The token is
/// short-lived and signed by the console; an expired one is simply refused by relays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedNat {
    pub stun: Vec<std::net::SocketAddr>,
    pub relays: Vec<zmesh_shared::wire::RelayInfo>,
    pub relay_token: Option<zmesh_shared::relay::RelayToken>,
}

/// Handle on a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path(SOCKET_FILE)
    }

    /// Creates the directory (0700) if needed and tightens its mode if it exists.
    pub fn ensure(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.root).map_err(|e| io_err(&self.root, e))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err(&self.root, e))
    }

    /// Writes `data` to `file` atomically, readable by the owner only.
    pub fn write_private(&self, file: &str, data: &[u8]) -> Result<(), StateError> {
        self.ensure()?;
        let path = self.path(file);
        let tmp = self.path(&format!(".{file}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
    }

    fn read_opt(&self, file: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(file);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
    ) -> Result<Option<T>, StateError> {
        match self.read_opt(file)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path: self.path(file),
                    reason: e.to_string(),
                }),
        }
    }

    /// Loads the device key, generating and storing one on first use.
    pub fn load_or_create_private_key(&self) -> Result<WgPrivateKey, StateError> {
        if let Some(k) = self.load_private_key()? {
            return Ok(k);
        }
        let k = WgPrivateKey::generate();
        let mut text = k.to_base64();
        text.push('\n');
        self.write_private(PRIVATE_KEY_FILE, text.as_bytes())?;
        Ok(k)
    }

    /// Loads the report-signing key, generating and storing one on first use. Like the
    /// WireGuard key it is made here and never leaves the device; the console learns
    /// the public half.
    pub fn load_or_create_report_key(&self) -> Result<SigningKey, StateError> {
        if let Some(b) = self.read_opt(REPORT_KEY_FILE)? {
            let text = String::from_utf8_lossy(&b);
            return SigningKey::from_base64(text.trim()).map_err(|e| StateError::Corrupt {
                path: self.path(REPORT_KEY_FILE),
                reason: e.to_string(),
            });
        }
        let k = SigningKey::generate();
        let mut text = k.to_base64();
        text.push('\n');
        self.write_private(REPORT_KEY_FILE, text.as_bytes())?;
        Ok(k)
    }

    /// Replaces the device key (atomically: the old file or the new, never half of one).
    pub fn save_private_key(&self, k: &WgPrivateKey) -> Result<(), StateError> {
        let mut text = k.to_base64();
        text.push('\n');
        self.write_private(PRIVATE_KEY_FILE, text.as_bytes())
    }

    pub fn load_private_key(&self) -> Result<Option<WgPrivateKey>, StateError> {
        let Some(b) = self.read_opt(PRIVATE_KEY_FILE)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&b);
        WgPrivateKey::from_base64(text.trim())
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: self.path(PRIVATE_KEY_FILE),
                reason: e.to_string(),
            })
    }

    pub fn load_enrollment(&self) -> Result<Option<Enrollment>, StateError> {
        self.read_json(ENROLLMENT_FILE)
    }

    pub fn save_enrollment(&self, e: &Enrollment) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(e).expect("enrollment serializes");
        self.write_private(ENROLLMENT_FILE, &text)
    }

    pub fn load_cache_raw(&self) -> Result<Option<CachedMap>, StateError> {
        self.read_json(PEERMAP_FILE)
    }

    /// Loads the cached map and checks every signature; a cache that does not verify
    /// is refused (the caller runs with no peers rather than with forged ones).
    pub fn load_cache(
        &self,
        key: &SigningPublicKey,
    ) -> Result<Option<(CachedMap, PeerMap)>, StateError> {
        let Some(c) = self.load_cache_raw()? else {
            return Ok(None);
        };
        let map = c.restore(key).map_err(StateError::CacheUntrusted)?;
        Ok(Some((c, map)))
    }

    pub fn save_cache(&self, c: &CachedMap) -> Result<(), StateError> {
        let text = serde_json::to_vec(c).expect("cache serializes");
        self.write_private(PEERMAP_FILE, &text)
    }

    pub fn load_nat(&self) -> Result<Option<CachedNat>, StateError> {
        self.read_json(NAT_FILE)
    }

    pub fn save_nat(&self, n: &CachedNat) -> Result<(), StateError> {
        let text = serde_json::to_vec(n).expect("NAT settings serialize");
        self.write_private(NAT_FILE, &text)
    }

    /// Removes the key, the enrollment and the caches. Secret files are overwritten
    /// before unlinking so the bytes do not linger in a reused block.
    pub fn forget(&self) -> Result<(), StateError> {
        for f in [
            PRIVATE_KEY_FILE,
            REPORT_KEY_FILE,
            ENROLLMENT_FILE,
            PEERMAP_FILE,
            NAT_FILE,
        ] {
            let path = self.path(f);
            if let Ok(meta) = fs::metadata(&path) {
                if let Ok(mut h) = OpenOptions::new().write(true).open(&path) {
                    let _ = h
                        .write_all(&vec![0u8; meta.len() as usize])
                        .and_then(|_| h.sync_all());
                }
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(())
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmesh_shared::peermap::{SelfInfo, Signed};
    use zmesh_shared::wire::DeviceState;
    use zmesh_shared::SigningKey;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    pub(crate) fn sample_enrollment() -> Enrollment {
        Enrollment {
            routes: Default::default(),
            console: "https://192.0.2.1:8443".into(),
            pin: Some(CertFingerprint::of_der(b"cert")),
            ca_pem: None,
            device_id: DeviceId::new(),
            network_id: NetworkId::new(),
            name: "a".into(),
            credential: Secret::from_string("zmc_supersecretcredential".into()),
            overlay_v4: "100.64.0.1".parse().unwrap(),
            overlay_v6: "fd00::1".parse().unwrap(),
            network_v4: "100.64.0.0/10".parse().unwrap(),
            network_v6: "fd00::/48".parse().unwrap(),
            signing_key: SigningKey::generate().public_key(),
            revoked: false,
            down: false,
            expired: false,
        }
    }

    #[test]
    fn files_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path().join("state"));
        let k = sd.load_or_create_private_key().unwrap();
        assert_eq!(mode(&sd.path(PRIVATE_KEY_FILE)), 0o600);
        assert_eq!(mode(sd.root()), 0o700);
        // stable across loads
        assert_eq!(
            sd.load_or_create_private_key().unwrap().public_key(),
            k.public_key()
        );
        let e = sample_enrollment();
        sd.save_enrollment(&e).unwrap();
        assert_eq!(mode(&sd.path(ENROLLMENT_FILE)), 0o600);
        let back = sd.load_enrollment().unwrap().unwrap();
        assert_eq!(back.device_id, e.device_id);
        assert_eq!(back.credential, e.credential);
        assert!(!format!("{back:?}").contains("supersecret"));
        sd.forget().unwrap();
        assert!(sd.load_enrollment().unwrap().is_none());
        assert!(sd.load_private_key().unwrap().is_none());
    }

    #[test]
    fn corrupt_files_are_reported_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path());
        sd.write_private(PRIVATE_KEY_FILE, b"garbage").unwrap();
        assert!(matches!(
            sd.load_or_create_private_key(),
            Err(StateError::Corrupt { .. })
        ));
        assert_eq!(fs::read(sd.path(PRIVATE_KEY_FILE)).unwrap(), b"garbage");
        sd.write_private(ENROLLMENT_FILE, b"{").unwrap();
        assert!(matches!(
            sd.load_enrollment(),
            Err(StateError::Corrupt { .. })
        ));
    }

    fn map(version: u64) -> PeerMap {
        PeerMap {
            network_id: NetworkId::new(),
            device_id: DeviceId::new(),
            version,
            issued_at_ms: 0,
            me: SelfInfo {
                approved_routes: Vec::new(),
                name: "a".into(),
                state: DeviceState::Active,
                overlay_v4: "100.64.0.1".parse().unwrap(),
                overlay_v6: "fd00::1".parse().unwrap(),
                network_v4: "100.64.0.0/10".parse().unwrap(),
                network_v6: "fd00::/48".parse().unwrap(),
            },
            peers: vec![],
            filter: vec![],
            policy_version: None,
            dns: None,
            network: None,
        }
    }

    #[test]
    fn cache_restore_good_and_tampered() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path());
        let sk = SigningKey::generate();
        let m = map(3);
        let cache = CachedMap {
            map: Signed::sign(&m, &sk),
            deltas: vec![],
        };
        sd.save_cache(&cache).unwrap();
        assert_eq!(mode(&sd.path(PEERMAP_FILE)), 0o600);
        let (_, restored) = sd.load_cache(&sk.public_key()).unwrap().unwrap();
        assert_eq!(restored, m);
        // another console's key: refused
        assert!(matches!(
            sd.load_cache(&SigningKey::generate().public_key()),
            Err(StateError::CacheUntrusted(_))
        ));
        // tampered payload: refused
        let text = fs::read_to_string(sd.path(PEERMAP_FILE)).unwrap();
        let tampered = text.replace("\\\"version\\\":3", "\\\"version\\\":4");
        assert_ne!(text, tampered);
        sd.write_private(PEERMAP_FILE, tampered.as_bytes()).unwrap();
        assert!(matches!(
            sd.load_cache(&sk.public_key()),
            Err(StateError::CacheUntrusted(_))
        ));
    }
}
