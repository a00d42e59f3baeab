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
        json!({"suffix": "default.zmesh.internal", "default": true, "records": [], "split": []})
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
    assert_eq!(
        v,
        json!({"suffix": "corp.example", "default": false, "records": [], "split": []})
    );
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

async fn status_of(c: &Console, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (st, text) = c
        .admin
        .raw(m, path, body.map(|b| ("application/json", b.to_string())))
        .await
        .unwrap();
    (
        st.as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn extra_records_and_split_dns_reach_agents_and_bad_ones_change_nothing() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "rec-a").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    hello_and_map(&mut wa, a.device_id, &a.signing_key).await;

    for (body, field) in [
        (json!({"name": "bad_name", "ip": "10.1.1.1"}), "name"),
        (json!({"name": "a..b", "ip": "10.1.1.1"}), "name"),
        (json!({"name": "wiki", "ip": "10.1.1"}), "ip"),
        (json!({"name": "wiki", "ip": "224.0.0.1"}), "ip"),
    ] {
        let (st, e) = status_of(&c, Method::POST, "/api/v1/dns/records", Some(body.clone())).await;
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {e}"
        );
    }
    for (domain, body, field) in [
        (
            "bad_domain.example",
            json!({"resolvers": ["100.64.0.9"]}),
            "domain",
        ),
        (
            "x.default.zmesh.internal",
            json!({"resolvers": ["100.64.0.9"]}),
            "domain",
        ),
        ("corp.example", json!({"resolvers": []}), "resolvers"),
        (
            "corp.example",
            json!({"resolvers": ["not-an-ip"]}),
            "resolvers[0]",
        ),
        (
            "corp.example",
            json!({"resolvers": ["100.64.0.0"]}),
            "resolvers[0]",
        ),
    ] {
        let (st, e) = status_of(
            &c,
            Method::PUT,
            &format!("/api/v1/dns/split/{domain}"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{domain} {body}: {e}"
        );
    }
    let v: Value = c.admin.get("/api/v1/dns").await.unwrap();
    assert_eq!(v["records"], json!([]));
    assert_eq!(v["split"], json!([]));

    let v: Value = c
        .admin
        .post(
            "/api/v1/dns/records",
            Some(&json!({"name": "Wiki", "ip": "100.64.9.9"})),
        )
        .await
        .unwrap();
    assert_eq!(v["records"], json!([{"name": "wiki", "ip": "100.64.9.9"}]));
    match next(&mut wa).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&a.signing_key).unwrap().dns.unwrap();
            assert_eq!(d.records.len(), 1);
            assert_eq!(d.records[0].name, "wiki");
        }
        other => panic!("expected a delta, got {other:?}"),
    }
    let v: Value = c
        .admin
        .put(
            "/api/v1/dns/split/Corp.Example",
            &json!({"resolvers": ["100.64.0.7"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        v["split"],
        json!([{"domain": "corp.example", "resolvers": ["100.64.0.7"]}])
    );
    match next(&mut wa).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&a.signing_key).unwrap().dns.unwrap();
            assert_eq!(d.split[0].domain, "corp.example");
        }
        other => panic!("expected a delta, got {other:?}"),
    }
    // a suffix that would take over the split domain is refused
    let (st, e) = status_of(
        &c,
        Method::PUT,
        "/api/v1/dns",
        Some(json!({"suffix": "example"})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("suffix")),
        "{e}"
    );

    let (st, _) = status_of(&c, Method::DELETE, "/api/v1/dns/records/nothing", None).await;
    assert_eq!(st, 404);
    let (st, _) = status_of(
        &c,
        Method::DELETE,
        "/api/v1/dns/split/nothing.example",
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, v) = status_of(&c, Method::DELETE, "/api/v1/dns/records/wiki", None).await;
    assert_eq!((st, &v["records"]), (200, &json!([])));
    let (st, v) = status_of(&c, Method::DELETE, "/api/v1/dns/split/corp.example", None).await;
    assert_eq!((st, &v["split"]), (200, &json!([])));
    let events = c.admin.get_text("/api/v1/audit/events").await.unwrap();
    for action in [
        "dns.record_add",
        "dns.record_remove",
        "dns.split_set",
        "dns.split_remove",
    ] {
        assert!(events.contains(action), "{action} audited");
    }
}
