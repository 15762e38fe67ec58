//! Key files: PKCS#8 PEM, created 0600, refused when group- or world-readable.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use liaison_protocol::PublicKey;

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

/// Where a key's successor waits: `signing.key.pem` → `signing.next.key.pem` (any
/// `<stem>.key.pem`), else `<name>.next`.
pub fn next_key_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let next = match name.strip_suffix(".key.pem") {
        Some(stem) => format!("{stem}.next.key.pem"),
        None => format!("{name}.next"),
    };
    path.with_file_name(next)
}

/// The node's three signing keys, each switched when a roster names its successor.
#[derive(Debug)]
pub struct NodeKeys {
    /// Envelopes, receipts, officer credentials, automatic actions.
    pub signing: KeyCell,
    /// Checkpoints of the audit log.
    pub log: KeyCell,
    /// Cosignatures of peers' checkpoints.
    pub witness: KeyCell,
}

impl NodeKeys {
    /// Makes the node's keys the ones `roster` names for `me` (switching to a `.next` key file
    /// the roster names); returns warnings. A key that is neither the named one nor a previous
    /// one still listed is refused.
    pub fn follow_roster(
        &self,
        me: &liaison_protocol::NodeId,
        roster: &liaison_protocol::Roster,
    ) -> Result<Vec<String>, NodeError> {
        let member = roster
            .member(me)
            .ok_or_else(|| NodeError::Roster(format!("{me} is not a member of the roster")))?;
        let mut notes = Vec::new();
        for (what, change) in self.follow(member)? {
            match change {
            KeyChange::Current => {}
            KeyChange::Switched { file, .. } => notes.push(format!(
                "the roster (serial {}) names the {what} key in {}: signing with it from now on \
                 (the previous key signs nothing more); move it over the configured key file \
                 before the next restart is not needed, the node looks for it there",
                roster.serial,
                file.display()
            )),
            KeyChange::Retiring { looked_for } => notes.push(format!(
                "WARNING: the roster (serial {}) names a new {what} key for {me} that this node \
                 does not hold (put it at {}); it signs with its previous key until a roster \
                 drops that key",
                roster.serial,
                looked_for.display()
            )),
            KeyChange::Missing { looked_for } => {
                let configured = match what {
                    "signing" => &self.signing.path,
                    "log" => &self.log.path,
                    _ => &self.witness.path,
                };
                return Err(NodeError::Roster(format!(
                    "the {what} key in {} is not the one the roster (serial {}) lists for {me}, \
                     nor a previous one it still lists, and {} does not hold it",
                    configured.display(),
                    roster.serial,
                    looked_for.display()
                )));
            }
        }
        }
        Ok(notes)
    }
    /// Follows a roster naming `me` (its current keys and any previous ones), for each key.
    pub fn follow(
        &self,
        me: &liaison_protocol::roster::Member,
    ) -> Result<Vec<(&'static str, KeyChange)>, NodeError> {
        let prev = me.previous.as_ref();
        Ok(vec![
            (
                self.signing.what(),
                self.signing
                    .follow(&me.signing_key, prev.and_then(|p| p.signing_key.as_ref()))?,
            ),
            (
                self.log.what(),
                self.log
                    .follow(&me.log_key, prev.and_then(|p| p.log_key.as_ref()))?,
            ),
            (
                self.witness.what(),
                self.witness
                    .follow(&me.witness_key, prev.and_then(|p| p.witness_key.as_ref()))?,
            ),
        ])
    }
}

/// What [`KeyCell::follow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// The key in use is the one the roster names.
    Current,
    /// The roster names the key in the `.next` file: it is in use from now on.
    Switched {
        /// The file the key now in use came from.
        file: PathBuf,
    },
    /// The roster names a new key this node does not hold, and still lists the one in use as
    /// previous: it goes on signing with that until the roster drops it.
    Retiring {
        /// Where the new key was looked for.
        looked_for: PathBuf,
    },
    /// Neither the key in use nor the `.next` file is one the roster names.
    Missing {
        /// Where the new key was looked for.
        looked_for: PathBuf,
    },
}

/// One of the node's signing keys (node, log, witness), switched while the node runs when a
/// roster names its successor: signers take the key in use each time ([`KeyCell::get`]).
pub struct KeyCell {
    what: &'static str,
    path: PathBuf,
    key: RwLock<Arc<SigningKey>>,
}

impl std::fmt::Debug for KeyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCell")
            .field("what", &self.what)
            .field("path", &self.path)
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl KeyCell {
    /// The key loaded from `path` (its configured file).
    pub fn new(what: &'static str, path: PathBuf, key: SigningKey) -> Self {
        Self {
            what,
            path,
            key: RwLock::new(Arc::new(key)),
        }
    }

    /// Which key this is (`signing`, `log`, `witness`).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The key in use.
    pub fn get(&self) -> Arc<SigningKey> {
        self.key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(&*self.get())
    }

    /// Follows the roster: `current` is the key it names for this node, `previous` the one it
    /// still lists from before a rotation. Switches to the `.next` file's key when that is the
    /// one named.
    pub fn follow(
        &self,
        current: &PublicKey,
        previous: Option<&PublicKey>,
    ) -> Result<KeyChange, NodeError> {
        let from = self.public();
        if &from == current {
            return Ok(KeyChange::Current);
        }
        let next = next_key_path(&self.path);
        if next.exists() {
            let key = load_signing_key(&next)?;
            if &PublicKey::from(&key) == current {
                *self
                    .key
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                return Ok(KeyChange::Switched { file: next });
            }
        }
        if previous == Some(&from) {
            Ok(KeyChange::Retiring { looked_for: next })
        } else {
            Ok(KeyChange::Missing { looked_for: next })
        }
    }
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
    fn a_cell_switches_to_the_next_key_the_roster_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("signing.key.pem");
        let old = generate_signing_key(&p).unwrap();
        let cell = KeyCell::new("signing", p.clone(), old.clone());
        let old_pub = PublicKey::from(&old);
        assert_eq!(cell.follow(&old_pub, None).unwrap(), KeyChange::Current);
        let next = next_key_path(&p);
        assert_eq!(next, dir.path().join("signing.next.key.pem"));
        let stranger = PublicKey::from(&SigningKey::from_bytes(&[9; 32]));
        // A new key named that this node does not hold: it keeps the old one while listed.
        assert!(matches!(
            cell.follow(&stranger, Some(&old_pub)).unwrap(),
            KeyChange::Retiring { .. }
        ));
        assert!(matches!(
            cell.follow(&stranger, None).unwrap(),
            KeyChange::Missing { .. }
        ));
        let new = generate_signing_key(&next).unwrap();
        let new_pub = PublicKey::from(&new);
        assert!(matches!(
            cell.follow(&new_pub, Some(&old_pub)).unwrap(),
            KeyChange::Switched { .. }
        ));
        assert_eq!(cell.public(), new_pub);
        assert_eq!(
            cell.follow(&new_pub, Some(&old_pub)).unwrap(),
            KeyChange::Current
        );
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
