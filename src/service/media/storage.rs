//! Where media bytes live: content-addressed blobs named by their SHA-256 (hex). A blob is
//! written completely (temp file, fsync, rename) before any metadata names it, so a crash
//! leaves at worst an unreferenced blob, never metadata pointing at half a file.

use std::{
    io,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::{Error, Result};

/// Read size for downloads: each read of a tokio file is a trip to the blocking pool, so
/// the default 4 KiB made downloads several times slower than Synapse's (measured).
pub const CHUNK: usize = 256 * 1024;

/// Bytes of a blob, streamed.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// A storage backend. Boxed futures keep the trait object-safe: the service holds a
/// `Box<dyn Storage>` chosen by the configuration.
pub trait Storage: Send + Sync {
    /// Takes the finished file at `temp` (on the local disk, already fsynced) as the blob
    /// `sha256` of `size` bytes; the temp file is gone afterwards. Storing a blob that
    /// exists already keeps the existing one (same hash, same bytes).
    fn store<'a>(&'a self, sha256: &'a str, temp: &'a Path, size: u64)
    -> BoxFuture<'a, Result<()>>;

    /// The bytes `range` (start inclusive, end exclusive) of the blob, or all of it.
    fn read<'a>(
        &'a self,
        sha256: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<ByteStream>>;

    /// Removes the blob; a missing blob is not an error.
    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Blobs as files under `root`, sharded by the first two byte pairs of the hash
/// (`ab/cd/abcd...`) so no directory grows huge.
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        blob_path(&self.root, sha256)
    }
}

pub fn blob_path(root: &Path, sha256: &str) -> PathBuf {
    root.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256)
}

fn io_error(what: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |e| Error::internal(format_args!("media storage: {what}: {e}"))
}

impl Storage for FsStorage {
    fn store<'a>(
        &'a self,
        sha256: &'a str,
        temp: &'a Path,
        _size: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let target = self.blob_path(sha256);
            if tokio::fs::try_exists(&target).await.unwrap_or(false) {
                let _ = tokio::fs::remove_file(temp).await;
                return Ok(());
            }
            let dir = target.parent().expect("sharded path has a parent");
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io_error("creating a shard directory"))?;
            tokio::fs::rename(temp, &target)
                .await
                .map_err(io_error("moving an upload into place"))?;
            // The rename itself must survive a crash before metadata names the blob.
            if let Ok(dir) = tokio::fs::File::open(dir).await {
                let _ = dir.sync_all().await;
            }
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        sha256: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<ByteStream>> {
        Box::pin(async move {
            let mut file = tokio::fs::File::open(self.blob_path(sha256))
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => Error::not_found("Media not found"),
                    _ => Error::internal(format_args!("media storage: opening a blob: {e}")),
                })?;
            let stream: ByteStream = match range {
                Some((start, end)) => {
                    file.seek(io::SeekFrom::Start(start))
                        .await
                        .map_err(io_error("seeking"))?;
                    tokio_util::io::ReaderStream::with_capacity(file.take(end - start), CHUNK)
                        .boxed()
                }
                None => tokio_util::io::ReaderStream::with_capacity(file, CHUNK).boxed(),
            };
            Ok(stream)
        })
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.blob_path(sha256)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("deleting a blob")(e)),
            }
        })
    }
}
