//! Human-readable tables for the CLI (`--json` prints the raw objects instead).

use serde_json::Value;

pub fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) if ms >= 0 => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => "-".into(),
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn keys_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|k| {
            let state = if !k["revoked_at_ms"].is_null() {
                "revoked"
            } else {
                "valid"
            };
            vec![
                s(&k["id"]),
                state.into(),
                if k["reusable"].as_bool() == Some(true) {
                    "reusable"
                } else {
                    "one-off"
                }
                .into(),
                s(&k["used_count"]),
                join(&k["tags"]),
                time(&k["expires_at_ms"]),
                s(&k["description"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "USE",
            "USED",
            "TAGS",
            "EXPIRES",
            "DESCRIPTION",
        ],
        &rows,
    )
}

fn online(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "online".into(),
        Some(false) => "offline".into(),
        None => "-".into(),
    }
}

/// The device list with its online state and relative last-seen time, computed like
/// the web page's (`online` comes from the console, `ago` is the page's function).
pub fn devices_table(items: &[Value]) -> String {
    devices_table_at(items, zmesh_shared::time::now_ms())
}

pub fn devices_table_at(items: &[Value], now: i64) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            vec![
                s(&d["name"]),
                s(&d["state"]),
                s(&d["overlay_v4"]),
                s(&d["overlay_v6"]),
                join(&d["tags"]),
                if d["agentless"].as_bool() == Some(true) {
                    "agentless"
                } else {
                    "agent"
                }
                .into(),
                online(&d["online"]),
                crate::domain::presence::ago(d["last_seen_ms"].as_i64(), now),
                s(&d["id"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "IPV4",
            "IPV6",
            "TAGS",
            "KIND",
            "ONLINE",
            "LAST SEEN",
            "ID",
        ],
        &rows,
    )
}

pub fn policy_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            vec![
                s(&v["version"]),
                time(&v["created_at_ms"]),
                s(&v["author"]),
                s(&v["summary"]),
            ]
        })
        .collect();
    table(&["VERSION", "CREATED", "AUTHOR", "SUMMARY"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
        let d = devices_table(&[
            serde_json::json!({"name": "n1", "state": "active", "tags": ["a", "b"], "agentless": false}),
        ]);
        assert!(d.contains("n1") && d.contains("a,b") && d.contains("agent"));
        let d = devices_table_at(
            &[
                serde_json::json!({"name": "n2", "state": "active", "online": true, "last_seen_ms": 1_000}),
            ],
            5_500,
        );
        assert!(
            d.contains("ONLINE") && d.contains("online") && d.contains("4 s ago"),
            "{d}"
        );
    }
}
