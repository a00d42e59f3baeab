//! The access log page and the audit log page through the real router on SQLite, as an
//! auditor: records from the service path shown newest first with device names and
//! owners, each filter narrowing the rows, paging by sequence number, export links
//! carrying the filters, names with markup escaped, a bad filter value answered with
//! 422 naming the field; on the audit page, names beside ids and collapsed details.

#[path = "support/access_fixture.rs"]
mod access_fixture;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::domain::password::hash_password;
use zmesh_console::http::session;
use zmesh_console::store::{Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, SigningKey};

use access_fixture::{Seeded, CAROL, EVIL_NAME, EVIL_RULE};

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    sid: String,
    seeded: Seeded,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let now = now_ms();
    let phc = hash_password("auditors read everything".into())
        .await
        .unwrap();
    let u = store
        .create_user("audrey", Role::Auditor, &phc, now)
        .await
        .unwrap();
    let sid = Secret::generate("zms_");
    store
        .create_session(&u.id, &sid.hash(), now, now + 3_600_000)
        .await
        .unwrap();
    let state = AppState::new(store, SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    let seeded = access_fixture::seed(&state).await;
    Env {
        _dir: dir,
        app: app(state),
        sid: sid.expose().to_string(),
        seeded,
    }
}

impl Env {
    async fn get(&self, uri: &str) -> (StatusCode, String, axum::http::HeaderMap) {
        let r = Request::get(uri)
            .header(
                "cookie",
                format!("{}={}", session::SESSION_COOKIE, self.sid),
            )
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(r).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into(), headers)
    }
}

/// (seq, verdict) of each table row, in page order.
fn rows(html: &str) -> Vec<(u64, String)> {
    html.split("<tr data-seq=\"")
        .skip(1)
        .map(|s| {
            let (seq, rest) = s.split_once('"').unwrap();
            let v = rest
                .split_once("data-verdict=\"")
                .unwrap()
                .1
                .split_once('"')
                .unwrap()
                .0;
            (seq.parse().unwrap(), v.to_string())
        })
        .collect()
}

fn seqs(html: &str) -> Vec<u64> {
    rows(html).into_iter().map(|(s, _)| s).collect()
}

#[tokio::test]
async fn access_page_lists_filters_escapes_and_refuses_bad_filters() {
    let e = env().await;
    let Seeded {
        laptop, db, old, ..
    } = e.seeded;
    let (st, html, headers) = e.get("/ui/access").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(headers
        .get("content-security-policy")
        .is_some_and(|v| v.to_str().unwrap().contains("script-src 'self'")));
    // newest first: all five records
    assert_eq!(seqs(&html), [5, 4, 3, 2, 1]);
    assert!(html.contains("id=\"nav-access\""), "navigation link");
    assert!(html.contains("id=\"readonly-banner\""));
    // names with the id on hover, owners by email; the removed device by its id
    assert!(
        html.contains(&format!("title=\"{laptop}\">laptop</span>")),
        "{html}"
    );
    assert!(html.contains(&format!("title=\"{db}\">db</span>")));
    assert!(html.contains(CAROL));
    assert!(html.contains(&format!(
        "title=\"device removed since\">{old}</span> <span class=\"muted small\">(removed)</span>"
    )));
    // protocol and port, traffic in human units, both/one-sided, rule and version
    assert!(html.contains(">tcp/5432<") && html.contains(">udp/53<") && html.contains(">icmp<"));
    assert!(html.contains("1.5 KiB · 12 pkt") && html.contains("3.0 MiB · 2100 pkt"));
    assert!(html.contains("db-access <span class=\"muted\">v3</span>"));
    assert_eq!(html.matches(">one-sided</span></td>").count(), 3);
    assert_eq!(html.matches(">both</span></td>").count(), 2);
    assert!(html.contains("UTC</td>"));
    // markup in a device name and a rule name is shown, never run
    assert!(!html.contains("<script>alert"), "unescaped markup");
    assert!(html.contains("&lt;script&gt;alert(&#39;dev&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;script&gt;alert(&#39;rule&#39;)&lt;/script&gt;"));
    let _ = (EVIL_NAME, EVIL_RULE);
    // nothing on the page changes anything
    assert!(!html.contains("data-api="));
    assert_eq!(html.matches("method=\"post\"").count(), 1, "only sign-out");

    // each filter narrows the rows; the form keeps the values
    let (st, html, _) = e.get("/ui/access?verdict=denied&since=&user=").await;
    assert_eq!(st, StatusCode::OK);
    let r = rows(&html);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.iter().all(|(_, v)| v == "denied"));
    assert!(html.contains("<option value=\"denied\" selected>"));
    for fmt in ["csv", "jsonl", "cef"] {
        assert!(
            html.contains(&format!(
                "href=\"/api/v1/audit/access?format={fmt}&verdict=denied\""
            )),
            "export link {fmt}"
        );
    }
    let (_, html, _) = e.get("/ui/access?device=laptop").await;
    assert_eq!(seqs(&html), [3, 2, 1]);
    let (_, html, _) = e.get(&format!("/ui/access?device={laptop}")).await;
    assert_eq!(seqs(&html), [3, 2, 1]);
    // a removed device is still found by its id
    let (_, html, _) = e.get(&format!("/ui/access?device={old}")).await;
    assert_eq!(seqs(&html), [5]);
    let (_, html, _) = e
        .get("/ui/access?user=Carol%40example.com&one_sided=true")
        .await;
    assert_eq!(seqs(&html), [4, 2]);
    assert!(html.contains(
        "type=\"checkbox\" name=\"one_sided\" value=\"true\" id=\"f-one-sided\" checked"
    ));
    assert!(
        html.contains("/api/v1/audit/access?format=csv&user=Carol%40example.com&one_sided=true\"")
    );
    let (_, html, _) = e.get("/ui/access?one_sided=true").await;
    assert_eq!(seqs(&html), [5, 4, 2]);
    let (_, html, _) = e.get("/ui/access?before=3").await;
    assert_eq!(seqs(&html), [2, 1]);
    let (_, html, _) = e.get("/ui/access?since=2001-01-01&until=2001-02-01").await;
    assert_eq!(seqs(&html), Vec::<u64>::new());
    assert!(html.contains("value=\"2001-01-01\""));

    // a bad value: 422, the field named, no rows, the value shown back escaped
    for (q, field) in [
        ("verdict=maybe", "verdict"),
        ("since=yesterday", "since"),
        ("until=%3Cb%3E", "until"),
        ("one_sided=yes", "one_sided"),
        ("before=x", "before"),
        ("device=nosuch", "device"),
        ("user=nobody%40example.com", "user"),
        ("device=laptop&user=carol%40example.com", "user"),
        ("since=2024-05-02&until=2024-05-01", "until"),
    ] {
        let (st, html, _) = e.get(&format!("/ui/access?{q}")).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        let err = html
            .split_once("id=\"filter-error\">")
            .unwrap_or_else(|| panic!("{q}: no error shown"))
            .1;
        assert!(err.contains(&format!("— {field}: ")), "{q}: {err}");
        assert!(rows(&html).is_empty(), "{q}");
        assert!(!html.contains("<b>"), "{q}: markup from the query");
    }
}

#[tokio::test]
async fn audit_page_names_devices_and_users_and_folds_details() {
    let e = env().await;
    let Seeded { laptop, old, .. } = e.seeded;
    let (st, html, _) = e.get("/ui/audit").await;
    assert_eq!(st, StatusCode::OK);
    // the report key registration: the device as actor and target, by name and id
    assert!(
        html.contains(&format!(
            "<b>laptop</b> <span class=\"mono small id\">device:{laptop}</span>"
        )),
        "{html}"
    );
    // a removed device: the name its deletion recorded
    assert!(html.contains(&format!(
        "<b>old <span class=\"muted\">(removed)</span></b> <span class=\"mono small id\">device:{old}</span>"
    )));
    // the SSO user by email... (username and email are the same here: shown once)
    assert!(html.contains(&format!(
        "<span class=\"mono small id\">user:{CAROL}</span>"
    )));
    // details folded, before and after pretty-printed and escaped
    assert!(html.contains("<details class=\"small\"><summary class=\"mono\">"));
    assert!(html.contains("<h4>before</h4><pre>{\n"));
    assert!(html.contains("<h4>after</h4><pre>{\n"));
    assert!(html.contains("<td class=\"nowrap\">"));
    assert!(!html.contains("<script>alert"));
    // a failed check says which log failed and where
    let status = html.split_once("id=\"chain-status\"").unwrap().1;
    let status = status.split_once("</div>").unwrap().0;
    assert!(!status.contains("event ?: unknown"), "{status}");
}
