//! `zmesh-console serve`: first-start setup of the data directory (TLS identity,
//! signing key, admin token, console.url) and the HTTPS server loop (tokio-rustls +
//! hyper-util, HTTP/1.1 with upgrades for WebSockets, and HTTP/2), with graceful
//! shutdown.

use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Service;
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;

use crate::bus::Bus;
use crate::domain::nat::NatAdvert;
use crate::http::AppState;
use crate::infra::config::ServeConfig;
use crate::infra::files::{
    admin_token_path, console_url_path, create_private_dir, load_or_create_signing_key,
    write_private_file,
};
use crate::store::{Backend, Role, Store};
use zmesh_shared::wire::RelayInfo;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes sure an admin can get in: keeps a valid DATA_DIR/admin.token, or creates the
/// first admin token when the database has no usable admin token. A token revoked on
/// purpose is not resurrected while other admin tokens exist.
pub async fn ensure_admin_token(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    let path = admin_token_path(data_dir);
    let now = now_ms();
    if let Ok(text) = fs::read_to_string(&path) {
        if store
            .admin_token_by_hash(&hash_secret(text.trim()), now)
            .await?
            .is_some()
        {
            println!("admin API token: {} (role admin)", path.display());
            return Ok(());
        }
    }
    let any_admin = store.list_admin_tokens().await?.iter().any(|t| {
        t.role == Role::Admin
            && t.revoked_at_ms.is_none()
            && t.expires_at_ms.is_none_or(|e| e > now)
    });
    if any_admin {
        tracing::warn!(path = %path.display(), "admin token file is missing or no longer valid; use another admin token");
        return Ok(());
    }
    let token = crate::service::tokens::create_initial_admin(store).await?;
    write_private_file(&path, format!("{}\n", token.expose()).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("created admin API token in {} (mode 0600)", path.display());
    Ok(())
}

/// Runs `serve` until SIGTERM/SIGINT.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    create_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    fs::set_permissions(&cfg.data_dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", cfg.data_dir.display()))?;
    let tls_id = crate::infra::tls::load_or_create(&cfg.data_dir, &cfg.tls)?;
    let tls = crate::infra::tls::server_config(&tls_id)?;
    let signing_key = load_or_create_signing_key(&cfg.data_dir)?;
    let store = Store::connect(&cfg.database_url)
        .await
        .context("opening the database")?;
    ensure_admin_token(&store, &cfg.data_dir).await?;
    let mut bus = Bus::new();
    if store.backend() == Backend::Postgres {
        bus = crate::bus::pg::attach(bus, &cfg.database_url)
            .await
            .context("LISTEN on PostgreSQL")?;
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    // One registry for the whole process, handed to the core and the STUN responder.
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint to {addr}"))?,
        ),
        None => None,
    };
    let mut stun_tasks = vec![];
    let mut stun_addrs = vec![];
    if let Some(addr) = cfg.stun_listen {
        let sock = crate::stun::bind(addr)
            .await
            .with_context(|| format!("binding the STUN responder to {addr}"))?;
        let local = sock.local_addr()?;
        println!("STUN responder on udp {local}");
        stun_tasks.push(tokio::spawn(crate::stun::run_counted(
            sock,
            Some(metrics.stun()),
        )));
        stun_addrs.push(local);
    }
    if let Some((addr, explicit)) = cfg.stun_alt {
        match crate::stun::bind(addr).await {
            Ok(sock) => {
                let local = sock.local_addr()?;
                println!("STUN responder (second port) on udp {local}");
                stun_tasks.push(tokio::spawn(crate::stun::run_counted(
                    sock,
                    Some(metrics.stun()),
                )));
                stun_addrs.push(local);
            }
            Err(e) if explicit => {
                return Err(e).with_context(|| format!("binding the STUN responder to {addr}"))
            }
            Err(e) => tracing::warn!(
                %addr, error = %e,
                "no second STUN port (agents cannot tell their NAT's mapping behaviour \
                 unless given another STUN server); set --stun-alt-port"
            ),
        }
    }
    let relay_listener = match cfg.relay_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the relay to {addr}"))?,
        ),
        None => None,
    };
    let relay_addr = relay_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let nat = nat_advert(&cfg.nat, &stun_addrs, relay_addr, cfg.builtin_relay);
    first_network(&store, &cfg).await?;
    let state = AppState::new(store, signing_key, Some(tls_id.fingerprint), bus)
        .await?
        .with_nat(nat)
        .with_public_url(cfg.public_url.clone())
        .with_device_key_lifetime(cfg.device_key_lifetime)
        .with_metrics(metrics);
    // Before anything else holds a clone of the state (`with_oidc` needs it unshared).
    let local = listener.local_addr()?;
    let state = match cfg.oidc.clone() {
        Some(o) => {
            let public = cfg
                .public_url
                .clone()
                .unwrap_or_else(|| crate::infra::config::local_url(local));
            let issuer = o.issuer.clone();
            let oidc =
                crate::infra::oidc::Oidc::new(o, &public).context("setting up single sign-on")?;
            println!(
                "single sign-on through {issuer}; register this redirect URI at the provider: {}",
                oidc.redirect_uri()
            );
            match oidc.refresh_interval() {
                Some(every) => println!(
                    "SSO users are re-checked at the identity provider every {} \
                     (--oidc-refresh-interval {})",
                    humantime::format_duration(every),
                    every.as_secs()
                ),
                None => println!(
                    "SSO users are not re-checked at the identity provider \
                     (--oidc-refresh-interval 0)"
                ),
            }
            state.with_oidc(oidc)
        }
        None => state,
    };
    // One relay behind both doors (the HTTPS port and --relay-listen), so devices
    // that came in through either reach each other.
    let relay = (cfg.builtin_relay || relay_listener.is_some()).then(|| builtin_relay(&state));
    let state = match &relay {
        Some(r) if cfg.builtin_relay => {
            println!(
                "relay on the HTTPS port (GET {})",
                zmesh_shared::wire::RELAY_PATH
            );
            state.with_relay(crate::relay::upgrade::door(Arc::clone(r)))
        }
        _ => state,
    };
    let relay_task = match (relay_listener, &relay) {
        (Some(l), Some(r)) => {
            println!("relay on tcp {}", l.local_addr()?);
            Some(tokio::spawn(crate::relay::serve(
                l,
                Arc::clone(&tls),
                Arc::clone(r),
                std::future::pending(),
            )))
        }
        _ => None,
    };
    let metrics_task = match metrics_listener {
        Some(l) => {
            println!("metrics on http://{}/metrics", l.local_addr()?);
            let state = state.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::scrape::serve(l, state, std::future::pending()).await {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            }))
        }
        None => None,
    };
    let url = crate::infra::config::local_url(listener.local_addr()?);
    fs::write(console_url_path(&cfg.data_dir), format!("{url}\n"))
        .context("writing console.url")?;
    println!(
        "TLS certificate {} SHA-256 fingerprint: {}",
        tls_id.cert_path.display(),
        tls_id.fingerprint
    );
    println!("peer-map signing key: {}", state.signing_key.public_key());
    println!(
        "listening on https://{} (local CLI: {url})",
        listener.local_addr()?
    );
    if state.store.count_users().await? == 0 {
        // No default credentials: the first admin comes from this one-time link.
        let t = crate::service::sessions::issue_setup_link(&state.store).await?;
        println!("no console user yet; create the first admin at {url}/ui/setup/{t} (one-time link, valid 24 h)");
    }
    tracing::info!(listen = %cfg.listen, "console started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = spawn_audit_tasks(&state, &cfg.audit, stop_rx);
    let idp_refresh = spawn_idp_refresh(&state);
    serve(
        listener,
        tls,
        state,
        crate::infra::shutdown::shutdown_signal(),
    )
    .await?;
    for t in stun_tasks
        .into_iter()
        .chain(relay_task)
        .chain(idp_refresh)
        .chain(metrics_task)
    {
        t.abort();
    }
    let _ = stop_tx.send(true);
    // the checkpoint task signs a last checkpoint on its way out
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures_util::future::join_all(tasks)).await;
    tracing::info!("console stopped");
    Ok(())
}

/// The periodic re-check of SSO users at the identity provider
/// ([`crate::service::idp_refresh`]), when single sign-on is on and the interval is not 0.
fn spawn_idp_refresh(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let oidc = state.oidc.clone()?;
    let interval = oidc.refresh_interval()?;
    let settings = crate::service::idp_refresh::RefreshSettings {
        issuer: oidc.issuer().to_string(),
        interval,
        rules: oidc.rules().clone(),
    };
    tracing::info!(every_s = interval.as_secs(), issuer = %settings.issuer, "IdP re-check of SSO users started");
    Some(tokio::spawn(crate::service::idp_refresh::run(
        state.core.clone(),
        settings,
        Arc::new(OidcChecker(oidc)),
    )))
}

/// The identity provider's side of the re-check: opens the sealed refresh token, uses
/// it at the token endpoint and seals the rotated one. No token reaches a log.
struct OidcChecker(Arc<crate::infra::oidc::Oidc>);

impl crate::service::idp_refresh::IdpChecker for OidcChecker {
    fn check<'a>(
        &'a self,
        due: &'a crate::store::DueUser,
    ) -> crate::service::idp_refresh::BoxFuture<'a, crate::service::idp_refresh::IdpAnswer> {
        use crate::infra::oidc::RefreshError;
        use crate::service::idp_refresh::IdpAnswer;
        use crate::store::{SealedToken, TokenUpdate};
        Box::pin(async move {
            let u = &due.user;
            let Some(sealed) = &due.token else {
                return IdpAnswer::NoToken {
                    token: TokenUpdate::Keep,
                };
            };
            let Some(token) = self.0.sealer().open(&u.id, sealed.as_str()) else {
                // sealed under another client secret: the user signs in again
                return IdpAnswer::NoToken {
                    token: TokenUpdate::Clear,
                };
            };
            let subject = u.subject.clone().unwrap_or_default();
            let r = match self.0.refresh(&token, &subject).await {
                Ok(r) => r,
                Err(RefreshError::Refused(code)) => {
                    return IdpAnswer::Refused {
                        reason: format!("refresh refused ({code})"),
                    }
                }
                Err(RefreshError::Unreachable(why)) => {
                    return IdpAnswer::Failed {
                        result: format!("unreachable: {why}"),
                        token: TokenUpdate::Keep,
                    }
                }
                Err(RefreshError::Other(why)) => {
                    return IdpAnswer::Failed {
                        result: format!("error: {why}"),
                        token: TokenUpdate::Keep,
                    }
                }
            };
            let token = match &r.refresh_token {
                Some(t) => TokenUpdate::Replace(SealedToken::new(self.0.sealer().seal(&u.id, t))),
                None => TokenUpdate::Keep,
            };
            match r.identity {
                Ok(id) => IdpAnswer::Active {
                    login: id.map(|id| crate::service::sso::VerifiedLogin {
                        issuer: id.issuer,
                        subject: id.subject,
                        email: id.email,
                        display_name: id.name,
                        groups: id.groups,
                    }),
                    token,
                },
                Err(e) => IdpAnswer::Failed {
                    result: format!("error: {}", e.reason()),
                    token,
                },
            }
        })
    }
}

/// The built-in relay: checks the database at connect time (active, key not expired)
/// and drops a device's connection as soon as it is revoked (the bus says so). Holds
/// no clone of `state`, so the state can still take it (`AppState::with_relay`).
pub fn builtin_relay(state: &AppState) -> Arc<crate::relay::Relay> {
    let mut rc = crate::relay::RelayConfig::new(state.signing_key.public_key());
    let store = state.store.clone();
    rc.authorize = Some(Arc::new(move |device| {
        let store = store.clone();
        Box::pin(async move {
            matches!(
                store.get_device(device).await,
                Ok(d) if crate::domain::peermap::is_live(&d, zmesh_shared::time::now_ms())
            )
        })
    }));
    let relay = crate::relay::Relay::new(rc);
    state
        .metrics
        .register_collector(Box::new(crate::relay::metrics::RelayCollector(Arc::clone(
            &relay,
        ))));
    let mut changes = state.bus.subscribe();
    let r = Arc::clone(&relay);
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(crate::bus::Change::DeviceRevoked { device_id, .. }) => {
                    let n = r.kick_device(device_id);
                    tracing::debug!(device = %device_id, connections = n, "revoked device off the relay");
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    relay
}

/// Serves [`crate::http::app`] over TLS on `listener` until `shutdown` resolves, then
/// drains in-flight requests (at most 10 s). Usable from tests with a 127.0.0.1:0
/// listener. The key-expiry sweeper ([`crate::service::expiry`]) runs alongside, since what it
/// finds must reach the agent streams served here.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    // Aborted when serving ends (dropping a JoinHandle would leave it running).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _expiry = AbortOnDrop(tokio::spawn(crate::service::expiry::run(
        state.core.clone(),
    )));
    let _rollouts = AbortOnDrop(tokio::spawn(crate::service::rollouts::run(
        state.core.clone(),
        state.ping_interval,
    )));
    let app = crate::http::app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut app = app.clone();
                    let mut req = req.map(axum::body::Body::new);
                    // handlers read the client address (audit source) from here
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    async move { app.call(req).await }
                });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain timeout");
    }
    Ok(())
}

/// Starts the checkpoint, retention and forwarding tasks of `serve`; they end when
/// `stop` turns true (the checkpoint task signs a last checkpoint first).
pub fn spawn_audit_tasks(
    state: &AppState,
    cfg: &crate::infra::config::AuditConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = vec![tokio::spawn(crate::service::audit::checkpoint::run(
        state.core.clone(),
        cfg.checkpoint_every_events,
        cfg.checkpoint_interval,
        stopped(stop.clone()),
    ))];
    if let Some(r) = cfg.retention {
        tasks.push(tokio::spawn(crate::service::audit::retention::run(
            state.core.clone(),
            r,
            stopped(stop.clone()),
        )));
    }
    if let Some(t) = cfg.syslog.clone() {
        tasks.push(tokio::spawn(crate::syslog::run(
            state.store.clone(),
            t,
            stopped(stop),
        )));
    }
    tasks
}

/// From `serve`'s flags and the addresses the built-in STUN responder and relay
/// listen on. The relay on the HTTPS port comes first, under the same name as its
/// TLS/TCP port (one relay, two doors).
fn nat_advert(
    nat: &crate::infra::config::NatConfig,
    stun_listen: &[SocketAddr],
    relay_listen: Option<SocketAddr>,
    builtin_relay: bool,
) -> NatAdvert {
    let mut stun: Vec<SocketAddr> = stun_listen.to_vec();
    stun.extend(nat.stun_servers.iter().copied());
    let mut relays: Vec<RelayInfo> = vec![];
    if builtin_relay {
        relays.push(RelayInfo {
            name: nat.relay_name.clone(),
            // no TLS/TCP address: agents that predate `https_upgrade` skip it
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            cert_sha256: None,
            https_upgrade: Some(zmesh_shared::wire::RELAY_PATH.to_string()),
        });
    }
    relays.extend(relay_listen.map(|addr| RelayInfo {
        name: nat.relay_name.clone(),
        addr,
        cert_sha256: None,
        https_upgrade: None,
    }));
    relays.extend(nat.relay_servers.iter().cloned());
    NatAdvert {
        stun,
        relays,
        token_ttl: nat.relay_token_ttl,
    }
}

/// Creates the first network with `--overlay-v4/-v6` on a fresh database; an existing
/// one keeps its stored ranges (a warning says when they differ from the flags).
async fn first_network(store: &Store, cfg: &ServeConfig) -> anyhow::Result<()> {
    let net = store
        .first_network(cfg.overlay_v4, cfg.overlay_v6)
        .await
        .context("creating the first network")?;
    if let Some(v4) = cfg.overlay_v4.filter(|v| *v != net.prefix_v4) {
        tracing::warn!(asked = %v4, kept = %net.prefix_v4, network = %net.name, "--overlay-v4 ignored: the network already exists with another range");
    }
    if let Some(v6) = cfg.overlay_v6.filter(|v| *v != net.prefix_v6) {
        tracing::warn!(asked = %v6, kept = %net.prefix_v6, network = %net.name, "--overlay-v6 ignored: the network already exists with another range");
    }
    Ok(())
}
