//! Mounts every endpoint at each path ruma's metadata lists for it, plus CORS, the
//! unknown-endpoint fallback and a panic guard.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    response::IntoResponse,
    routing::{MethodFilter, on},
};
use http::{HeaderValue, Method, header};
use ruma::api::{IncomingRequest, path_builder::PathBuilder};
use tower_http::cors::{Any, CorsLayer};

use super::ruma::{AuthKind, Ruma, RumaResponse};
use crate::{
    error::{Error, Result},
    service::Services,
};

pub type AppRouter = Router<Arc<Services>>;

/// Registers `handler` for every path of `Req`.
pub fn route<Req, F, Fut>(mut router: AppRouter, handler: F) -> AppRouter
where
    Req: IncomingRequest + Send + 'static,
    Req::Authentication: AuthKind,
    Req::OutgoingResponse: Send + 'static,
    F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Req::OutgoingResponse>> + Send + 'static,
{
    let filter = MethodFilter::try_from(Req::METHOD).expect("ruma methods are standard");
    let h = move |State(services): State<Arc<Services>>, request: Ruma<Req>| {
        let handler = handler.clone();
        async move { handler(services, request).await.map(RumaResponse) }
    };
    for path in all_paths::<Req>() {
        router = router.route(&path, on(filter, h.clone()));
    }
    router
}

/// Registers a handler that builds its own HTTP response (e.g. `/sync`, whose JSON is
/// assembled directly).
pub fn route_any<Req, F, Fut, R>(mut router: AppRouter, handler: F) -> AppRouter
where
    Req: IncomingRequest + Send + 'static,
    Req::Authentication: AuthKind,
    F: Fn(Arc<Services>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
    R: IntoResponse + 'static,
{
    let filter = MethodFilter::try_from(Req::METHOD).expect("ruma methods are standard");
    let h = move |State(services): State<Arc<Services>>, request: Ruma<Req>| {
        let handler = handler.clone();
        async move { handler(services, request).await }
    };
    for path in all_paths::<Req>() {
        router = router.route(&path, on(filter, h.clone()));
    }
    router
}

/// ruma's paths, plus the forms clients use for an empty state key: `.../state/{type}` and
/// `.../state/{type}/` (axum matches no empty segment). The extractor pads missing
/// trailing path arguments with empty strings.
pub(crate) fn all_paths<Req: IncomingRequest>() -> Vec<String> {
    let mut paths = Vec::new();
    for path in Req::PATH_BUILDER.all_paths() {
        paths.push(path.to_owned());
        if let Some(prefix) = path.strip_suffix("/{state_key}") {
            paths.push(prefix.to_owned());
            paths.push(format!("{prefix}/"));
        }
    }
    paths
}

pub fn build(services: Arc<Services>) -> Router {
    let router = super::client::routes(Router::new());
    let router = super::server::routes(router);
    let router = super::federation::routes(router);
    let router = super::admin::routes(router);
    router
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    header::ORIGIN,
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                    header::AUTHORIZATION,
                    header::HeaderName::from_static("x-requested-with"),
                ]),
        )
        .layer(axum::middleware::from_fn(log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::unknown("Internal server error").into_response()
        }))
        .with_state(services)
}

/// Method, path, status and time at `debug`. The query string is never logged: it may hold
/// an `access_token`.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    response
}

async fn unrecognized(method: Method) -> axum::response::Response {
    if method == Method::OPTIONS {
        // Preflight for a path we do not serve still gets CORS headers from the layer.
        return http::StatusCode::NO_CONTENT.into_response();
    }
    Error::unrecognized("Unrecognized request").into_response()
}

async fn method_not_allowed() -> axum::response::Response {
    let mut response = Error::unrecognized("Method not allowed for this endpoint")
        .with_status(http::StatusCode::METHOD_NOT_ALLOWED)
        .into_response();
    response
        .headers_mut()
        .insert("x-conduit", HeaderValue::from_static("405"));
    response
}
