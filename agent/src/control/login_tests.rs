//! The login wait loop against a tiny scripted HTTP server: each connection gets the
//! next scripted answer (or is dropped unanswered, as a network error).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, NetworkId, SigningKey};

use super::*;

#[derive(Clone)]
enum Answer {
    Status(u16, String),
    Drop,
}

fn enroll_json(protocol: u16) -> String {
    serde_json::to_string(&EnrollResponse {
        protocol,
        device_id: DeviceId::new(),
        network_id: NetworkId::new(),
        name: "laptop".into(),
        state: DeviceState::Active,
        overlay_v4: "100.64.0.9".parse().unwrap(),
        overlay_v6: "fd00::9".parse().unwrap(),
        network_v4: "100.64.0.0/10".parse().unwrap(),
        network_v6: "fd00::/48".parse().unwrap(),
        credential: Secret::from_string("zmc_credentialvalue".into()),
        signing_key: SigningKey::generate().public_key(),
    })
    .unwrap()
}

fn pending() -> Answer {
    Answer::Status(202, r#"{"status":"pending"}"#.into())
}

/// Serves `script` in order (the last answer repeats); returns the wait URL and the
/// request bodies seen.
async fn server(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut i = 0;
        while let Ok((mut s, _)) = l.accept().await {
            let a = script[i.min(script.len() - 1)].clone();
            i += 1;
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            // headers and a small JSON body arrive together or in a few reads
            for _ in 0..20 {
                let n = s.read(&mut buf).await.unwrap_or(0);
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if n == 0 || text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                    break;
                }
            }
            seen2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&got).into_owned());
            match a {
                Answer::Drop => drop(s),
                Answer::Status(code, body) => {
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            }
        }
    });
    (format!("http://{addr}/agent/v1/login/wait"), seen)
}

#[tokio::test]
async fn pending_then_enrolled() {
    let (url, seen) = server(vec![
        pending(),
        pending(),
        Answer::Status(200, enroll_json(PROTOCOL_VERSION)),
    ])
    .await;
    let p = PendingLogin::for_test(&url, Duration::from_secs(30));
    let r = p.wait().await.unwrap();
    assert_eq!(r.name, "laptop");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].contains(r#""poll_secret":"zmw_pollsecretvalue""#));
    // the secret stays out of Debug output
    assert!(!format!("{p:?}").contains("zmw_pollsecret"));
}

#[tokio::test]
async fn expired_unknown_and_refused_end_the_wait() {
    let (url, _) = server(vec![pending(), Answer::Status(410, String::new())]).await;
    let e = PendingLogin::for_test(&url, Duration::from_secs(30))
        .wait()
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::Expired), "{e}");
    assert!(e.to_string().contains("expired"), "{e}");

    let (url, _) = server(vec![Answer::Status(401, String::new())]).await;
    let e = PendingLogin::for_test(&url, Duration::from_secs(30))
        .wait()
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::Unknown), "{e}");

    let body = r#"{"error":{"code":"bad_request","message":"poll_secret is malformed"}}"#;
    let (url, _) = server(vec![Answer::Status(422, body.into())]).await;
    let e = PendingLogin::for_test(&url, Duration::from_secs(30))
        .wait()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            LoginError::Enroll(EnrollError::Refused { status: 422, .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("poll_secret is malformed"), "{e}");
}

#[tokio::test]
async fn network_errors_and_5xx_are_retried() {
    let (url, seen) = server(vec![
        Answer::Drop,
        Answer::Status(503, "busy".into()),
        Answer::Drop,
        Answer::Status(200, enroll_json(PROTOCOL_VERSION)),
    ])
    .await;
    let r = PendingLogin::for_test(&url, Duration::from_secs(30))
        .wait()
        .await
        .unwrap();
    assert_eq!(r.name, "laptop");
    assert_eq!(seen.lock().unwrap().len(), 4);

    // nobody listening at all: retried until the deadline, then a clear timeout
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/agent/v1/login/wait", l.local_addr().unwrap());
    drop(l);
    let t = Instant::now();
    let e = PendingLogin::for_test(&dead, Duration::from_secs(2))
        .wait()
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::TimedOut(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn the_wait_is_bounded_while_pending() {
    let (url, seen) = server(vec![pending()]).await;
    let t = Instant::now();
    let e = PendingLogin::for_test(&url, Duration::from_millis(2500))
        .wait()
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::TimedOut(_)), "{e}");
    assert!(e.to_string().contains("run `zmesh up` again"), "{e}");
    let el = t.elapsed();
    assert!(
        el >= Duration::from_secs(2) && el < Duration::from_secs(5),
        "{el:?}"
    );
    // quick "pending" answers are paced, about one a second
    let n = seen.lock().unwrap().len();
    assert!((2..=4).contains(&n), "{n} polls");
}

#[tokio::test]
async fn a_console_of_another_protocol_is_refused() {
    let (url, _) = server(vec![Answer::Status(200, enroll_json(PROTOCOL_VERSION + 1))]).await;
    let e = PendingLogin::for_test(&url, Duration::from_secs(10))
        .wait()
        .await
        .unwrap_err();
    assert!(
        matches!(e, LoginError::Enroll(EnrollError::Protocol(_))),
        "{e}"
    );
}

#[test]
fn budget_is_the_expiry_capped_at_ten_minutes() {
    assert_eq!(wait_budget(1_000, 1_000), Duration::ZERO);
    assert_eq!(wait_budget(500, 1_000), Duration::ZERO);
    assert_eq!(wait_budget(61_000, 1_000), Duration::from_secs(60));
    assert_eq!(wait_budget(i64::MAX, 0), MAX_LOGIN_WAIT);
}
