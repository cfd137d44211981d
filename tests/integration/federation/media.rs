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

/// A hand-made peer on TLS: answers each request with `respond(path, port)` and records the
/// paths it was asked for.
struct FakePeer {
    name: String,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakePeer {
    async fn start(respond: fn(&str, u16) -> Vec<u8>) -> Self {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let hits = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    hits.lock().unwrap().push(path.clone());
                    if path.contains("/slow") {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    }
                    let _ = tls.write_all(&respond(&path, port)).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            name: format!("127.0.0.1:{port}"),
            hits,
        }
    }

    fn hits(&self, part: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(part))
            .count()
    }
}

fn http_answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn multipart(second_part: &str) -> Vec<u8> {
    http_answer(
        "200 OK",
        &[("Content-Type", "multipart/mixed; boundary=\"sep\"")],
        format!("--sep\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--sep\r\n{second_part}")
            .as_bytes(),
    )
}

fn old_style_peer(path: &str, port: u16) -> Vec<u8> {
    let json = [("Content-Type", "application/json")];
    match path {
        "/_matrix/federation/v1/media/download/old" => http_answer(
            "404 Not Found",
            &json,
            br#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
        ),
        p if p.starts_with("/_matrix/media/v3/download/")
            && p.ends_with("/old?allow_remote=false") =>
        {
            http_answer(
                "200 OK",
                &[
                    ("Content-Type", "text/plain"),
                    ("Content-Disposition", "attachment; filename=\"legacy.txt\""),
                ],
                b"legacy bytes",
            )
        }
        "/_matrix/federation/v1/media/download/slow" => {
            multipart("Content-Type: text/plain\r\n\r\nslow bytes\r\n--sep--\r\n")
        }
        "/_matrix/federation/v1/media/download/moved" => multipart(&format!(
            "Location: http://127.0.0.1:{port}/elsewhere\r\n\r\n\r\n--sep--\r\n"
        )),
        "/_matrix/federation/v1/media/download/broken" => {
            multipart("Content-Type: text/plain\r\n\r\nhalf a fi")
        }
        _ => http_answer(
            "404 Not Found",
            &json,
            br#"{"errcode":"M_NOT_FOUND","error":"Not found"}"#,
        ),
    }
}

#[tokio::test]
async fn old_servers_redirects_bad_answers_and_concurrent_fetches() {
    let peer = FakePeer::start(old_style_peer).await;
    let b = TestServer::start_federated().await;
    let bob = b.register("bob").await;
    let download = |id: &str| format!("{V1}/download/{}/{id}", peer.name);

    // No federation media on the peer: the legacy endpoint, once.
    let got = get(&b, &download("old"), Some(&bob.token)).await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert_eq!(got.body, b"legacy bytes");
    assert_eq!(got.header("content-type"), "text/plain");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"legacy.txt\""
    );
    assert_eq!(
        get(&b, &download("old"), Some(&bob.token)).await.status,
        200
    );
    assert_eq!(peer.hits("/_matrix/media/v3/download/"), 1);

    // A plain 404 is not a reason to try the legacy endpoint.
    let gone = get(&b, &download("gone"), Some(&bob.token)).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.errcode(), "M_NOT_FOUND");
    assert_eq!(peer.hits("/_matrix/media/v3/download/"), 1);

    // Four clients at once: one fetch.
    let path = download("slow");
    let replies = futures::future::join_all((0..4).map(|_| get(&b, &path, Some(&bob.token)))).await;
    for reply in replies {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"slow bytes");
    }
    assert_eq!(peer.hits("/download/slow"), 1);

    // A Location part pointing at an internal address is not followed.
    let moved = get(&b, &download("moved"), Some(&bob.token)).await;
    assert_eq!(moved.status, 502, "{:?}", moved.json());
    assert_eq!(peer.hits("/elsewhere"), 0);

    // A multipart answer cut short: nothing kept.
    let broken = get(&b, &download("broken"), Some(&bob.token)).await;
    assert_eq!(broken.status, 502, "{:?}", broken.json());
    let peer_name = ruma::ServerName::parse(&peer.name).unwrap();
    for id in ["moved", "broken", "gone"] {
        assert!(b.services().media.get(&peer_name, id).unwrap().is_none());
    }
    assert_eq!(temp_files(&b), 0);

    // A server that cannot be reached: 502, nothing cached.
    let dead = get(
        &b,
        &format!("{V1}/download/127.0.0.1:1/x"),
        Some(&bob.token),
    )
    .await;
    assert_eq!(dead.status, 502, "{:?}", dead.json());
}
