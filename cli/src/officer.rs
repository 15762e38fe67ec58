//! Officers' commands: each builds a business document, signs it as an action with the
//! officer's own key (the key never leaves this process) and submits it to the node, which
//! checks it and sends it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use liaison_node::api::{Client, Request};
use liaison_node::{ActRequest, EnrollRequest};
use liaison_protocol::action::{Action, Handling, SENSITIVITY_FLAGS};
use liaison_protocol::document::{Document, Field};
use liaison_protocol::workflow;
use liaison_protocol::{MessageId, NodeId, Priority};
use serde_json::Value;

/// The ids of [`ActOpts`]' flags.
pub(crate) const ACT_FLAGS: [&str; 9] = [
    "officer",
    "handling",
    "handling_text",
    "sensitivity",
    "retention_days",
    "abroad",
    "derived_from",
    "priority",
    "doc_file",
];

/// Handling options every officer action takes (grouped apart in `--help`: other commands
/// refuse them).
#[derive(Debug, Clone, clap::Args)]
#[command(
    next_help_heading = "Options of an officer's case step (assist, marriage, repatriation, alert, supervise, report, permission, step)"
)]
pub(crate) struct ActOpts {
    /// The officer's private key file (PKCS#8 PEM, mode 0600), or set LIAISON_OFFICER_KEY.
    #[arg(long, env = "LIAISON_OFFICER_KEY", global = true)]
    pub(crate) officer: Option<PathBuf>,
    /// Handling code: H0 crime prevention only, H1 not for court without permission, H2 not
    /// to be passed on without permission, H3 other (with --handling-text).
    #[arg(long, default_value = "H0", global = true)]
    pub(crate) handling: String,
    /// The H3 restriction, in words.
    #[arg(long, global = true)]
    pub(crate) handling_text: Option<String>,
    /// Sensitive personal information in the content (comma-separated: victim, child,
    /// identity, health, biometric, whereabouts).
    #[arg(long, value_delimiter = ',', global = true)]
    pub(crate) sensitivity: Vec<String>,
    /// How long the recipient may keep the content, days.
    #[arg(long, default_value_t = 1825, global = true)]
    pub(crate) retention_days: u64,
    /// The content may go to a foreign counterpart.
    #[arg(long, global = true)]
    pub(crate) abroad: bool,
    /// Message ids whose content this step passes on (H2 needs the provider's permission).
    #[arg(long, value_delimiter = ',', global = true)]
    pub(crate) derived_from: Vec<String>,
    /// routine, priority, urgent or flash (default: the kind's own).
    #[arg(long, global = true)]
    pub(crate) priority: Option<String>,
    /// Extra document fields from a JSON file (flags win over the file).
    #[arg(long, global = true)]
    pub(crate) doc_file: Option<PathBuf>,
}

/// Who is acting: the officer's key and node-signed credential.
pub(crate) struct Acting {
    key: SigningKey,
    credential: Vec<u8>,
    node: NodeId,
    federation: String,
    pub(crate) officer_id: String,
}

impl std::fmt::Debug for Acting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acting")
            .field("officer", &self.officer_id)
            .finish()
    }
}

impl Acting {
    /// Loads the officer's key and finds the officer's enrollment at the node.
    pub(crate) async fn load(client: &mut Client, key: Option<&Path>) -> Result<Self> {
        let Some(path) = key else {
            bail!(
                "which officer? pass --officer <key file> or set LIAISON_OFFICER_KEY \
                 (an officer creates a key with `liaison officer keygen`)"
            );
        };
        let key = liaison_node::identity::load_signing_key(path)?;
        let public = hex::encode(key.verifying_key().to_bytes());
        let officers = client.call(&Request::Officers).await?;
        let status = client.call(&Request::Status).await?;
        let found = officers
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["public_key"] == public.as_str() && o["revoked_at"].is_null());
        let Some(o) = found else {
            bail!(
                "the key in {} is not enrolled at this node (public key {public}); an operator \
                 enrolls it with `liaison officer enroll --public-key {public} …`",
                path.display()
            );
        };
        let credential = base64::engine::general_purpose::STANDARD
            .decode(o["credential"].as_str().unwrap_or_default())
            .context("node returned a bad credential")?;
        Ok(Self {
            key,
            credential,
            node: NodeId::new(status["node"].as_str().unwrap_or_default())?,
            federation: status["federation"].as_str().unwrap_or_default().to_owned(),
            officer_id: o["id"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Signs an action of `kind` for `case_ref` carrying `doc`.
    pub(crate) fn sign(
        &self,
        kind: &str,
        case_ref: &str,
        doc: Document,
        opts: &ActOpts,
        now: u64,
    ) -> Result<Vec<u8>> {
        let Some(spec) = workflow::spec(kind) else {
            bail!("unknown kind {kind}");
        };
        let handling = Handling::parse(&opts.handling, opts.handling_text.as_deref())
            .map_err(anyhow::Error::msg)?;
        let mut sensitivity = opts.sensitivity.clone();
        sensitivity.sort();
        sensitivity.dedup();
        if let Some(bad) = sensitivity
            .iter()
            .find(|f| !SENSITIVITY_FLAGS.contains(&f.as_str()))
        {
            bail!(
                "unknown sensitivity flag {bad:?}: use {}",
                SENSITIVITY_FLAGS.join(", ")
            );
        }
        let derived_from = opts
            .derived_from
            .iter()
            .map(|m| MessageId::from_hex(m).with_context(|| format!("--derived-from {m}")))
            .collect::<Result<Vec<_>>>()?;
        let action = Action {
            federation: self.federation.clone(),
            node: self.node.clone(),
            kind: kind.to_owned(),
            case_ref: case_ref.to_owned(),
            at: now,
            purpose: spec.purpose.to_owned(),
            handling,
            sensitivity,
            retention_days: opts.retention_days,
            abroad: opts.abroad,
            document: doc,
            derived_from,
            credential: Some(self.credential.clone()),
        };
        Ok(action.sign(&self.key).bytes().to_vec())
    }
}

/// Merges the `--doc-file` fields under the flag fields.
pub(crate) fn with_file(doc: Document, opts: &ActOpts) -> Result<Document> {
    let Some(path) = &opts.doc_file else {
        return Ok(doc);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut base: Document = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JSON object of text, whole numbers, booleans, lists and objects",
            path.display()
        )
    })?;
    for (k, v) in doc.iter() {
        base.set(k, v.clone());
    }
    Ok(base)
}

/// Signs and submits one step; returns the node's answer.
pub(crate) async fn act(
    client: &mut Client,
    opts: &ActOpts,
    kind: &str,
    case_ref: &str,
    doc: Document,
    to: Vec<NodeId>,
) -> Result<Value> {
    let acting = Acting::load(client, opts.officer.as_deref()).await?;
    let doc = with_file(doc, opts)?;
    if let Err(e) = workflow::validate(kind, &doc) {
        bail!("{e}");
    }
    let bytes = acting.sign(kind, case_ref, doc, opts, liaison_node::now_ms())?;
    let priority = opts
        .priority
        .as_deref()
        .map(|p| {
            Priority::parse(p)
                .with_context(|| format!("--priority {p}: use routine, priority, urgent or flash"))
        })
        .transpose()?;
    let req = ActRequest {
        action: base64::engine::general_purpose::STANDARD.encode(bytes),
        to,
        priority,
        in_reply_to: None,
    };
    Ok(client.call(&Request::Act(req)).await?)
}

/// The other party of a two-party case, seen from this node.
pub(crate) async fn other_party(client: &mut Client, case_ref: &str) -> Result<NodeId> {
    let v = client
        .call(&Request::Case {
            case_ref: case_ref.to_owned(),
        })
        .await?;
    let status = client.call(&Request::Status).await?;
    let me = status["node"].as_str().unwrap_or_default();
    let case = &v["case"];
    let opened_by = case["opened_by"].as_str().unwrap_or_default();
    let counterpart = case["counterpart"].as_str();
    let other = if opened_by == me {
        counterpart.unwrap_or_default()
    } else {
        opened_by
    };
    if other.is_empty() || other == me {
        bail!("case {case_ref} has no other party yet: pass --to <node>");
    }
    Ok(NodeId::new(other)?)
}

/// A new case reference: `<node>/<workflow>/<uuid v7 tail>`.
pub(crate) fn new_case_ref(node: &str, what: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{node}/{what}/{}", &id[id.len() - 12..])
}

/// Parses `key=value` pairs into document fields (numbers stay numbers, `true`/`false`
/// booleans; quote with a leading `'` to force text).
pub(crate) fn set_fields(doc: &mut Document, pairs: &[String]) -> Result<()> {
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--set {p}: use name=value");
        };
        let field = if let Some(text) = v.strip_prefix('\'') {
            Field::Text(text.to_owned())
        } else if let Ok(n) = v.parse::<u64>() {
            Field::Uint(n)
        } else if v == "true" || v == "false" {
            Field::Bool(v == "true")
        } else {
            Field::Text(v.to_owned())
        };
        doc.set(k, field);
    }
    Ok(())
}

/// Officer administration (operators).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum OfficerCmd {
    /// Create an officer's personal key (file mode 0600) and print its public key.
    Keygen {
        /// Key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Enroll an officer at this node (operator).
    Enroll {
        /// Officer id, e.g. cn-35-psb/wang.li.
        #[arg(long)]
        id: String,
        /// Full name.
        #[arg(long)]
        name: String,
        /// Police or staff number.
        #[arg(long)]
        number: String,
        /// Unit.
        #[arg(long)]
        unit: String,
        /// investigator, registrar, border_officer, foreign_liaison or supervisor.
        #[arg(long)]
        role: String,
        /// The officer's public key (hex, from `liaison officer keygen`).
        #[arg(long)]
        public_key: String,
    },
    /// Officers enrolled at this node.
    List,
    /// Revoke an officer: their actions are refused from now on.
    Revoke {
        /// Officer id.
        id: String,
    },
}

/// Runs an officer administration command.
pub(crate) async fn officer_cmd(
    client: Option<&mut Client>,
    cmd: OfficerCmd,
    json: bool,
) -> Result<()> {
    if let OfficerCmd::Keygen { out } = &cmd {
        let key = liaison_node::identity::generate_signing_key(out)?;
        let public = hex::encode(key.verifying_key().to_bytes());
        crate::output::print(
            json,
            &serde_json::json!({"key_file": out, "public_key": public}),
            |_| {
                format!(
                    "officer key written to {} (keep it private)\npublic key {public}\n\
                 give the public key to your node's operator: liaison officer enroll --public-key {public} …",
                    out.display()
                )
            },
        );
        return Ok(());
    }
    let Some(client) = client else {
        bail!("this command needs the node: pass --config <node.toml>");
    };
    match cmd {
        OfficerCmd::Keygen { .. } => {}
        OfficerCmd::Enroll {
            id,
            name,
            number,
            unit,
            role,
            public_key,
        } => {
            let v = client
                .call(&Request::EnrollOfficer(EnrollRequest {
                    id,
                    name,
                    number,
                    unit,
                    role,
                    public_key,
                }))
                .await?;
            crate::output::print(json, &v, |v| {
                format!(
                    "enrolled {} ({}, {}) with key {}",
                    v["id"].as_str().unwrap_or("-"),
                    v["name"].as_str().unwrap_or("-"),
                    v["role"].as_str().unwrap_or("-"),
                    v["public_key"].as_str().unwrap_or("-")
                )
            });
        }
        OfficerCmd::List => {
            let v = client.call(&Request::Officers).await?;
            crate::output::print(json, &v, |v| {
                let mut out = format!(
                    "{:<28} {:<20} {:<10} {:<16} {}\n",
                    "officer", "name", "number", "role", "status"
                );
                for o in v.as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<28} {:<20} {:<10} {:<16} {}\n",
                        o["id"].as_str().unwrap_or("-"),
                        o["name"].as_str().unwrap_or("-"),
                        o["number"].as_str().unwrap_or("-"),
                        o["role"].as_str().unwrap_or("-"),
                        if o["revoked_at"].is_null() {
                            "active"
                        } else {
                            "revoked"
                        }
                    ));
                }
                out.trim_end().to_owned()
            });
        }
        OfficerCmd::Revoke { id } => {
            let v = client.call(&Request::RevokeOfficer { id }).await?;
            crate::output::print(json, &v, |v| {
                format!("revoked {}", v["id"].as_str().unwrap_or("-"))
            });
        }
    }
    Ok(())
}
