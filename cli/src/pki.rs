//! A node's TLS key and certificate request (`liaison init`, `liaison node renew-tls`), new
//! signing, log and witness keys (`liaison node rotate-key`), and key files in the project's one
//! form (PKCS#8 v1, protocol.md §2). Production code: the development PKI is `certs-dev`'s.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use liaison_node::Config;
use rcgen::PublicKeyData as _;
use sha2::{Digest as _, Sha256};

use crate::output;

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

/// `liaison node rotate-key --kind signing|log|witness`: a new key beside the current one
/// (`<stem>.next.key.pem`), whose public key goes to the federation authority.
pub(crate) fn rotate_key(cfg: &Config, kind: &str, json: bool) -> Result<()> {
    let current = match kind {
        "signing" => &cfg.signing_key,
        "log" => &cfg.log_key,
        _ => &cfg.witness_key,
    };
    let next = liaison_node::identity::next_key_path(current);
    if next.exists() {
        bail!(
            "{} exists: a rotation is under way (its public key goes to the federation \
             authority), or remove it to start again",
            next.display()
        );
    }
    let key = liaison_node::identity::generate_signing_key(&next)?;
    let public = hex::encode(key.verifying_key().to_bytes());
    let v = serde_json::json!({"node": cfg.node_id, "kind": kind, "key_file": next, "public_key": public});
    output::print(json, &v, |_| {
        format!(
            "new {kind} key {} (public key {public}).\n\nSend the public key to the federation \
             authority; it runs\n  liaison federation rotate-key --dir <fed> {} --kind {kind} \
             --key {public}\nand signs the next roster. Once this node holds that roster (applied \
             here, or from any peer), it signs with the new key by itself, without a restart; \
             the old key stays accepted for the overlap the authority set.",
            next.display(),
            cfg.node_id
        )
    });
    Ok(())
}

/// `liaison node renew-tls`: a new TLS key and request beside the current key.
pub(crate) fn renew_tls(cfg: &Config, json: bool) -> Result<()> {
    let dir = cfg
        .tls_key
        .parent()
        .context("the TLS key path has no directory")?;
    let (key, csr) = (dir.join("tls.next.key.pem"), dir.join("tls.next.csr.pem"));
    if key.exists() {
        bail!(
            "{} exists: a renewal is under way (send {} to the federation authority), or \
             remove both files to start again",
            key.display(),
            csr.display()
        );
    }
    let (request, spki) = tls_request(cfg.node_id.as_str(), &key)?;
    std::fs::write(&csr, request)?;
    let v = serde_json::json!({"node": cfg.node_id, "key": key, "csr": csr,
        "tls_spki_sha256": hex::encode(spki)});
    output::print(json, &v, |_| {
        format!(
            "new TLS key {} and request {} (key SPKI {}).\n\nSend the request to the \
             federation authority; it runs\n  liaison federation rotate-key --dir <fed> {} \
             --kind tls --csr tls.next.csr.pem\nand signs the next roster, which carries the new \
             certificate. Once this node holds that roster (liaison roster apply, or from any \
             peer) it serves and dials with the new key and that certificate by itself, without \
             a restart; peers accept the old one for the overlap the authority set. Before the \
             next renewal, move {} over {} (and the certificate, `liaison roster show --json`, \
             over {}).",
            key.display(),
            csr.display(),
            hex::encode(spki),
            cfg.node_id,
            key.display(),
            cfg.tls_key.display(),
            cfg.tls_cert.display()
        )
    });
    Ok(())
}
