//! A node's TLS key and certificate request (`liaison init`), and key files in the project's one
//! form (PKCS#8 v1, protocol.md §2). Production code: the development PKI is `certs-dev`'s.

use std::path::Path;

use anyhow::{Context as _, Result};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use rcgen::PublicKeyData as _;
use sha2::{Digest as _, Sha256};

/// An rcgen key pair as a PKCS#8 v1 PEM key file.
pub(crate) fn key_pair_pem(key: &rcgen::KeyPair) -> Result<String> {
    let sk = ed25519_dalek::SigningKey::from_pkcs8_der(&key.serialize_der())
        .context("reading the generated key")?;
    Ok(liaison_protocol::keys::private_key_pem(&sk)
        .context("encoding the key")?
        .to_string())
}

/// Creates a node's TLS key (mode 0600, at `key_path`) and a certificate signing request
/// naming `node_id`; returns the request (PEM) and the SHA-256 of the key's
/// SubjectPublicKeyInfo, which the roster pins.
pub(crate) fn tls_request(node_id: &str, key_path: &Path) -> Result<(String, [u8; 32])> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    liaison_node::identity::write_secret_file(key_path, &key_pair_pem(&key)?)?;
    let mut p = rcgen::CertificateParams::new(vec![node_id.to_owned()])?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, node_id);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key)?;
    let spki: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    Ok((csr.pem()?, spki))
}
