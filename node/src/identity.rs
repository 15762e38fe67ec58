//! Key files: PKCS#8 PEM, created 0600, refused when group- or world-readable.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;

use crate::error::NodeError;

/// Reads a secret key file after checking that only its owner can read it.
pub fn read_secret_file(path: &Path) -> Result<zeroize::Zeroizing<String>, NodeError> {
    let meta = std::fs::metadata(path).map_err(|e| NodeError::Key {
        path: path.to_owned(),
        problem: format!("cannot read: {e}"),
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(NodeError::Key {
            path: path.to_owned(),
            problem: format!(
                "mode {:o} lets group or others read it; run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            ),
        });
    }
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| NodeError::Key {
            path: path.to_owned(),
            problem: format!("cannot read: {e}"),
        })
}

/// Writes a secret file with mode 0600; refuses to overwrite.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), NodeError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| NodeError::Key {
            path: path.to_owned(),
            problem: format!("cannot create: {e}"),
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| NodeError::Key {
            path: path.to_owned(),
            problem: format!("cannot write: {e}"),
        })
}

/// Loads an Ed25519 signing key from a PKCS#8 PEM file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, NodeError> {
    let pem = read_secret_file(path)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| NodeError::Key {
        path: path.to_owned(),
        problem: format!("not an Ed25519 PKCS#8 PEM key: {e}"),
    })
}

/// Generates an Ed25519 key and writes it as PKCS#8 PEM, mode 0600.
pub fn generate_signing_key(path: &Path) -> Result<SigningKey, NodeError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = liaison_protocol::keys::private_key_pem(&key).map_err(|e| NodeError::Key {
        path: path.to_owned(),
        problem: format!("cannot encode: {e}"),
    })?;
    write_secret_file(path, &pem)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_0600_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        let k = generate_signing_key(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_signing_key(&p).unwrap().to_bytes(), k.to_bytes());
        assert!(generate_signing_key(&p).is_err(), "must not overwrite");
    }

    #[test]
    fn readable_by_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        generate_signing_key(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
