//! A node refuses to start on unsafe or inconsistent material, with a message that says what
//! to do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;

use liaison_tests::{Federation, member, spec};

fn fed() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

async fn start_err(fed: &mut Federation, change: impl FnOnce(&mut liaison_node::Config)) -> String {
    match fed.start_with("fj", change).await {
        Ok(_) => panic!("the node started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn development_material_is_refused_outside_dev_mode() {
    let mut fed = fed();
    let err = start_err(&mut fed, |c| c.dev_mode = false).await;
    assert!(err.contains("development roster"), "{err}");
    assert!(err.contains("dev_mode"), "{err}");
}

#[tokio::test]
async fn readable_key_files_are_refused() {
    let mut fed = fed();
    let key = fed.member_dir("fj").join("signing.key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = start_err(&mut fed, |_| {}).await;
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn roster_from_another_authority_is_refused() {
    let mut fed = fed();
    let err = start_err(&mut fed, |c| {
        c.authority_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c".into();
    })
    .await;
    assert!(
        err.contains("does not verify against the configured authority key"),
        "{err}"
    );
}

#[tokio::test]
async fn keys_that_do_not_match_the_roster_are_refused() {
    let mut fed = fed();
    let other = fed.member_dir("sx").join("signing.key.pem");
    let err = start_err(&mut fed, |c| c.signing_key = other).await;
    assert!(
        err.contains("is not the one the roster (serial 1) lists for fj"),
        "{err}"
    );
    assert!(err.contains("sx/signing.key.pem"), "{err}");
    let other_cert = fed.member_dir("sx").join("tls.cert.pem");
    let other_key = fed.member_dir("sx").join("tls.key.pem");
    let err = start_err(&mut fed, |c| {
        c.tls_cert = other_cert;
        c.tls_key = other_key;
    })
    .await;
    assert!(err.contains("pins for fj"), "{err}");
}

#[tokio::test]
async fn unknown_config_keys_are_refused() {
    let fed = fed();
    let path = fed.write_config("fj").unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[delivery]\nretry_forever = true\n");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("node.toml");
    std::fs::write(
        &p,
        text.replace("[delivery]\nretry_forever", "[extra]\nretry_forever"),
    )
    .unwrap();
    let err = liaison_node::Config::load(&p).unwrap_err().to_string();
    assert!(err.contains("extra"), "{err}");
}

#[tokio::test]
async fn the_data_directory_is_the_nodes_alone() {
    let mut fed = fed();
    let cfg = fed.config("fj").unwrap();
    // The node makes its data directory 0700.
    let node = fed.start("fj").await.unwrap();
    let mode = std::fs::metadata(&cfg.data_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    fed.stop("fj").await;
    drop(node);
    // One opened to others is named by check-config.
    std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let notes = liaison_node::check_config(&cfg).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("WARNING: the data directory") && n.contains("chmod 700")),
        "{notes:?}"
    );
}
