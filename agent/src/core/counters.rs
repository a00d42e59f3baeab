//! Data-plane counters: packets moved, and every drop counted by its reason, so an
//! operator (and the tests) can tell an attack or a misconfiguration from packet loss.

use serde::{Deserialize, Serialize};

/// Monotonic counters of one [`Node`](super::Node). Cheap to copy out for a stats call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// IP packets from the TUN that were encrypted and sent.
    pub tx_packets: u64,
    /// Decrypted IP packets handed to the TUN.
    pub rx_packets: u64,
    /// Of `tx_packets`, those sent through the relay (the rest went direct).
    #[serde(default)]
    pub tx_packets_relay: u64,
    /// Of `rx_packets`, those that came through the relay.
    #[serde(default)]
    pub rx_packets_relay: u64,
    /// Bytes of the WireGuard data messages counted in `tx_packets` (UDP payload, what
    /// crosses the underlay), and of those the relayed ones.
    #[serde(default)]
    pub tx_bytes: u64,
    #[serde(default)]
    pub tx_bytes_relay: u64,
    /// Bytes of the WireGuard data messages counted in `rx_packets`, and of those the
    /// relayed ones.
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub rx_bytes_relay: u64,
    /// Handshakes completed (as initiator or responder).
    pub handshakes: u64,
    /// Datagrams that are not WireGuard messages at all (bad type, bad size, bad MAC).
    pub drop_garbage: u64,
    /// Data/response/cookie messages for a receiver index we do not know
    /// (a removed peer, a stale session, or forged).
    pub drop_unknown_index: u64,
    /// Handshake initiations from a static key that is not one of our peers.
    pub drop_unknown_key: u64,
    /// Handshake messages that failed (bad timestamp, replayed initiation, wrong key).
    pub drop_handshake_failed: u64,
    /// Data messages whose AEAD did not verify.
    pub drop_decrypt_failed: u64,
    /// Data messages with a counter already seen or too old (replay).
    pub drop_replay: u64,
    /// Data messages for a session that is gone.
    pub drop_no_session: u64,
    /// Decrypted packets whose source address is outside the sender's allowed IPs.
    pub drop_bad_source: u64,
    /// Decrypted payloads that are not a consistent IP packet.
    pub drop_bad_inner: u64,
    /// TUN packets whose destination no peer's allowed IPs cover.
    pub drop_no_route: u64,
    /// TUN packets routed to a peer with no known endpoint.
    pub drop_no_endpoint: u64,
    /// TUN packets that are not IPv4/IPv6.
    pub drop_tun_invalid: u64,
    /// Packets or datagrams larger than the buffers (or the protocol) allow.
    pub drop_oversize: u64,
    /// Handshakes answered with a cookie because we are under load.
    pub cookie_replies: u64,
    /// Decrypted packets the inbound policy filter dropped (see `filter` for why).
    #[serde(default)]
    pub drop_policy: u64,
    /// The inbound policy filter's own counters (accepted by rule or as reply, drops by reason).
    #[serde(default)]
    pub filter: crate::filter::Counters,
    /// Packets dropped because they would cross from one network (profile) into
    /// another: inbound to another network's prefixes, or read from the TUN with a
    /// source in another network's overlay (see `core::crossnet`).
    #[serde(default)]
    pub drop_cross_network: u64,
    /// Path probes that authenticated (pings and pongs).
    #[serde(default)]
    pub probes_rx: u64,
    /// Probe-shaped datagrams that failed: unknown sender, bad tag.
    #[serde(default)]
    pub drop_probe: u64,
}

impl Counters {
    /// Counts a data message of `len` bytes sent to `to`. Per packet: additions only.
    pub(crate) fn sent(&mut self, to: std::net::SocketAddr, len: usize) {
        self.tx_packets += 1;
        self.tx_bytes += len as u64;
        if super::is_relay_endpoint(to) {
            self.tx_packets_relay += 1;
            self.tx_bytes_relay += len as u64;
        }
    }

    /// Counts a data message of `len` bytes from `from` delivered to the TUN.
    pub(crate) fn received(&mut self, from: std::net::SocketAddr, len: usize) {
        self.rx_packets += 1;
        self.rx_bytes += len as u64;
        if super::is_relay_endpoint(from) {
            self.rx_packets_relay += 1;
            self.rx_bytes_relay += len as u64;
        }
    }

    /// Sum of all drop counters.
    pub fn total_drops(&self) -> u64 {
        self.drop_garbage
            + self.drop_unknown_index
            + self.drop_unknown_key
            + self.drop_handshake_failed
            + self.drop_decrypt_failed
            + self.drop_replay
            + self.drop_no_session
            + self.drop_bad_source
            + self.drop_bad_inner
            + self.drop_no_route
            + self.drop_no_endpoint
            + self.drop_tun_invalid
            + self.drop_oversize
            + self.drop_policy
            + self.drop_probe
            + self.drop_cross_network
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_serialize() {
        let c = Counters {
            drop_garbage: 2,
            drop_replay: 3,
            tx_packets: 10,
            ..Default::default()
        };
        assert_eq!(c.total_drops(), 5);
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["drop_replay"], 3);
        assert_eq!(serde_json::from_value::<Counters>(j).unwrap(), c);
    }

    #[test]
    fn split_by_path() {
        let mut c = Counters::default();
        let direct: std::net::SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let relay = crate::core::relay_endpoint(&[9; 32]);
        c.sent(direct, 100);
        c.sent(relay, 50);
        c.received(relay, 70);
        assert_eq!((c.tx_packets, c.tx_bytes), (2, 150));
        assert_eq!((c.tx_packets_relay, c.tx_bytes_relay), (1, 50));
        assert_eq!(
            (
                c.rx_packets,
                c.rx_bytes,
                c.rx_packets_relay,
                c.rx_bytes_relay
            ),
            (1, 70, 1, 70)
        );
    }
}
