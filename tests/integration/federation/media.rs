//! Authenticated media over federation: a user of one server downloads and thumbnails
//! another server's media through their own server, which fetches it once over
//! `/_matrix/federation/v1/media/...` and serves it from its cache after that.

use reqwest::StatusCode;
use ruma::{
    ServerName,
    api::federation::authenticated_media::{FileOrLocation, get_content, get_content_thumbnail},
    uint,
};

use crate::{
    common::TestServer,
    media::{LEGACY, V1, get, noise, png, temp_files, upload},
};

fn name(server: &TestServer) -> &ServerName {
    server.services().globals.server_name()
}

/// `server/media_id` -> `media_id`.
fn id(mxc: &str) -> &str {
    mxc.rsplit_once('/').expect("server/media_id").1
}

#[tokio::test]
async fn remote_media_is_fetched_once_then_served_from_the_cache() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let text = noise(200_000, 3);
    let (reply, mxc) = upload(
        &a,
        &alice.token,
        text.clone(),
        "video/mp4",
        Some("clip ü.mp4"),
    )
    .await;
    assert_eq!(reply.status, 200);

    let got = get(&b, &format!("{V1}/download/{mxc}"), Some(&bob.token)).await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert!(got.body == text, "bytes differ");
    assert_eq!(got.header("content-type"), "video/mp4");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename*=utf-8''clip%20%C3%BC.mp4"
    );
    let cached = b
        .services()
        .media
        .get(name(&a), id(&mxc))
        .unwrap()
        .expect("cached on B");
    assert!(cached.remote);
    assert_eq!(cached.size, text.len() as u64);

    // Gone on A: B still serves its copy, so it did not ask A again.
    a.services().media.delete(name(&a), id(&mxc)).await.unwrap();
    assert_eq!(
        get(&a, &format!("{V1}/download/{mxc}"), Some(&alice.token))
            .await
            .status,
        404
    );
    let again = get(&b, &format!("{V1}/download/{mxc}"), Some(&bob.token)).await;
    assert_eq!(again.status, 200);
    assert!(again.body == text);
    // Legacy endpoint: allowed remote by default, refused with allow_remote=false.
    assert_eq!(
        get(&b, &format!("{LEGACY}/download/{mxc}"), None)
            .await
            .status,
        200
    );
    let refused = get(
        &b,
        &format!("{LEGACY}/download/{mxc}?allow_remote=false"),
        None,
    )
    .await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.errcode(), "M_NOT_FOUND");

    // Unknown on A: not found on B, and nothing cached.
    let unknown = format!("{}/doesnotexist", name(&a));
    let missing = get(&b, &format!("{V1}/download/{unknown}"), Some(&bob.token)).await;
    assert_eq!(missing.status, 404, "{:?}", missing.json());
    assert_eq!(missing.errcode(), "M_NOT_FOUND");
    assert!(
        b.services()
            .media
            .get(name(&a), "doesnotexist")
            .unwrap()
            .is_none()
    );
    assert_eq!(temp_files(&b), 0);
}

#[tokio::test]
async fn remote_images_are_thumbnailed_locally_and_concurrent_downloads_agree() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let picture = png(200, 100);
    let (_, mxc) = upload(&a, &alice.token, picture.clone(), "image/png", None).await;

    let thumb = get(
        &b,
        &format!("{V1}/thumbnail/{mxc}?width=32&height=32&method=scale"),
        Some(&bob.token),
    )
    .await;
    assert_eq!(thumb.status, 200, "{:?}", thumb.json());
    assert_eq!(thumb.header("content-type"), "image/png");
    let image = image::load_from_memory(&thumb.body).expect("a png");
    assert!(
        image.width() <= 64 && image.width() < 200,
        "{}",
        image.width()
    );

    // Several clients at once on fresh media: all get the same bytes.
    let (_, other) = upload(&a, &alice.token, picture.clone(), "image/png", None).await;
    let path = format!("{V1}/download/{other}");
    let replies = futures::future::join_all((0..4).map(|_| get(&b, &path, Some(&bob.token)))).await;
    for reply in replies {
        assert_eq!(reply.status, 200);
        assert!(reply.body == picture);
    }
}

#[tokio::test]
async fn federation_media_endpoints_need_a_signature_and_serve_only_local_media() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (_, mxc) = upload(
        &a,
        &alice.token,
        b"hello over federation".to_vec(),
        "text/plain",
        Some("hello.txt"),
    )
    .await;
    let media_id = id(&mxc).to_owned();

    for path in [
        format!("/_matrix/federation/v1/media/download/{media_id}"),
        format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=8&height=8"),
    ] {
        let unsigned = get(&a, &path, None).await;
        assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // Signed by B: the multipart answer parses with ruma's federation types.
    let answer = b
        .services()
        .federation
        .send(name(&a), get_content::v1::Request::new(media_id.clone()))
        .await
        .expect("A serves its media");
    let FileOrLocation::File(file) = answer.content else {
        panic!("inline file expected");
    };
    assert_eq!(file.file, b"hello over federation");
    assert_eq!(file.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        file.content_disposition.and_then(|d| d.filename).as_deref(),
        Some("hello.txt")
    );
    let (_, image) = upload(&a, &alice.token, png(100, 100), "image/png", None).await;
    let thumb = b
        .services()
        .federation
        .send(
            name(&a),
            get_content_thumbnail::v1::Request::new(id(&image).to_owned(), uint!(10), uint!(10)),
        )
        .await
        .expect("A serves a thumbnail");
    let FileOrLocation::File(file) = thumb.content else {
        panic!("inline file expected");
    };
    let decoded = image::load_from_memory(&file.file).expect("a png");
    assert!(decoded.width() < 100);

    // B cached A's media; asked for it over federation, B does not relay it.
    let got = get(&b, &format!("{V1}/download/{mxc}"), Some(&bob.token)).await;
    assert_eq!(got.status, 200);
    let relayed = a
        .services()
        .federation
        .send_streaming(name(&b), get_content::v1::Request::new(media_id.clone()))
        .await
        .expect_err("B serves only its own media");
    assert_eq!(relayed.status, StatusCode::NOT_FOUND);
    assert_eq!(relayed.errcode, "M_NOT_FOUND");

    // Quarantined on A: not served to B.
    let (_, bad) = upload(&a, &alice.token, b"bad".to_vec(), "text/plain", None).await;
    a.services().media.quarantine(name(&a), id(&bad)).unwrap();
    let refused = get(&b, &format!("{V1}/download/{bad}"), Some(&bob.token)).await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.errcode(), "M_NOT_FOUND");
}

#[tokio::test]
async fn remote_media_over_the_size_limit_is_refused_and_not_kept() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated_with(|c| c.max_request_size = 64 * 1024).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (_, mxc) = upload(&a, &alice.token, noise(300_000, 9), "video/mp4", None).await;
    let got = get(&b, &format!("{V1}/download/{mxc}"), Some(&bob.token)).await;
    assert_eq!(got.status, 413, "{:?}", got.json());
    assert_eq!(got.errcode(), "M_TOO_LARGE");
    assert!(
        b.services()
            .media
            .get(name(&a), id(&mxc))
            .unwrap()
            .is_none()
    );
    assert_eq!(temp_files(&b), 0);
}
