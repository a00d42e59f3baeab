//! Retention of the access log: records older than the retention are deleted as a
//! prefix of the chain, only up to what is anchored in the audit log, and the cut is
//! recorded by an `access.prune` event; what remains still verifies from the cut, and
//! a cut moved behind the audit log's back is caught.

mod support {
    pub mod audit_fixture;
}

use std::time::Duration;

use support::audit_fixture::sqlite;
use zmesh_console::bus::Bus;
use zmesh_console::service::audit::{checkpoint, retention, verify};
use zmesh_console::service::{access, devices, Core};
use zmesh_console::store::AuditCtx;
use zmesh_shared::flowlog::sign_flow;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{FlowRecord, FlowVerdict};
use zmesh_shared::{SigningKey, WgPrivateKey};

#[tokio::test]
async fn pruning_cuts_an_anchored_prefix_and_the_rest_verifies() {
    let (_dir, store) = sqlite().await;
    let key = SigningKey::generate();
    let core = Core::new(
        store.clone(),
        SigningKey::from_base64(&key.to_base64()).unwrap(),
        Bus::new(),
    )
    .await
    .unwrap();
    let ctx = AuditCtx::new("admin:ops", None);
    let mut devs = vec![];
    for name in ["p", "q"] {
        let d = devices::add_agentless(
            &core,
            ctx.clone(),
            "admin:ops".into(),
            name.into(),
            WgPrivateKey::generate().public_key(),
            vec![],
        )
        .await
        .unwrap();
        let k = SigningKey::generate();
        access::register_key(&core, &ctx, d.id, &k.public_key())
            .await
            .unwrap();
        devs.push((d.id, k));
    }
    let (p, kp) = &devs[0];
    let q = devs[1].0;
    let rec = |t: i64, port: u16| FlowRecord {
        src_device: *p,
        dst_device: q,
        proto: 6,
        src_port: 1234,
        dst_port: port,
        bytes: 10,
        packets: 1,
        bytes_back: 0,
        packets_back: 0,
        first_seen_ms: t,
        last_seen_ms: t,
        rule: None,
        policy_version: Some(1),
        verdict: FlowVerdict::Accepted,
    };
    let old = now_ms() - 3_600_000;
    // five old records, anchored; then two old ones not yet anchored; then two new ones
    let batch = |from: u64, t: i64, n: u64| {
        (0..n)
            .map(|i| sign_flow(kp, *p, from + i, rec(t, 100 + (from + i) as u16)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        access::ingest(&core, *p, &batch(1, old, 5))
            .await
            .unwrap()
            .kept,
        5
    );
    assert_eq!(store.anchor_access_head().await.unwrap(), Some(5));
    assert_eq!(
        access::ingest(&core, *p, &batch(6, old, 2))
            .await
            .unwrap()
            .kept,
        2
    );
    // Prune everything older than 30 minutes: only the anchored prefix (1..=5) goes.
    retention::prune(&store, &key, Duration::from_secs(1800))
        .await
        .unwrap();
    let head = store.access_head().await.unwrap();
    assert_eq!((head.pruned_seq, head.seq), (5, 7));
    assert_eq!(
        store
            .access_page(0, 100)
            .await
            .unwrap()
            .first()
            .unwrap()
            .seq,
        6
    );
    assert_eq!(
        access::ingest(&core, *p, &batch(8, now_ms(), 2))
            .await
            .unwrap()
            .kept,
        2
    );
    checkpoint::create(&store, &key, "manual").await.unwrap();
    let pk = key.public_key();
    let r = verify::verify_store(&store, &pk).await.unwrap();
    let a = r.access.clone().unwrap();
    assert!(r.ok && a.ok, "{r:?}");
    assert_eq!((a.first_seq, a.last_seq, a.verified), (Some(6), Some(9), 4));
    // A cut moved forward behind the audit log's back (records 6 and 7 deleted with
    // it) is caught: the head no longer matches the recorded cut.
    let h7: String = sqlx::query_scalar("SELECT hash FROM access_records WHERE seq = 7")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM access_records WHERE seq <= 7")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE access_head SET pruned_seq = 7, pruned_hash = $1")
        .bind(&h7)
        .execute(store.pool())
        .await
        .unwrap();
    let r = verify::verify_store(&store, &pk).await.unwrap();
    let a = r.access.unwrap();
    assert!(!r.ok && !a.ok, "{a:?}");
    assert_eq!(a.first_bad_seq, Some(6), "{a:?}");
}
