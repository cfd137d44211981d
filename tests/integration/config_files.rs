//! The shipped configuration files parse and say what the code's defaults say:
//! `conduit.toml.example` is exactly the defaults, the Debian package's
//! `debian/conduit.toml` (generated from it by `debian/gen-conduit-toml.sh`) differs only
//! in the database path.

use std::path::{Path, PathBuf};

use conduit::config::Config;

fn load(relative: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    assert!(path.is_file(), "{} is missing", path.display());
    Config::load(Some(&path)).unwrap_or_else(|e| panic!("{relative} does not load: {e}"))
}

#[test]
fn the_example_config_is_the_defaults() {
    let example = load("conduit.toml.example");
    let defaults = Config::with_defaults("localhost", PathBuf::from("./conduit-db"));
    assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    assert!(
        !example.allow_registration,
        "registration must be off by default"
    );
    assert!(example.registration_token.is_none());
}

#[test]
fn the_debian_config_is_the_example_with_the_database_in_var_lib() {
    let debian = load("debian/conduit.toml");
    let expected = Config::with_defaults("localhost", PathBuf::from("/var/lib/conduit"));
    assert_eq!(
        format!("{debian:?}"),
        format!("{expected:?}"),
        "debian/conduit.toml is out of date: run debian/gen-conduit-toml.sh"
    );
}

#[test]
fn the_debian_config_is_generated_from_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("conduit.toml");
    let status = std::process::Command::new("sh")
        .arg(root.join("debian/gen-conduit-toml.sh"))
        .arg(&out)
        .status()
        .expect("sh runs");
    assert!(status.success(), "debian/gen-conduit-toml.sh failed");
    let generated = std::fs::read_to_string(&out).expect("generated");
    let committed = std::fs::read_to_string(root.join("debian/conduit.toml")).expect("committed");
    assert!(
        generated == committed,
        "debian/conduit.toml is out of date: run debian/gen-conduit-toml.sh"
    );
}

/// The field names serde expects, read from the error an unknown key produces (the
/// configuration types are not `Serialize`, and this keeps the test free of a list that
/// could go stale).
fn expected_fields(bogus: figment::Figment) -> Vec<String> {
    let error = bogus
        .extract::<Config>()
        .expect_err("an unknown key is rejected")
        .to_string();
    let list = error
        .split_once("expected `one of ")
        .unwrap_or_else(|| panic!("unexpected error format: {error}"))
        .1;
    // "`a`, `b`, `c`` for key ...": the list ends at the doubled backtick.
    let list = list.split_once("``").map_or(list, |(l, _)| l);
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(ToOwned::to_owned)
        .collect()
}

#[test]
fn every_key_is_in_the_example_and_the_docs() {
    use figment::{Figment, providers::Serialized};

    let top = expected_fields(Figment::from(Serialized::defaults(
        serde_json::json!({ "no_such_key": 1 }),
    )));
    let nested = expected_fields(Figment::from(Serialized::defaults(
        serde_json::json!({ "rate_limits": { "no_such_key": 1 } }),
    )));
    let tls = expected_fields(Figment::from(Serialized::defaults(serde_json::json!({
        "tls": { "certs": "c", "key": "k", "no_such_key": 1 }
    }))));
    let media = expected_fields(Figment::from(Serialized::defaults(serde_json::json!({
        "media": { "no_such_key": 1 }
    }))));
    let s3 = expected_fields(Figment::from(Serialized::defaults(serde_json::json!({
        "media": { "s3": {
            "endpoint": "http://localhost", "bucket": "b", "access_key_id": "a",
            "secret_access_key": "s", "no_such_key": 1
        } }
    }))));
    assert!(media.contains(&"backend".to_owned()), "{media:?}");
    assert!(s3.contains(&"path_style".to_owned()), "{s3:?}");
    assert!(top.contains(&"server_name".to_owned()), "{top:?}");
    assert!(nested.contains(&"per_second".to_owned()), "{nested:?}");
    assert!(tls.contains(&"dual_protocol".to_owned()), "{tls:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("conduit.toml.example")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    // A key is documented in the example as `key = value`, possibly commented out.
    let in_example = |key: &str| {
        example.lines().any(|line| {
            line.trim_start_matches('#')
                .trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    for key in &top {
        if key != "rate_limits" && key != "tls" && key != "media" {
            assert!(in_example(key), "conduit.toml.example lacks `{key}`");
        }
        assert!(
            docs.contains(&format!("| `{key}` |")),
            "docs/configuration.md lacks a row for `{key}`"
        );
    }
    assert!(example.contains("[global.rate_limits]"));
    assert!(example.contains("#[global.tls]"));
    for key in &tls {
        assert!(in_example(key), "conduit.toml.example lacks tls.{key}");
        assert!(
            docs.contains(&format!("| `tls.{key}` |")),
            "docs/configuration.md lacks a row for `tls.{key}`"
        );
    }
    assert!(example.contains("[global.media]"));
    assert!(example.contains("#[global.media.s3]"));
    for (table, keys) in [("media", &media), ("media.s3", &s3)] {
        for key in keys {
            if key != "s3" {
                assert!(in_example(key), "conduit.toml.example lacks {table}.{key}");
            }
            assert!(
                docs.contains(&format!("| `{table}.{key}` |")),
                "docs/configuration.md lacks a row for `{table}.{key}`"
            );
        }
    }
    for key in &nested {
        assert!(
            in_example(key),
            "conduit.toml.example lacks rate_limits.{key}"
        );
        assert!(
            docs.contains(&format!("| `rate_limits.{key}` |")),
            "docs/configuration.md lacks a row for `rate_limits.{key}`"
        );
    }
}
