//! `GET /_matrix/client/v1/media/preview_url` and the legacy `/_matrix/media/v3/preview_url`
//! (while `allow_legacy_media`). The work is in `service::media::preview`.

// The legacy endpoint is deprecated by the spec, and served on purpose while configured.
#![allow(deprecated)]

use std::sync::Arc;

use ruma::api::client::{authenticated_media, media};
use serde_json::value::to_raw_value;

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, preview_v1);
    route(router, preview_legacy)
}

/// Synapse does not register the endpoint when previews are off: the answer to an
/// unknown endpoint.
fn check_enabled(services: &Services) -> Result<()> {
    if services.previews.enabled() {
        Ok(())
    } else {
        Err(Error::unrecognized("Unrecognized request"))
    }
}

async fn preview(
    services: &Services,
    user: &ruma::UserId,
    url: &str,
) -> Result<Box<serde_json::value::RawValue>> {
    let og = services
        .previews
        .preview(&services.media, user, url)
        .await?;
    Ok(to_raw_value(&og)?)
}

async fn preview_v1(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_media_preview::v1::Request>,
) -> Result<authenticated_media::get_media_preview::v1::Response> {
    check_enabled(&services)?;
    let data = preview(&services, request.user(), &request.body.url).await?;
    Ok(authenticated_media::get_media_preview::v1::Response::from_raw_value(data))
}

async fn preview_legacy(
    services: Arc<Services>,
    request: Ruma<media::get_media_preview::v3::Request>,
) -> Result<media::get_media_preview::v3::Response> {
    check_enabled(&services)?;
    if !services.config().allow_legacy_media {
        return Err(Error::not_found("Legacy media endpoints are disabled"));
    }
    let data = preview(&services, request.user(), &request.body.url).await?;
    Ok(media::get_media_preview::v3::Response::from_raw_value(data))
}
