//! The human form of `zmesh status`: a block per profile (its name, network and why it
//! is down if it was not taken down), each with this device, its routes, names and a
//! table of peers.

use crate::ipc::Status;

pub(crate) fn ago(rfc: &Option<String>) -> String {
    let Some(s) = rfc else { return "never".into() };
    match humantime::parse_rfc3339(s)
        .ok()
        .and_then(|t| t.elapsed().ok())
    {
        Some(d) => format!("{}s ago", d.as_secs()),
        None => s.clone(),
    }
}

/// `zmesh status` for every profile: one block each, headed by the profile's name
/// and network (just the block when only the default profile is enrolled).
pub fn status_tables(s: &Status) -> String {
    if s.profiles.is_empty() {
        return profile_head(s, false) + &status_table(s);
    }
    let mut out = String::new();
    for (i, p) in s.profiles.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&profile_head(p, true));
        out.push_str(&status_table(p));
    }
    out
}

/// The line naming a profile and its network, and why it is down if it was not taken
/// down (empty for a lone default profile that runs).
fn profile_head(s: &Status, always: bool) -> String {
    let mut out = String::new();
    if always || s.profile != "default" || s.blocked.is_some() {
        out.push_str(&format!(
            "profile {}{}{}\n",
            s.profile,
            s.network
                .as_ref()
                .map(|n| format!(
                    ": network {}{}",
                    n.name,
                    if n.exclusive { " (exclusive)" } else { "" }
                ))
                .unwrap_or_default(),
            if s.dropped_cross_network > 0 {
                format!(
                    "; {} packets dropped that would have crossed networks",
                    s.dropped_cross_network
                )
            } else {
                String::new()
            }
        ));
    }
    if let Some(b) = &s.blocked {
        out.push_str(&format!(
            "{}: {}\n",
            if b.held { "held" } else { "refused" },
            b.reason
        ));
    }
    out
}

/// The human form of `zmesh status` for one profile.
pub fn status_table(s: &Status) -> String {
    let Some(me) = &s.me else {
        return "not enrolled\n".into();
    };
    let ips: Vec<String> = me.overlay_ips.iter().map(|i| i.to_string()).collect();
    let mut out = format!(
        "{} {} [{}] console {} ({}){}{}\n",
        me.name,
        ips.join(" "),
        me.state,
        me.console,
        match (me.connected, me.state.as_str()) {
            (true, _) => "connected",
            // tunnels up, stream not (yet): it is being set up or retried with backoff
            (false, "up") => "connecting",
            _ => "not connected",
        },
        me.key_expires_at
            .as_ref()
            .map(|t| format!(", key expires {t}"))
            .unwrap_or_default(),
        if me.state == "expired" {
            ": the key expired; sign in again with `zmesh up --reauth`"
        } else {
            ""
        },
    );
    let r = &s.routes;
    if !r.advertised.is_empty() {
        let v: Vec<String> = r
            .advertised
            .iter()
            .map(|n| {
                let state = if r.approved.contains(n) {
                    "approved"
                } else {
                    "waiting for approval"
                };
                format!("{n} ({state})")
            })
            .collect();
        out.push_str(&format!(
            "advertising {}{}\n",
            v.join(", "),
            if r.snat { "" } else { "; no source NAT" }
        ));
    }
    if let Some(e) = &r.exit_node {
        out.push_str(&format!(
            "exit node {e}: {}{}\n",
            if r.exit_node_active {
                "in use"
            } else {
                "not offered to this device (traffic goes direct)"
            },
            if r.exit_node_allow_lan {
                ", local networks direct"
            } else {
                ""
            }
        ));
    }
    for p in &s.peers {
        if !p.routes.is_empty() || p.exit_node {
            let v: Vec<String> = p
                .routes
                .iter()
                .map(|n| {
                    if p.primary_routes.contains(n) {
                        format!("{n} (primary)")
                    } else {
                        n.to_string()
                    }
                })
                .collect();
            out.push_str(&format!(
                "  via {}: {}{}\n",
                p.name,
                v.join(", "),
                if p.exit_node {
                    if v.is_empty() {
                        "exit node"
                    } else {
                        ", exit node"
                    }
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(d) = &s.dns {
        out.push_str(&format!(
            "names: {} (resolver {}){}\n",
            d.suffix,
            d.resolver,
            me.dns_name
                .as_ref()
                .map(|n| format!(", this device is {n}"))
                .unwrap_or_default()
        ));
    }
    if s.peers.is_empty() {
        out.push_str("no peers\n");
        return out;
    }
    let rows: Vec<[String; 8]> = s
        .peers
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.overlay_ips
                    .first()
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                format!("{} {}", p.path, p.via.as_deref().unwrap_or("-")),
                p.rtt_ms
                    .map(|r| format!("{r:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                if p.path_since.is_some() {
                    ago(&p.path_since)
                } else {
                    "-".into()
                },
                ago(&p.last_handshake),
                p.rx_bytes.to_string(),
                p.tx_bytes.to_string(),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "OVERLAY",
        "PATH",
        "RTT",
        "CHANGED",
        "HANDSHAKE",
        "RX",
        "TX",
    ];
    let mut w = head.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut l = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    out.push_str(&line(head.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out
}
