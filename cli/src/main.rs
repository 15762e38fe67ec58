//! `liaison`: the officers' and operators' command-line tool.
//!
//! Every command but `node start`, `init`, `dev-certs` and `demo` talks to a running node
//! through its local API socket (`<data_dir>/api.sock`), found from the node's config file.

#![forbid(unsafe_code)]

/// `println!` for the CLI's output: a reader that stops early (`liaison outbox | head`) ends
/// the program quietly instead of a panic.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::output::say(format_args!($($t)*))
    };
}

mod backup;
mod demo;
mod evidence;
mod federation;
mod officer;
mod output;
mod pki;
mod workflow;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use liaison_node::api::{Client, Request};
use liaison_node::{Config, SendRequest};
use liaison_protocol::{NodeId, Priority};
use serde_json::Value;

/// liaison: signed, durable messages between anti-trafficking agencies.
#[derive(Debug, Parser)]
#[command(name = "liaison", version, propagate_version = true)]
struct Cli {
    /// The node's config file (or set LIAISON_CONFIG).
    #[arg(long, short = 'c', global = true, env = "LIAISON_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    act: officer::ActOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo federation end to end on this machine and verify every signature.
    Demo,
    /// Create a node's keys, certificate request and config (for joining a federation).
    Init(InitArgs),
    /// Generate the development PKI and demo federation (development only).
    DevCerts {
        /// Output directory.
        #[arg(long, default_value = "certs-dev/demo")]
        out: PathBuf,
        /// First loopback port.
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
    },
    /// Operate the node itself.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Sign and send a message.
    Send(SendArgs),
    /// Messages received and not yet taken by the application.
    Inbox {
        /// Show bodies.
        #[arg(long)]
        body: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Mark an inbox entry as taken (it is never shown again).
    Ack {
        /// Inbox sequence number (from `liaison inbox`).
        seq: u64,
    },
    /// Messages this node sent, with their delivery state.
    Outbox,
    /// One message by id or digest, with its receipt.
    Show {
        /// Message id or envelope digest (hex).
        id: String,
    },
    /// Per-peer queue state.
    Peers,
    /// Node id, roster serial, audit log size, peers.
    Status,
    /// The federation roster.
    #[command(subcommand)]
    Roster(RosterCmd),
    /// The federation authority's tools, offline: found a federation, add, suspend, revoke
    /// members, rotate their keys, set the policy, sign rosters.
    #[command(subcommand)]
    Federation(federation::FederationCmd),
    /// The audit log: verify it, checkpoints, evidence bundles.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Cases: list, timelines, evidence for a whole case.
    #[command(subcommand)]
    Case(CaseCmd),
    /// Officers: keys and enrollment.
    #[command(subcommand)]
    Officer(officer::OfficerCmd),
    /// Cross-province assistance checks (协查).
    #[command(subcommand)]
    Assist(workflow::AssistCmd),
    /// Foreign-marriage identity checks (涉外婚姻).
    #[command(subcommand)]
    Marriage(workflow::MarriageCmd),
    /// Repatriation handoffs at the border (遣返).
    #[command(subcommand)]
    Repatriation(workflow::RepatriationCmd),
    /// Urgent missing-child alerts (紧急寻人).
    #[command(subcommand)]
    Alert(workflow::AlertCmd),
    /// Listed supervision of cases (挂牌督办).
    #[command(subcommand)]
    Supervise(workflow::SuperviseCmd),
    /// Annual reports to the joint-meeting office.
    #[command(subcommand)]
    Report(workflow::ReportCmd),
    /// Permission to pass H2 material on.
    #[command(subcommand)]
    Permission(workflow::PermissionCmd),
    /// Any case step of the catalog (bulletins, document requests …), its document from
    /// --doc-file and --set; `liaison step --list` shows every kind and its fields.
    Step(workflow::StepArgs),
}

#[derive(Debug, Subcommand)]
enum CaseCmd {
    /// Every case on this node: workflow, state, deadline.
    List,
    /// Every message of a case: who signed, when, the state after it, the deadline.
    Timeline {
        /// Case reference.
        case_ref: String,
    },
    /// Write one file with every message, receipt and record of a case on this node, each
    /// with its proof, and the roster in force: verifiable offline.
    Evidence {
        /// Case reference.
        case_ref: String,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
        /// Made for a court: an H1 record another agency provided goes in only with its
        /// signed permission of judicial use (`liaison permission request --use judicial`);
        /// otherwise the file names it as withheld, and why.
        #[arg(long)]
        for_court: bool,
    },
    /// Verify a case evidence file offline, with the federation authority key only.
    Check {
        /// The case evidence file.
        file: PathBuf,
        /// The federation authority's public key (hex); for a file spanning a handover of the
        /// authority, every key it held, comma-separated.
        #[arg(long)]
        authority_key: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Recompute the whole log from the store and check every entry, signature and the
    /// newest checkpoint; exits non-zero naming the first bad entry.
    Verify,
    /// Print the newest signed checkpoint (signing one if the log grew).
    Checkpoint,
    /// Ask the peers to witness (cosign) the newest checkpoint now.
    Witness,
    /// Write an evidence bundle for an entry index or a message id, or (`--consistency OLD
    /// NEW`) a consistency proof between two of the node's checkpoints.
    Prove {
        /// Entry index or message id.
        #[arg(required_unless_present = "consistency")]
        target: Option<String>,
        /// The tree sizes of two checkpoints this node signed, older first: prove the newer
        /// tree extends the older.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "target")]
        consistency: Option<Vec<u64>>,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write evidence bundles for the entries in [from, to) into a directory, for an auditor.
    Export {
        /// First entry index.
        #[arg(long)]
        from: u64,
        /// One past the last entry index.
        #[arg(long)]
        to: u64,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an evidence bundle offline, with the roster and the authority key only.
    CheckBundle {
        /// The bundle file.
        file: PathBuf,
        /// The signed roster (roster.cbor).
        #[arg(long)]
        roster: PathBuf,
        /// The federation authority's public key (hex); for a file spanning a handover of the
        /// authority, every key it held, comma-separated.
        #[arg(long)]
        authority_key: String,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Run the node in the foreground until Ctrl-C or SIGTERM.
    Start {
        /// Accept development certificates and rosters (never in production).
        #[arg(long)]
        dev: bool,
    },
    /// Stop a running node gracefully.
    Stop,
    /// Make a new TLS key and certificate request for this node (to renew its certificate, or
    /// rotate its TLS key): written beside the current key as tls.next.key.pem and
    /// tls.next.csr.pem; the running node is not touched.
    RenewTls,
    /// Make a new signing, log or witness key for this node, written beside the current one
    /// as <kind>.next.key.pem; the node switches to it by itself once a roster names it.
    RotateKey {
        /// Which key.
        #[arg(long, value_parser = ["signing", "log", "witness"])]
        kind: String,
    },
    /// Check the configuration, keys, TLS material and roster as the node does at start,
    /// without starting it.
    CheckConfig {
        /// Accept development certificates and rosters.
        #[arg(long)]
        dev: bool,
    },
    /// Back up the running node (store, keys, certificates, config) into a new file, while it
    /// keeps working. The node writes the file: a bare name goes into its data directory.
    Backup {
        /// The backup file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new directory (the node stopped, or on a new machine): the
    /// node's files and config, and its store, checked against the backup.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The new config directory (created; must be empty).
        #[arg(long)]
        dir: PathBuf,
        /// The new data directory (default: `data` inside --dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RosterCmd {
    /// Show the roster in force: members with status, keys and endpoints (`--json`: all of
    /// it, with the signed roster in base64).
    Show {
        /// Also write the signed roster bytes (as the authority signed them) to this file, for
        /// an auditor or an offline checker.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply a newer roster signed by the federation authority (it spreads to peers).
    Apply {
        /// The signed roster file (roster.cbor).
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// This node's id, e.g. cn-35-psb.
    #[arg(long)]
    id: String,
    /// The federation id.
    #[arg(long)]
    federation: String,
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:7100")]
    listen: String,
    /// The federation authority's public key (hex), from the joint-meeting office.
    #[arg(long)]
    authority_key: String,
    /// Directory to create (keys, config).
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    /// Recipient node id.
    #[arg(long)]
    to: String,
    /// Message kind, e.g. assist.request.
    #[arg(long)]
    kind: String,
    /// Body text.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the body from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// routine, priority, urgent or flash.
    #[arg(long, default_value = "routine")]
    priority: String,
    /// Drop undelivered after this long (e.g. 90s, 30m, 2h, 7d).
    #[arg(long)]
    expires_in: Option<String>,
    /// Case reference.
    #[arg(long)]
    case: Option<String>,
    /// The message this one answers (id).
    #[arg(long)]
    reply_to: Option<String>,
}

impl Command {
    /// Whether the command signs an officer's step (and so uses the officers' flags).
    fn signs_a_step(&self) -> bool {
        match self {
            Self::Step(args) => !args.list,
            Self::Assist(_)
            | Self::Marriage(_)
            | Self::Repatriation(_)
            | Self::Alert(_)
            | Self::Supervise(_)
            | Self::Report(_)
            | Self::Permission(_) => true,
            _ => false,
        }
    }
}

#[global_allocator]
static ALLOCATOR: liaison_node::Allocator = liaison_node::Allocator;

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The officers' flags are global (they go before or after the step's own), but only a
    // step uses them: given to any other command they would be silently ignored.
    if !cli.command.signs_a_step() {
        // `send` has a --priority of its own.
        let own: &[&str] = match cli.command {
            Command::Send(_) => &["priority"],
            _ => &[],
        };
        if let Some(flag) = officer::ACT_FLAGS.iter().find(|id| {
            !own.contains(id)
                && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        }) {
            eprintln!(
                "liaison: --{} applies only to an officer's step (assist, marriage, repatriation, \
                 alert, supervise, report, permission, step): leave it out here",
                flag.replace('_', "-")
            );
            return ExitCode::from(2);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.command {
            Command::Node(NodeCmd::Start { .. }) => "info",
            _ => "error",
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("liaison: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("liaison: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Demo => return demo::run(json).await,
        Command::Init(args) => init(&args, json)?,
        Command::Federation(cmd) => federation::run(cmd, json)?,
        Command::DevCerts { out, base_port } => dev_certs(&out, base_port, json)?,
        Command::Audit(AuditCmd::CheckBundle {
            file,
            roster,
            authority_key,
        }) => return evidence::check_bundle(&file, &roster, &authority_key, json),
        Command::Case(CaseCmd::Check {
            file,
            authority_key,
        }) => {
            return evidence::check_case(&file, &authority_key, json);
        }
        Command::Node(NodeCmd::Start { dev }) => {
            let cfg = load_config(cli.config.as_deref())?;
            liaison_node::run(cfg, dev).await?;
        }
        Command::Node(NodeCmd::CheckConfig { dev }) => {
            let mut cfg = load_config(cli.config.as_deref())?;
            cfg.dev_mode |= dev;
            let notes = liaison_node::check_config(&cfg)?;
            let v = serde_json::json!({"ok": true, "checked": notes});
            output::print(json, &v, |_| {
                format!("{}\nthe configuration is ready", notes.join("\n"))
            });
        }
        Command::Node(NodeCmd::RenewTls) => {
            let cfg = load_config(cli.config.as_deref())?;
            pki::renew_tls(&cfg, json)?;
        }
        Command::Node(NodeCmd::RotateKey { kind }) => {
            let cfg = load_config(cli.config.as_deref())?;
            pki::rotate_key(&cfg, &kind, json)?;
        }
        Command::Node(NodeCmd::Restore {
            from,
            dir,
            data_dir,
        }) => backup::restore(&from, &dir, data_dir.as_deref(), json).await?,
        Command::Step(args) if args.list => workflow::list_kinds(json),
        Command::Officer(officer::OfficerCmd::Keygen { out }) => {
            officer::officer_cmd(None, officer::OfficerCmd::Keygen { out }, json).await?;
        }
        command => {
            let cfg = load_config(cli.config.as_deref())?;
            let mut client = Client::connect(&cfg.data_dir.join("api.sock")).await?;
            return remote(&mut client, command, &cli.act, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let Some(path) = path else {
        bail!("which node? pass --config <node.toml> or set LIAISON_CONFIG");
    };
    Ok(Config::load(path)?)
}

async fn remote(
    client: &mut Client,
    command: Command,
    act: &officer::ActOpts,
    json: bool,
) -> Result<ExitCode> {
    match command {
        Command::Officer(cmd) => officer::officer_cmd(Some(client), cmd, json).await?,
        Command::Assist(cmd) => workflow::assist(client, act, json, cmd).await?,
        Command::Marriage(cmd) => workflow::marriage(client, act, json, cmd).await?,
        Command::Repatriation(cmd) => workflow::repatriation(client, act, json, cmd).await?,
        Command::Alert(cmd) => workflow::alert(client, act, json, cmd).await?,
        Command::Supervise(cmd) => workflow::supervise(client, act, json, cmd).await?,
        Command::Report(cmd) => workflow::report(client, act, json, cmd).await?,
        Command::Permission(cmd) => workflow::permission(client, act, json, cmd).await?,
        Command::Step(args) => workflow::any_step(client, act, json, args).await?,
        Command::Case(CaseCmd::List) => workflow::case_list(client, json).await?,
        Command::Case(CaseCmd::Timeline { case_ref }) => {
            workflow::case_timeline(client, json, &case_ref).await?;
        }
        Command::Send(args) => {
            let req = send_request(&args)?;
            let v = client.call(&Request::Send(req)).await?;
            output::print(json, &v, |v| {
                format!(
                    "queued {} for {} (first hop {}), envelope digest {}",
                    str_of(v, "message_id"),
                    args.to,
                    str_of(v, "hop"),
                    str_of(v, "digest")
                )
            });
        }
        Command::Inbox { body, limit } => {
            let v = client.call(&Request::Inbox { limit, body }).await?;
            output::print(json, &v, |v| output::inbox(v, body));
        }
        Command::Ack { seq } => {
            let v = client.call(&Request::Ack { seq }).await?;
            output::print(json, &v, |v| {
                format!(
                    "taken: {} from {}",
                    str_of(v, "message_id"),
                    str_of(v, "from")
                )
            });
        }
        Command::Outbox => {
            let v = client.call(&Request::Messages).await?;
            output::print(json, &v, output::messages);
        }
        Command::Show { id } => {
            let v = client.call(&Request::Message { id }).await?;
            output::print(json, &v, output::message);
        }
        Command::Peers => {
            let v = client.call(&Request::Peers).await?;
            output::print(json, &v, output::peers);
        }
        Command::Status => {
            let v = client.call(&Request::Status).await?;
            output::print(json, &v, |v| {
                let store = match v["store_failure"].as_str() {
                    Some(why) => format!(
                        "STORE FAILED: {why}\n  nothing is stored or answered until the node is \
                         restarted (free disk space or fix the disk first)\n"
                    ),
                    None => format!(
                        "store: {} group commits, {} changes\n",
                        v["store"]["groups"], v["store"]["changes"]
                    ),
                };
                let ms = |k: &str| v["roster_standing"][k].as_u64().unwrap_or_default();
                let roster = match str_of(&v["roster_standing"], "standing") {
                    "in_grace" => format!(
                        "WARNING: the roster expired at {}; traffic stops at {} unless a newer \
                         roster is applied (liaison roster apply)\n",
                        output::time(ms("expired_at")),
                        output::time(ms("stops_at"))
                    ),
                    "expired" => format!(
                        "ROSTER EXPIRED at {} (grace ended {}): nothing new is sent or taken \
                         until a newer roster is applied (liaison roster apply)\n",
                        output::time(ms("expired_at")),
                        output::time(ms("stopped_at"))
                    ),
                    _ => String::new(),
                };
                let tls = match (v["tls_not_after"].as_u64(), v["tls_renew_now"].as_bool()) {
                    (Some(end), Some(true)) => format!(
                        "WARNING: this node's TLS certificate expires at {}: renew it now \
                         (liaison node renew-tls)\n",
                        output::time(end)
                    ),
                    _ => String::new(),
                };
                let store = format!("{roster}{tls}{store}");
                format!(
                    "{store}node {} in federation {}\nlistening on {}\nroster serial {}\ncases {} ({} overdue{})\naudit log entries {}\nwitness conflicts seen since start {}{}\n{}",
                    str_of(v, "node"),
                    str_of(v, "federation"),
                    str_of(v, "listen"),
                    v["roster_serial"],
                    v["cases"],
                    v["overdue_cases"],
                    if v["overdue_cases"].as_u64().unwrap_or(0) > 0 {
                        ": see `liaison supervise list`"
                    } else {
                        ""
                    },
                    v["log_entries"],
                    v["witness_conflicts"],
                    if v["witness_conflicts"].as_u64().unwrap_or(0) > 0 {
                        "  <- A PEER'S LOG IS INCONSISTENT: see `liaison audit verify` and the witness_conflict entries"
                    } else {
                        ""
                    },
                    output::peers(&v["peers"])
                )
            });
        }
        Command::Roster(RosterCmd::Apply { file }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let roster = base64::engine::general_purpose::STANDARD.encode(bytes);
            let v = client.call(&Request::ApplyRoster { roster }).await?;
            output::print(json, &v, |v| {
                format!("roster serial {} in force", v["serial"])
            });
        }
        Command::Roster(RosterCmd::Show { out }) => {
            let v = client.call(&Request::Roster).await?;
            if let Some(path) = &out {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(str_of(&v, "signed_roster"))
                    .context("the node sent a roster that is not base64")?;
                std::fs::write(path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            output::print(json, &v, output::roster);
            if let (Some(path), false) = (&out, json) {
                outln!("signed roster written to {}", path.display());
            }
        }
        Command::Node(NodeCmd::Backup { out }) => backup::backup(client, &out, json).await?,
        Command::Node(NodeCmd::Stop) => {
            client.call(&Request::Shutdown).await?;
            let v = serde_json::json!({"node": "shutting down"});
            output::print(json, &v, |_| "node is shutting down".into());
        }
        Command::Audit(AuditCmd::Verify) => {
            let v = client.call(&Request::AuditVerify).await?;
            let bad = !v["first_problem"].is_null();
            output::print(json, &v, |v| match v["first_problem"].as_array() {
                Some(p) => format!(
                    "AUDIT LOG FAILS at entry {}: {}\n({} entries checked before it)",
                    p[0],
                    p[1].as_str().unwrap_or("?"),
                    v["entries"]
                ),
                None => format!(
                    "audit log verified: {} entries, {} signatures, root {}, newest checkpoint covers {}",
                    v["entries"],
                    v["signatures_checked"],
                    str_of(v, "root"),
                    v["checkpoint_size"]
                ),
            });
            if bad {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Audit(AuditCmd::Checkpoint) => {
            let v = client.call(&Request::AuditCheckpoint).await?;
            output::print(json, &v, |v| str_of(v, "checkpoint").trim_end().to_owned());
        }
        Command::Case(CaseCmd::Evidence {
            case_ref,
            out,
            for_court,
        }) => {
            let v = client
                .call(&Request::CaseEvidence {
                    case_ref,
                    for_court,
                })
                .await?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(str_of(&v, "bundle"))?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            output::print(json, &v, |v| {
                let mut s = format!(
                    "case {}{}: {} entries with proofs, {} signed records, {} permissions and the \
                     roster written to {}",
                    str_of(v, "case_ref"),
                    if for_court { " (for a court)" } else { "" },
                    v["entries"],
                    v["records"],
                    v["permissions"],
                    out.display()
                );
                for w in v["withheld"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "\n  WITHHELD message {} from {}: {}",
                        str_of(w, "message_id"),
                        str_of(w, "provider"),
                        str_of(w, "reason")
                    ));
                }
                s
            });
        }
        Command::Audit(AuditCmd::Witness) => {
            let v = client.call(&Request::AuditWitness).await?;
            output::print(json, &v, |v| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| match o["result"].get("Ok") {
                                Some(_) => format!(
                                    "{:<16} cosigned size {}",
                                    str_of(o, "witness"),
                                    o["size"]
                                ),
                                None => format!(
                                    "{:<16} REFUSED: {}",
                                    str_of(o, "witness"),
                                    o["result"]["Err"].as_str().unwrap_or("?")
                                ),
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
        }
        Command::Audit(AuditCmd::Export { from, to, out }) => {
            if to <= from {
                bail!("--to must be greater than --from");
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut written = Vec::new();
            for index in from..to {
                let v = client
                    .call(&Request::AuditProve {
                        target: index.to_string(),
                    })
                    .await?;
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(str_of(&v, "bundle"))?;
                let path = out.join(format!("{index:012}.evidence.cbor"));
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                written.push(path);
            }
            let v = serde_json::json!({"from": from, "to": to, "files": written});
            output::print(json, &v, |_| {
                format!(
                    "{} evidence bundles (entries {from}..{to}) written to {}; check each with `liaison audit check-bundle`",
                    written.len(),
                    out.display()
                )
            });
        }
        Command::Audit(AuditCmd::Prove {
            consistency: Some(sizes),
            out,
            ..
        }) => {
            let [old, new] = sizes[..] else {
                bail!("--consistency takes two tree sizes: OLD NEW");
            };
            let v = client.call(&Request::AuditConsistency { old, new }).await?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(str_of(&v, "bundle"))?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            output::print(json, &v, |v| {
                format!(
                    "consistency proof from tree size {} to {} ({} hashes) written to {}",
                    v["old"],
                    v["new"],
                    v["proof_hashes"],
                    out.display()
                )
            });
        }
        Command::Audit(AuditCmd::Prove { target, out, .. }) => {
            let target = target.context("which entry? an index or a message id")?;
            let v = client.call(&Request::AuditProve { target }).await?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(str_of(&v, "bundle"))?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            output::print(json, &v, |v| {
                format!(
                    "evidence bundle for entry {} written to {}",
                    v["index"],
                    out.display()
                )
            });
        }
        Command::Demo
        | Command::Init(_)
        | Command::Federation(_)
        | Command::DevCerts { .. }
        | Command::Audit(AuditCmd::CheckBundle { .. })
        | Command::Case(CaseCmd::Check { .. })
        | Command::Node(
            NodeCmd::Start { .. }
            | NodeCmd::RenewTls
            | NodeCmd::RotateKey { .. }
            | NodeCmd::CheckConfig { .. }
            | NodeCmd::Restore { .. },
        ) => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

fn send_request(args: &SendArgs) -> Result<SendRequest> {
    let to = NodeId::new(args.to.clone()).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let body = match (&args.body, &args.body_file) {
        (Some(b), None) => b.clone().into_bytes(),
        (None, Some(p)) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        _ => bail!("give the body with --body TEXT or --body-file PATH"),
    };
    let priority = Priority::parse(&args.priority).with_context(|| {
        format!(
            "--priority {:?}: use routine, priority, urgent or flash",
            args.priority
        )
    })?;
    let expires_in_ms = args
        .expires_in
        .as_deref()
        .map(parse_duration_ms)
        .transpose()?;
    Ok(SendRequest {
        to,
        kind: args.kind.clone(),
        body,
        priority,
        expires_in_ms,
        case_ref: args.case.clone(),
        in_reply_to: args.reply_to.clone(),
    })
}

/// Parses `90s`, `30m`, `2h`, `7d` (or plain milliseconds).
fn parse_duration_ms(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 90s, 30m, 2h or 7d"))?;
    let ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{s:?}: unknown unit {unit:?}; use s, m, h or d"),
    };
    Ok(n.saturating_mul(ms))
}

fn dev_certs(out: &Path, base_port: u16, json: bool) -> Result<()> {
    liaison_certs_dev::check_out_dir(out)?;
    let spec = liaison_certs_dev::demo_spec();
    let ids: Vec<String> = spec.members.iter().map(|m| m.id.clone()).collect();
    let g = liaison_certs_dev::generate(&spec, out, &|id| {
        let i = ids.iter().position(|x| x == id).unwrap_or(0);
        std::net::SocketAddr::from(([127, 0, 0, 1], base_port + i as u16))
    })?;
    let v = serde_json::json!({
        "dir": g.dir,
        "federation": spec.federation,
        "authority_key": g.authority_key_hex,
        "configs": g.configs.iter().map(|(id, p)| serde_json::json!({"node": id, "config": p})).collect::<Vec<_>>(),
    });
    output::print(json, &v, |_| {
        let mut s = format!(
            "generated the development federation {} in {}\n",
            spec.federation,
            g.dir.display()
        );
        for (id, p) in &g.configs {
            s.push_str(&format!("  {id:<16} {}\n", p.display()));
        }
        s.push_str(
            "start one: liaison node start --config <node.toml>  (dev material: dev mode only)",
        );
        s
    });
    Ok(())
}

fn init(args: &InitArgs, json: bool) -> Result<()> {
    use liaison_node::identity::generate_signing_key;
    let id = NodeId::new(args.id.clone()).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    if args.dir.exists() && args.dir.read_dir()?.next().is_some() {
        bail!(
            "{} is not empty; choose a new directory",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir)?;
    let signing = generate_signing_key(&args.dir.join("signing.key.pem"))?;
    let log = generate_signing_key(&args.dir.join("log.key.pem"))?;
    let witness = generate_signing_key(&args.dir.join("witness.key.pem"))?;
    let (csr, spki) = pki::tls_request(id.as_str(), &args.dir.join("tls.key.pem"))?;
    std::fs::write(args.dir.join("tls.csr.pem"), &csr)?;
    let hexkey = |k: &ed25519_dalek::VerifyingKey| hex::encode(k.to_bytes());
    let join = federation::JoinRequest {
        node: id.to_string(),
        federation: args.federation.clone(),
        signing_key: hexkey(&signing.verifying_key()),
        log_key: hexkey(&log.verifying_key()),
        witness_key: hexkey(&witness.verifying_key()),
        tls_spki_sha256: hex::encode(spki),
    };
    std::fs::write(
        args.dir.join("join-request.json"),
        serde_json::to_string_pretty(&join)? + "\n",
    )?;
    let listen = args.listen.parse().with_context(|| {
        format!(
            "--listen {:?} is not an address like 0.0.0.0:7100",
            args.listen
        )
    })?;
    let cfg = Config {
        node_id: id.clone(),
        federation: args.federation.clone(),
        listen,
        data_dir: "data".into(),
        authority_key: args.authority_key.clone(),
        ca_cert: "ca.pem".into(),
        tls_cert: "tls.cert.pem".into(),
        tls_key: "tls.key.pem".into(),
        signing_key: "signing.key.pem".into(),
        log_key: "log.key.pem".into(),
        witness_key: "witness.key.pem".into(),
        roster: "roster.cbor".into(),
        dev_mode: false,
        delivery: Default::default(),
        store: Default::default(),
        audit: Default::default(),
        workflow: Default::default(),
        limits: Default::default(),
    };
    std::fs::write(args.dir.join("node.toml"), cfg.to_toml())?;
    let v = serde_json::json!({
        "node": id,
        "dir": args.dir,
        "signing_key": hexkey(&signing.verifying_key()),
        "log_key": hexkey(&log.verifying_key()),
        "witness_key": hexkey(&witness.verifying_key()),
        "tls_spki_sha256": hex::encode(spki),
        "csr": args.dir.join("tls.csr.pem"),
        "join_request": args.dir.join("join-request.json"),
    });
    output::print(json, &v, |v| {
        format!(
            "created {} in {}\n\nSend the federation authority {} and {} (it runs \
             `liaison federation add-member`); they hold these public keys:\n  \
             signing key      {}\n  log key          {}\n  witness key      {}\n  \
             TLS key (SPKI)   {}\n\n\
             Then place ca.pem, your certificate as tls.cert.pem and the signed roster.cbor in \
             {} and run:\n  liaison node start --config {}",
            id,
            args.dir.display(),
            args.dir.join("join-request.json").display(),
            args.dir.join("tls.csr.pem").display(),
            str_of(v, "signing_key"),
            str_of(v, "log_key"),
            str_of(v, "witness_key"),
            str_of(v, "tls_spki_sha256"),
            args.dir.display(),
            args.dir.join("node.toml").display()
        )
    });
    Ok(())
}
