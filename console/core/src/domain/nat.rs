//! What the console tells agents for NAT traversal: the STUN servers to learn their
//! public addresses from, the relays they may use, and a short-lived relay token signed
//! with the peer-map key (so standalone relays need only the console's public key).
//!
//! Tokens go only to active devices, over their authenticated control stream; a revoked
//! device's stream is closed, so it gets no new token. The built-in relay also drops a
//! revoked device at once (see `server::run`); a standalone relay cannot hear about
//! revocations and relies on the token's short lifetime.

use std::net::SocketAddr;
use std::time::Duration;

use zmesh_shared::relay::{RelayClaims, RelayToken, TOKEN_PURPOSE};
use zmesh_shared::signed::Signed;
use zmesh_shared::wire::{RelayInfo, ServerMsg};
use zmesh_shared::{DeviceId, NetworkId, SigningKey, WgPublicKey};

/// The NAT part of the console's configuration as agents see it.
#[derive(Debug, Clone)]
pub struct NatAdvert {
    /// STUN servers; an unspecified IP stands for the console's own host.
    pub stun: Vec<SocketAddr>,
    pub relays: Vec<RelayInfo>,
    pub token_ttl: Duration,
}

impl NatAdvert {
    pub fn is_empty(&self) -> bool {
        self.stun.is_empty() && self.relays.is_empty()
    }

    /// The message for one device, with a fresh token when there are relays.
    pub fn message(
        &self,
        key: &SigningKey,
        network_id: NetworkId,
        device_id: DeviceId,
        public_key: WgPublicKey,
        now_ms: i64,
    ) -> ServerMsg {
        let relay_token = (!self.relays.is_empty()).then(|| {
            issue_token(
                key,
                network_id,
                device_id,
                public_key,
                now_ms,
                self.token_ttl,
            )
        });
        ServerMsg::NatConfig {
            stun: self.stun.clone(),
            relays: self.relays.clone(),
            relay_token,
        }
    }

    /// How often a connected agent gets a fresh token: at half the lifetime, so one
    /// lost refresh still leaves time for the next.
    pub fn refresh_every(&self) -> Duration {
        self.token_ttl / 2
    }
}

pub fn issue_token(
    key: &SigningKey,
    network_id: NetworkId,
    device_id: DeviceId,
    public_key: WgPublicKey,
    now_ms: i64,
    ttl: Duration,
) -> RelayToken {
    let claims = RelayClaims {
        purpose: TOKEN_PURPOSE.to_string(),
        network_id,
        device_id,
        public_key,
        expires_at_ms: (now_ms.max(0) as u64).saturating_add(ttl.as_millis() as u64),
    };
    Signed::sign(&claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmesh_shared::relay::verify_token;

    #[test]
    fn tokens_verify_and_expire() {
        let key = SigningKey::generate();
        let adv = NatAdvert {
            stun: vec!["0.0.0.0:3478".parse().unwrap()],
            relays: vec![RelayInfo {
                name: "console".into(),
                addr: "0.0.0.0:8445".parse().unwrap(),
                cert_sha256: None,
                https_upgrade: None,
            }],
            token_ttl: Duration::from_secs(60),
        };
        let dev = DeviceId::new();
        let pk = zmesh_shared::WgPrivateKey::generate().public_key();
        let ServerMsg::NatConfig {
            relay_token: Some(t),
            ..
        } = adv.message(&key, NetworkId::new(), dev, pk, 1_000)
        else {
            panic!("no token");
        };
        let c = verify_token(&t, &key.public_key(), 2_000).unwrap();
        assert_eq!((c.device_id, c.public_key), (dev, pk));
        assert!(verify_token(&t, &key.public_key(), 61_000).is_err());
        assert!(verify_token(&t, &SigningKey::generate().public_key(), 2_000).is_err());
        assert_eq!(adv.refresh_every(), Duration::from_secs(30));
    }
}
