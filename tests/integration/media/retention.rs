//! Admin quarantine and deletion (Synapse's admin API shapes) and the remote-cache sweep.

use super::*;
use crate::common::TestServer;

async fn make_admin(server: &TestServer, user: &crate::common::User) {
    let user_id = ruma::UserId::parse(&user.user_id).unwrap();
    server
        .services()
        .users
        .update(&user_id, |u| u.admin = true)
        .expect("admin flag");
}

#[tokio::test]
async fn admins_quarantine_and_delete_media() {
    let server = TestServer::start().await;
    let admin = server.register("admin").await;
    let alice = server.register("alice").await;
    make_admin(&server, &admin).await;
    let bytes = jpeg(60, 60);
    let (_, mxc) = upload(&server, &alice.token, bytes.clone(), "image/jpeg", None).await;
    let (_, twin) = upload(&server, &alice.token, bytes.clone(), "image/jpeg", None).await;
    let thumb = get(
        &server,
        &format!("{V1}/thumbnail/{mxc}?width=8&height=8&method=crop"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(thumb.status, 200);
    assert_eq!(
        blob_files(&media_dir(&server)).len(),
        2,
        "original and thumbnail"
    );

    let quarantine = |token: String, mxc: String| {
        let url = format!("{}/_synapse/admin/v1/media/quarantine/{mxc}", server.base);
        async move { send(http().post(url).bearer_auth(token)).await }
    };
    let refused = quarantine(alice.token.clone(), mxc.clone()).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.errcode(), "M_FORBIDDEN");
    let done = quarantine(admin.token.clone(), mxc.clone()).await;
    assert_eq!(done.status, 200, "{:?}", done.json());
    for path in [
        format!("{V1}/download/{mxc}"),
        format!("{LEGACY}/download/{mxc}"),
        format!("{V1}/thumbnail/{mxc}?width=8&height=8&method=crop"),
    ] {
        let got = get(&server, &path, Some(&alice.token)).await;
        assert_eq!(got.status, 404, "{path}");
        assert_eq!(got.errcode(), "M_NOT_FOUND");
    }
    // The same bytes under another id are not quarantined.
    assert_eq!(
        get(
            &server,
            &format!("{V1}/download/{twin}"),
            Some(&alice.token)
        )
        .await
        .status,
        200
    );

    let delete = |token: String, mxc: String| {
        let url = format!("{}/_synapse/admin/v1/media/{mxc}", server.base);
        async move { send(http().delete(url).bearer_auth(token)).await }
    };
    assert_eq!(delete(alice.token.clone(), twin.clone()).await.status, 403);
    let deleted = delete(admin.token.clone(), mxc.clone()).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.json());
    assert_eq!(deleted.json()["total"], 1);
    // The twin still uses the original's blob; the thumbnail's blob is gone.
    assert_eq!(blob_files(&media_dir(&server)).len(), 1);
    assert_eq!(
        get(
            &server,
            &format!("{V1}/download/{twin}"),
            Some(&alice.token)
        )
        .await
        .body,
        bytes
    );
    assert_eq!(delete(admin.token.clone(), twin.clone()).await.status, 200);
    assert!(blob_files(&media_dir(&server)).is_empty());
    let got = get(
        &server,
        &format!("{V1}/download/{twin}"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(delete(admin.token.clone(), twin).await.status, 404);
}

#[tokio::test]
async fn the_sweep_deletes_expired_remote_copies_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let media = &server.services().media;
    let remote = ruma::ServerName::parse("remote.example").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let chunk = |b: &'static [u8]| {
        futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b))])
    };
    media
        .insert_remote(
            &remote,
            "old",
            Some("text/plain".into()),
            now - 10 * 86_400_000,
            chunk(b"old"),
        )
        .await
        .unwrap();
    media
        .insert_remote(
            &remote,
            "fresh",
            Some("text/plain".into()),
            now,
            chunk(b"fresh"),
        )
        .await
        .unwrap();
    let (_, local) = upload(&server, &alice.token, b"local".to_vec(), "text/plain", None).await;
    assert_eq!(blob_files(&media_dir(&server)).len(), 3);

    assert_eq!(
        media.sweep(None).await.unwrap(),
        0,
        "no max age: keep everything"
    );
    assert_eq!(media.sweep(Some(86_400_000)).await.unwrap(), 1);
    assert!(media.get(&remote, "old").unwrap().is_none());
    assert!(media.get(&remote, "fresh").unwrap().is_some());
    assert_eq!(blob_files(&media_dir(&server)).len(), 2);
    let got = get(
        &server,
        &format!("{V1}/download/{local}"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 200);
}
