//! Fuzz target: the agent's resolver (`zmesh_agent::dns::names::Names::answer`) on any
//! datagram, with a table of one device, one peer, an extra record and a split domain.
//!
//! Checks besides "no panic": a reply parses as DNS and carries the query's id and the
//! response bit; a datagram shorter than a header, or a response, is never answered.

#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use zmesh_agent::dns::names::{Action, Names};
use zmesh_shared::peermap::{DnsConfig, DnsRecord, Peer, PeerMap, SelfInfo, SplitDns};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, NetworkId, WgPrivateKey};

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        Names::from_map(&PeerMap {
            network_id: NetworkId::new(),
            device_id: DeviceId::new(),
            version: 1,
            issued_at_ms: 0,
            me: SelfInfo { approved_routes: Vec::new(),
                name: "alpha".into(),
                state: DeviceState::Active,
                overlay_v4: Ipv4Addr::new(100, 64, 0, 1),
                overlay_v6: "fd00::1".parse().unwrap(),
                network_v4: "100.64.0.0/10".parse().unwrap(),
                network_v6: "fd00::/48".parse().unwrap(),
            },
            peers: vec![Peer { routes: Vec::new(), exit_node: false,
                device_id: DeviceId::new(),
                name: "bravo".into(),
                public_key: WgPrivateKey::from_bytes([0xB2; 32]).public_key(),
                overlay_v4: Ipv4Addr::new(100, 64, 0, 2),
                overlay_v6: "fd00::2".parse().unwrap(),
                allowed_ips: vec![],
                endpoints: vec![],
                agentless: false,
                persistent_keepalive: None,
            }],
            filter: vec![],
            policy_version: None,
            network: None,
            dns: Some(DnsConfig {
                suffix: "default.zmesh.internal".into(),
                records: vec![DnsRecord {
                    name: "wiki".into(),
                    ip: "10.9.9.9".parse().unwrap(),
                }],
                split: vec![SplitDns {
                    domain: "corp.example".into(),
                    resolvers: vec!["100.64.0.2".parse().unwrap()],
                }],
            }),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    match names().answer(data) {
        Action::Reply(bytes) => {
            assert!(data.len() >= 12 && data[2] & 0x80 == 0, "answered a non-query");
            let m = Message::from_vec(&bytes).expect("a reply parses");
            assert_eq!(m.id(), u16::from_be_bytes([data[0], data[1]]));
            assert_eq!(m.message_type(), MessageType::Response);
        }
        Action::Forward | Action::ForwardTo(_) => {
            assert!(Message::from_vec(data).is_ok(), "forwarded a query it could not parse")
        }
        Action::Drop => assert!(data.len() < 12 || data[2] & 0x80 != 0),
    }
});
