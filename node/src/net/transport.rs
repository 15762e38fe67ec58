//! QUIC endpoint with mutual TLS 1.3 pinned to the roster.
//!
//! A peer is admitted only when its certificate chains to the federation CA (webpki) **and**
//! the SHA-256 of its SubjectPublicKeyInfo is the TLS key the roster lists for an active
//! member **and** the certificate names that member's node id. Both directions: the server
//! checks the client, the client checks the server it dialled by node id.

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use liaison_protocol::Frame;
use liaison_protocol::NodeId;
use liaison_protocol::frame::HEAD_LEN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

use crate::error::NodeError;
use crate::roster::RosterCell;

/// ALPN of the first protocol version: every receipt signed on its own.
pub const ALPN_V1: &[u8] = b"liaison/1";
/// ALPN of this version: liaison/1 with batched receipts (protocol.md §4.3a).
pub const ALPN_V2: &[u8] = b"liaison/2";

/// The ALPN names this node offers, preferred first: liaison/1 alone when
/// `[delivery] batch_receipts` is off.
fn alpn(delivery: &crate::config::DeliveryConfig) -> Vec<Vec<u8>> {
    if delivery.batch_receipts {
        vec![ALPN_V2.to_vec(), ALPN_V1.to_vec()]
    } else {
        vec![ALPN_V1.to_vec()]
    }
}

/// Whether the connection speaks liaison/2 (its peer takes batched receipts).
pub(crate) fn speaks_v2(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN_V2)
}

/// Why a certificate that chains to the federation CA is still refused: the roster's pin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// No member's `tls_spki_sha256` is this key.
    #[error("TLS key is not pinned in the roster for any member")]
    NotPinned,
    /// The key is another member's than the one dialled.
    #[error("TLS key belongs to {owner}, not to {dialled}")]
    OtherMember {
        /// Whose key it is.
        owner: NodeId,
        /// Who was dialled.
        dialled: String,
    },
    /// The member is suspended or revoked.
    #[error("{0} is {1:?} in the roster")]
    NotActive(NodeId, liaison_protocol::MemberStatus),
    /// The certificate does not name the member whose key it holds.
    #[error("certificate does not name {0}")]
    WrongName(NodeId),
    /// The certificate does not parse.
    #[error("certificate does not parse: {0}")]
    Unparsable(String),
}

impl PinError {
    /// A stable name, for counters and summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotPinned => "not-pinned",
            Self::OtherMember { .. } => "other-member",
            Self::NotActive(..) => "member-not-active",
            Self::WrongName(_) => "wrong-name",
            Self::Unparsable(_) => "bad-certificate",
        }
    }
}

impl From<PinError> for rustls::Error {
    fn from(e: PinError) -> Self {
        Self::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(e),
        )))
    }
}

const PINS: [(&str, &str); 4] = [
    ("OtherError(NotPinned", "not-pinned"),
    ("OtherError(OtherMember", "other-member"),
    ("OtherError(NotActive", "member-not-active"),
    ("OtherError(WrongName", "wrong-name"),
];

/// A stable name for why a handshake failed, from the error quinn reports for it.
///
/// quinn turns the verifier's typed error into a TLS alert and a reason text; rustls writes a
/// `CertificateError::Other` with the `Debug` form of the [`PinError`] inside, so its variant
/// name is what is looked for.
pub fn handshake_refusal_name(e: &quinn::ConnectionError) -> &'static str {
    match e {
        quinn::ConnectionError::TimedOut => "timeout",
        quinn::ConnectionError::TransportError(_) => tls_refusal_name(&e.to_string()),
        _ => "handshake",
    }
}

/// The name of a TLS failure from its reason text (see [`handshake_refusal_name`]); also for
/// a connection the peer closed with a TLS alert after the handshake completed on this side.
pub fn tls_refusal_name(text: &str) -> &'static str {
    match PINS.iter().find(|(probe, _)| text.contains(probe)) {
        Some((_, name)) => name,
        None if text.contains("UnknownIssuer") => "unknown-ca",
        None if text.contains("certificate") => "bad-certificate",
        None => "tls",
    }
}

/// TLS material of this node.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The federation CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's certificate.
    pub cert: CertificateDer<'static>,
    /// This node's TLS key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    /// Loads PEM files; the key file must be 0600.
    pub fn load(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, NodeError> {
        let read_cert = |p: &std::path::Path| {
            CertificateDer::from_pem_file(p)
                .map_err(|e| NodeError::Tls(format!("{}: {e}", p.display())))
        };
        let key_pem = crate::identity::read_secret_file(key)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| NodeError::Tls(format!("{}: {e}", key.display())))?;
        Ok(Self {
            ca: read_cert(ca)?,
            cert: read_cert(cert)?,
            key,
        })
    }

    /// The CA with a certificate given as DER (from the roster) and the key in `key_file`.
    pub fn with_key_file(
        ca: CertificateDer<'static>,
        cert_der: Vec<u8>,
        key_file: &std::path::Path,
    ) -> Result<Self, NodeError> {
        let key_pem = crate::identity::read_secret_file(key_file)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| NodeError::Tls(format!("{}: {e}", key_file.display())))?;
        Ok(Self {
            ca,
            cert: CertificateDer::from(cert_der),
            key,
        })
    }

    /// Whether the key is the one the certificate holds.
    pub fn key_matches_cert(&self) -> bool {
        rustls::sign::CertifiedKey::from_der(
            vec![self.cert.clone()],
            self.key.clone_key(),
            &provider(),
        )
        .and_then(|k| k.keys_match())
        .is_ok()
    }

    /// When this node's certificate stops being valid (its notAfter), Unix ms.
    pub fn not_after_ms(&self) -> Result<u64, NodeError> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.cert)
            .map_err(|e| NodeError::Tls(format!("this node's certificate: {e}")))?;
        let secs = cert.validity().not_after.timestamp();
        Ok(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
    }

    /// Whether the CA is a development CA made by certs-dev.
    pub fn ca_is_dev(&self) -> bool {
        let needle = b"liaison DEV";
        self.ca.windows(needle.len()).any(|w| w == needle)
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, as pinned in the roster.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    Ok(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl fmt::Display) -> NodeError {
    NodeError::Tls(e.to_string())
}

/// Checks a certificate's pin and name against the roster.
pub fn check_pin(
    roster: &RosterCell,
    end_entity: &CertificateDer<'_>,
    expected: Option<&str>,
) -> Result<NodeId, PinError> {
    let parsed =
        ParsedCertificate::try_from(end_entity).map_err(|e| PinError::Unparsable(e.to_string()))?;
    let spki: [u8; 32] = Sha256::digest(parsed.subject_public_key_info().as_ref()).into();
    let r = roster.get();
    let member = r.roster().by_tls_key(&spki).ok_or(PinError::NotPinned)?;
    if let Some(exp) = expected {
        if member.id.as_str() != exp {
            return Err(PinError::OtherMember {
                owner: member.id.clone(),
                dialled: exp.to_owned(),
            });
        }
    }
    if !member.is_active() {
        return Err(PinError::NotActive(member.id.clone(), member.status));
    }
    let name = ServerName::try_from(member.id.as_str().to_owned())
        .map_err(|_| PinError::WrongName(member.id.clone()))?;
    verify_server_name(&parsed, &name).map_err(|_| PinError::WrongName(member.id.clone()))?;
    Ok(member.id.clone())
}

/// Re-checks an established connection's peer against the roster in force now: the member
/// whose pinned key it holds, active, named `expected` when given. Every new connection is
/// checked so, whatever its handshake was (session resumption is off besides).
pub fn recheck(
    conn: &quinn::Connection,
    roster: &RosterCell,
    expected: Option<&str>,
) -> Result<NodeId, PinError> {
    let certs = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| PinError::Unparsable("no peer certificate".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| PinError::Unparsable("no peer certificate".into()))?;
    check_pin(roster, first, expected)
}

struct RosterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    roster: RosterCell,
}

impl fmt::Debug for RosterClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RosterClientVerifier")
    }
}

impl ClientCertVerifier for RosterClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_pin(&self.roster, end_entity, None)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

struct RosterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    roster: RosterCell,
}

impl fmt::Debug for RosterServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RosterServerVerifier")
    }
}

impl ServerCertVerifier for RosterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let who = server_name.to_str().into_owned();
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_pin(&self.roster, end_entity, Some(&who))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn transport_config(window: usize, idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let streams = quinn::VarInt::from_u32(u32::try_from(window.max(16) * 2).unwrap_or(1024));
    t.max_concurrent_bidi_streams(streams);
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.keep_alive_interval(Some(idle / 6));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// Whether the TLS material in use stays (None) or gives way to the `.next` key with the
/// certificate the roster carries for it (Some). A node keeps its TLS key for as long as the
/// roster pins it, as current or as previous: during a rotation's overlap every peer accepts
/// it, whichever roster it holds, where a peer still on the roster before the rotation would
/// refuse the new one and so never hear of the rotation (protocol.md §5.1). It switches once
/// the roster no longer pins the old key (the overlap ended, or there was none).
pub fn follow_tls(
    node: &NodeId,
    tls_key: &std::path::Path,
    roster: &liaison_protocol::Roster,
    tls: &TlsMaterial,
) -> Result<(Option<TlsMaterial>, Option<String>), NodeError> {
    let me = roster
        .member(node)
        .ok_or_else(|| NodeError::Roster(format!("{node} is not a member of the roster")))?;
    let spki = spki_sha256(&tls.cert).map_err(|e| NodeError::Tls(e.to_string()))?;
    if spki == me.tls_spki_sha256 {
        return Ok((None, None));
    }
    let next_key = crate::identity::next_key_path(tls_key);
    let next = match (&me.tls_cert, next_key.exists()) {
        (Some(der), true) => {
            let next = TlsMaterial::with_key_file(tls.ca.clone(), der.clone(), &next_key)?;
            let cert_spki = spki_sha256(&next.cert).map_err(|e| NodeError::Tls(e.to_string()))?;
            (cert_spki == me.tls_spki_sha256 && next.key_matches_cert()).then_some(next)
        }
        _ => None,
    };
    let still_pinned = me.previous.as_ref().and_then(|p| p.tls_spki_sha256) == Some(spki);
    match (next, still_pinned) {
        (Some(_), true) => Ok((
            None,
            Some(format!(
                "the roster (serial {}) pins the new TLS key in {} and still the one in use: \
                 this node switches to the new one when a roster stops pinning the old",
                roster.serial,
                next_key.display()
            )),
        )),
        (Some(next), false) => Ok((
            Some(next),
            Some(format!(
                "the roster (serial {}) no longer pins the TLS key in use: serving and dialling \
                 with {} and the certificate the roster carries from now on",
                roster.serial,
                next_key.display()
            )),
        )),
        (None, true) => Ok((
            None,
            Some(format!(
                "WARNING: the roster (serial {}) pins a new TLS key for {node} that this node \
                 does not hold with its certificate (put the key at {}); peers accept the \
                 previous one until a roster drops it",
                roster.serial,
                next_key.display()
            )),
        )),
        (None, false) => Err(NodeError::Roster(format!(
            "the TLS certificate of this node is not the one the roster (serial {}) pins for \
             {node} (nor a previous one it still pins, nor {} with the roster's certificate)",
            roster.serial,
            next_key.display()
        ))),
    }
}

/// Binds the QUIC endpoint: server side admits roster members, client side dials them.
pub fn endpoint(
    socket: UdpSocket,
    tls: &TlsMaterial,
    roster: RosterCell,
    delivery: &crate::config::DeliveryConfig,
) -> Result<quinn::Endpoint, NodeError> {
    let (server, client) = configs(tls, roster, delivery)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| NodeError::Tls("no async runtime for QUIC".to_owned()))?;
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )?;
    ep.set_default_client_config(client);
    Ok(ep)
}

/// Serves with new TLS material from now on (a rotated TLS key) and returns the client
/// config to dial with: new handshakes use it, connections already up keep theirs.
pub fn switch_tls(
    ep: &quinn::Endpoint,
    tls: &TlsMaterial,
    roster: RosterCell,
    delivery: &crate::config::DeliveryConfig,
) -> Result<quinn::ClientConfig, NodeError> {
    let (server, client) = configs(tls, roster, delivery)?;
    ep.set_server_config(Some(server));
    Ok(client)
}

fn configs(
    tls: &TlsMaterial,
    roster: RosterCell,
    delivery: &crate::config::DeliveryConfig,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), NodeError> {
    let window = delivery.window;
    let idle = Duration::from_millis(delivery.idle_timeout_ms.max(1000));
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots.add(tls.ca.clone()).map_err(tls_err)?;
    let roots = Arc::new(roots);

    let inner_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(tls_err)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(RosterClientVerifier {
            inner: inner_client,
            roster: roster.clone(),
        }))
        .with_single_cert(vec![tls.cert.clone()], tls.key.clone_key())
        .map_err(tls_err)?;
    server.alpn_protocols = alpn(delivery);
    // No session resumption: a resumed session would skip the roster pin check, and a key
    // that left the roster could come back on an old ticket.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let server = QuicServerConfig::try_from(server).map_err(tls_err)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport_config(window, idle));

    let inner_server = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(tls_err)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RosterServerVerifier {
            inner: inner_server,
            roster,
        }))
        .with_client_auth_cert(vec![tls.cert.clone()], tls.key.clone_key())
        .map_err(tls_err)?;
    client.alpn_protocols = alpn(delivery);
    client.resumption = rustls::client::Resumption::disabled();
    let client = QuicClientConfig::try_from(client).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport_config(window, idle));
    Ok((server, client))
}

/// Binds a UDP socket.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, NodeError> {
    UdpSocket::bind(addr).map_err(|e| {
        NodeError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot bind {addr}: {e}"),
        ))
    })
}

/// Largest answer frame accepted from a peer (receipts, acks, errors).
const MAX_ANSWER: usize = 64 * 1024;

/// Failure of one stream exchange.
pub(crate) enum ExchangeError {
    /// The connection is gone or the stream failed.
    Connection(String),
    /// The answer is not a frame.
    Answer(String),
}

/// Writes one frame on a new bidirectional stream and reads the one-frame answer.
pub(crate) async fn exchange(
    conn: &quinn::Connection,
    frame: &Frame,
    priority: i32,
) -> Result<Frame, ExchangeError> {
    let conn_err = |e: &dyn fmt::Display| ExchangeError::Connection(e.to_string());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| conn_err(&e))?;
    let _ = send.set_priority(priority);
    send.write_all(&frame.to_bytes())
        .await
        .map_err(|e| conn_err(&e))?;
    send.finish().map_err(|e| conn_err(&e))?;
    let answer = recv
        .read_to_end(MAX_ANSWER + HEAD_LEN)
        .await
        .map_err(|e| conn_err(&e))?;
    Frame::decode_exact(&answer, MAX_ANSWER).map_err(|e| ExchangeError::Answer(e.to_string()))
}

/// One exchange on `conn`, for callers outside a peer actor (witnessing).
pub(crate) async fn exchange_once(
    conn: &quinn::Connection,
    frame: &Frame,
) -> Result<Frame, String> {
    exchange(conn, frame, 0).await.map_err(|e| match e {
        ExchangeError::Connection(r) | ExchangeError::Answer(r) => r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason text quinn reports when the verifier refused (the form seen in real runs).
    fn refused(e: rustls::Error) -> String {
        format!("the cryptographic handshake failed: error 42: {e}")
    }

    #[test]
    fn every_pin_error_gets_its_own_name() {
        let member = NodeId::new("gx").unwrap();
        for e in [
            PinError::NotPinned,
            PinError::OtherMember {
                owner: member.clone(),
                dialled: "sx".into(),
            },
            PinError::NotActive(member.clone(), liaison_protocol::MemberStatus::Revoked),
            PinError::WrongName(member.clone()),
        ] {
            let name = e.name();
            assert_eq!(tls_refusal_name(&refused(e.into())), name);
        }
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(tls_refusal_name(&refused(unknown)), "unknown-ca");
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        assert_eq!(tls_refusal_name(&refused(bad)), "bad-certificate");
        assert_eq!(
            handshake_refusal_name(&quinn::ConnectionError::TimedOut),
            "timeout"
        );
    }
}
