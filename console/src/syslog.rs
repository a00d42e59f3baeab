//! SIEM forwarding: every audit event as an RFC 5424 syslog message over TCP, or TLS
//! (RFC 5425), with octet-counting framing (RFC 6587). Delivery is at least once: the
//! position is stored in the database after the receiver took a batch, so a restart
//! resends at most the last batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zmesh_shared::audit::AuditEvent;

use crate::store::{EventFilter, Store};

/// Name of the forwarding cursor in the database.
const CURSOR: &str = "syslog";
const POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Private Enterprise Number used in the structured-data id (the IANA example number).
const SD_ID: &str = "zmesh@32473";

pub use crate::infra::config::{SyslogConfigError, SyslogTarget};

fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// MSGID is printable US-ASCII without spaces, at most 32 characters.
fn msgid(action: &str) -> String {
    let s: String = action
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// One RFC 5424 message (facility 13, log audit), without framing.
pub fn format_event(e: &AuditEvent, hostname: &str) -> String {
    let severity = match e.action.as_str() {
        "auth.failed" | "auth.forbidden" | "enroll.rejected" => 4,
        _ => 5,
    };
    let pri = 13 * 8 + severity;
    let t = std::time::UNIX_EPOCH + Duration::from_millis(e.time_ms.max(0) as u64);
    let ts = humantime::format_rfc3339_millis(t);
    let mut sd = format!(
        "[{SD_ID} seq=\"{}\" hash=\"{}\" prev=\"{}\" actor=\"{}\"",
        e.seq,
        e.hash,
        e.prev_hash,
        sd_escape(&e.actor)
    );
    if let Some(t) = &e.target {
        sd.push_str(&format!(" target=\"{}\"", sd_escape(t)));
    }
    if let Some(s) = &e.source_addr {
        sd.push_str(&format!(" src=\"{}\"", sd_escape(s)));
    }
    sd.push(']');
    let body = serde_json::to_string(e).unwrap_or_default();
    format!(
        "<{pri}>1 {ts} {hostname} zmesh-console {} {} {sd} \u{feff}{body}",
        std::process::id(),
        msgid(&e.action)
    )
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if h.is_empty() {
        "-".into()
    } else {
        h
    }
}

type Conn = Box<dyn AsyncWrite + Unpin + Send>;

async fn connect(t: &SyslogTarget) -> anyhow::Result<Conn> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&t.addr)).await??;
    tcp.set_nodelay(true)?;
    match &t.tls_ca {
        None => Ok(Box::new(tcp)),
        Some(ca) => {
            let cfg = crate::infra::tls_client::ca_client_config(ca)?;
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await?;
            Ok(Box::new(tls))
        }
    }
}

/// Forwards events until `stop` resolves, reconnecting with backoff.
pub async fn run(store: Store, target: SyslogTarget, stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let host = hostname();
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let wait = if conn.is_some() { POLL } else { backoff };
        tokio::select! {
            _ = &mut stop => {
                // a TLS receiver otherwise logs the connection as cut off (no close_notify)
                if let Some(mut c) = conn.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.shutdown()).await;
                }
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let r: anyhow::Result<()> = async {
            let cursor = store.forward_cursor(CURSOR).await?;
            let head = store.audit_head().await?;
            if head.seq <= cursor {
                return Ok(());
            }
            if conn.is_none() {
                conn = Some(connect(&target).await?);
                tracing::info!(receiver = %target.addr, "connected to the syslog receiver");
            }
            let w = conn.as_mut().expect("connected above");
            let page = store
                .audit_events_page(cursor, head.seq, &EventFilter::default(), 500)
                .await?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(());
            };
            let mut buf = Vec::new();
            for e in &page {
                let m = format_event(e, &host);
                buf.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
            }
            w.write_all(&buf).await?;
            w.flush().await?;
            store.set_forward_cursor(CURSOR, last).await?;
            Ok(())
        }
        .await;
        match r {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(error = %e, receiver = %target.addr, "syslog forwarding failed; retrying");
                conn = None;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmesh_shared::audit::EventBody;

    #[test]
    fn rfc5424_shape() {
        let e = EventBody {
            time_ms: 1_700_000_000_123,
            actor: "admin:o\"p]s".into(),
            action: "device.revoke".into(),
            target: Some("device:dev_1".into()),
            source_addr: Some("127.0.0.1".into()),
            ..Default::default()
        }
        .seal(7, zmesh_shared::audit::GENESIS_HASH);
        let m = format_event(&e, "host1");
        assert!(
            m.starts_with("<109>1 2023-11-14T22:13:20.123Z host1 zmesh-console "),
            "{m}"
        );
        assert!(m.contains(" device.revoke [zmesh@32473 seq=\"7\" "), "{m}");
        assert!(m.contains("actor=\"admin:o\\\"p\\]s\""), "{m}");
        assert!(SyslogTarget::parse("udp://x:1", None).is_err());
        assert!(matches!(
            SyslogTarget::parse("tls://x:1", None),
            Err(SyslogConfigError::NoCa)
        ));
        assert_eq!(
            SyslogTarget::parse("tcp://[::1]:514", None).unwrap().host,
            "::1"
        );
    }
}
