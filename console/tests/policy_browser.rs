//! The visual policy editor in a real headless Chromium against the real
//! `zmesh-console serve`: an admin builds "group eng may reach tag:db on tcp/5432" with
//! the pickers (a new group with a device in it, a rule with sources, destinations,
//! ports, protocol and a description), sees the rule and the reachability diff, applies
//! it, and the console's own "check access" (the engine the agents' maps come from)
//! answers allowed for laptop-1 → db-1 tcp/5432 and denied for tcp/22. The JSON view is
//! the same document (comments kept). An invalid rule (unknown group, port 0) is refused
//! in the editor with its reason and the policy in force is unchanged.
//!
//! Then every main page is shot at 1,280 x 800 (to `target/screenshots/1280x800/`) and
//! checked for horizontal overflow: the document is no wider than the window.
//!
//! Without Chromium the test prints a notice and passes, unless `CI` is set.

#[path = "support/web_console.rs"]
mod web_console;
#[path = "support/webdriver.rs"]
mod webdriver;

use serde_json::{json, Value};
use web_console::*;
use webdriver::Driver;

const START: &str = r#"{
  "version": 1,
  // Databases carry tag:db; nothing is allowed yet.
  "tag_owners": { "tag:db": [] },
  "rules": [],
}"#;

async fn check(d: &Driver, src: &str, dst: &str, port: u16) -> bool {
    let v = page_json(
        d,
        "POST",
        "/api/v1/policy/check",
        json!({"src": src, "dst": dst, "proto": "tcp", "port": port}),
    )
    .await;
    v["allowed"]
        .as_bool()
        .unwrap_or_else(|| panic!("check {src} -> {dst}:{port}: {v}"))
}

async fn policy_in_force(d: &Driver) -> Value {
    page_json(d, "GET", "/api/v1/policy", Value::Null).await
}

/// Adds chips to a rule side by typing into its picker and pressing its Add button.
async fn pick(d: &Driver, side: &str, value: &str) {
    d.type_into(&format!("#rule-{side}-input"), value).await;
    d.click(&format!("#rule-{side}-add")).await;
}

async fn fill_rule(d: &Driver, src: &str, dst: &str, ports: &str, proto: &str, desc: &str) {
    pick(d, "src", src).await;
    pick(d, "dst", dst).await;
    d.type_into("#rule-ports", ports).await;
    d.exec(
        "document.getElementById('rule-proto').value = arguments[0];",
        json!([proto]),
    )
    .await;
    d.type_into("#rule-desc", desc).await;
    d.click("#rule-save").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_builds_a_rule_visually_and_pages_fit_1280() {
    if !browser_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_console, url, link) = start_console(dir.path());
    let d = Driver::start().await;
    first_admin(&d, &link).await;

    // The inventory: a laptop and a database server tagged tag:db.
    let st = page_json(&d, "PUT", "/api/v1/policy", json!({ "policy": START })).await;
    assert_eq!(st["version"], 1, "{st}");
    let plain = page_json(&d, "POST", "/api/v1/enroll-keys", json!({"reusable": true})).await;
    let db = page_json(
        &d,
        "POST",
        "/api/v1/enroll-keys",
        json!({"reusable": true, "tags": ["db"]}),
    )
    .await;
    enroll(dir.path(), &url, plain["key"].as_str().unwrap(), "laptop-1").await;
    enroll(dir.path(), &url, db["key"].as_str().unwrap(), "db-1").await;
    assert!(!check(&d, "laptop-1", "db-1", 5432).await);

    // ---- the visual editor is the default view ----
    d.goto(&format!("{url}/ui/policy")).await;
    d.wait_text("#visual-rules", "the empty rule list", |t| {
        t.contains("nothing is allowed")
    })
    .await;
    // a new group with laptop-1 in it, from the group table's new row
    d.type_into("#visual-groups tr.new .new-name", "group:eng")
        .await;
    d.type_into("#visual-groups tr.new .new-member", "laptop-1")
        .await;
    d.click("#visual-groups tr.new button").await;
    d.wait_text(
        "#visual-groups tr[data-name='group:eng']",
        "the new group",
        |t| t.contains("laptop-1"),
    )
    .await;

    // an invalid rule first: an unknown group is refused with its reason
    fill_rule(&d, "group:nope", "tag:db", "5432", "tcp", "typo").await;
    let why = d
        .wait_text("#visual-error", "the refusal", |t| !t.is_empty())
        .await;
    assert!(why.contains("group:nope"), "{why}");
    let draft = d
        .exec(
            "return document.getElementById('policy-text').value;",
            json!([]),
        )
        .await;
    assert!(
        !draft.as_str().unwrap().contains("group:nope"),
        "draft unchanged"
    );
    // port 0 is refused too (the form kept its chips: start over)
    d.goto(&format!("{url}/ui/policy")).await;
    d.find("#visual-groups tbody").await;
    fill_rule(&d, "*", "tag:db", "0", "tcp", "bad port").await;
    let why = d
        .wait_text("#visual-error", "the refusal", |t| !t.is_empty())
        .await;
    assert!(why.contains("port 0"), "{why}");
    let before = policy_in_force(&d).await;
    assert_eq!(before["version"], 1, "nothing was saved: {before}");

    // ---- the real rule ----
    d.goto(&format!("{url}/ui/policy")).await;
    d.find("#visual-groups tbody").await;
    d.type_into("#visual-groups tr.new .new-name", "group:eng")
        .await;
    d.type_into("#visual-groups tr.new .new-member", "laptop-1")
        .await;
    d.click("#visual-groups tr.new button").await;
    d.wait_text("#visual-groups", "the group", |t| t.contains("laptop-1"))
        .await;
    fill_rule(
        &d,
        "group:eng",
        "tag:db",
        "5432",
        "tcp",
        "engineers query the databases",
    )
    .await;
    let card = d
        .wait_text("#rule-0", "the rule card", |t| t.contains("engineers"))
        .await;
    assert!(
        card.contains("group:eng") && card.contains("tag:db") && card.contains("5432"),
        "{card}"
    );
    assert!(card.contains("tcp"), "{card}");
    d.wait_text("#policy-status", "valid", |t| t == "valid")
        .await;
    let edges = d
        .wait_text("#policy-diff", "the edge diff", |t| t.contains("db-1"))
        .await;
    assert!(edges.contains("laptop-1 → db-1 tcp:5432"), "{edges}");
    let rules = d.text("#policy-rules-diff").await;
    assert!(rules.contains("engineers query the databases"), "{rules}");
    // not applied yet
    assert!(!check(&d, "laptop-1", "db-1", 5432).await);
    let shots = shots_dir("1280x800");
    d.set_window_size(1280, 800).await;
    d.screenshot(&shots, "policy-visual").await;
    d.click("#policy-apply").await;
    d.wait_text("#policy-version", "version 2", |t| t == "2")
        .await;
    // the page follows the change to the devices: no agent is connected here, so none
    // applied it and the enrolled ones are pending
    d.wait_text("#change-status", "the change's rollout", |t| {
        t.contains("applied by 0 of 0 connected peers") && t.contains("offline, pending")
    })
    .await;

    // reachability follows: the console's engine now allows exactly tcp/5432
    assert!(check(&d, "laptop-1", "db-1", 5432).await);
    assert!(!check(&d, "laptop-1", "db-1", 22).await);
    assert!(!check(&d, "db-1", "laptop-1", 5432).await);

    // ---- the JSON view is the same document, comments kept ----
    d.click("#tab-json").await;
    let json_view = d
        .exec(
            "return document.getElementById('policy-text').value;",
            json!([]),
        )
        .await;
    let json_view = json_view.as_str().unwrap();
    let in_force = policy_in_force(&d).await;
    assert_eq!(json_view, in_force["text"].as_str().unwrap());
    assert!(
        json_view.contains("// Databases carry tag:db"),
        "{json_view}"
    );
    assert!(json_view.contains(
        r#"{ "src": ["group:eng"], "dst": ["tag:db:5432"], "proto": "tcp", "description": "engineers query the databases" }"#
    ), "{json_view}");
    assert!(
        json_view.contains(r#""group:eng": ["laptop-1"]"#),
        "{json_view}"
    );
    d.screenshot(&shots, "policy-json").await;
    // and back: the visual view shows what the JSON says
    d.click("#tab-visual").await;
    d.wait_text("#rule-0", "the card again", |t| t.contains("engineers"))
        .await;
    // the save is in the audit log with the rule's description
    let events = page_text(&d, "/api/v1/audit/events?action=policy.set").await;
    assert!(events.contains("engineers query the databases"), "{events}");

    // ---- every main page fits 1,280 px ----
    for (path, name) in [
        ("/ui/", "overview"),
        ("/ui/devices", "devices"),
        ("/ui/policy", "policy"),
        ("/ui/audit", "audit"),
        ("/ui/access", "access"),
        ("/ui/users", "users"),
        ("/ui/keys", "keys"),
        ("/ui/routes", "routes"),
        ("/ui/changes", "changes"),
    ] {
        d.goto(&format!("{url}{path}")).await;
        d.find("main").await;
        let v = d
            .exec(
                "return [document.documentElement.scrollWidth, window.innerWidth, window.innerHeight];",
                json!([]),
            )
            .await;
        let (doc_w, win_w) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
        assert!(
            (1200..=1280).contains(&win_w),
            "the window is 1,280 px wide: {v}"
        );
        let shot = d.screenshot(&shots, name).await;
        assert!(
            doc_w <= win_w,
            "{path} is {doc_w} px wide in a {win_w} px window ({})",
            shot.display()
        );
        println!("{path}: {doc_w} px in {win_w} px; {}", shot.display());
    }
    d.quit().await;
}
