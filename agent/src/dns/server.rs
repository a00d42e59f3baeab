//! The resolver's socket: UDP on the resolver address, answers from the current
//! [`Names`], names under a split-DNS domain forwarded to that domain's resolvers, and
//! every other query forwarded unchanged to the host's previous resolvers (the first that answers within [`FORWARD_TIMEOUT`] wins), its reply
//! relayed back. It serves this host only: a query from another overlay address (a
//! peer, through the tunnel) gets no answer. Bounded: at most [`MAX_FORWARDS`] forwards in flight; more are
//! dropped (the client retries).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};

use super::names::{Action, Names};

pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
pub const MAX_FORWARDS: usize = 256;
/// Large enough for any EDNS answer a client asks for over UDP.
const BUF: usize = 4096;

/// Serves until `stop` turns true.
pub async fn serve(
    sock: UdpSocket,
    upstreams: Vec<SocketAddr>,
    names: watch::Receiver<Arc<Names>>,
    mut stop: watch::Receiver<bool>,
) {
    let sock = Arc::new(sock);
    let upstreams: Arc<[SocketAddr]> = upstreams.into();
    let permits = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; BUF];
    loop {
        let (n, from) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "resolver receive failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let query = &buf[..n];
        let action = {
            let table = names.borrow();
            if table.from_peer(from.ip()) {
                tracing::trace!(%from, "dns query from a peer refused");
                continue;
            }
            table.answer(query)
        };
        match action {
            Action::Reply(b) => {
                tracing::trace!(%from, bytes = b.len(), "dns answer");
                if let Err(e) = sock.send_to(&b, from).await {
                    tracing::debug!(error = %e, %from, "resolver send failed");
                }
            }
            Action::Drop => tracing::trace!(%from, "dns query dropped"),
            Action::Forward | Action::ForwardTo(_) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!("too many forwarded queries in flight; dropping one");
                    continue;
                };
                let ups: Arc<[SocketAddr]> = match action {
                    Action::ForwardTo(split) => split.into(),
                    _ => upstreams.clone(),
                };
                let (sock, q) = (sock.clone(), query.to_vec());
                tokio::spawn(async move {
                    if let Some(r) = forward(&q, &ups).await {
                        let _ = sock.send_to(&r, from).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Asks each upstream in turn; the first reply with the query's id.
async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(s) = UdpSocket::bind(bind).await else {
            continue;
        };
        if s.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; BUF];
        let got = tokio::time::timeout(FORWARD_TIMEOUT, async {
            loop {
                let (n, from) = s.recv_from(&mut buf).await.ok()?;
                if from == *up && n >= 2 && buf[..2] == query[..2] {
                    return Some(n);
                }
            }
        })
        .await;
        match got {
            Ok(Some(n)) => {
                tracing::trace!(upstream = %up, bytes = n, "dns forwarded");
                return Some(buf[..n].to_vec());
            }
            _ => tracing::debug!(upstream = %up, "upstream resolver did not answer"),
        }
    }
    None
}
