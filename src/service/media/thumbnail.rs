//! Thumbnails of PNG, JPEG, GIF (first frame) and WebP images. Decoding runs under
//! `image::Limits`, so a decompression bomb or a truncated file is an error, not an
//! out-of-memory kill or a panic; callers run it in `spawn_blocking`.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, imageops::FilterType};

use crate::error::{Error, Result};

/// Largest width or height decoded; beyond it the image is refused.
pub const MAX_DIMENSION: u32 = 16_384;
/// Largest allocation a decode may make (a 16k x 1k RGBA image fits).
pub const MAX_ALLOC: u64 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Scale,
    Crop,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Crop => "crop",
        }
    }
}

pub enum Thumbnail {
    /// The original already fits: serve it as it is (never upscale).
    Original,
    Generated {
        bytes: Vec<u8>,
        content_type: &'static str,
    },
}

/// Whether the bytes are an image format we decode (by content, not the claimed type).
pub fn supported_format(head: &[u8]) -> Option<ImageFormat> {
    image::guess_format(head).ok().filter(|f| {
        matches!(
            f,
            ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP
        )
    })
}

fn limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

/// A thumbnail of `original` at most `width` x `height`: `Scale` keeps the aspect ratio,
/// `Crop` fills exactly that box (cropping the overflow), smaller only where the original
/// is. Output is PNG when the image has alpha, JPEG otherwise (as Synapse).
pub fn generate(original: &[u8], width: u32, height: u32, method: Method) -> Result<Thumbnail> {
    let format = supported_format(original)
        .ok_or_else(|| cannot_thumbnail("The media is not an image the server can thumbnail"))?;
    let mut reader = ImageReader::with_format(Cursor::new(original), format);
    reader.limits(limits());
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => {
            Error::too_large("The image is too large for the server to thumbnail")
        }
        e => cannot_thumbnail(format!("The image cannot be decoded: {e}")),
    })?;
    let (ow, oh) = (image.width(), image.height());
    let resized = match method {
        Method::Scale => {
            if width >= ow && height >= oh {
                return Ok(Thumbnail::Original);
            }
            image.resize(width.min(ow), height.min(oh), FilterType::Triangle)
        }
        Method::Crop => {
            // Largest box of the requested aspect that needs no upscaling.
            let scale = (f64::from(ow) / f64::from(width))
                .min(f64::from(oh) / f64::from(height))
                .min(1.0);
            let w = ((f64::from(width) * scale).round() as u32).clamp(1, ow);
            let h = ((f64::from(height) * scale).round() as u32).clamp(1, oh);
            if w == ow && h == oh {
                return Ok(Thumbnail::Original);
            }
            image.resize_to_fill(w, h, FilterType::Triangle)
        }
    };
    encode(resized)
}

fn encode(image: DynamicImage) -> Result<Thumbnail> {
    let mut out = Cursor::new(Vec::new());
    let content_type = if image.color().has_alpha() {
        image
            .write_to(&mut out, ImageFormat::Png)
            .map_err(Error::internal)?;
        "image/png"
    } else {
        // JPEG has no 16-bit or alpha channels: go through 8-bit RGB.
        DynamicImage::ImageRgb8(image.to_rgb8())
            .write_to(&mut out, ImageFormat::Jpeg)
            .map_err(Error::internal)?;
        "image/jpeg"
    };
    Ok(Thumbnail::Generated {
        bytes: out.into_inner(),
        content_type,
    })
}

fn cannot_thumbnail(message: impl Into<String>) -> Error {
    Error::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
}
