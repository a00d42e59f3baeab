//! Change acknowledgements in the store, on SQLite and on PostgreSQL (support/pg.rs):
//! a rollout and its targets are written once per revision (many targets: the
//! multi-row inserts); an acknowledgement marks every target of the device up to its
//! version, keeps the device's newest version, and never goes back; one committed
//! before the targets existed is caught by the reconciliation; progress counts only
//! connected targets; pruning keeps unfinished rollouts and admin changes longer than
//! roaming ones; deleting a device deletes its targets.

mod support {
    pub mod pg;
}

use zmesh_console::store::{Ack, NewAgentlessDevice, NewTarget, Store};
use zmesh_shared::{DeviceId, WgPrivateKey};

const NOW: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("console.db").display());
    rollouts(&Store::connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_postgres() {
    let Some(db) = support::pg::fresh_db("store_rollouts::postgres").await else {
        return;
    };
    rollouts(&Store::connect(&db.url).await.unwrap()).await;
}

async fn device(s: &Store, name: &str) -> DeviceId {
    let net = s.default_network().await.unwrap();
    s.add_agentless_device(NewAgentlessDevice {
        network_id: net.id,
        name: name.into(),
        public_key: WgPrivateKey::generate().public_key(),
        tags: vec![],
        owner: "admin:root".into(),
        now_ms: NOW,
    })
    .await
    .unwrap()
    .id
}

async fn rollouts(s: &Store) {
    let net = s.default_network().await.unwrap().id;
    let mut ids = vec![];
    for i in 0..1_203 {
        ids.push(device(s, &format!("d{i}")).await);
    }
    let targets: Vec<NewTarget> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| NewTarget {
            device_id: *id,
            connected: i % 3 != 0,
        })
        .collect();
    // a device acknowledges version 10 before rollout 10 is written
    s.record_acks(
        net,
        &[Ack {
            device_id: ids[1],
            version: 10,
            at_ms: NOW + 5,
        }],
    )
    .await
    .unwrap();
    assert!(s
        .create_rollout(net, 10, NOW, true, &targets)
        .await
        .unwrap());
    assert!(!s
        .create_rollout(net, 10, NOW, false, &targets[..1])
        .await
        .unwrap());
    assert_eq!(s.rollout_targets(net, 10).await.unwrap().len(), 1_203);
    assert_eq!(s.rollout_progress(net, 10).await.unwrap(), (802, 0));
    s.reconcile_rollout(net, 10).await.unwrap();
    assert_eq!(s.rollout_progress(net, 10).await.unwrap(), (802, 1));

    // rollout 12 for two devices; an ack of 12 covers both rollouts of ids[2]
    let two = [
        NewTarget {
            device_id: ids[2],
            connected: true,
        },
        NewTarget {
            device_id: ids[3],
            connected: false,
        },
    ];
    assert!(s
        .create_rollout(net, 12, NOW + 100, false, &two)
        .await
        .unwrap());
    s.record_acks(
        net,
        &[
            Ack {
                device_id: ids[2],
                version: 12,
                at_ms: NOW + 150,
            },
            // an older version after a newer one changes nothing
            Ack {
                device_id: ids[2],
                version: 9,
                at_ms: NOW + 160,
            },
        ],
    )
    .await
    .unwrap();
    let t10 = s.rollout_targets(net, 10).await.unwrap();
    let at = |t: &[zmesh_console::store::TargetRow], id: DeviceId| {
        t.iter().find(|x| x.device_id == id).unwrap().applied_at_ms
    };
    assert_eq!(at(&t10, ids[1]), Some(NOW + 5));
    assert_eq!(at(&t10, ids[2]), Some(NOW + 150));
    assert_eq!(at(&t10, ids[4]), None);
    let v = s.applied_versions(net).await.unwrap();
    assert!(v.contains(&(ids[2], 12, NOW + 150)), "{v:?}");
    assert_eq!(s.rollout_progress(net, 12).await.unwrap(), (1, 1));

    // the first rollout at or after a revision
    assert_eq!(
        s.rollout_at_or_after(net, 11)
            .await
            .unwrap()
            .unwrap()
            .revision,
        12
    );
    assert_eq!(
        s.rollout_at_or_after(net, 3)
            .await
            .unwrap()
            .unwrap()
            .revision,
        10
    );
    assert!(s.rollout_at_or_after(net, 13).await.unwrap().is_none());
    let recent = s.recent_rollouts(net, 5).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [12, 10]
    );
    assert!(recent[1].audited && !recent[0].audited);

    // pruning: unfinished rollouts stay; a finished roaming one goes before an admin one
    assert_eq!(
        s.prune_rollouts(net, NOW + 1_000, NOW - 1).await.unwrap(),
        0
    );
    s.finish_rollout(net, 12, NOW + 200).await.unwrap();
    s.finish_rollout(net, 10, NOW + 200).await.unwrap();
    assert_eq!(
        s.prune_rollouts(net, NOW + 1_000, NOW - 1).await.unwrap(),
        1
    );
    assert!(s.rollout_at_or_after(net, 11).await.unwrap().is_none());
    assert_eq!(s.rollout_targets(net, 12).await.unwrap().len(), 0);

    // a thousand devices acknowledge at once (one batch, several statements' worth)
    let many: Vec<Ack> = ids[5..1_105]
        .iter()
        .map(|id| Ack {
            device_id: *id,
            version: 10,
            at_ms: NOW + 700,
        })
        .collect();
    s.record_acks(net, &many).await.unwrap();
    let t10 = s.rollout_targets(net, 10).await.unwrap();
    let done = t10
        .iter()
        .filter(|t| t.applied_at_ms == Some(NOW + 700))
        .count();
    assert_eq!(done, 1_100);
    assert_eq!(s.applied_versions(net).await.unwrap().len(), 1_102);

    // a deleted device takes its targets with it
    s.acting(zmesh_console::store::AuditCtx::system())
        .delete_device(ids[4])
        .await
        .unwrap();
    assert_eq!(s.rollout_targets(net, 10).await.unwrap().len(), 1_202);
}
