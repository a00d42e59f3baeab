//! The control stream end to end: a real HTTPS console on 127.0.0.1:0 (self-signed
//! certificate, SQLite in a temp dir), agents that enroll over HTTPS and connect real
//! WebSocket clients over TLS with the certificate pinned. Checks signed maps,
//! revocation fan-out within one second, and endpoint updates reaching peers.

mod support {
    pub mod stream_console;
}

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message};
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{ClientMsg, ServerMsg};
use zmesh_shared::DeviceId;

use support::stream_console::*;

#[tokio::test]
async fn three_agents_get_signed_maps_and_revocation_fans_out() {
    let c = console().await;
    let key = new_key(&c).await;
    let mut enrolled = vec![];
    for n in ["a1", "a2", "a3"] {
        enrolled.push(c.enroll(&key, n).await);
    }
    let signing = enrolled[0].signing_key;
    let mut socks = vec![];
    let mut maps = vec![];
    for e in &enrolled {
        let mut ws = c.connect(e.credential.expose()).await.unwrap();
        maps.push(hello_and_map(&mut ws, e.device_id, &signing).await);
        socks.push(ws);
    }
    for (i, m) in maps.iter().enumerate() {
        let mut want: Vec<DeviceId> = enrolled
            .iter()
            .filter(|e| e.device_id != enrolled[i].device_id)
            .map(|e| e.device_id)
            .collect();
        want.sort();
        let got: Vec<DeviceId> = m.peers.iter().map(|p| p.device_id).collect();
        assert_eq!(got, want, "map of {} lists the others", enrolled[i].name);
    }

    let victim = enrolled[2].device_id;
    let started = std::time::Instant::now();
    let _: Value = c
        .admin
        .post(&format!("/api/v1/devices/{victim}/revoke"), None::<&()>)
        .await
        .unwrap();
    for (i, ws) in socks.iter_mut().take(2).enumerate() {
        match next(ws).await {
            Some(ServerMsg::PeerDelta { delta }) => {
                let d = delta.verify(&signing).expect("delta signed");
                assert_eq!(d.remove, vec![victim]);
                assert_eq!(d.base_version, maps[i].version);
                maps[i].apply(&d).unwrap();
                assert!(maps[i].peer(&victim).is_none());
            }
            other => panic!("expected PeerDelta, got {other:?}"),
        }
    }
    match next(&mut socks[2]).await {
        Some(ServerMsg::Revoked { reason }) => assert_eq!(reason, "revoked"),
        other => panic!("expected Revoked, got {other:?}"),
    }
    assert!(
        next(&mut socks[2]).await.is_none(),
        "revoked device is disconnected"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fan-out took {:?}",
        started.elapsed()
    );

    match c.connect(enrolled[2].credential.expose()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!(
            "revoked credential must get 401, got {:?}",
            other.map(|_| ())
        ),
    }
    // The others stay connected and are answered.
    socks[0]
        .send(Message::Text(
            serde_json::to_string(&ClientMsg::Ping { nonce: 9 })
                .unwrap()
                .into(),
        ))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut socks[0]).await,
        Some(ServerMsg::Pong { nonce: 9 })
    ));
}

#[tokio::test]
async fn reported_endpoints_reach_peers_as_upsert() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "ep-a").await;
    let b = c.enroll(&key, "ep-b").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    let mut wb = c.connect(b.credential.expose()).await.unwrap();
    hello_and_map(&mut wa, a.device_id, &a.signing_key).await;
    let mut mb = hello_and_map(&mut wb, b.device_id, &b.signing_key).await;
    assert!(mb.peer(&a.device_id).unwrap().endpoints.is_empty());

    let eps: Vec<std::net::SocketAddr> = vec![
        "192.0.2.10:51820".parse().unwrap(),
        "[2001:db8::1]:51820".parse().unwrap(),
    ];
    let msg = ClientMsg::Endpoints {
        endpoints: eps.clone(),
    };
    wa.send(Message::Text(serde_json::to_string(&msg).unwrap().into()))
        .await
        .unwrap();
    match next(&mut wb).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&b.signing_key).unwrap();
            assert!(d.remove.is_empty());
            assert_eq!(d.upsert.len(), 1);
            assert_eq!(d.upsert[0].device_id, a.device_id);
            assert_eq!(d.upsert[0].endpoints, eps);
            mb.apply(&d).unwrap();
        }
        other => panic!("expected PeerDelta, got {other:?}"),
    }
    // Resync returns the full map, equal to the one built from deltas.
    wb.send(Message::Text(
        serde_json::to_string(&ClientMsg::Resync).unwrap().into(),
    ))
    .await
    .unwrap();
    match next(&mut wb).await {
        Some(ServerMsg::PeerMap { map }) => {
            let full = map.verify(&b.signing_key).unwrap();
            assert_eq!(full.peers, mb.peers);
            assert_eq!(full.version, mb.version);
        }
        other => panic!("expected PeerMap, got {other:?}"),
    }
}

/// Active devices get the STUN servers, the relays and a relay token naming them right
/// after their map; pending ones get nothing until approved.
#[tokio::test]
async fn active_devices_get_nat_config_with_a_relay_token() {
    let c = console_with(Some(zmesh_console::domain::nat::NatAdvert {
        stun: vec!["0.0.0.0:3478".parse().unwrap()],
        relays: vec![zmesh_shared::wire::RelayInfo {
            name: "console".into(),
            addr: "0.0.0.0:8445".parse().unwrap(),
            cert_sha256: None,
            https_upgrade: None,
        }],
        token_ttl: Duration::from_secs(60),
    }))
    .await;
    let key = new_key(&c).await;
    let e = c.enroll(&key, "n1").await;
    let mut ws = c.connect(e.credential.expose()).await.unwrap();
    hello_and_map(&mut ws, e.device_id, &e.signing_key).await;
    match next(&mut ws).await {
        Some(ServerMsg::NatConfig {
            stun,
            relays,
            relay_token: Some(t),
        }) => {
            assert_eq!(stun, vec!["0.0.0.0:3478".parse().unwrap()]);
            assert_eq!(relays[0].name, "console");
            let claims =
                zmesh_shared::relay::verify_token(&t, &e.signing_key, now_ms() as u64).unwrap();
            assert_eq!(claims.device_id, e.device_id);
            assert!(claims.expires_at_ms <= now_ms() as u64 + 60_000);
        }
        other => panic!("expected NatConfig with a token, got {other:?}"),
    }

    // pending: no token until an admin approves the device
    let v: Value = c
        .admin
        .post("/api/v1/enroll-keys", Some(&json!({"preapproved": false})))
        .await
        .unwrap();
    let p = c.enroll(v["key"].as_str().unwrap(), "p1").await;
    let mut pws = c.connect(p.credential.expose()).await.unwrap();
    hello_and_map(&mut pws, p.device_id, &p.signing_key).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), pws.next())
            .await
            .is_err(),
        "a pending device got a message after its map"
    );
    let _: Value = c
        .admin
        .post(
            &format!("/api/v1/devices/{}/approve", p.device_id),
            None::<&()>,
        )
        .await
        .unwrap();
    loop {
        match next(&mut pws).await {
            Some(ServerMsg::PeerMap { .. } | ServerMsg::PeerDelta { .. }) => continue,
            Some(ServerMsg::NatConfig { relay_token, .. }) => {
                assert!(relay_token.is_some());
                break;
            }
            other => panic!("expected NatConfig after approval, got {other:?}"),
        }
    }
}

/// A device whose key expires leaves its peers' maps within about two seconds with no
/// admin action, its own stream is closed with "key expired", and the audit log has
/// exactly one `device.expired` event for it (the sweeper keeps running).
#[tokio::test]
async fn expired_key_leaves_every_map_and_is_audited_once() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "exp-a").await;
    let b = c.enroll(&key, "exp-b").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    let mut wb = c.connect(b.credential.expose()).await.unwrap();
    let mut ma = hello_and_map(&mut wa, a.device_id, &a.signing_key).await;
    hello_and_map(&mut wb, b.device_id, &b.signing_key).await;
    assert!(ma.peer(&b.device_id).is_some());

    let expires = now_ms() + 1500;
    let _: Value = c
        .admin
        .patch(
            &format!("/api/v1/devices/{}", b.device_id),
            &json!({ "key_expires_at_ms": expires }),
        )
        .await
        .unwrap();
    // Setting the expiry is itself a change: a's map moves, b is still in it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let removed_at = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, next(&mut wa))
            .await
            .expect("b's expiry never reached a's stream");
        match msg {
            Some(ServerMsg::PeerDelta { delta }) => {
                let d = delta.verify(&a.signing_key).unwrap();
                ma.apply(&d).unwrap();
                if ma.peer(&b.device_id).is_none() {
                    break now_ms();
                }
            }
            Some(_) => {}
            None => panic!("a's stream closed"),
        }
    };
    assert!(removed_at >= expires, "removed before the expiry");
    assert!(
        removed_at - expires < 2500,
        "removed {} ms after the expiry",
        removed_at - expires
    );
    // b is told why, and its stream ends.
    let mut reason = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), next(&mut wb)).await {
        if let ServerMsg::Revoked { reason: r } = m {
            reason = Some(r);
            break;
        }
    }
    assert_eq!(reason.as_deref(), Some("key expired"));
    // Swept once, not on every tick.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = c
        .auditor
        .get_text("/api/v1/audit/events?format=jsonl&action=device.expired")
        .await
        .unwrap();
    let mine: Vec<&str> = events
        .lines()
        .filter(|l| l.contains(&b.device_id.to_string()))
        .collect();
    assert_eq!(mine.len(), 1, "{events}");
    assert!(mine[0].contains("\"actor\":\"system\""), "{}", mine[0]);
}

/// Flow reports are evidence only when signed by the device that sends them: a record
/// signed with the device's registered report key is kept; one signed with another
/// device's key, and an unsigned one, are refused and audited with the reason; a
/// second, different report key is refused too.
#[tokio::test]
async fn flow_reports_must_be_signed_by_the_reporting_device() {
    use zmesh_shared::flowlog::sign_flow;
    use zmesh_shared::wire::{FlowRecord, FlowVerdict};
    use zmesh_shared::SigningKey;

    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "rep-a").await;
    let b = c.enroll(&key, "rep-b").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    hello_and_map(&mut wa, a.device_id, &a.signing_key).await;
    let send = |m: ClientMsg| Message::Text(serde_json::to_string(&m).unwrap().into());
    let (ka, kb) = (SigningKey::generate(), SigningKey::generate());
    let t = now_ms();
    let rec = |port: u16| FlowRecord {
        src_device: a.device_id,
        dst_device: b.device_id,
        proto: 6,
        src_port: 41000,
        dst_port: port,
        bytes: 600,
        packets: 6,
        bytes_back: 9000,
        packets_back: 7,
        first_seen_ms: t,
        last_seen_ms: t + 10,
        rule: Some("outbound".into()),
        policy_version: Some(1),
        verdict: FlowVerdict::Accepted,
    };
    wa.send(send(ClientMsg::ReportKey {
        key: ka.public_key(),
    }))
    .await
    .unwrap();
    let good = sign_flow(&ka, a.device_id, 1, rec(22));
    let forged = sign_flow(&kb, a.device_id, 2, rec(23));
    wa.send(send(ClientMsg::SignedFlows {
        flows: vec![good, forged],
    }))
    .await
    .unwrap();
    wa.send(send(ClientMsg::Flows {
        flows: vec![rec(24), rec(25)],
    }))
    .await
    .unwrap();
    wa.send(send(ClientMsg::ReportKey {
        key: kb.public_key(),
    }))
    .await
    .unwrap();
    // closing the stream flushes the refusals not audited yet
    wa.close(None).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (flows, events) = loop {
        let flows: Value = c.admin.get("/api/v1/flows").await.unwrap();
        // the events export is JSON Lines: header, events, end
        let text = c
            .admin
            .get_text("/api/v1/audit/events?action=access.")
            .await
            .unwrap();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["action"].is_string())
            .collect();
        let n = events.len();
        if n >= 3 || std::time::Instant::now() > deadline {
            break (flows, events);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kept = flows["flows"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{flows}");
    assert_eq!(kept[0]["dst_port"], 22);
    assert_eq!(kept[0]["reporter"], json!(a.device_id.to_string()));
    let rejected = |reason: &str| {
        events
            .iter()
            .filter(|e| e["action"] == "access.rejected" && e["after"]["reason"] == reason)
            .map(|e| e["after"]["records"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(rejected("bad signature"), 1, "{events:?}");
    assert_eq!(rejected("unsigned"), 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "access.report_key_refused"),
        "{events:?}"
    );
}

/// The agent version told in the stream's Hello is stored and listed with the device,
/// which the list then shows online (the same `online` the web page uses).
#[tokio::test]
async fn hello_records_the_agent_version_and_the_device_is_online() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "ver-a").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    hello_and_map(&mut wa, a.device_id, &a.signing_key).await;
    let hello = ClientMsg::Hello {
        protocol: zmesh_shared::PROTOCOL_VERSION,
        agent_version: "9.8.7-test".into(),
        have_version: None,
    };
    wa.send(Message::Text(serde_json::to_string(&hello).unwrap().into()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v: Value = c.admin.get("/api/v1/devices").await.unwrap();
        let d = &v["devices"][0];
        if d["agent_version"] == "9.8.7-test" {
            assert_eq!(d["online"], json!(true), "{d}");
            assert!(d["last_seen_ms"].as_i64().unwrap() > now_ms() - 60_000);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent version: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
