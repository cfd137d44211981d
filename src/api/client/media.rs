//! Content repository, uploading side: `POST /upload`, `POST /create` with `PUT
//! /upload/{serverName}/{mediaId}` (asynchronous upload) and the media configuration.
//! Uploads stream the body to storage chunk by chunk (never whole in memory), so they read
//! the request themselves instead of through the `Ruma` extractor.

// The legacy config endpoint is deprecated by the spec, and served while configured.
#![allow(deprecated)]

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use http::{Request, header};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, UInt,
    api::{
        Metadata,
        client::{authenticated_media, media},
    },
};
use serde_json::json;

use crate::{
    api::{
        router::{AppRouter, all_paths, route},
        ruma::{Ruma, authenticate, form_urlencoded_get},
    },
    error::{Error, Result},
    service::Services,
};

pub fn routes(mut router: AppRouter) -> AppRouter {
    for path in all_paths::<media::create_content::v3::Request>() {
        router = router.route(&path, on(MethodFilter::POST, upload));
    }
    for path in all_paths::<media::create_content_async::v3::Request>() {
        router = router.route(&path, on(MethodFilter::PUT, upload_async));
    }
    let router = route(router, create_mxc_uri);
    let router = route(router, config_v1);
    let router = route(router, config_legacy);
    let router = super::media_preview::routes(router);
    super::media_download::routes(router)
}

/// The body's declared length, when it already exceeds the limit: refused before reading.
/// Without a `Content-Length` (chunked) the limit is enforced while streaming.
fn check_declared_length(services: &Services, parts: &http::request::Parts) -> Result<()> {
    let limit = services.media.max_upload();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Error::too_large(format!(
            "Uploads are limited to {limit} bytes"
        )));
    }
    Ok(())
}

fn upload_fields(parts: &http::request::Parts) -> (Option<String>, Option<String>) {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(ToOwned::to_owned);
    let filename = parts
        .uri
        .query()
        .and_then(|q| form_urlencoded_get(q, "filename"));
    (content_type, filename)
}

async fn upload(State(services): State<Arc<Services>>, request: Request<Body>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let (user, _) = authenticate(
            &services,
            &parts,
            <media::create_content::v3::Request as Metadata>::RATE_LIMITED,
        )?;
        check_declared_length(&services, &parts)?;
        let (content_type, filename) = upload_fields(&parts);
        let media_id = services
            .media
            .upload(&user, None, content_type, filename, body.into_data_stream())
            .await?;
        let uri = format!("mxc://{}/{media_id}", services.globals.server_name());
        Ok::<_, Error>(Json(json!({ "content_uri": uri })))
    }
    .await;
    result.into_response()
}

async fn upload_async(
    State(services): State<Arc<Services>>,
    Path((server_name, media_id)): Path<(String, String)>,
    request: Request<Body>,
) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let (user, _) = authenticate(
            &services,
            &parts,
            <media::create_content_async::v3::Request as Metadata>::RATE_LIMITED,
        )?;
        let server: OwnedServerName = server_name
            .try_into()
            .map_err(|_| Error::not_found("Unknown media id"))?;
        // Before reading the body: a refused upload costs no transfer.
        services.media.check_pending(&user, &server, &media_id)?;
        check_declared_length(&services, &parts)?;
        let (content_type, filename) = upload_fields(&parts);
        services
            .media
            .upload(
                &user,
                Some(&media_id),
                content_type,
                filename,
                body.into_data_stream(),
            )
            .await?;
        Ok::<_, Error>(Json(json!({})))
    }
    .await;
    result.into_response()
}

async fn create_mxc_uri(
    services: Arc<Services>,
    request: Ruma<media::create_mxc_uri::v1::Request>,
) -> Result<media::create_mxc_uri::v1::Response> {
    let (media_id, expires) = services.media.create_pending(request.user())?;
    let uri = format!("mxc://{}/{media_id}", services.globals.server_name());
    let mut response = media::create_mxc_uri::v1::Response::new(uri.into());
    response.unused_expires_at = UInt::new(expires).map(MilliSecondsSinceUnixEpoch);
    Ok(response)
}

fn upload_size(services: &Services) -> UInt {
    UInt::new(services.media.max_upload() as u64).unwrap_or(UInt::MAX)
}

async fn config_v1(
    services: Arc<Services>,
    _request: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> Result<authenticated_media::get_media_config::v1::Response> {
    Ok(authenticated_media::get_media_config::v1::Response::new(
        upload_size(&services),
    ))
}

async fn config_legacy(
    services: Arc<Services>,
    _request: Ruma<media::get_media_config::v3::Request>,
) -> Result<media::get_media_config::v3::Response> {
    if !services.config().allow_legacy_media {
        return Err(Error::not_found("Legacy media endpoints are disabled"));
    }
    Ok(media::get_media_config::v3::Response::new(upload_size(
        &services,
    )))
}
