//! Upload and download byte for byte, on both endpoint families, with the headers that
//! keep browsers safe; ranges; size limits; unknown media; dedup.

use futures::stream;
use serde_json::json;

use super::*;
use crate::common::TestServer;

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

#[tokio::test]
async fn text_png_jpeg_and_video_round_trip_on_both_endpoint_families() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let files: Vec<(Vec<u8>, &str, &str, &str)> = vec![
        (
            b"hello, media\n".to_vec(),
            "text/plain",
            "notes.txt",
            "inline",
        ),
        (png(40, 30), "image/png", "picture.png", "inline"),
        (jpeg(64, 48), "image/jpeg", "photo.jpg", "inline"),
        (noise(300_000, 7), "video/mp4", "clip.mp4", "inline"),
        (
            b"<html><script>alert(1)</script>".to_vec(),
            "text/html",
            "page.html",
            "attachment",
        ),
        (
            b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
            "image/svg+xml",
            "x.svg",
            "attachment",
        ),
    ];
    for (bytes, content_type, filename, disposition) in files {
        let (reply, mxc) = upload(
            &server,
            &alice.token,
            bytes.clone(),
            content_type,
            Some(filename),
        )
        .await;
        assert_eq!(reply.status, 200, "{content_type}: {:?}", reply.json());
        assert!(mxc.starts_with("localhost/"), "{mxc}");
        for path in [
            format!("{V1}/download/{mxc}"),
            format!("{LEGACY}/download/{mxc}"),
        ] {
            let token = path.starts_with(V1).then_some(alice.token.as_str());
            let got = get(&server, &path, token).await;
            assert_eq!(got.status, 200, "{path}");
            assert!(got.body == bytes, "{path}: bytes differ");
            assert_eq!(got.header("content-type"), content_type);
            assert_eq!(
                got.header("content-disposition"),
                format!("{disposition}; filename=\"{filename}\""),
                "{path}"
            );
            assert_eq!(got.header("content-security-policy"), CSP);
            assert_eq!(got.header("x-content-type-options"), "nosniff");
            assert_eq!(got.header("cross-origin-resource-policy"), "cross-origin");
            assert!(got.header("cache-control").contains("immutable"));
            assert_eq!(got.header("content-length"), bytes.len().to_string());
        }
        // The name in the path wins over the uploaded one.
        let got = get(
            &server,
            &format!("{V1}/download/{mxc}/other.bin"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(got.status, 200);
        assert!(got.body == bytes);
        assert_eq!(
            got.header("content-disposition"),
            format!("{disposition}; filename=\"other.bin\"")
        );
    }
}

#[tokio::test]
async fn authenticated_download_needs_a_token_and_names_are_rfc_5987_encoded() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (_, mxc) = upload(
        &server,
        &alice.token,
        b"x".to_vec(),
        "application/pdf",
        Some("résumé \"1\".pdf"),
    )
    .await;
    let got = get(&server, &format!("{V1}/download/{mxc}"), None).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.errcode(), "M_MISSING_TOKEN");
    let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
    );
    // Without a type or name: octet-stream, an attachment.
    let (reply, mxc) = upload(&server, &alice.token, b"y".to_vec(), "", None).await;
    assert_eq!(reply.status, 200);
    let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
    assert_eq!(got.header("content-type"), "application/octet-stream");
    assert_eq!(got.header("content-disposition"), "attachment");
}

#[tokio::test]
async fn legacy_endpoints_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.allow_legacy_media = false).await;
    let alice = server.register("alice").await;
    let (_, mxc) = upload(&server, &alice.token, b"data".to_vec(), "text/plain", None).await;
    for path in [
        format!("{LEGACY}/download/{mxc}"),
        format!("{LEGACY}/download/{mxc}/name.txt"),
        format!("{LEGACY}/thumbnail/{mxc}?width=10&height=10"),
    ] {
        let got = get(&server, &path, Some(&alice.token)).await;
        assert_eq!(got.status, 404, "{path}");
        assert_eq!(got.errcode(), "M_NOT_FOUND", "{path}");
    }
    let got = get(&server, &format!("{LEGACY}/config"), Some(&alice.token)).await;
    assert_eq!(got.status, 404);
    let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"data");
}

#[tokio::test]
async fn config_reports_the_upload_limit() {
    let server = TestServer::start_with(|c| c.max_request_size = 12345).await;
    let alice = server.register("alice").await;
    for path in [format!("{V1}/config"), format!("{LEGACY}/config")] {
        let got = get(&server, &path, Some(&alice.token)).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.json(), json!({ "m.upload.size": 12345 }));
    }
}

#[tokio::test]
async fn single_ranges_are_served_and_bad_ones_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = noise(100_000, 3);
    let (_, mxc) = upload(&server, &alice.token, bytes.clone(), "video/mp4", None).await;
    let path = format!("{V1}/download/{mxc}");
    let cases: [(&str, usize, usize); 4] = [
        ("bytes=2-5", 2, 6),
        ("bytes=99990-", 99_990, 100_000),
        ("bytes=-10", 99_990, 100_000),
        ("bytes=50000-200000", 50_000, 100_000),
    ];
    for (range, start, end) in cases {
        let got = get_with(&server, &path, Some(&alice.token), &[("range", range)]).await;
        assert_eq!(got.status, 206, "{range}");
        assert!(got.body == bytes[start..end], "{range}: wrong bytes");
        assert_eq!(
            got.header("content-range"),
            format!("bytes {start}-{}/100000", end - 1)
        );
        assert_eq!(got.header("content-length"), (end - start).to_string());
    }
    for range in ["bytes=100000-", "bytes=200000-300000", "bytes=-0"] {
        let got = get_with(&server, &path, Some(&alice.token), &[("range", range)]).await;
        assert_eq!(got.status, 416, "{range}");
        assert_eq!(got.header("content-range"), "bytes */100000");
    }
    // Several ranges: the whole content (RFC 9110 allows ignoring Range).
    let got = get_with(
        &server,
        &path,
        Some(&alice.token),
        &[("range", "bytes=0-1,5-6")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
}

#[tokio::test]
async fn unknown_and_remote_media_are_not_found() {
    // Without federation, other servers' media cannot be fetched: not found (fetching is
    // tested in federation/media.rs).
    let server = TestServer::start_with(|c| c.allow_federation = false).await;
    let alice = server.register("alice").await;
    for path in [
        format!("{V1}/download/localhost/nosuchmedia"),
        format!("{V1}/thumbnail/localhost/nosuchmedia?width=10&height=10"),
        format!("{V1}/download/other.example/somemedia"),
        format!("{LEGACY}/download/other.example/somemedia?allow_remote=false"),
        format!("{LEGACY}/download/localhost/nosuchmedia"),
    ] {
        let got = get(&server, &path, Some(&alice.token)).await;
        assert_eq!(got.status, 404, "{path}");
        assert_eq!(got.errcode(), "M_NOT_FOUND", "{path}");
    }
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_with_and_without_content_length() {
    let server = TestServer::start_with(|c| c.max_request_size = 64 * 1024).await;
    let alice = server.register("alice").await;
    let (reply, _) = upload(
        &server,
        &alice.token,
        noise(64 * 1024 + 1, 1),
        "video/mp4",
        None,
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.errcode(), "M_TOO_LARGE");
    // Chunked: the size is only known while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|i| Ok(noise(8 * 1024, i))).collect();
    let reply = send(
        http()
            .post(format!("{}/_matrix/media/v3/upload", server.base))
            .bearer_auth(&alice.token)
            .header("content-type", "video/mp4")
            .body(reqwest::Body::wrap_stream(stream::iter(chunks))),
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.errcode(), "M_TOO_LARGE");
    assert_eq!(
        temp_files(&server),
        0,
        "a refused upload leaves no temp file"
    );
    assert!(blob_files(&media_dir(&server)).is_empty());
    // Exactly the limit, chunked, is fine.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|i| Ok(noise(8 * 1024, i))).collect();
    let expected: Vec<u8> = (0..8).flat_map(|i| noise(8 * 1024, i)).collect();
    let reply = send(
        http()
            .post(format!("{}/_matrix/media/v3/upload", server.base))
            .bearer_auth(&alice.token)
            .body(reqwest::Body::wrap_stream(stream::iter(chunks))),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let mxc = reply.json()["content_uri"].as_str().unwrap()["mxc://".len()..].to_owned();
    let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
    assert!(got.body == expected);
}

#[tokio::test]
async fn identical_uploads_share_one_file() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bytes = noise(5000, 9);
    let (_, first) = upload(
        &server,
        &alice.token,
        bytes.clone(),
        "image/png",
        Some("a.png"),
    )
    .await;
    let (_, second) = upload(
        &server,
        &bob.token,
        bytes.clone(),
        "text/plain",
        Some("b.txt"),
    )
    .await;
    assert_ne!(first, second);
    let files = blob_files(&media_dir(&server));
    assert_eq!(files.len(), 1, "{files:?}");
    // Sharded by the hash: ab/cd/abcd...
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name.len(), 64);
    assert!(files[0].ends_with(format!("{}/{}/{name}", &name[0..2], &name[2..4])));
    // Each id keeps its own type and name.
    let got = get(
        &server,
        &format!("{V1}/download/{second}"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.header("content-type"), "text/plain");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"b.txt\""
    );
    assert!(got.body == bytes);
}

#[tokio::test]
async fn large_uploads_stream_past_axums_default_body_limit() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = noise(5 * 1024 * 1024 + 17, 21);
    let (reply, mxc) = upload(&server, &alice.token, bytes.clone(), "video/webm", None).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
    assert!(got.body == bytes);
}

#[tokio::test]
async fn downloads_and_thumbnails_are_not_rate_limited_per_request() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.burst = 2;
        c.rate_limits.per_second = 0.01;
    })
    .await;
    let alice = server.register("alice").await;
    let (reply, mxc) = upload(&server, &alice.token, png(20, 20), "image/png", None).await;
    assert_eq!(reply.status, 200);
    for _ in 0..6 {
        let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
        assert_eq!(got.status, 200);
        let got = get(
            &server,
            &format!("{V1}/thumbnail/{mxc}?width=8&height=8"),
            Some(&alice.token),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    // Uploads are limited (the spec marks them so).
    let mut limited = false;
    for _ in 0..6 {
        let (reply, _) = upload(&server, &alice.token, b"x".to_vec(), "text/plain", None).await;
        limited |= reply.status == 429;
    }
    assert!(limited, "uploads count against the rate limit");
}

#[tokio::test]
async fn media_survives_a_restart() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = jpeg(50, 40);
    let (_, mxc) = upload(
        &server,
        &alice.token,
        bytes.clone(),
        "image/jpeg",
        Some("p.jpg"),
    )
    .await;
    let thumb = get(
        &server,
        &format!("{V1}/thumbnail/{mxc}?width=10&height=10&method=crop"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(thumb.status, 200);
    let files = blob_files(&media_dir(&server)).len();
    let server = server.restart().await;
    let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"p.jpg\""
    );
    let again = get(
        &server,
        &format!("{V1}/thumbnail/{mxc}?width=10&height=10&method=crop"),
        Some(&alice.token),
    )
    .await;
    assert!(again.body == thumb.body);
    assert_eq!(
        blob_files(&media_dir(&server)).len(),
        files,
        "the stored thumbnail is reused"
    );
}
