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

use liaison_protocol::NodeId;
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

/// ALPN of this protocol version.
pub const ALPN: &[u8] = b"liaison/1";

/// Called when a handshake is refused: (peer description, reason).
pub type RefusalSink = Arc<dyn Fn(String, String) + Send + Sync>;

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

/// The node id of an admitted peer, from its certificate and the roster.
pub fn peer_node_id(conn: &quinn::Connection, roster: &RosterCell) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let spki = spki_sha256(certs.first()?).ok()?;
    let r = roster.get();
    r.roster()
        .by_tls_key(&spki)
        .filter(|m| m.is_active())
        .map(|m| m.id.clone())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl fmt::Display) -> NodeError {
    NodeError::Tls(e.to_string())
}

/// Checks a certificate's pin and name against the roster.
fn check_pin(
    roster: &RosterCell,
    end_entity: &CertificateDer<'_>,
    expected: Option<&str>,
) -> Result<NodeId, String> {
    let parsed = ParsedCertificate::try_from(end_entity).map_err(|e| e.to_string())?;
    let spki: [u8; 32] = Sha256::digest(parsed.subject_public_key_info().as_ref()).into();
    let r = roster.get();
    let member = r
        .roster()
        .by_tls_key(&spki)
        .ok_or_else(|| "TLS key is not pinned in the roster for any member".to_owned())?;
    if let Some(exp) = expected {
        if member.id.as_str() != exp {
            return Err(format!("TLS key belongs to {}, not to {exp}", member.id));
        }
    }
    if !member.is_active() {
        return Err(format!(
            "{} is {:?} in the roster",
            member.id, member.status
        ));
    }
    let name = ServerName::try_from(member.id.as_str().to_owned()).map_err(|e| e.to_string())?;
    verify_server_name(&parsed, &name)
        .map_err(|_| format!("certificate does not name {}", member.id))?;
    Ok(member.id.clone())
}

struct RosterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    roster: RosterCell,
    refused: RefusalSink,
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
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            (self.refused)("inbound client".to_owned(), format!("certificate: {e}"));
            return Err(e);
        }
        match check_pin(&self.roster, end_entity, None) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(reason) => {
                (self.refused)("inbound client".to_owned(), reason.clone());
                Err(rustls::Error::General(reason))
            }
        }
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
    refused: RefusalSink,
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
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            (self.refused)(who, format!("certificate: {e}"));
            return Err(e);
        }
        match check_pin(&self.roster, end_entity, Some(&who)) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(reason) => {
                (self.refused)(who, reason.clone());
                Err(rustls::Error::General(reason))
            }
        }
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

/// Binds the QUIC endpoint: server side admits roster members, client side dials them.
pub fn endpoint(
    socket: UdpSocket,
    tls: &TlsMaterial,
    roster: RosterCell,
    refused: RefusalSink,
    delivery: &crate::config::DeliveryConfig,
) -> Result<quinn::Endpoint, NodeError> {
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
            refused: refused.clone(),
        }))
        .with_single_cert(vec![tls.cert.clone()], tls.key.clone_key())
        .map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
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
            refused,
        }))
        .with_client_auth_cert(vec![tls.cert.clone()], tls.key.clone_key())
        .map_err(tls_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let client = QuicClientConfig::try_from(client).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport_config(window, idle));

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

/// Binds a UDP socket.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, NodeError> {
    UdpSocket::bind(addr).map_err(|e| {
        NodeError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot bind {addr}: {e}"),
        ))
    })
}
