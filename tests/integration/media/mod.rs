//! The content repository: uploads, downloads, ranges, headers, thumbnails, asynchronous
//! uploads, storage (filesystem and a real S3-compatible server) and admin retention.

mod async_upload;
mod preview;
mod retention;
mod round_trip;
mod s3;
mod thumbnails;

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, header::HeaderMap};
use serde_json::Value;

use crate::common::TestServer;

pub const V1: &str = "/_matrix/client/v1/media";
pub const LEGACY: &str = "/_matrix/media/v3";

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn errcode(&self) -> String {
        self.json()["errcode"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
            .unwrap_or_default()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request is answered");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `POST /upload`; returns the reply and, on success, `server/media_id`.
pub async fn upload(
    server: &TestServer,
    token: &str,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (Reply, String) {
    let mut url = format!("{}/_matrix/media/v3/upload", server.base);
    if let Some(name) = filename {
        url.push_str(&format!("?filename={}", crate::common::enc(name)));
    }
    let reply = send(
        http()
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes),
    )
    .await;
    let mxc = reply.json()["content_uri"]
        .as_str()
        .map(|uri| uri.strip_prefix("mxc://").expect("mxc uri").to_owned())
        .unwrap_or_default();
    (reply, mxc)
}

pub async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Reply {
    get_with(server, path, token, &[]).await
}

pub async fn get_with(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = http().get(format!("{}{path}", server.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

/// Every blob file under the media directory (temp files excluded).
pub fn blob_files(media_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "tmp") {
                    continue;
                }
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(media_dir, &mut out);
    out
}

pub fn media_dir(server: &TestServer) -> PathBuf {
    conduit::service::media::media_dir(server.services().config())
}

pub fn temp_files(server: &TestServer) -> usize {
    std::fs::read_dir(media_dir(server).join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A PNG (with alpha) or JPEG of the given size, drawn so resizing has something to do.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 200])
    });
    encode(
        image::DynamicImage::ImageRgba8(image),
        image::ImageFormat::Png,
    )
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 64])
    });
    encode(
        image::DynamicImage::ImageRgb8(image),
        image::ImageFormat::Jpeg,
    )
}

pub fn encode(image: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// Bytes that look like nothing in particular (for a "video": the server never parses it).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
