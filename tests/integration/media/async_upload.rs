//! `POST /create` + `PUT /upload/{serverName}/{mediaId}`: reserved ids, waiting
//! downloads, overwrites, other users and the pending limit.

use super::*;
use crate::common::TestServer;

async fn create(server: &TestServer, token: &str) -> Reply {
    send(
        http()
            .post(format!("{}/_matrix/media/v1/create", server.base))
            .bearer_auth(token)
            .json(&serde_json::json!({})),
    )
    .await
}

async fn put(server: &TestServer, token: &str, mxc: &str, bytes: Vec<u8>) -> Reply {
    send(
        http()
            .put(format!(
                "{}/_matrix/media/v3/upload/{mxc}?filename=late.txt",
                server.base
            ))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body(bytes),
    )
    .await
}

fn mxc_of(reply: &Reply) -> String {
    reply.json()["content_uri"].as_str().expect("content_uri")["mxc://".len()..].to_owned()
}

#[tokio::test]
async fn reserved_id_lifecycle() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let created = create(&server, &alice.token).await;
    assert_eq!(created.status, 200, "{:?}", created.json());
    let expires = created.json()["unused_expires_at"]
        .as_u64()
        .expect("unused_expires_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(expires > now + 23 * 3600 * 1000, "about a day");
    let mxc = mxc_of(&created);

    // Not uploaded yet: 504 M_NOT_YET_UPLOADED once the (short) timeout passes.
    let got = get(
        &server,
        &format!("{V1}/download/{mxc}?timeout_ms=50"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 504);
    assert_eq!(got.errcode(), "M_NOT_YET_UPLOADED");
    let got = get(
        &server,
        &format!("{V1}/thumbnail/{mxc}?width=5&height=5&timeout_ms=50"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 504);

    // A download waiting with a long timeout gets the content once it is uploaded.
    let waiting = {
        let url = format!("{}{V1}/download/{mxc}?timeout_ms=30000", server.base);
        let token = bob.token.clone();
        tokio::spawn(async move { send(http().get(url).bearer_auth(token)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let other = put(&server, &bob.token, &mxc, b"bob's".to_vec()).await;
    assert_eq!(other.status, 403);
    assert_eq!(other.errcode(), "M_FORBIDDEN");

    let done = put(&server, &alice.token, &mxc, b"the content".to_vec()).await;
    assert_eq!(done.status, 200, "{:?}", done.json());

    let waited = tokio::time::timeout(std::time::Duration::from_secs(20), waiting)
        .await
        .expect("the waiting download is woken")
        .expect("task");
    assert_eq!(waited.status, 200);
    assert_eq!(waited.body, b"the content");
    assert_eq!(
        waited.header("content-disposition"),
        "inline; filename=\"late.txt\""
    );

    let again = put(&server, &alice.token, &mxc, b"again".to_vec()).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.errcode(), "M_CANNOT_OVERWRITE_MEDIA");

    let unknown = put(
        &server,
        &alice.token,
        "localhost/neverreserved",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.errcode(), "M_NOT_FOUND");
    let foreign = put(&server, &alice.token, "other.example/abc", b"x".to_vec()).await;
    assert_eq!(foreign.status, 404);
}

#[tokio::test]
async fn pending_ids_are_limited_per_user_and_expire() {
    let server = TestServer::start_with(|c| c.media.max_pending_uploads = 2).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = create(&server, &alice.token).await;
    assert_eq!(create(&server, &alice.token).await.status, 200);
    let over = create(&server, &alice.token).await;
    assert_eq!(over.status, 429);
    assert_eq!(over.errcode(), "M_LIMIT_EXCEEDED");
    // Per user.
    assert_eq!(create(&server, &bob.token).await.status, 200);
    // Uploading one frees a slot.
    assert_eq!(
        put(&server, &alice.token, &mxc_of(&first), b"x".to_vec())
            .await
            .status,
        200
    );
    assert_eq!(create(&server, &alice.token).await.status, 200);

    // Ids that expire unused are gone.
    let server = TestServer::start_with(|c| c.media.unused_expiration_s = 0).await;
    let alice = server.register("alice").await;
    let created = create(&server, &alice.token).await;
    let mxc = mxc_of(&created);
    let late = put(&server, &alice.token, &mxc, b"x".to_vec()).await;
    assert_eq!(late.status, 404);
    let got = get(
        &server,
        &format!("{V1}/download/{mxc}?timeout_ms=50"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(server.services().media.sweep(None).await.expect("sweep"), 1);
}
