//! URL previews against a small HTTP server in the test: Open Graph pages, fallbacks,
//! images stored as media, the address policy (loopback refused unless allowed, also on
//! redirects and after name resolution), domain lists, size and time limits, the cache.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use conduit::config::Config;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{LEGACY, V1};
use crate::common::{TestServer, enc};

/// Requests served, per path.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    fn get(&self, path: &str) -> usize {
        self.0.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

struct Site {
    port: u16,
    hits: Hits,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(3, 2, image::Rgb([200, 10, 10]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn site() -> Site {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Hits::default();
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let hits = counted.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                *hits.0.lock().unwrap().entry(path.clone()).or_default() += 1;
                let (head, body): (String, Vec<u8>) = match path.as_str() {
                    "/page" => (
                        ok("text/html; charset=utf-8"),
                        br#"<html><head><title>Not this</title>
                        <meta property="og:title" content="Fish &amp; Chips">
                        <meta property="og:description" content="A page about food">
                        <meta property="og:image" content="/img.png">
                        <meta property="og:url" content="https://example.org/page">
                        </head><body>hello</body></html>"#
                            .to_vec(),
                    ),
                    "/plain" => (
                        ok("text/html"),
                        b"<html><head><title>\n  Plain  title </title>\
                        <meta name=\"description\" content=\"Just a &lt;page&gt;\"></head></html>"
                            .to_vec(),
                    ),
                    "/img.png" => (ok("image/png"), png()),
                    "/data.bin" => (ok("application/octet-stream"), b"xx".to_vec()),
                    // No Content-Length: the limit must hold while reading.
                    "/big" => (ok("text/html"), vec![b'a'; 3 * 1024 * 1024]),
                    "/slow" => {
                        let _ = socket.write_all(ok("text/html").as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        return;
                    }
                    "/to-other-loopback" => (
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{port}/page\r\n\
                             Connection: close\r\n\r\n"
                        ),
                        Vec::new(),
                    ),
                    "/to-page" => (
                        "HTTP/1.1 301 Moved\r\nLocation: /page\r\nConnection: close\r\n\r\n"
                            .to_owned(),
                        Vec::new(),
                    ),
                    _ => (
                        "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n".to_owned(),
                        Vec::new(),
                    ),
                };
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Site { port, hits }
}

fn ok(content_type: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n")
}

/// Previews on, the test site's address allowed.
fn enabled(config: &mut Config) {
    config.url_preview_enabled = true;
    config.url_preview_ip_allowlist = vec!["127.0.0.1/32".parse().unwrap()];
}

async fn preview(server: &TestServer, token: &str, url: &str) -> (StatusCode, Value) {
    server
        .get(&format!("{V1}/preview_url?url={}", enc(url)), token)
        .await
}

#[tokio::test]
async fn disabled_previews_answer_as_an_unknown_endpoint() {
    let site = site().await;
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = preview(&server, &alice.token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    let (status, body) = server
        .get(
            &format!("{LEGACY}/preview_url?url={}", enc(&site.url("/page"))),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    assert_eq!(site.hits.get("/page"), 0);
}

#[tokio::test]
async fn open_graph_page_with_its_image_stored_and_cached() {
    let site = site().await;
    let server = TestServer::start_with(enabled).await;
    let alice = server.register("alice").await;
    // Without a token: refused like any authenticated endpoint.
    let (status, _) = server
        .request(
            reqwest::Method::GET,
            &format!("{V1}/preview_url?url={}", enc(&site.url("/page"))),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, og) = preview(&server, &alice.token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "Fish & Chips");
    assert_eq!(og["og:description"], "A page about food");
    assert_eq!(og["og:url"], "https://example.org/page");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 3);
    assert_eq!(og["og:image:height"], 2);
    let image = png();
    assert_eq!(og["matrix:image:size"], image.len());
    let mxc = og["og:image"].as_str().expect("og:image").to_owned();
    let (server_name, media_id) = mxc
        .strip_prefix("mxc://")
        .and_then(|m| m.split_once('/'))
        .expect("an mxc URI");
    assert_eq!(server_name, server.server_name);
    let reply = super::send(
        super::http()
            .get(format!(
                "{}{V1}/download/{server_name}/{media_id}",
                server.base
            ))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, image);

    // Cached: neither the page nor its image is fetched again, for any user.
    let bob = server.register("bob").await;
    let (status, again) = preview(&server, &bob.token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, og);
    assert_eq!(site.hits.get("/page"), 1);
    assert_eq!(site.hits.get("/img.png"), 1);

    // The legacy endpoint, while legacy media is on (the default).
    let (status, legacy) = server
        .get(
            &format!("{LEGACY}/preview_url?url={}", enc(&site.url("/page"))),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{legacy}");
    assert_eq!(legacy["og:title"], "Fish & Chips");

    // A redirect on the same site is followed.
    let (status, redirected) = preview(&server, &alice.token, &site.url("/to-page")).await;
    assert_eq!(status, StatusCode::OK, "{redirected}");
    assert_eq!(redirected["og:title"], "Fish & Chips");
    assert_eq!(site.hits.get("/page"), 2);
}

#[tokio::test]
async fn title_and_description_fallbacks_and_image_urls() {
    let site = site().await;
    let server = TestServer::start_with(enabled).await;
    let alice = server.register("alice").await;
    let (status, og) = preview(&server, &alice.token, &site.url("/plain")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "Plain title");
    assert_eq!(og["og:description"], "Just a <page>");
    assert!(og.get("og:image").is_none(), "{og}");

    // An image previews as itself.
    let (status, og) = preview(&server, &alice.token, &site.url("/img.png")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert!(og["og:image"].as_str().unwrap().starts_with("mxc://"));
    assert_eq!(og["og:image:width"], 3);
    assert_eq!(og["og:image:type"], "image/png");

    // Neither HTML nor an image, or an error from the site: Synapse's 502.
    let (status, body) = preview(&server, &alice.token, &site.url("/data.bin")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (status, body) = preview(&server, &alice.token, &site.url("/missing")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
}

#[tokio::test]
async fn bad_urls_are_invalid_params() {
    let server = TestServer::start_with(enabled).await;
    let alice = server.register("alice").await;
    for url in [
        "not a url",
        "ftp://127.0.0.1/x",
        "/relative",
        "file:///etc/passwd",
    ] {
        let (status, body) = preview(&server, &alice.token, url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["errcode"], "M_INVALID_PARAM", "{url}");
    }
    let (status, body) = server.get(&format!("{V1}/preview_url"), &alice.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn internal_addresses_are_refused_by_default() {
    let site = site().await;
    let server = TestServer::start_with(|c| c.url_preview_enabled = true).await;
    let alice = server.register("alice").await;
    // A literal address: refused before connecting.
    let (status, body) = preview(&server, &alice.token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A name resolving to loopback only: refused by the resolver.
    let url = format!("http://localhost:{}/page", site.port);
    let (status, body) = preview(&server, &alice.token, &url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        body["error"],
        "DNS resolution failure during URL preview generation"
    );
    let (status, _) = preview(&server, &alice.token, "http://[::1]:1/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(site.hits.get("/page"), 0);
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_not_followed() {
    let site = site().await;
    let server = TestServer::start_with(enabled).await;
    let alice = server.register("alice").await;
    let (status, body) = preview(&server, &alice.token, &site.url("/to-other-loopback")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(site.hits.get("/to-other-loopback"), 1);
    assert_eq!(site.hits.get("/page"), 0);
}

#[tokio::test]
async fn denied_domains_are_not_fetched() {
    let site = site().await;
    let server = TestServer::start_with(|c| {
        enabled(c);
        c.url_preview_domain_denylist = vec!["localhost".into()];
    })
    .await;
    let alice = server.register("alice").await;
    let url = format!("http://localhost:{}/page", site.port);
    let (status, body) = preview(&server, &alice.token, &url).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    assert_eq!(site.hits.get("/page"), 0);

    // An allowlist without the domain refuses it too.
    let server = TestServer::start_with(|c| {
        enabled(c);
        c.url_preview_domain_allowlist = vec!["example.org".into()];
    })
    .await;
    let alice = server.register("alice").await;
    let (status, _) = preview(&server, &alice.token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(site.hits.get("/page"), 0);
}

#[tokio::test]
async fn oversized_and_slow_pages_fail_without_hanging() {
    let site = site().await;
    let server = TestServer::start_with(|c| {
        enabled(c);
        c.url_preview_max_size = 1024 * 1024;
        c.url_preview_timeout_s = 2;
    })
    .await;
    let alice = server.register("alice").await;
    let (status, body) = preview(&server, &alice.token, &site.url("/big")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["errcode"], "M_TOO_LARGE");

    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        preview(&server, &alice.token, &site.url("/slow")),
    )
    .await
    .expect("the preview gives up at its time limit");
    assert_eq!(
        answered.0,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        answered.1
    );
    assert_eq!(answered.1["errcode"], "M_UNKNOWN");
}

#[tokio::test]
async fn legacy_preview_follows_allow_legacy_media() {
    let site = site().await;
    let server = TestServer::start_with(|c| {
        enabled(c);
        c.allow_legacy_media = false;
    })
    .await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .get(
            &format!("{LEGACY}/preview_url?url={}", enc(&site.url("/page"))),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let (status, _) = preview(&server, &alice.token, &site.url("/page")).await;
    assert_eq!(status, StatusCode::OK);
}
