//! Thumbnails: sizes, methods, formats, caching, and hostile images that must fail cleanly.

use super::*;
use crate::common::TestServer;

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("thumbnail decodes")
}

async fn thumb(server: &TestServer, token: &str, mxc: &str, query: &str) -> Reply {
    get(
        server,
        &format!("{V1}/thumbnail/{mxc}?{query}"),
        Some(token),
    )
    .await
}

#[tokio::test]
async fn scale_fits_the_box_and_crop_fills_it_exactly() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (_, png_mxc) = upload(&server, &alice.token, png(200, 100), "image/png", None).await;
    let (_, jpeg_mxc) = upload(&server, &alice.token, jpeg(300, 200), "image/jpeg", None).await;

    let got = thumb(
        &server,
        &alice.token,
        &png_mxc,
        "width=50&height=50&method=scale",
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert_eq!(got.header("content-type"), "image/png", "alpha stays PNG");
    let image = decode(&got.body);
    assert!(image.width() <= 50 && image.height() <= 50);
    assert_eq!((image.width(), image.height()), (50, 25), "aspect kept");

    let got = thumb(
        &server,
        &alice.token,
        &jpeg_mxc,
        "width=64&height=64&method=crop",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "image/jpeg");
    let image = decode(&got.body);
    assert_eq!((image.width(), image.height()), (64, 64));

    // Never larger than the original: scale serves the original itself, crop the largest
    // box of the asked shape.
    let got = thumb(
        &server,
        &alice.token,
        &jpeg_mxc,
        "width=1000&height=1000&method=scale",
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.body == jpeg(300, 200));
    let got = thumb(
        &server,
        &alice.token,
        &jpeg_mxc,
        "width=400&height=400&method=crop",
    )
    .await;
    let image = decode(&got.body);
    assert_eq!((image.width(), image.height()), (200, 200));

    // Default method is scale; the legacy endpoint answers the same.
    let got = get(
        &server,
        &format!("{LEGACY}/thumbnail/{png_mxc}?width=20&height=20"),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(decode(&got.body).width(), 20);
    assert_eq!(got.header("x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn thumbnails_are_generated_once_and_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (_, mxc) = upload(&server, &alice.token, jpeg(300, 200), "image/jpeg", None).await;
    let before = blob_files(&media_dir(&server)).len();
    let first = thumb(
        &server,
        &alice.token,
        &mxc,
        "width=32&height=32&method=crop",
    )
    .await;
    let after_first = blob_files(&media_dir(&server)).len();
    let second = thumb(
        &server,
        &alice.token,
        &mxc,
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(after_first, before + 1);
    assert_eq!(blob_files(&media_dir(&server)).len(), after_first);
    assert!(first.body == second.body);
}

#[tokio::test]
async fn gif_and_webp_are_thumbnailed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let rgba = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(80, 80, |x, y| {
        image::Rgba([x as u8, y as u8, 0, 255])
    }));
    for (format, content_type) in [
        (image::ImageFormat::Gif, "image/gif"),
        (image::ImageFormat::WebP, "image/webp"),
    ] {
        let (_, mxc) = upload(
            &server,
            &alice.token,
            encode(rgba.clone(), format),
            content_type,
            None,
        )
        .await;
        let got = thumb(
            &server,
            &alice.token,
            &mxc,
            "width=16&height=16&method=crop&animated=true",
        )
        .await;
        assert_eq!(got.status, 200, "{content_type}: {:?}", got.json());
        let image = decode(&got.body);
        assert_eq!((image.width(), image.height()), (16, 16), "{content_type}");
    }
}

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid 1x1 PNG whose header claims `width` x `height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    // Signature (8), length (4), "IHDR" (4), then width and height.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[tokio::test]
async fn hostile_and_non_image_media_fail_cleanly() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let full = png(100, 100);
    let truncated = full[..full.len() / 2].to_vec();
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("truncated png", truncated, "image/png", 400, "M_UNKNOWN"),
        // Within the dimension limit, but 1 GiB to decode.
        (
            "bomb png",
            png_claiming(16_000, 16_000),
            "image/png",
            413,
            "M_TOO_LARGE",
        ),
        (
            "huge dimensions",
            png_claiming(1_000_000, 1_000_000),
            "image/png",
            413,
            "M_TOO_LARGE",
        ),
        (
            "text",
            b"just text".to_vec(),
            "text/plain",
            400,
            "M_UNKNOWN",
        ),
        ("video", noise(4096, 5), "image/png", 400, "M_UNKNOWN"),
        ("empty", Vec::new(), "image/png", 400, "M_UNKNOWN"),
    ];
    for (what, bytes, content_type, status, errcode) in cases {
        let (reply, mxc) = upload(&server, &alice.token, bytes.clone(), content_type, None).await;
        assert_eq!(reply.status, 200, "{what}");
        let got = thumb(
            &server,
            &alice.token,
            &mxc,
            "width=32&height=32&method=scale",
        )
        .await;
        assert_eq!(got.status, status, "{what}: {:?}", got.json());
        assert_eq!(got.errcode(), errcode, "{what}");
        // The original is still served as it was.
        let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
        assert!(got.body == bytes, "{what}");
    }
    let (_, mxc) = upload(&server, &alice.token, png(10, 10), "image/png", None).await;
    for query in [
        "width=0&height=10",
        "width=10&height=-1",
        "width=abc&height=10",
        "height=10",
    ] {
        let got = thumb(&server, &alice.token, &mxc, query).await;
        assert_eq!(got.status, 400, "{query}");
    }
}
