//! Self-test of the OpenID Provider fixture (`support/oidc.rs`, `fixtures/oidc/`): its
//! discovery and JWKS, a full authorization-code + PKCE exchange done by hand, the claims
//! in the ID token, refused logins, users changed or disabled between refreshes, key
//! rotation, and exit when its stdin closes. Without node the test prints a notice and
//! passes, unless `CI` is set.

#[path = "support/oidc.rs"]
mod oidc;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use reqwest::Url;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use oidc::{login_with_http, try_login_with_http, OidcProvider};

const CLIENT_ID: &str = "zmesh-console-test";
const CLIENT_SECRET: &str = "fixture-secret-not-real";
const REDIRECT: &str = "https://127.0.0.1:4443/oidc/callback";

fn users() -> Value {
    json!({
        "alice": {"password": "alice-pw", "email": "alice@example.com", "name": "Alice", "groups": ["eng"]},
        "bob": {"password": "bob-pw", "email": "bob@example.com", "name": "Bob", "groups": ["ops", "eng"]},
        "carol": {"password": "carol-pw", "email": "carol@example.com", "name": "Carol", "groups": [], "disabled": true}
    })
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// One authorization request: its URL and the secrets the client keeps.
struct AuthRequest {
    url: String,
    verifier: String,
    state: String,
    nonce: String,
}

fn authorize(issuer: &str, scope: &str) -> AuthRequest {
    let verifier = random_b64(32);
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    let (state, nonce) = (random_b64(16), random_b64(16));
    let mut url = Url::parse(&format!("{issuer}/auth")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    AuthRequest {
        url: url.to_string(),
        verifier,
        state,
        nonce,
    }
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    let part = jwt.split('.').nth(i).expect("JWT part");
    serde_json::from_slice(&B64.decode(part).expect("base64url")).expect("JSON")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// POSTs to the token endpoint; returns the status and the JSON body.
async fn token(endpoint: &str, basic: bool, form: &[(&str, &str)]) -> (u16, Value) {
    let mut form = form.to_vec();
    let mut req = http().post(endpoint);
    if basic {
        req = req.basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
    } else {
        form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
    }
    let r = req.form(&form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Log in as `user` and exchange the code: the token response.
async fn code_flow(p: &OidcProvider, token_ep: &str, user: &str, pw: &str) -> (AuthRequest, Value) {
    let a = authorize(p.issuer(), "openid email profile groups offline_access");
    let callback = login_with_http(&a.url, user, pw).await;
    assert!(callback.starts_with(REDIRECT), "callback {callback}");
    let q = query(&callback);
    assert_eq!(q.get("state"), Some(&a.state), "state round trip");
    assert_eq!(q.get("iss").map(String::as_str), Some(p.issuer()));
    let code = q
        .get("code")
        .unwrap_or_else(|| panic!("no code in {callback}"));
    let (status, body) = token(
        token_ep,
        true,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &a.verifier),
        ],
    )
    .await;
    assert_eq!(
        status,
        200,
        "token response {body}\nprovider log:\n{}",
        p.log()
    );
    (a, body)
}

#[tokio::test]
async fn oidc_provider_fixture_speaks_oidc() {
    let Some(mut p) = OidcProvider::start_or_skip(
        "oidc_provider_fixture_speaks_oidc",
        &users(),
        CLIENT_ID,
        CLIENT_SECRET,
    ) else {
        return;
    };
    let issuer = p.issuer().to_string();

    // Discovery and JWKS.
    let disco = get_json(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(disco["issuer"], json!(issuer));
    assert!(
        disco["code_challenge_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("S256")),
        "{disco}"
    );
    for s in ["openid", "email", "profile", "groups", "offline_access"] {
        assert!(disco["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(s)));
    }
    let token_ep = disco["token_endpoint"].as_str().unwrap().to_string();
    let jwks_uri = disco["jwks_uri"].as_str().unwrap().to_string();
    let jwks = get_json(&jwks_uri).await;
    let kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert!(!kids.is_empty(), "{jwks}");
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("d").is_none()));

    // Authorization code + PKCE, by hand.
    let (a, tokens) = code_flow(&p, &token_ep, "alice", "alice-pw").await;
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let header = jwt_part(id_token, 0);
    assert_eq!(header["alg"], "RS256");
    assert!(kids.contains(&header["kid"].as_str().unwrap().to_string()));
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["iss"], json!(issuer));
    assert_eq!(claims["aud"], json!(CLIENT_ID));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["groups"], json!(["eng"]));
    assert_eq!(claims["nonce"], json!(a.nonce));
    assert_eq!(tokens["token_type"], "Bearer");
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();

    // The code is single-use, and the verifier must match.
    let (_, tokens_b) = {
        let b = authorize(&issuer, "openid email groups");
        let cb = login_with_http(&b.url, "bob", "bob-pw").await;
        let code = query(&cb)["code"].clone();
        let (status, body) = token(
            &token_ep,
            true,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &random_b64(32)),
            ],
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid_grant")),
            "{body}"
        );
        (b, body)
    };
    assert!(tokens_b.get("id_token").is_none());

    // Groups changed in the users file show in the next refresh (client_secret_post).
    let mut u = users();
    u["alice"]["groups"] = json!(["eng", "ops"]);
    p.set_users(&u);
    let (status, body) = token(
        &token_ep,
        false,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = jwt_part(body["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["groups"], json!(["eng", "ops"]));
    let refresh = body["refresh_token"].as_str().unwrap().to_string();

    // A disabled user's refresh fails.
    u["alice"]["disabled"] = json!(true);
    p.set_users(&u);
    let (status, body) = token(
        &token_ep,
        true,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_grant")),
        "{body}"
    );
    p.set_users(&users());

    // A wrong password leaves the login page with an error and no code.
    let a = authorize(&issuer, "openid");
    let e = try_login_with_http(&a.url, "alice", "wrong")
        .await
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 401, "{e}");
    assert_eq!(e.error.as_deref(), Some("Invalid username or password."));
    assert!(e.page.contains("id=\"signin\"") && !e.page.contains("code="));
    let e = try_login_with_http(&a.url, "nobody", "x")
        .await
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 401, "{e}");

    // A disabled user cannot log in, even with the right password.
    let a = authorize(&issuer, "openid");
    let e = try_login_with_http(&a.url, "carol", "carol-pw")
        .await
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 401, "{e}");
    assert_eq!(e.error.as_deref(), Some("This account is disabled."));

    // Key rotation: new keys sign, old ones stay published until retired.
    let rotated = p.rotate_keys(false).await;
    assert!(kids.iter().all(|k| rotated.contains(k)) && rotated.len() == kids.len() * 2);
    let (_, tokens) = code_flow(&p, &token_ep, "bob", "bob-pw").await;
    let header = jwt_part(tokens["id_token"].as_str().unwrap(), 0);
    assert_eq!(
        header["kid"],
        json!(rotated[0]),
        "signed with the newest RS256 key"
    );
    assert_eq!(
        jwt_part(tokens["id_token"].as_str().unwrap(), 1)["groups"],
        json!(["ops", "eng"])
    );
    let retired = p.rotate_keys(true).await;
    let jwks = get_json(&jwks_uri).await;
    let now: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(now, retired.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rotated.iter().all(|k| !now.contains(&k.as_str())));

    // It exits by itself when its stdin closes (the test process dying).
    p.close_stdin();
    assert!(
        p.wait_exit(Duration::from_secs(10)),
        "provider still running after stdin closed"
    );
}
