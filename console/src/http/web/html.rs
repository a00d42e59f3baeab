//! HTML building blocks of the web console: escaping, the page frame (navigation,
//! signed-in user, CSRF meta tag), time formatting and the security headers every
//! page carries. Pages are plain `format!` templates compiled into the binary; the
//! one stylesheet and the one script are embedded with `include_str!`.

use std::fmt::Write as _;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::session::WebUser;

pub const APP_CSS: &str = include_str!("../../../assets/app.css");
pub const APP_JS: &str = include_str!("../../../assets/app.js");

/// Escapes text for element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a query parameter value.
pub fn url_enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// `2025-03-01 12:00:05 UTC` for Unix milliseconds.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant), proleptic Gregorian
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// `5 s ago`, `3 min ago`, `2 h ago`, `4 d ago`, or `never` (as the CLI shows it).
pub fn ago(ms: Option<i64>, now: i64) -> String {
    crate::domain::presence::ago(ms, now)
}

pub fn opt_time(ms: Option<i64>, none: &str) -> String {
    ms.map(time).unwrap_or_else(|| none.to_string())
}

const NAV: &[(&str, &str, bool)] = &[
    ("overview", "Overview", false),
    ("devices", "Devices", false),
    ("routes", "Routes", false),
    ("keys", "Enrollment keys", false),
    ("policy", "Policy", false),
    ("dns", "Names", false),
    ("changes", "Changes", false),
    ("audit", "Audit log", false),
    ("access", "Access log", false),
    ("users", "Users & tokens", true),
];

/// A full page for a signed-in user. `active` names the navigation entry.
pub fn page(user: &WebUser, active: &str, title: &str, body: &str) -> Response {
    let mut nav = String::new();
    for (id, label, admin_only) in NAV {
        if *admin_only && !user.is_admin() {
            continue;
        }
        let cls = if *id == active {
            " class=\"active\""
        } else {
            ""
        };
        let href = if *id == "overview" {
            "/ui/".to_string()
        } else {
            format!("/ui/{id}")
        };
        let _ = write!(nav, "<a href=\"{href}\"{cls} id=\"nav-{id}\">{label}</a>");
    }
    let ro = if user.is_admin() {
        String::new()
    } else {
        "<div class=\"banner\" id=\"readonly-banner\">Read-only: you are signed in as an auditor. \
         You can read and export everything, and change nothing.</div>"
            .to_string()
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · zmesh console</title>
<link rel="stylesheet" href="/ui/assets/app.css">
<script src="/ui/assets/app.js" defer></script>
</head><body data-role="{role}">
<header><div class="brand">zmesh</div>{picker}<nav>{nav}</nav>
<div class="who"><span id="who">{user} <span class="role role-{role}">{role}</span></span>
<form method="post" action="/ui/signout" class="inline"><input type="hidden" name="csrf" value="{csrf}">
<button type="submit" id="signout" class="link">Sign out</button></form></div></header>
{ro}<main><h1>{title}</h1>
{body}
</main></body></html>"#,
        csrf = esc(&user.csrf),
        // console-wide accounts pick the network a page shows; scoped ones have one
        picker = if user.user.network_id.is_none() {
            "<select id=\"network-picker\" aria-label=\"Network\" hidden></select>"
        } else {
            ""
        },
        title = esc(title),
        role = user.user.role.as_str(),
        user = esc(&user.user.username),
    );
    respond(StatusCode::OK, html)
}

/// A page without the signed-in frame (sign-in, setup, errors before sign-in).
pub fn bare_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · zmesh console</title>
<link rel="stylesheet" href="/ui/assets/app.css">
</head><body class="bare"><main class="narrow"><div class="brand big">zmesh</div>
<h1>{title}</h1>
{body}
</main></body></html>"#,
        title = esc(title)
    );
    respond(status, html)
}

/// An HTML response with the headers every console page carries: no caching, no
/// framing, no inline script (CSP), no referrer to other sites (setup links hold a
/// secret).
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null`
        // with form posts, which the origin check must refuse
        HeaderValue::from_static("same-origin"),
    );
}

/// An HTML error page for a signed-in user.
pub fn error_page(user: &WebUser, status: StatusCode, message: &str) -> Response {
    let mut r = page(
        user,
        "",
        status.canonical_reason().unwrap_or("Error"),
        &format!("<p class=\"error\" id=\"page-error\">{}</p>", esc(message)),
    );
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_709_294_405_000), "2024-03-01 12:00:05 UTC");
        assert_eq!(ago(Some(1000), 61_000), "1 min ago");
        assert_eq!(ago(None, 0), "never");
        assert_eq!(url_enc("a b&c"), "a%20b%26c");
    }
}
