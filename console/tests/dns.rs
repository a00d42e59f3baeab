//! Names (DNS) at the console: the default suffix in every map, an admin's suffix
//! reaching connected agents as a signed delta (audited, revision bumped), and bad
//! suffixes or device names refused with a 422 naming the field, changing nothing.

mod support {
    pub mod stream_console;
}

use reqwest::Method;
use serde_json::{json, Value};
use zmesh_shared::wire::ServerMsg;

use support::stream_console::*;

#[tokio::test]
async fn suffix_defaults_changes_by_delta_and_refuses_bad_input() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "dns-a").await;
    let b = c.enroll(&key, "dns-b").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    let mut ma = hello_and_map(&mut wa, a.device_id, &a.signing_key).await;
    assert_eq!(
        ma.dns.as_ref().map(|d| d.suffix.as_str()),
        Some("default.zmesh.internal")
    );
    let v: Value = c.admin.get("/api/v1/dns").await.unwrap();
    assert_eq!(
        v,
        json!({"suffix": "default.zmesh.internal", "default": true})
    );

    // bad suffixes: 422 naming `suffix`, nothing changed, no delta
    for bad in ["a..b", "bad_label.example", "-x.example", "10.0.0.1", ""] {
        let (st, body) = c
            .admin
            .raw(
                Method::PUT,
                "/api/v1/dns",
                Some(("application/json", json!({ "suffix": bad }).to_string())),
            )
            .await
            .unwrap();
        assert_eq!(st.as_u16(), 422, "{bad:?}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["field"], "suffix", "{body}");
    }
    let v: Value = c.admin.get("/api/v1/dns").await.unwrap();
    assert_eq!(v["suffix"], "default.zmesh.internal");

    // a good one reaches the connected agent as a delta
    let v: Value = c
        .admin
        .put("/api/v1/dns", &json!({"suffix": "Corp.Example."}))
        .await
        .unwrap();
    assert_eq!(v, json!({"suffix": "corp.example", "default": false}));
    match next(&mut wa).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&a.signing_key).unwrap();
            assert_eq!(d.dns.as_ref().unwrap().suffix, "corp.example");
            assert!(d.upsert.is_empty() && d.remove.is_empty());
            ma.apply(&d).unwrap();
        }
        other => panic!("expected a delta with the suffix, got {other:?}"),
    }
    let events = c
        .admin
        .get_text("/api/v1/audit/events?action=network.dns")
        .await
        .unwrap();
    assert!(events.to_string().contains("corp.example"), "{events}");

    // a device name that is not a DNS label: 422 naming `name`, unchanged
    let (st, body) = c
        .admin
        .raw(
            Method::PATCH,
            &format!("/api/v1/devices/{}", b.device_id),
            Some((
                "application/json",
                json!({"name": "not_a.label"}).to_string(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 422, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["field"], "name", "{body}");
    let dev: Value = c
        .admin
        .get(&format!("/api/v1/devices/{}", b.device_id))
        .await
        .unwrap();
    assert_eq!(dev["name"], "dns-b");

    // back to the default
    let v: Value = c
        .admin
        .put("/api/v1/dns", &json!({"suffix": null}))
        .await
        .unwrap();
    assert_eq!(v["default"], true);
    match next(&mut wa).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&a.signing_key).unwrap();
            assert_eq!(d.dns.unwrap().suffix, "default.zmesh.internal");
        }
        other => panic!("expected a delta, got {other:?}"),
    }
}
