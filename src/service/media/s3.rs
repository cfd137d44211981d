//! Blobs as objects in an S3-compatible bucket. Requests are presigned with `rusty-s3`
//! (signing only) and sent with our reqwest: uploads stream the temp file in one PUT,
//! downloads stream the answer and forward the byte range.

use std::{path::Path, time::Duration};

use futures::{StreamExt, TryStreamExt, future::BoxFuture};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::storage::{ByteStream, Storage};
use crate::{
    config::S3Config,
    error::{Error, Result},
};

/// Presigned URLs are used at once; a short validity limits what a leaked one is worth.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(300);

pub struct S3Storage {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

impl S3Storage {
    pub fn new(config: &S3Config) -> Result<Self> {
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            config.endpoint.clone(),
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| Error::internal(format_args!("media.s3: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::internal)?;
        Ok(Self {
            bucket,
            credentials: Credentials::new(&config.access_key_id, &config.secret_access_key),
            http,
        })
    }

    /// Objects are named like the filesystem backend's files, without the shard dirs:
    /// S3 needs no sharding.
    fn key(sha256: &str) -> String {
        format!("media/{sha256}")
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = self.http.head(url).send().await.map_err(s3_error)?;
        match response.status() {
            s if s.is_success() => Ok(true),
            http::StatusCode::NOT_FOUND => Ok(false),
            s => Err(Error::internal(format_args!("media.s3: HEAD answered {s}"))),
        }
    }
}

fn s3_error(e: reqwest::Error) -> Error {
    // Without the URL: it carries the signature.
    Error::internal(format_args!("media.s3: {}", e.without_url()))
}

impl Storage for S3Storage {
    fn store<'a>(
        &'a self,
        sha256: &'a str,
        temp: &'a Path,
        size: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = Self::key(sha256);
            if !self.exists(&key).await? {
                let file = tokio::fs::File::open(temp)
                    .await
                    .map_err(|e| Error::internal(format_args!("media: reopening upload: {e}")))?;
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                    file,
                    super::storage::CHUNK,
                ));
                let url = self
                    .bucket
                    .put_object(Some(&self.credentials), &key)
                    .sign(SIGNATURE_VALIDITY);
                let response = self
                    .http
                    .put(url)
                    .header(http::header::CONTENT_LENGTH, size)
                    .body(body)
                    .send()
                    .await
                    .map_err(s3_error)?;
                if !response.status().is_success() {
                    return Err(Error::internal(format_args!(
                        "media.s3: PUT answered {}",
                        response.status()
                    )));
                }
            }
            let _ = tokio::fs::remove_file(temp).await;
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        sha256: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<ByteStream>> {
        Box::pin(async move {
            let key = Self::key(sha256);
            let url = self
                .bucket
                .get_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_VALIDITY);
            let mut request = self.http.get(url);
            if let Some((start, end)) = range {
                request = request.header(http::header::RANGE, format!("bytes={start}-{}", end - 1));
            }
            let response = request.send().await.map_err(s3_error)?;
            match response.status() {
                s if s.is_success() => {}
                http::StatusCode::NOT_FOUND => return Err(Error::not_found("Media not found")),
                s => {
                    return Err(Error::internal(format_args!("media.s3: GET answered {s}")));
                }
            }
            Ok(response
                .bytes_stream()
                .map_err(|e| std::io::Error::other(e.without_url()))
                .boxed())
        })
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = Self::key(sha256);
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_VALIDITY);
            let response = self.http.delete(url).send().await.map_err(s3_error)?;
            match response.status() {
                s if s.is_success() || s == http::StatusCode::NOT_FOUND => Ok(()),
                s => Err(Error::internal(format_args!(
                    "media.s3: DELETE answered {s}"
                ))),
            }
        })
    }
}
