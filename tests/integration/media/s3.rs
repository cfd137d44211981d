//! The S3 backend against a real S3-compatible server: moto's server from PyPI
//! (`.ci/run` installs it into ~/.cache/moto-venv). Without it the test says so and
//! passes nothing off as tested: it prints that it was skipped.

use std::{path::PathBuf, process::Stdio, time::Duration};

use super::*;
use crate::common::TestServer;

fn moto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CONDUIT_TEST_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".cache/moto-venv/bin/moto_server");
    path.is_file().then_some(path)
}

/// A moto server on a free loopback port; killed on drop.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto(binary: &PathBuf) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if http().get(&moto.endpoint).send().await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto_server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // moto's default mode accepts any credentials; the bucket is made unsigned.
    let made = http()
        .put(format!("{}/conduit-media", moto.endpoint))
        .send()
        .await
        .expect("create bucket");
    assert!(
        made.status().is_success(),
        "create bucket: {}",
        made.status()
    );
    moto
}

async fn object_keys(moto: &Moto) -> Vec<String> {
    let listing = http()
        .get(format!("{}/conduit-media?list-type=2", moto.endpoint))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("listing");
    listing
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
        .collect()
}

#[tokio::test]
async fn round_trips_ranges_thumbnails_dedup_and_delete_on_s3() {
    let Some(binary) = moto_binary() else {
        eprintln!(
            "media::s3: SKIPPED: moto_server not installed (python3 -m venv ~/.cache/moto-venv && \
             ~/.cache/moto-venv/bin/pip install 'moto[server]'); .ci/run installs it"
        );
        return;
    };
    let moto = start_moto(&binary).await;
    let endpoint = moto.endpoint.clone();
    let server = TestServer::start_with(|c| {
        c.media.backend = conduit::config::MediaBackend::S3;
        c.media.s3 = Some(conduit::config::S3Config {
            endpoint: endpoint.parse().unwrap(),
            bucket: "conduit-media".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        });
    })
    .await;
    let alice = server.register("alice").await;
    let admin = server.register("admin").await;
    let admin_id = ruma::UserId::parse(&admin.user_id).unwrap();
    server
        .services()
        .users
        .update(&admin_id, |u| u.admin = true)
        .unwrap();

    let files: Vec<(Vec<u8>, &str)> = vec![
        (b"hello, s3\n".to_vec(), "text/plain"),
        (png(40, 30), "image/png"),
        (jpeg(64, 48), "image/jpeg"),
        (noise(300_000, 11), "video/mp4"),
    ];
    let mut ids = Vec::new();
    for (bytes, content_type) in &files {
        let (reply, mxc) = upload(
            &server,
            &alice.token,
            bytes.clone(),
            content_type,
            Some("f"),
        )
        .await;
        assert_eq!(reply.status, 200, "{content_type}: {:?}", reply.json());
        let got = get(&server, &format!("{V1}/download/{mxc}"), Some(&alice.token)).await;
        assert_eq!(got.status, 200);
        assert!(got.body == *bytes, "{content_type}: bytes differ");
        assert_eq!(got.header("content-type"), *content_type);
        ids.push(mxc);
    }
    assert!(
        blob_files(&media_dir(&server)).is_empty(),
        "nothing on the local disk"
    );
    assert_eq!(object_keys(&moto).await.len(), 4);

    // Ranges are forwarded.
    let video = &files[3].0;
    let got = get_with(
        &server,
        &format!("{V1}/download/{}", ids[3]),
        Some(&alice.token),
        &[("range", "bytes=1000-1999")],
    )
    .await;
    assert_eq!(got.status, 206);
    assert!(got.body == video[1000..2000]);
    let got = get_with(
        &server,
        &format!("{V1}/download/{}", ids[3]),
        Some(&alice.token),
        &[("range", "bytes=400000-")],
    )
    .await;
    assert_eq!(got.status, 416);

    // Thumbnails are stored in the bucket too.
    let got = get(
        &server,
        &format!("{V1}/thumbnail/{}?width=16&height=16&method=crop", ids[2]),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert_eq!(image::load_from_memory(&got.body).unwrap().width(), 16);
    assert_eq!(object_keys(&moto).await.len(), 5);

    // Dedup: the same bytes again add no object.
    let (_, twin) = upload(
        &server,
        &alice.token,
        files[0].0.clone(),
        "text/plain",
        None,
    )
    .await;
    assert_eq!(object_keys(&moto).await.len(), 5);

    // Deleting both users of a blob removes the object.
    for mxc in [&ids[0], &twin] {
        let reply = send(
            http()
                .delete(format!("{}/_synapse/admin/v1/media/{mxc}", server.base))
                .bearer_auth(&admin.token),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(object_keys(&moto).await.len(), 4);
    let got = get(
        &server,
        &format!("{V1}/download/{}", ids[0]),
        Some(&alice.token),
    )
    .await;
    assert_eq!(got.status, 404);
}
