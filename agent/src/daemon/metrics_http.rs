//! `zmesh daemon --metrics-listen ADDR`: a minimal plain-HTTP/1.1 listener that answers
//! `GET /metrics` with [`Daemon::metrics_text`] and 404 to anything else, one request
//! per connection. Small on purpose (no HTTP stack in the agent for one route): the
//! request head is read with a size and time bound, and the connection is closed after
//! the answer. It takes no credentials, so the address is loopback unless the daemon
//! was started with `--metrics-allow-remote`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Daemon;

/// Largest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is aborted.
pub(super) async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &d).await {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
        });
    }
}

async fn answer(mut s: TcpStream, d: &Daemon) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut s)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let (status, ct, body) = match Request::parse(&head) {
        Some(r) if r.method == "GET" && r.path == "/metrics" => {
            let openmetrics = zmesh_shared::metrics::wants_openmetrics(r.accept.as_deref());
            let (body, ct) = d.metrics_text(openmetrics).await;
            ("200 OK", ct, body)
        }
        Some(_) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_string(),
        ),
        None => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

/// Reads up to the blank line ending the request head (at most [`MAX_HEAD`] bytes).
async fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// The parts of a request head the endpoint uses.
#[derive(Debug, PartialEq)]
struct Request {
    method: String,
    path: String,
    accept: Option<String>,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target, version) = (first.next()?, first.next()?, first.next()?);
        if !version.starts_with("HTTP/1.") {
            return None;
        }
        let path = target.split('?').next().unwrap_or(target);
        let accept = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
            .map(|(_, v)| v.trim().to_string());
        Some(Request {
            method: method.to_string(),
            path: path.to_string(),
            accept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scrape() {
        let r = Request::parse(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT: application/openmetrics-text\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept.as_deref(), Some("application/openmetrics-text"));
        assert_eq!(Request::parse(b"garbage"), None);
        assert_eq!(Request::parse(b"GET / SPDY/9\r\n\r\n"), None);
    }
}
