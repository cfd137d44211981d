//! Authenticated media over federation (spec v1.11+): `GET /_matrix/federation/v1/media/
//! download/{mediaId}` and `.../thumbnail/{mediaId}`. Only this server's own media is
//! served (cached copies of other servers' media are not relayed). The answer is
//! `multipart/mixed`: the JSON metadata part, then the bytes, streamed from storage.

use std::time::Duration;

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{HeaderValue, StatusCode, header};
use ruma::{api::federation::authenticated_media, media::Method as RumaMethod};

use super::require_origin;
use crate::{
    api::{
        client::media_download::{content_disposition, get},
        router::AppRouter,
    },
    error::{Error, Result},
    service::{
        Services,
        globals::random_string,
        media::thumbnail::{MAX_DIMENSION, Method},
    },
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = get(
        router,
        |s, _h, r: crate::api::ruma::Ruma<authenticated_media::get_content::v1::Request>| async move {
            require_origin(&r)?;
            let b = r.body;
            serve(&s, &b.media_id, None, b.timeout_ms).await
        },
    );
    get(
        router,
        |s, _h, r: crate::api::ruma::Ruma<authenticated_media::get_content_thumbnail::v1::Request>| async move {
            require_origin(&r)?;
            let b = r.body;
            let method = match b.method {
                Some(RumaMethod::Crop) => Method::Crop,
                _ => Method::Scale,
            };
            let size = (dimension(b.width)?, dimension(b.height)?);
            serve(&s, &b.media_id, Some((size, method)), b.timeout_ms).await
        },
    )
}

fn dimension(v: ruma::UInt) -> Result<u32> {
    let v = u64::from(v);
    if v == 0 {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "width and height must be positive",
        ));
    }
    Ok(v.min(u64::from(MAX_DIMENSION)) as u32)
}

async fn serve(
    services: &Services,
    media_id: &str,
    thumbnail: Option<((u32, u32), Method)>,
    timeout: Duration,
) -> Result<Response> {
    let server = services.globals.server_name();
    // Local lookups only: remote copies live under their own server's name.
    let content = services.media.content(server, media_id, timeout).await?;
    let (sha256, size, content_type, filename) = match thumbnail {
        None => (
            content.sha256,
            content.size,
            content.content_type,
            content.filename,
        ),
        Some(((width, height), method)) => {
            match services
                .media
                .thumbnail(server, media_id, &content, width, height, method)
                .await?
            {
                Some(t) => (t.sha256, t.size, Some(t.content_type), None),
                None => (content.sha256, content.size, content.content_type, None),
            }
        }
    };
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let file = services.media.read(&sha256, None).await?;
    let boundary = random_string(32);
    let mut head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\n"
    );
    head.push_str(&format!(
        "Content-Disposition: {}\r\n\r\n",
        content_disposition(&content_type, filename.as_deref())
    ));
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + size + tail.len() as u64;
    let body = stream::once(async move { Ok(Bytes::from(head)) })
        .chain(file)
        .chain(stream::once(async move { Ok(Bytes::from(tail)) }));
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
            .map_err(Error::internal)?,
    );
    h.insert(header::CONTENT_LENGTH, length.into());
    Ok(response)
}
