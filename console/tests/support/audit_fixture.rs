//! Shared fixtures of the audit tests: a SQLite store in a temp dir, a log filled by
//! real mutations with signed checkpoints, and an export collected into memory.

#![allow(dead_code)] // each test binary uses a different part

use zmesh_console::service::audit::{checkpoint, export};
use zmesh_console::store::{AuditCtx, EventFilter, NewAgentlessDevice, NewEnrollKey, Store};
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, SigningKey, WgPrivateKey};

pub async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::connect(&format!("sqlite://{}/a.db", dir.path().display()))
        .await
        .unwrap();
    (dir, s)
}

/// A dozen events from real mutations, with signed checkpoints after events 4, 8 and
/// at the end. Returns the number of events.
pub async fn populate(s: &Store, key: &SigningKey) -> u64 {
    let admin = s.acting(AuditCtx::new("admin:ops", Some("192.0.2.7".into())));
    let net = s.default_network().await.unwrap();
    for i in 0..3 {
        admin
            .create_enroll_key(
                NewEnrollKey {
                    network_id: net.id,
                    secret_hash: Secret::generate("zmek_").hash(),
                    description: Some(format!("key {i}")),
                    reusable: true,
                    preapproved: true,
                    tags: vec!["web".into()],
                    expires_at_ms: None,
                    created_by: "admin:ops".into(),
                },
                now_ms(),
            )
            .await
            .unwrap();
    }
    let mut devs = vec![];
    for i in 0..3 {
        let d = admin
            .add_agentless_device(NewAgentlessDevice {
                network_id: net.id,
                name: format!("peer{i}"),
                public_key: WgPrivateKey::generate().public_key(),
                tags: vec![],
                owner: "admin:ops".into(),
                now_ms: now_ms(),
            })
            .await
            .unwrap();
        devs.push(d.id);
        if s.audit_head().await.unwrap().seq >= 4 && s.list_checkpoints().await.unwrap().is_empty()
        {
            checkpoint::create(s, key, "manual").await.unwrap().unwrap();
        }
    }
    for (i, d) in devs.iter().enumerate() {
        admin
            .rename_device(*d, &format!("renamed{i}"))
            .await
            .unwrap();
        admin.set_device_tags(*d, &["db".into()]).await.unwrap();
        if s.audit_head().await.unwrap().seq >= 8 && s.list_checkpoints().await.unwrap().len() < 2 {
            checkpoint::create(s, key, "manual").await.unwrap().unwrap();
        }
    }
    admin.revoke_device(devs[0], now_ms()).await.unwrap();
    admin.delete_device(devs[1]).await.unwrap();
    checkpoint::create(s, key, "manual").await.unwrap().unwrap();
    s.audit_head().await.unwrap().seq
}

pub async fn export_to_vec(
    s: &Store,
    fmt: export::Format,
    key: &SigningKey,
    f: &EventFilter,
) -> Vec<u8> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let s2 = s.clone();
    let f2 = f.clone();
    let pk = key.public_key().to_string();
    let h = tokio::spawn(async move { export::run(&s2, &f2, fmt, pk, tx).await.unwrap() });
    let mut out = vec![];
    while let Some(b) = rx.recv().await {
        out.extend_from_slice(&b);
    }
    h.await.unwrap();
    out
}
