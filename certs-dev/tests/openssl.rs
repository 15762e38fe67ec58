//! Key files and certificates load in OpenSSL, the common tool of other implementations: every
//! Ed25519 key file `generate` writes (authority, CA, and each member's TLS, signing, log and
//! witness key) is read by `openssl pkey` and gives the public key the roster holds, and every
//! member certificate verifies against the CA with `openssl verify`.
//!
//! Needs the `openssl` command. Without it the test says so and passes, unless
//! `LIAISON_REQUIRE_OPENSSL` is set (`.ci/run` sets it), when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

fn openssl(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("openssl").args(args).output() {
        Ok(o) => Some(o),
        Err(e) if std::env::var_os("LIAISON_REQUIRE_OPENSSL").is_some() => {
            panic!("LIAISON_REQUIRE_OPENSSL is set but openssl cannot run: {e}")
        }
        Err(e) => {
            eprintln!("openssl cannot run ({e}): key files not checked against OpenSSL");
            None
        }
    }
}

/// The DER SubjectPublicKeyInfo OpenSSL derives from a private key file.
fn public_key_der(key: &Path) -> Vec<u8> {
    let out = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "openssl cannot read {}: {}",
        key.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn openssl_reads_every_key_file_and_verifies_every_certificate() {
    if openssl(&["version"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = liaison_certs_dev::demo_spec();
    let generated =
        liaison_certs_dev::generate(&spec, dir.path(), &|_| "127.0.0.1:7101".parse().unwrap())
            .unwrap();
    // An Ed25519 SubjectPublicKeyInfo is 12 bytes of prefix and the 32-byte key.
    let raw = |der: Vec<u8>| -> [u8; 32] {
        assert_eq!(der.len(), 44, "{der:?}");
        der[12..].try_into().unwrap()
    };
    let authority = raw(public_key_der(&dir.path().join("authority.key.pem")));
    assert_eq!(hex::encode(authority), generated.authority_key_hex);
    public_key_der(&dir.path().join("ca.key.pem"));
    for m in &generated.roster.members {
        let d = dir.path().join("nodes").join(m.id.as_str());
        let key = |name: &str| raw(public_key_der(&d.join(name)));
        assert_eq!(key("signing.key.pem"), m.signing_key.to_bytes(), "{}", m.id);
        assert_eq!(key("log.key.pem"), m.log_key.to_bytes(), "{}", m.id);
        assert_eq!(key("witness.key.pem"), m.witness_key.to_bytes(), "{}", m.id);
        let spki: [u8; 32] = Sha256::digest(public_key_der(&d.join("tls.key.pem"))).into();
        assert_eq!(spki, m.tls_spki_sha256, "{}", m.id);
        let out = openssl(&[
            "verify",
            "-CAfile",
            dir.path().join("ca.pem").to_str().unwrap(),
            d.join("tls.cert.pem").to_str().unwrap(),
        ])
        .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            m.id,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
