//! Profiles: one agent in several networks at once. Each profile is a whole enrollment
//! (device key, console, overlay addresses, peer map, filter, resolver, routes) with
//! its own data plane. The profile `default` lives in the state directory itself, as
//! the only enrollment always has (an upgrade moves nothing); another profile NAME
//! lives in `STATE_DIR/profiles/NAME/` (0700) with the same files.
//!
//! Which profiles may run together is decided here, by a pure function ([`plan`]) over
//! what the daemon knows of each: its overlay ranges (two networks whose ranges share
//! an address cannot both be routed on one host) and whether its network is exclusive
//! (its admin forbids being in another network at the same time). The daemon applies
//! the plan at start, at every `up`, and whenever a map changes (see `supervise`).

use std::fmt;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::statedir::StateDir;

pub const DEFAULT: &str = "default";
/// Subdirectory of the state directory holding the other profiles.
pub const PROFILES_DIR: &str = "profiles";

#[derive(Debug, thiserror::Error)]
#[error("profile name {0:?}: use 1-15 characters of a-z, 0-9 and '-' (e.g. lab, work-2)")]
pub struct BadName(pub String);

/// Checks a profile name: `[a-z0-9-]{1,15}`.
pub fn validate(name: &str) -> Result<(), BadName> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BadName(name.to_string()))
    }
}

/// The profile a request names (none: `default`), validated.
pub fn resolve(name: Option<&str>) -> Result<String, BadName> {
    let n = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT);
    validate(n)?;
    Ok(n.to_string())
}

/// The state directory of a profile.
pub fn state_dir(root: &StateDir, name: &str) -> StateDir {
    if name == DEFAULT {
        root.clone()
    } else {
        StateDir::new(root.root().join(PROFILES_DIR).join(name))
    }
}

/// The enrolled profiles besides `default`, by name (directories with a valid name).
pub fn others(root: &StateDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.root().join(PROFILES_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != DEFAULT && validate(n).is_ok())
        .collect();
    v.sort();
    v
}

/// The TUN device of a profile: `default` uses the daemon's `--tun` (zmesh0); another
/// profile `zm-NAME`, or for names over 12 characters `zm-` + the first 7 + `-` + 4 hex
/// digits of a hash of the whole name (interface names have at most 15 characters).
pub fn tun_name(default_tun: &str, name: &str) -> String {
    if name == DEFAULT {
        return default_tun.to_string();
    }
    if name.len() <= 12 {
        return format!("zm-{name}");
    }
    // FNV-1a: stable across releases (std's hasher is not).
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("zm-{}-{:04x}", &name[..7], h & 0xffff)
}

/// Why a profile does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Its overlay range shares addresses with a running profile's.
    Overlap {
        mine: IpNet,
        other: String,
        theirs: IpNet,
    },
    /// A running profile's network is exclusive.
    Exclusive { network: String, profile: String },
    /// Its own network is exclusive, and other profiles run (it came up after them).
    SelfExclusive {
        network: String,
        others: Vec<String>,
    },
}

/// A [`Block`] said for one profile (the message `up` and `status` show).
pub struct Reason<'a> {
    pub profile: &'a str,
    pub block: &'a Block,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.profile;
        match self.block {
            Block::Overlap {
                mine,
                other,
                theirs,
            } => write!(
                f,
                "profile {p:?}: its network {mine} overlaps profile {other:?} ({theirs}); a \
                 device cannot be in both at once — ask the {p} network's admin for a range \
                 of its own (zmesh-console networks create NAME --v4 CIDR, or serve \
                 --overlay-v4 on a new console)"
            ),
            Block::Exclusive { network, profile } => write!(
                f,
                "network {network:?} (profile {profile:?}) is exclusive: its admin forbids \
                 being in another network at the same time; zmesh down --profile {profile} first"
            ),
            Block::SelfExclusive { network, others } => write!(
                f,
                "network {network:?} (profile {p:?}) is exclusive: its admin forbids being in \
                 another network at the same time, and profile{} {} {} up; zmesh down \
                 --profile {} first",
                if others.len() == 1 { "" } else { "s" },
                others
                    .iter()
                    .map(|o| format!("{o:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if others.len() == 1 { "is" } else { "are" },
                others.join(" / --profile "),
            ),
        }
    }
}

/// Where a profile stands when the plan is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Running, and admitted with what its map says now: it keeps its place.
    Incumbent,
    /// Running, but its map changed what it was admitted with (its first map says
    /// exclusive, or its ranges changed): checked like a newcomer.
    Changed,
    /// Not running, and not taken down: brought up when the rules allow (held).
    Waiting,
    /// Being brought up by `zmesh up` now.
    Starting,
}

/// What the plan needs to know of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub name: String,
    pub standing: Standing,
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
    /// `Some(network name)` when its map says the network is exclusive.
    pub exclusive: Option<String>,
}

/// The plan's word on one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// Down until the user brings it up again (`zmesh up --profile NAME`).
    Refuse(Block),
    /// Down while the block lasts; brought up again by itself when it ends.
    Hold(Block),
}

fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Decides which profiles run. Incumbents keep their place (an exclusive one first:
/// its network turned exclusive while it ran, so the others give way); then profiles
/// whose map changed, the waiting ones (exclusive first, then by name, `default`
/// first) and the one being started. A profile runs unless an admitted one is
/// exclusive, it is exclusive itself while others were admitted, or its ranges share
/// an address with an admitted one's. Blocks of a profile the user starts, or whose
/// map changed, refuse it; an incumbent or a waiting profile blocked by exclusivity is
/// held (it comes back when the exclusive profile goes down or stops being exclusive).
pub fn plan(views: &[View]) -> Vec<(String, Verdict)> {
    let rank = |v: &View| {
        let s = match v.standing {
            Standing::Incumbent => 0,
            Standing::Changed => 1,
            Standing::Waiting => 2,
            Standing::Starting => 3,
        };
        (s, v.exclusive.is_none(), v.name != DEFAULT, v.name.clone())
    };
    let mut order: Vec<&View> = views.iter().collect();
    order.sort_by_key(|v| rank(v));
    let mut admitted: Vec<&View> = Vec::new();
    let mut out = Vec::new();
    for v in order {
        let block = if let Some(x) = admitted.iter().find(|a| a.exclusive.is_some()) {
            Some(Block::Exclusive {
                network: x.exclusive.clone().unwrap_or_default(),
                profile: x.name.clone(),
            })
        } else if let (Some(net), false) = (&v.exclusive, admitted.is_empty()) {
            Some(Block::SelfExclusive {
                network: net.clone(),
                others: admitted.iter().map(|a| a.name.clone()).collect(),
            })
        } else {
            admitted.iter().find_map(|a| {
                [
                    (IpNet::V4(v.v4), IpNet::V4(a.v4)),
                    (IpNet::V6(v.v6), IpNet::V6(a.v6)),
                ]
                .into_iter()
                .find(|(m, t)| overlap(*m, *t))
                .map(|(mine, theirs)| Block::Overlap {
                    mine,
                    other: a.name.clone(),
                    theirs,
                })
            })
        };
        let verdict = match block {
            None => {
                admitted.push(v);
                Verdict::Run
            }
            Some(b @ Block::Overlap { .. }) => Verdict::Refuse(b),
            Some(b) => match v.standing {
                Standing::Incumbent | Standing::Waiting => Verdict::Hold(b),
                Standing::Changed | Standing::Starting => Verdict::Refuse(b),
            },
        };
        out.push((v.name.clone(), verdict));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, standing: Standing, v4: &str, excl: Option<&str>) -> View {
        View {
            name: name.into(),
            standing,
            v4: v4.parse().unwrap(),
            v6: format!("fd{:02x}::/48", name.len() * 7 + v4.len())
                .parse()
                .unwrap(),
            exclusive: excl.map(str::to_string),
        }
    }

    fn get<'a>(p: &'a [(String, Verdict)], n: &str) -> &'a Verdict {
        &p.iter().find(|(m, _)| m == n).unwrap().1
    }

    #[test]
    fn names_and_dirs() {
        for ok in ["default", "lab", "a", "work-2", "abcdefghijklmno"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Lab", "a b", "../x", "abcdefghijklmnop", "é", "a_b"] {
            let e = validate(bad).unwrap_err().to_string();
            assert!(e.contains("1-15 characters"), "{e}");
        }
        assert_eq!(resolve(None).unwrap(), "default");
        assert_eq!(resolve(Some("lab")).unwrap(), "lab");
        assert!(resolve(Some("LAB")).is_err());
        let root = StateDir::new("/var/lib/zmesh");
        assert_eq!(state_dir(&root, "default").root(), root.root());
        assert_eq!(
            state_dir(&root, "lab").root(),
            std::path::Path::new("/var/lib/zmesh/profiles/lab")
        );
        assert_eq!(tun_name("zmesh0", "default"), "zmesh0");
        assert_eq!(tun_name("zmesh0", "lab"), "zm-lab");
        assert_eq!(tun_name("zmesh0", "abcdefghijkl"), "zm-abcdefghijkl");
        let long = tun_name("zmesh0", "abcdefghijklmno");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("zm-abcdefg-"), "{long}");
        assert_ne!(long, tun_name("zmesh0", "abcdefghijklmnp"));
    }

    #[test]
    fn others_lists_valid_profile_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateDir::new(tmp.path());
        for d in ["lab", "work", "BAD", "default"] {
            std::fs::create_dir_all(tmp.path().join(PROFILES_DIR).join(d)).unwrap();
        }
        std::fs::write(tmp.path().join(PROFILES_DIR).join("file"), "x").unwrap();
        assert_eq!(others(&root), vec!["lab", "work"]);
    }

    #[test]
    fn disjoint_profiles_all_run() {
        let p = plan(&[
            view("default", Standing::Incumbent, "100.64.0.0/10", None),
            view("lab", Standing::Starting, "10.77.0.0/16", None),
        ]);
        assert!(p.iter().all(|(_, v)| *v == Verdict::Run), "{p:?}");
    }

    #[test]
    fn overlap_refuses_the_newcomer_with_both_ranges() {
        let p = plan(&[
            view("third", Standing::Starting, "100.64.0.0/10", None),
            view("default", Standing::Incumbent, "100.64.0.0/10", None),
            view("lab", Standing::Incumbent, "10.77.0.0/16", None),
        ]);
        assert_eq!(*get(&p, "default"), Verdict::Run);
        assert_eq!(*get(&p, "lab"), Verdict::Run);
        let Verdict::Refuse(b) = get(&p, "third") else {
            panic!("{p:?}")
        };
        let msg = Reason {
            profile: "third",
            block: b,
        }
        .to_string();
        assert_eq!(
            msg,
            "profile \"third\": its network 100.64.0.0/10 overlaps profile \"default\" \
             (100.64.0.0/10); a device cannot be in both at once — ask the third network's \
             admin for a range of its own (zmesh-console networks create NAME --v4 CIDR, or \
             serve --overlay-v4 on a new console)"
        );
        // a sub-range overlaps too; so does IPv6
        let p = plan(&[
            view("default", Standing::Incumbent, "100.64.0.0/10", None),
            view("x", Standing::Starting, "100.100.0.0/16", None),
        ]);
        assert!(matches!(
            get(&p, "x"),
            Verdict::Refuse(Block::Overlap { .. })
        ));
        let mut a = view("default", Standing::Incumbent, "100.64.0.0/10", None);
        let mut b = view("y", Standing::Starting, "10.0.0.0/8", None);
        a.v6 = "fd00::/48".parse().unwrap();
        b.v6 = "fd00:0:0:1::/64".parse().unwrap();
        let p = plan(&[a, b]);
        assert!(
            matches!(
                get(&p, "y"),
                Verdict::Refuse(Block::Overlap {
                    mine: IpNet::V6(_),
                    ..
                })
            ),
            "{p:?}"
        );
        // at start (all waiting) the default profile keeps the range
        let p = plan(&[
            view("third", Standing::Waiting, "100.64.0.0/10", None),
            view("default", Standing::Waiting, "100.64.0.0/10", None),
        ]);
        assert_eq!(*get(&p, "default"), Verdict::Run);
        assert!(matches!(get(&p, "third"), Verdict::Refuse(_)));
    }

    #[test]
    fn an_exclusive_network_refuses_newcomers_and_holds_the_others() {
        // default's network is exclusive: `up --profile new` is refused
        let p = plan(&[
            view(
                "default",
                Standing::Incumbent,
                "100.64.0.0/10",
                Some("default"),
            ),
            view("new", Standing::Starting, "10.9.0.0/16", None),
        ]);
        let Verdict::Refuse(b) = get(&p, "new") else {
            panic!("{p:?}")
        };
        assert_eq!(
            Reason {
                profile: "new",
                block: b
            }
            .to_string(),
            "network \"default\" (profile \"default\") is exclusive: its admin forbids being \
             in another network at the same time; zmesh down --profile default first"
        );
        // it turned exclusive while lab ran: lab is held, not refused
        let p = plan(&[
            view("lab", Standing::Incumbent, "10.77.0.0/16", None),
            view(
                "default",
                Standing::Incumbent,
                "100.64.0.0/10",
                Some("corp"),
            ),
        ]);
        assert_eq!(*get(&p, "default"), Verdict::Run);
        assert!(
            matches!(get(&p, "lab"), Verdict::Hold(Block::Exclusive { network, profile }) if network == "corp" && profile == "default"),
            "{p:?}"
        );
        // a newly enrolled profile whose first map says exclusive: it is refused
        let p = plan(&[
            view("default", Standing::Incumbent, "100.64.0.0/10", None),
            view("lab", Standing::Changed, "10.77.0.0/16", Some("lab")),
        ]);
        assert_eq!(*get(&p, "default"), Verdict::Run);
        let Verdict::Refuse(b) = get(&p, "lab") else {
            panic!("{p:?}")
        };
        let m = Reason {
            profile: "lab",
            block: b,
        }
        .to_string();
        assert!(
            m.contains("network \"lab\" (profile \"lab\") is exclusive"),
            "{m}"
        );
        assert!(m.contains("profile \"default\" is up"), "{m}");
        // at start the exclusive one wins, the others wait (held)
        let p = plan(&[
            view("default", Standing::Waiting, "100.64.0.0/10", None),
            view("lab", Standing::Waiting, "10.77.0.0/16", Some("lab")),
            view("work", Standing::Waiting, "10.78.0.0/16", None),
        ]);
        assert_eq!(*get(&p, "lab"), Verdict::Run);
        assert!(matches!(get(&p, "default"), Verdict::Hold(_)));
        assert!(matches!(get(&p, "work"), Verdict::Hold(_)));
        // exclusivity ends (or the exclusive profile goes down): held ones run again
        let p = plan(&[
            view("lab", Standing::Waiting, "10.77.0.0/16", None),
            view("default", Standing::Incumbent, "100.64.0.0/10", None),
        ]);
        assert!(p.iter().all(|(_, v)| *v == Verdict::Run), "{p:?}");
        // alone, an exclusive network runs
        let p = plan(&[view("x", Standing::Starting, "10.1.0.0/16", Some("x"))]);
        assert_eq!(p, vec![("x".into(), Verdict::Run)]);
    }
}
