//! Officers and their signed actions (docs/formats.md §2, "Body = an officer-signed action").
//!
//! An operator enrolls an officer at a node: the node signs an [`OfficerCredential`] (typ
//! `application/vnd.liaison.officer+cbor`) binding the officer's name, number, unit, role and
//! personal Ed25519 key to the node. Every business step is an [`Action`] (typ
//! `application/vnd.liaison.action+cbor`) signed by the officer's key and carrying the
//! credential, so anyone holding the roster can check which officer of which agency acted,
//! without asking the node. Automatic steps (an overdue notice) carry no credential and are
//! signed by the node's own key.
//!
//! Every action carries its handling: purpose, handling code H0–H3 (with the H3 text),
//! sensitivity flags, retention and whether it may go abroad (docs/domain.md §4).

use ciborium::Value;
use ed25519_dalek::SigningKey;

use crate::cbor::{self, MapBuilder, MapReader};
use crate::cose::{SignedObject, TYP_ACTION};
use crate::document::Document;
use crate::error::{DecodeError, VerifyError};
use crate::ids::{Digest, MessageId, NodeId, check_id};
use crate::keys::PublicKey;
use crate::roster::Roster;
use crate::workflow::Role;

/// `typ` of an officer credential.
pub const TYP_OFFICER: &str = "application/vnd.liaison.officer+cbor";
/// Largest encoded credential.
pub const MAX_CREDENTIAL_LEN: usize = 4096;
/// Largest encoded action (the roster's body limit applies as well).
pub const MAX_ACTION_LEN: usize = 1024 * 1024;
/// Format version of credentials and actions.
pub const ACTION_VERSION: u64 = 1;
/// The sensitivity flags an action may carry (PIPL art. 28 categories used here).
pub const SENSITIVITY_FLAGS: [&str; 6] = [
    "victim",
    "child",
    "identity",
    "health",
    "biometric",
    "whereabouts",
];
/// Longest H3 restriction text.
pub const MAX_H3_TEXT: usize = 500;

/// An officer as enrolled at a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Officer {
    /// Federation id.
    pub federation: String,
    /// The node that enrolled the officer.
    pub node: NodeId,
    /// Officer id, unique at the node (e.g. `cn-35-psb/wang.li`).
    pub id: String,
    /// Full name.
    pub name: String,
    /// Police or staff number.
    pub number: String,
    /// Unit (department, team).
    pub unit: String,
    /// What the officer may sign.
    pub role: Role,
    /// The officer's personal Ed25519 key.
    pub key: PublicKey,
    /// Enrolled at, Unix ms.
    pub enrolled_at: u64,
}

impl Officer {
    fn encode(&self) -> Vec<u8> {
        cbor::encode(
            &MapBuilder::new()
                .put(1, ACTION_VERSION)
                .put(2, self.federation.as_str())
                .put(3, self.node.as_str())
                .put(4, self.id.as_str())
                .put(5, self.name.as_str())
                .put(6, self.number.as_str())
                .put(7, self.unit.as_str())
                .put(8, self.role.name())
                .put(9, Value::Bytes(self.key.to_bytes().to_vec()))
                .put(10, self.enrolled_at)
                .build(),
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, VerifyError> {
        const OBJ: &str = "officer credential";
        let mut m = MapReader::new(OBJ, cbor::decode_strict(bytes, MAX_CREDENTIAL_LEN, None)?)?;
        if m.uint(1)? != ACTION_VERSION {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 1,
                problem: "unsupported version",
            }
            .into());
        }
        let federation = m.text(2)?;
        let node = NodeId::new(m.text(3)?)?;
        let id = m.text(4)?;
        check_officer_id(&id)?;
        let name = m.text(5)?;
        let number = m.text(6)?;
        let unit = m.text(7)?;
        let role = Role::parse(&m.text(8)?).ok_or(DecodeError::Field {
            object: OBJ,
            key: 8,
            problem: "unknown role",
        })?;
        let key = PublicKey::from_bytes(&m.fixed(9)?)?;
        let enrolled_at = m.uint(10)?;
        m.finish()?;
        Ok(Self {
            federation,
            node,
            id,
            name,
            number,
            unit,
            role,
            key,
            enrolled_at,
        })
    }

    /// The node signs the credential with its signing key.
    pub fn certify(&self, node_key: &SigningKey) -> SignedObject {
        SignedObject::sign(TYP_OFFICER, self.encode(), node_key)
    }

    /// Opens a credential: typ, the enrolling node's signature (per `roster`) and content.
    pub fn open(bytes: &[u8], roster: &Roster) -> Result<(Self, SignedObject), VerifyError> {
        let obj = SignedObject::parse(bytes, MAX_CREDENTIAL_LEN)?;
        obj.expect_typ(TYP_OFFICER)?;
        let officer = Self::decode(obj.payload())?;
        let member = roster
            .member(&officer.node)
            .ok_or_else(|| VerifyError::UnknownSigner(officer.node.to_string()))?;
        let Some(key) = member.signing_keys().find(|k| k.kid() == obj.kid()) else {
            return Err(VerifyError::UnknownSigner(format!(
                "officer credential not signed by {}'s node key",
                officer.node
            )));
        };
        obj.verify_with(key)?;
        if officer.federation != roster.federation {
            return Err(VerifyError::Mismatch(format!(
                "officer credential of federation {}, this is {}",
                officer.federation, roster.federation
            )));
        }
        Ok((officer, obj))
    }
}

/// Officer ids: 1-64 characters of `a-z 0-9 . _ - /`.
pub fn check_officer_id(id: &str) -> Result<(), DecodeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
        });
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            what: "officer id",
            problem: format!("{id:?}: use 1-64 characters of a-z, 0-9, '.', '_', '-', '/'"),
        })
    }
}

/// Handling codes (docs/domain.md §4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    /// H0: use only for preventing and combating crime.
    H0,
    /// H1: not for judicial proceedings without the provider's permission.
    H1,
    /// H2: not to be passed on without the provider's permission.
    H2,
    /// H3: other restrictions, in the text.
    H3(String),
}

impl Handling {
    /// The code, `H0` … `H3`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::H0 => "H0",
            Self::H1 => "H1",
            Self::H2 => "H2",
            Self::H3(_) => "H3",
        }
    }

    /// The H3 restriction, in words (None for the other codes).
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::H3(t) => Some(t),
            _ => None,
        }
    }

    /// Parses `H0`..`H2`, or `H3` with its text.
    pub fn parse(code: &str, h3_text: Option<&str>) -> Result<Self, String> {
        match (code.to_ascii_uppercase().as_str(), h3_text) {
            ("H0", None) => Ok(Self::H0),
            ("H1", None) => Ok(Self::H1),
            ("H2", None) => Ok(Self::H2),
            ("H3", Some(t)) if !t.trim().is_empty() && t.len() <= MAX_H3_TEXT => {
                Ok(Self::H3(t.to_owned()))
            }
            ("H3", _) => Err(format!(
                "handling H3 needs its restriction text (1-{MAX_H3_TEXT} bytes)"
            )),
            ("H0" | "H1" | "H2", Some(_)) => Err("a handling text goes only with H3".to_owned()),
            _ => Err(format!(
                "unknown handling code {code:?}: use H0, H1, H2 or H3"
            )),
        }
    }

    /// The restriction in words.
    pub fn describe(&self) -> String {
        match self {
            Self::H0 => "use only for preventing and combating crime".to_owned(),
            Self::H1 => "not for judicial proceedings without the provider's permission".to_owned(),
            Self::H2 => "not to be passed on without the provider's permission".to_owned(),
            Self::H3(t) => t.clone(),
        }
    }
}

/// The purposes a message may serve (docs/domain.md §4).
pub const PURPOSES: [&str; 6] = [
    "criminal_investigation",
    "marriage_registration_check",
    "repatriation",
    "child_alert",
    "supervision",
    "annual_report",
];

/// An officer's (or the node's) signed business step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Federation id.
    pub federation: String,
    /// The acting node.
    pub node: NodeId,
    /// Message kind (catalog).
    pub kind: String,
    /// Case reference.
    pub case_ref: String,
    /// Signed at, Unix ms.
    pub at: u64,
    /// Purpose (one of [`PURPOSES`]).
    pub purpose: String,
    /// Handling code.
    pub handling: Handling,
    /// Sensitivity flags (subset of [`SENSITIVITY_FLAGS`], sorted).
    pub sensitivity: Vec<String>,
    /// How long the receiver may keep the body, days.
    pub retention_days: u64,
    /// Whether the content may go to a foreign counterpart.
    pub abroad: bool,
    /// The business document.
    pub document: Document,
    /// Messages whose content this action passes on (onward passing of H2 material needs
    /// the provider's permission).
    pub derived_from: Vec<MessageId>,
    /// The officer's credential (absent for automatic steps signed by the node).
    pub credential: Option<Vec<u8>>,
}

impl Action {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let (code, text) = match &self.handling {
            Handling::H0 => (0u64, None),
            Handling::H1 => (1, None),
            Handling::H2 => (2, None),
            Handling::H3(t) => (3, Some(t.as_str())),
        };
        cbor::encode(
            &MapBuilder::new()
                .put(1, ACTION_VERSION)
                .put(2, self.federation.as_str())
                .put(3, self.node.as_str())
                .put(4, self.kind.as_str())
                .put(5, self.case_ref.as_str())
                .put(6, self.at)
                .put(7, self.purpose.as_str())
                .put(8, code)
                .put_opt(9, text)
                .put_opt(
                    10,
                    (!self.sensitivity.is_empty()).then(|| cbor::text_array(&self.sensitivity)),
                )
                .put(11, self.retention_days)
                .put_opt(12, self.abroad.then_some(true))
                .put(13, self.document.to_value())
                .put_opt(
                    14,
                    (!self.derived_from.is_empty()).then(|| {
                        Value::Array(
                            self.derived_from
                                .iter()
                                .map(|m| Value::Bytes(m.0.to_vec()))
                                .collect(),
                        )
                    }),
                )
                .put_opt(15, self.credential.clone().map(Value::Bytes))
                .build(),
        )
    }

    /// Strictly decodes a payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, VerifyError> {
        const OBJ: &str = "action";
        let bad = |key: u64, problem: &'static str| DecodeError::Field {
            object: OBJ,
            key,
            problem,
        };
        let mut m = MapReader::new(OBJ, cbor::decode_strict(bytes, MAX_ACTION_LEN, None)?)?;
        if m.uint(1)? != ACTION_VERSION {
            return Err(bad(1, "unsupported version").into());
        }
        let federation = m.text(2)?;
        let node = NodeId::new(m.text(3)?)?;
        let kind = m.text(4)?;
        crate::envelope::check_kind(&kind)?;
        let case_ref = m.text(5)?;
        check_case_ref(&case_ref)?;
        let at = m.uint(6)?;
        let purpose = m.text(7)?;
        if !PURPOSES.contains(&purpose.as_str()) {
            return Err(bad(7, "unknown purpose").into());
        }
        let code = m.uint(8)?;
        let text = m.opt_text(9)?;
        let handling = match (code, text) {
            (0, None) => Handling::H0,
            (1, None) => Handling::H1,
            (2, None) => Handling::H2,
            (3, Some(t)) if !t.trim().is_empty() && t.len() <= MAX_H3_TEXT => Handling::H3(t),
            (3, _) => return Err(bad(9, "H3 needs its restriction text").into()),
            (0..=2, Some(_)) => return Err(bad(9, "handling text only with H3").into()),
            _ => return Err(bad(8, "handling code must be 0..3").into()),
        };
        let sensitivity = match m.opt_array(10)? {
            None => Vec::new(),
            Some(a) => {
                let flags = a
                    .into_iter()
                    .map(|v| cbor::as_text(v).ok_or(bad(10, "flags must be text")))
                    .collect::<Result<Vec<_>, _>>()?;
                if flags.is_empty()
                    || !flags.windows(2).all(|w| w[0] < w[1])
                    || !flags
                        .iter()
                        .all(|f| SENSITIVITY_FLAGS.contains(&f.as_str()))
                {
                    return Err(bad(10, "sensitivity flags must be known, sorted, unique").into());
                }
                flags
            }
        };
        let retention_days = m.uint(11)?;
        let abroad = match m.opt_bool(12)? {
            None => false,
            Some(true) => true,
            Some(false) => return Err(bad(12, "omit instead of false").into()),
        };
        let document = Document::from_value(m.value(13)?)?;
        let derived_from = match m.opt_array(14)? {
            None => Vec::new(),
            Some(a) if a.is_empty() => return Err(bad(14, "omit instead of empty").into()),
            Some(a) => a
                .into_iter()
                .map(|v| match v {
                    Value::Bytes(b) => <[u8; 16]>::try_from(b.as_slice())
                        .map(MessageId)
                        .map_err(|_| bad(14, "message ids are 16 bytes")),
                    _ => Err(bad(14, "message ids are 16 bytes")),
                })
                .collect::<Result<_, _>>()?,
        };
        let credential = m.opt_bytes(15)?;
        m.finish()?;
        Ok(Self {
            federation,
            node,
            kind,
            case_ref,
            at,
            purpose,
            handling,
            sensitivity,
            retention_days,
            abroad,
            document,
            derived_from,
            credential,
        })
    }

    /// Signs the action (with the officer's key, or the node's key for automatic steps).
    pub fn sign(&self, key: &SigningKey) -> SignedAction {
        let obj = SignedObject::sign(TYP_ACTION, self.encode(), key);
        SignedAction {
            action: self.clone(),
            officer: None,
            obj,
        }
    }
}

/// Case references: 1-128 characters of `A-Z a-z 0-9 . _ - /`.
pub fn check_case_ref(r: &str) -> Result<(), DecodeError> {
    let ok = !r.is_empty()
        && r.len() <= crate::envelope::MAX_CASE_REF_LEN
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            what: "case reference",
            problem: format!("{r:?}: use 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-', '/'"),
        })
    }
}

/// A verified action: signature checked against the officer's credential (itself checked
/// against the node key in the roster) or, for automatic steps, against the node key.
#[derive(Debug, Clone)]
pub struct SignedAction {
    action: Action,
    officer: Option<Officer>,
    obj: SignedObject,
}

impl SignedAction {
    /// Parses and verifies an action: typ, strict payload, the credential's node signature,
    /// the officer's (or node's) signature, and that credential, action and roster agree.
    pub fn open(bytes: &[u8], roster: &Roster) -> Result<Self, VerifyError> {
        let obj = SignedObject::parse(bytes, MAX_ACTION_LEN)?;
        obj.expect_typ(TYP_ACTION)?;
        let action = Action::decode(obj.payload())?;
        if action.federation != roster.federation {
            return Err(VerifyError::Mismatch(format!(
                "action of federation {}, this is {}",
                action.federation, roster.federation
            )));
        }
        let officer = match &action.credential {
            Some(c) => {
                let (officer, _) = Officer::open(c, roster)?;
                if officer.node != action.node {
                    return Err(VerifyError::Mismatch(format!(
                        "officer {} is enrolled at {}, the action claims {}",
                        officer.id, officer.node, action.node
                    )));
                }
                if obj.kid() != officer.key.kid() {
                    return Err(VerifyError::UnknownSigner(format!(
                        "action not signed by the key of officer {}",
                        officer.id
                    )));
                }
                obj.verify_with(&officer.key)?;
                Some(officer)
            }
            None => {
                let member = roster
                    .member(&action.node)
                    .ok_or_else(|| VerifyError::UnknownSigner(action.node.to_string()))?;
                let Some(key) = member.signing_keys().find(|k| k.kid() == obj.kid()) else {
                    return Err(VerifyError::UnknownSigner(format!(
                        "automatic action not signed by {}'s node key",
                        action.node
                    )));
                };
                obj.verify_with(key)?;
                None
            }
        };
        Ok(Self {
            action,
            officer,
            obj,
        })
    }

    /// The action.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// The officer who signed it (None: an automatic step signed by the node).
    pub fn officer(&self) -> Option<&Officer> {
        self.officer.as_ref()
    }

    /// Who acted, for timelines: officer id or the node id.
    pub fn actor(&self) -> &str {
        self.officer
            .as_ref()
            .map_or(self.action.node.as_str(), |o| o.id.as_str())
    }

    /// The encoded COSE_Sign1: the message body.
    pub fn bytes(&self) -> &[u8] {
        self.obj.bytes()
    }

    /// SHA-256 of the ToBeSigned: the action's identity.
    pub fn digest(&self) -> Digest {
        self.obj.digest()
    }
}

/// Checks an officer id and returns it (for callers building credentials).
pub fn officer_id(s: &str) -> Result<String, DecodeError> {
    check_officer_id(s)?;
    // Officer ids live under the node's namespace in timelines; reuse the id rules of nodes
    // for the part before the first '/'.
    if let Some((node, _)) = s.split_once('/') {
        check_id("officer id prefix", node)?;
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::{Member, MemberStatus};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn roster() -> Roster {
        let member = |id: &str, k: u8| Member {
            id: NodeId::new(id).unwrap(),
            agency: "public_security".into(),
            name: id.into(),
            country: "CHN".into(),
            division: None,
            signing_key: PublicKey::from(&key(k)),
            log_key: PublicKey::from(&key(k + 100)),
            witness_key: PublicKey::from(&key(k + 150)),
            tls_spki_sha256: [0; 32],
            endpoints: vec![],
            via: None,
            location: None,
            status: MemberStatus::Active,
            previous: None,
            tls_cert: None,
        };
        Roster {
            federation: "test".into(),
            serial: 1,
            issued_at: 0,
            valid_until: None,
            members: vec![member("n1", 1), member("n2", 2)],
            rules: vec![],
            max_body_len: 1 << 20,
            dev: true,
            next_authority: None,
        }
    }

    fn officer(node_key: &SigningKey) -> (Vec<u8>, SigningKey) {
        let personal = key(50);
        let o = Officer {
            federation: "test".into(),
            node: NodeId::new("n1").unwrap(),
            id: "n1/wang.li".into(),
            name: "Wang Li".into(),
            number: "350102".into(),
            unit: "criminal investigation".into(),
            role: Role::Investigator,
            key: PublicKey::from(&personal),
            enrolled_at: 5,
        };
        (o.certify(node_key).bytes().to_vec(), personal)
    }

    fn action(credential: Option<Vec<u8>>) -> Action {
        Action {
            federation: "test".into(),
            node: NodeId::new("n1").unwrap(),
            kind: "assist.request".into(),
            case_ref: "FJ-2026-0042".into(),
            at: 10,
            purpose: "criminal_investigation".into(),
            handling: Handling::H2,
            sensitivity: vec!["identity".into()],
            retention_days: 3650,
            abroad: false,
            document: Document::new().with("request_no", "35-2026-17"),
            derived_from: vec![],
            credential,
        }
    }

    #[test]
    fn officer_action_verifies_and_names_the_officer() {
        let (cred, personal) = officer(&key(1));
        let signed = action(Some(cred)).sign(&personal);
        let opened = SignedAction::open(signed.bytes(), &roster()).unwrap();
        assert_eq!(opened.actor(), "n1/wang.li");
        assert_eq!(opened.action(), &action(opened.action().credential.clone()));
        assert_eq!(opened.digest(), signed.digest());
        assert_eq!(
            Action::decode(&action(None).encode()).unwrap(),
            action(None)
        );
    }

    #[test]
    fn wrong_keys_and_claims_are_refused() {
        let r = roster();
        // Officer key not the one in the credential.
        let (cred, _) = officer(&key(1));
        let forged = action(Some(cred.clone())).sign(&key(51));
        assert!(SignedAction::open(forged.bytes(), &r).is_err());
        // Credential signed by another node's key.
        let (cred2, personal) = officer(&key(2));
        let bad = action(Some(cred2)).sign(&personal);
        assert!(SignedAction::open(bad.bytes(), &r).is_err());
        // Credential of n1 used for an action claiming n2.
        let mut a = action(Some(cred));
        a.node = NodeId::new("n2").unwrap();
        assert!(SignedAction::open(a.sign(&personal).bytes(), &r).is_err());
        // Automatic action signed by the node key verifies; by another key it does not.
        assert!(SignedAction::open(action(None).sign(&key(1)).bytes(), &r).is_ok());
        assert!(SignedAction::open(action(None).sign(&key(2)).bytes(), &r).is_err());
        // A credential is not an action and vice versa.
        let (cred, _) = officer(&key(1));
        assert!(SignedAction::open(&cred, &r).is_err());
    }

    #[test]
    fn handling_rules() {
        assert_eq!(Handling::parse("h2", None).unwrap(), Handling::H2);
        assert!(Handling::parse("H3", None).is_err());
        assert!(Handling::parse("H1", Some("x")).is_err());
        assert!(Handling::parse("H9", None).is_err());
        let mut a = action(None);
        a.handling = Handling::H3("only for case FJ-2026-0042".into());
        assert_eq!(Action::decode(&a.encode()).unwrap(), a);
        a.sensitivity = vec!["identity".into(), "child".into()];
        assert!(Action::decode(&a.encode()).is_err(), "unsorted flags");
        a.sensitivity = vec!["dna".into()];
        assert!(Action::decode(&a.encode()).is_err(), "unknown flag");
    }
}
