//! The names this device answers for and the answer to one query, from the current
//! peer map. Pure (no sockets, no clock): a query's bytes in, an [`Action`] out, so
//! every malformed input is tested here and the server only moves bytes.
//!
//! Answers: `NAME.SUFFIX` and the short `NAME` for this device and each peer in the
//! map (A: overlay IPv4, AAAA: overlay IPv6, other types: no data), then the admins'
//! extra records under the suffix, NXDOMAIN for any other name under the suffix; names
//! under a split-DNS domain go to that domain's resolvers (through the mesh), and
//! everything else to the host's resolvers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use ipnet::{Ipv4Net, Ipv6Net};
use zmesh_shared::peermap::PeerMap;

/// Seconds a client may cache an answer: short, so a rename shows at once.
pub const TTL: u32 = 5;

/// The lookup table built from one peer map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Lower case, no trailing dot; `None`: the console sent no names.
    suffix: Option<String>,
    /// Device name (lower case) -> overlay addresses.
    hosts: HashMap<String, (Ipv4Addr, Ipv6Addr)>,
    /// Extra record name (relative to the suffix) -> addresses.
    records: HashMap<String, Vec<IpAddr>>,
    /// Split DNS: domain -> its resolvers on port 53, longest domain first.
    split: Vec<(String, Vec<SocketAddr>)>,
    /// The overlay ranges and this device's own addresses in them: a query from any
    /// other overlay address came from a peer through the tunnel, and is not served.
    overlay: Option<(Ipv4Net, Ipv6Net, Ipv4Addr, Ipv6Addr)>,
}

/// What the server does with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: pass the query, unchanged, to the host's resolvers.
    Forward,
    /// Under a split-DNS domain: pass it to these resolvers.
    ForwardTo(Vec<SocketAddr>),
    /// Not worth an answer (too short to carry an id, or itself a response).
    Drop,
}

impl Names {
    pub fn from_map(map: &PeerMap) -> Names {
        let overlay = Some((
            map.me.network_v4,
            map.me.network_v6,
            map.me.overlay_v4,
            map.me.overlay_v6,
        ));
        let Some(dns) = &map.dns else {
            return Names {
                overlay,
                ..Names::default()
            };
        };
        let mut hosts = HashMap::with_capacity(map.peers.len() + 1);
        for p in &map.peers {
            hosts.insert(p.name.to_ascii_lowercase(), (p.overlay_v4, p.overlay_v6));
        }
        hosts.insert(
            map.me.name.to_ascii_lowercase(),
            (map.me.overlay_v4, map.me.overlay_v6),
        );
        let mut records: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for r in &dns.records {
            records
                .entry(r.name.to_ascii_lowercase())
                .or_default()
                .push(r.ip);
        }
        let mut split: Vec<(String, Vec<SocketAddr>)> = dns
            .split
            .iter()
            .map(|s| {
                let ups = s.resolvers.iter().map(|ip| SocketAddr::new(*ip, 53));
                (s.domain.to_ascii_lowercase(), ups.collect())
            })
            .collect();
        split.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
        Names {
            suffix: Some(dns.suffix.trim_end_matches('.').to_ascii_lowercase()),
            hosts,
            records,
            split,
            overlay,
        }
    }

    /// True for a query that came from a peer through the tunnel (an overlay address
    /// that is not this device's): the resolver serves this host only.
    pub fn from_peer(&self, ip: IpAddr) -> bool {
        let Some((n4, n6, me4, me6)) = self.overlay else {
            return false;
        };
        match ip {
            IpAddr::V4(a) => {
                n4.contains(&a) && a != me4 && a != zmesh_shared::peermap::resolver_v4(n4)
            }
            IpAddr::V6(a) => n6.contains(&a) && a != me6,
        }
    }

    /// The split-DNS domains (for the host's routing domains).
    pub fn split_domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.split.iter().map(|(d, _)| d.clone()).collect();
        d.sort();
        d
    }

    fn host(&self, name: &str) -> Option<Vec<IpAddr>> {
        if let Some((v4, v6)) = self.hosts.get(name) {
            return Some(vec![IpAddr::V4(*v4), IpAddr::V6(*v6)]);
        }
        self.records.get(name).cloned()
    }

    pub fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }

    /// The full name of device `name`, e.g. `laptop.default.zmesh.internal`.
    pub fn fqdn(&self, name: &str) -> Option<String> {
        self.suffix
            .as_ref()
            .map(|s| format!("{}.{s}", name.to_ascii_lowercase()))
    }

    /// `Some(addresses)` for a name of ours, `Some(None)` for an unknown name under
    /// the suffix, `None` for a name that is not ours.
    fn lookup(&self, q: &str) -> Option<Option<Vec<IpAddr>>> {
        let suffix = self.suffix.as_ref()?;
        if q == suffix {
            return Some(None);
        }
        if let Some(host) = q
            .strip_suffix(suffix.as_str())
            .and_then(|h| h.strip_suffix('.'))
        {
            return Some(self.host(host));
        }
        // a short name: answered when it is a device, else left to the host's resolvers
        if !q.contains('.') {
            return self.host(q).map(Some);
        }
        None
    }

    fn split_for(&self, q: &str) -> Option<&[SocketAddr]> {
        self.split
            .iter()
            .find(|(d, _)| q == d || q.strip_suffix(d.as_str()).is_some_and(|h| h.ends_with('.')))
            .map(|(_, ups)| ups.as_slice())
    }

    /// The answer to one query datagram.
    pub fn answer(&self, query: &[u8]) -> Action {
        if query.len() < 12 {
            return Action::Drop;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        if query[2] & 0x80 != 0 {
            return Action::Drop; // a response, not a query
        }
        let msg = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return error(id, OpCode::Query, ResponseCode::FormErr),
        };
        if msg.op_code() != OpCode::Query {
            return error(id, msg.op_code(), ResponseCode::NotImp);
        }
        let [q] = msg.queries() else {
            return error(id, OpCode::Query, ResponseCode::FormErr);
        };
        let qname = q.name().to_ascii().to_ascii_lowercase();
        let qname = qname.trim_end_matches('.');
        let Some(found) = self.lookup(qname) else {
            return match self.split_for(qname) {
                Some(ups) => Action::ForwardTo(ups.to_vec()),
                None => Action::Forward,
            };
        };
        let mut resp = Message::new();
        resp.set_id(id)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_recursion_desired(msg.recursion_desired())
            .set_recursion_available(true)
            .add_query(q.clone());
        match found {
            None => {
                resp.set_response_code(ResponseCode::NXDomain);
            }
            Some(addrs) if q.query_class() == DNSClass::IN => {
                let (a, aaaa) = match q.query_type() {
                    RecordType::A => (true, false),
                    RecordType::AAAA => (false, true),
                    RecordType::ANY => (true, true),
                    _ => (false, false),
                };
                for ip in addrs {
                    let rdata = match ip {
                        IpAddr::V4(v4) if a => RData::A(A(v4)),
                        IpAddr::V6(v6) if aaaa => RData::AAAA(AAAA(v6)),
                        _ => continue,
                    };
                    resp.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                }
            }
            Some(_) => {} // another class: no data
        }
        match resp.to_vec() {
            Ok(b) => Action::Reply(b),
            Err(_) => error(id, OpCode::Query, ResponseCode::ServFail),
        }
    }
}

fn error(id: u16, op: OpCode, code: ResponseCode) -> Action {
    match Message::error_msg(id, op, code).to_vec() {
        Ok(b) => Action::Reply(b),
        Err(_) => Action::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use rand::{Rng, SeedableRng};
    use zmesh_shared::peermap::{DnsConfig, DnsRecord, Peer, SelfInfo, SplitDns};
    use zmesh_shared::wire::DeviceState;
    use zmesh_shared::{DeviceId, NetworkId, WgPrivateKey};

    fn names() -> Names {
        let peer = |n: &str, i: u8| Peer {
            routes: Vec::new(),
            exit_node: false,
            device_id: DeviceId::new(),
            name: n.into(),
            public_key: WgPrivateKey::generate().public_key(),
            overlay_v4: Ipv4Addr::new(100, 64, 0, i),
            overlay_v6: format!("fd00::{i}").parse().unwrap(),
            allowed_ips: vec![],
            endpoints: vec![],
            agentless: false,
            persistent_keepalive: None,
        };
        Names::from_map(&PeerMap {
            network_id: NetworkId::new(),
            device_id: DeviceId::new(),
            version: 1,
            issued_at_ms: 0,
            me: SelfInfo {
                approved_routes: Vec::new(),
                name: "me".into(),
                state: DeviceState::Active,
                overlay_v4: Ipv4Addr::new(100, 64, 0, 1),
                overlay_v6: "fd00::1".parse().unwrap(),
                network_v4: "100.64.0.0/10".parse().unwrap(),
                network_v6: "fd00::/48".parse().unwrap(),
            },
            peers: vec![peer("Bravo", 2)],
            filter: vec![],
            policy_version: None,
            network: None,
            dns: Some(DnsConfig {
                suffix: "default.zmesh.internal".into(),
                records: vec![
                    DnsRecord {
                        name: "wiki".into(),
                        ip: "10.9.9.9".parse().unwrap(),
                    },
                    DnsRecord {
                        name: "wiki".into(),
                        ip: "fd00::99".parse().unwrap(),
                    },
                    DnsRecord {
                        name: "bravo".into(),
                        ip: "10.6.6.6".parse().unwrap(),
                    },
                ],
                split: vec![
                    SplitDns {
                        domain: "corp.example".into(),
                        resolvers: vec!["100.64.0.2".parse().unwrap()],
                    },
                    SplitDns {
                        domain: "eu.corp.example".into(),
                        resolvers: vec!["100.64.0.3".parse().unwrap()],
                    },
                ],
            }),
        })
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn reply(a: Action) -> Message {
        match a {
            Action::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn answers_peers_self_and_short_names() {
        let n = names();
        let r = reply(n.answer(&query("bravo.default.zmesh.internal.", RecordType::A)));
        assert_eq!(r.id(), 7);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(100, 64, 0, 2)))
        );
        let r = reply(n.answer(&query("BRAVO.Default.zmesh.internal.", RecordType::AAAA)));
        assert_eq!(
            r.answers()[0].data(),
            &RData::AAAA(AAAA("fd00::2".parse().unwrap()))
        );
        let r = reply(n.answer(&query("me.default.zmesh.internal.", RecordType::A)));
        assert_eq!(r.answers().len(), 1);
        let r = reply(n.answer(&query("bravo.", RecordType::A)));
        assert_eq!(r.answers().len(), 1);
        // a known name, another type: no data
        let r = reply(n.answer(&query("bravo.default.zmesh.internal.", RecordType::MX)));
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
        // unknown under the suffix: NXDOMAIN; elsewhere: forwarded
        let r = reply(n.answer(&query("nobody.default.zmesh.internal.", RecordType::A)));
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert_eq!(
            n.answer(&query("example.org.", RecordType::A)),
            Action::Forward
        );
        assert_eq!(
            n.answer(&query("unknownhost.", RecordType::A)),
            Action::Forward
        );
        // a map without names answers nothing itself
        assert_eq!(
            Names::default().answer(&query("bravo.default.zmesh.internal.", RecordType::A)),
            Action::Forward
        );
        assert_eq!(
            n.fqdn("Bravo").as_deref(),
            Some("bravo.default.zmesh.internal")
        );
    }

    #[test]
    fn extra_records_and_split_domains() {
        let n = names();
        let r = reply(n.answer(&query("wiki.default.zmesh.internal.", RecordType::A)));
        assert_eq!(r.answers().len(), 1);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(10, 9, 9, 9)))
        );
        let r = reply(n.answer(&query("wiki.default.zmesh.internal.", RecordType::AAAA)));
        assert_eq!(
            r.answers()[0].data(),
            &RData::AAAA(AAAA("fd00::99".parse().unwrap()))
        );
        // a device name wins over a record of the same name
        let r = reply(n.answer(&query("bravo.default.zmesh.internal.", RecordType::A)));
        assert_eq!(r.answers().len(), 1);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(100, 64, 0, 2)))
        );
        let up = |ip: &str| vec![SocketAddr::new(ip.parse().unwrap(), 53)];
        assert_eq!(
            n.answer(&query("git.corp.example.", RecordType::A)),
            Action::ForwardTo(up("100.64.0.2"))
        );
        assert_eq!(
            n.answer(&query("Corp.Example.", RecordType::A)),
            Action::ForwardTo(up("100.64.0.2"))
        );
        assert_eq!(
            n.answer(&query("x.eu.corp.example.", RecordType::A)),
            Action::ForwardTo(up("100.64.0.3"))
        );
        assert_eq!(
            n.answer(&query("notcorp.example.", RecordType::A)),
            Action::Forward
        );
        assert_eq!(n.split_domains(), vec!["corp.example", "eu.corp.example"]);
        // queries from peers are not served; this host's are
        assert!(n.from_peer("100.64.0.2".parse().unwrap()));
        assert!(n.from_peer("fd00::2".parse().unwrap()));
        for own in [
            "100.64.0.1",
            "100.64.0.0",
            "fd00::1",
            "127.0.0.1",
            "172.17.0.2",
        ] {
            assert!(!n.from_peer(own.parse().unwrap()), "{own}");
        }
    }

    #[test]
    fn malformed_queries_never_panic() {
        let n = names();
        assert_eq!(n.answer(&[]), Action::Drop);
        assert_eq!(n.answer(&[1, 2, 3]), Action::Drop);
        // header only, claiming one question that is not there: FORMERR with its id
        let r = reply(n.answer(&[0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
        assert_eq!((r.id(), r.response_code()), (9, ResponseCode::FormErr));
        // a response is not answered
        let mut resp = query("bravo.", RecordType::A);
        resp[2] |= 0x80;
        assert_eq!(n.answer(&resp), Action::Drop);
        // truncated and bit-flipped versions of a good query, and random garbage
        let good = query("bravo.default.zmesh.internal.", RecordType::A);
        for cut in 0..good.len() {
            let _ = n.answer(&good[..cut]);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            let _ = n.answer(&b);
            let len = rng.gen_range(0..600);
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = n.answer(&junk);
        }
    }
}
