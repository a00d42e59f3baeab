//! The console's HTTP layer: [`AppState`], the route table ([`routes`]), the one
//! error-to-status mapping ([`ApiError`]), extractors, and the one [`Principal`] type
//! every surface authenticates to (admin token, API token or signed-in user), and the
//! request-counting middleware ([`metrics`]).
//!
//! The three surfaces, [`api`] (admin REST API), [`agent_api`] (enrollment and control
//! stream) and [`web`] (pages), sit under it and never import each other; what they
//! share is here (state, errors, principal, session cookies, JSON extractor), and every
//! change they make goes through `crate::service`.

pub mod error;
pub mod json;
pub mod metrics;
pub mod path;
pub mod principal;
pub mod query;
pub mod routes;
pub mod scope;
pub mod session;
pub mod state;

pub mod agent_api;
pub mod api;
pub mod openapi;
pub mod web;

use std::collections::BTreeMap;

use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use axum::Router;

pub use error::ApiError;
pub use json::ApiJson;
pub use principal::{Principal, Source};
pub use routes::{Access, RouteDef};
pub use state::{AppState, RelayDoor, RelayTicket};

/// Every route the console serves under `/api` and `/agent` (the web pages have their
/// own table, [`web::routes`]).
pub fn routes() -> Vec<RouteDef> {
    let mut r = openapi::routes();
    r.extend(api::routes());
    r.extend(agent_api::routes());
    r
}

/// The whole application: every route of [`routes`] and the web pages.
pub fn app(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, (Access, MethodRouter<AppState>)> = BTreeMap::new();
    for r in routes() {
        let mr = (r.handler)();
        match by_path.remove(r.path) {
            Some((access, prev)) => {
                assert_eq!(
                    access, r.access,
                    "one path must have one access kind: {}",
                    r.path
                );
                by_path.insert(r.path, (access, prev.merge(mr)));
            }
            None => {
                by_path.insert(r.path, (r.access, mr));
            }
        }
    }
    let mut admin = Router::new();
    let mut reader = Router::new();
    let mut other = Router::new();
    for (path, (access, mr)) in by_path {
        let mr = mr.fallback(|| async { ApiError::MethodNotAllowed });
        match access {
            Access::Admin => admin = admin.route(path, mr),
            Access::Reader => reader = reader.route(path, mr),
            _ => other = other.route(path, mr),
        }
    }
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        principal::require_admin,
    ));
    let reader = reader.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        principal::require_reader,
    ));
    other
        .merge(admin)
        .merge(reader)
        .merge(web::router(state.clone()))
        .fallback(|| async { ApiError::NotFound { what: "route" } })
        // Router::layer wraps each route (and the fallback) after routing, so the
        // middleware sees the matched route template.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(json::MAX_BODY))
        .with_state(state)
}
