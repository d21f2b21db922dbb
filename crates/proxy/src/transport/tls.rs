//! TLS with rustls: server configurations whose certificate can be swapped
//! while connections stay up, client configurations per server name, the
//! names a peer certificate proves, and bounded reasons for failed
//! handshakes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TransportError;
use super::types::TlsIdentity;

/// Certificates of a TLS listener.
pub struct TlsServerSpec {
    /// Our certificate first, then intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Present: clients must present a certificate issued by one of these
    /// (mutual TLS); their names go into [`super::Inbound::tls`].
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for TlsServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TlsServerSpec")
            .field("cert_chain", &self.cert_chain.len())
            .field("client_ca", &self.client_ca.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

fn pem_error(file: &Path, problem: impl fmt::Display) -> TransportError {
    TransportError::Pem { file: file.display().to_string(), problem: problem.to_string() }
}

/// Every certificate in a PEM file; at least one.
pub fn load_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, e))?;
    if certs.is_empty() {
        return Err(pem_error(file, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| pem_error(file, e))
}

impl TlsServerSpec {
    /// Load a listener's certificate chain, key and optional client CA
    /// bundle from PEM files.
    pub fn from_pem_files(
        certificate: &Path,
        private_key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsServerSpec, TransportError> {
        Ok(TlsServerSpec {
            cert_chain: load_certificates(certificate)?,
            key: load_private_key(private_key)?,
            client_ca: client_ca.map(load_certificates).transpose()?,
        })
    }
}

/// Outbound TLS: whom we trust and what we present.
pub struct TlsClientSpec {
    /// Our client certificate chain and key, presented to servers that ask
    /// (mutual TLS toward hosting providers). `None`: present nothing.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Trust anchors for server certificates.
    pub roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for TlsClientSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientSpec")
            .field("identity", &self.identity.is_some())
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// Outbound TLS settings of a hub: a default, and overrides by the
/// destination's server name (each UM provider may use its own CA and want
/// its own client certificate).
#[derive(Debug, Default)]
pub struct OutboundTls {
    /// Used for server names without an override. `None`: TLS sends to
    /// them fail with `SendFailure::Tls`.
    pub default: Option<TlsClientSpec>,
    /// Server name (case-insensitive) → settings.
    pub per_server: Vec<(String, TlsClientSpec)>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str) -> impl FnOnce(rustls::Error) -> TransportError + '_ {
    move |source| TransportError::Tls { what: what.to_owned(), source }
}

/// A server certificate that can be replaced while the listener runs: new
/// handshakes see the new one, sessions already set up keep theirs.
#[derive(Debug)]
pub(crate) struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    pub fn new(key: Arc<CertifiedKey>) -> SwappableCert {
        SwappableCert { current: RwLock::new(key) }
    }

    pub fn swap(&self, key: Arc<CertifiedKey>) {
        // A poisoned lock only means a writer panicked mid-assignment of an
        // Arc, which cannot leave it half-written: carry on.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<Arc<CertifiedKey>, TransportError> {
    if chain.is_empty() {
        return Err(TransportError::Tls { what: what.to_owned(), source: rustls::Error::NoCertificatesPresented });
    }
    CertifiedKey::from_der(chain, key, &provider()).map(Arc::new).map_err(tls_err(what))
}

fn root_store(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(tls_err(what))?;
    }
    Ok(roots)
}

/// A server configuration around a swappable certificate.
pub(crate) fn server_config(
    cert: Arc<SwappableCert>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    what: &str,
) -> Result<Arc<ServerConfig>, TransportError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(tls_err(what))?;
    let builder = match client_ca {
        Some(cas) => {
            let roots = Arc::new(root_store(cas, what)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TransportError::ClientCa { what: what.to_owned(), problem: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_cert_resolver(cert)))
}

fn client_config(spec: TlsClientSpec, what: &str) -> Result<Arc<ClientConfig>, TransportError> {
    let roots = Arc::new(root_store(spec.roots, what)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TransportError::ClientCa { what: what.to_owned(), problem: e.to_string() })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err(what))?
        .with_webpki_verifier(verifier);
    let config = match spec.identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(tls_err(what))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Built client configurations.
#[derive(Debug, Default)]
pub(crate) struct ClientConfigs {
    default: Option<Arc<ClientConfig>>,
    /// Keys are lower case. A HashMap with the default (SipHash) hasher:
    /// the keys come from configuration, but lookups use names from DNS.
    per_server: HashMap<String, Arc<ClientConfig>>,
}

impl ClientConfigs {
    pub fn build(spec: OutboundTls) -> Result<ClientConfigs, TransportError> {
        let default = spec.default.map(|s| client_config(s, "outbound TLS")).transpose()?;
        let mut per_server = HashMap::new();
        for (name, s) in spec.per_server {
            let what = format!("outbound TLS to {name}");
            per_server.insert(name.to_ascii_lowercase(), client_config(s, &what)?);
        }
        Ok(ClientConfigs { default, per_server })
    }

    pub fn for_server(&self, name: Option<&str>) -> Option<Arc<ClientConfig>> {
        name.and_then(|n| self.per_server.get(&n.to_ascii_lowercase()).cloned()).or_else(|| self.default.clone())
    }
}

/// The DNS names a certificate proves: subjectAltName dNSName entries, or
/// the subject CN when there are none. Empty when it does not parse.
pub(crate) fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return Vec::new() };
    let mut names: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names =
            x509.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).collect();
    }
    // Bound what a certificate can make us keep per connection.
    names.truncate(64);
    names
}

/// The identity a finished handshake proved, from the peer's end-entity
/// certificate (already verified by rustls).
pub(crate) fn identity(peer_certs: Option<&[CertificateDer<'static>]>) -> Arc<TlsIdentity> {
    let names = peer_certs.and_then(|c| c.first()).map(certificate_names).unwrap_or_default();
    Arc::new(TlsIdentity { names })
}

/// Which way a handshake went, for the failure metric.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// A bounded metric label for a failed handshake.
pub(crate) fn handshake_failure_reason(e: &io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => "eof",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => "name_mismatch",
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "expired",
            CertificateError::Revoked => "revoked",
            _ => "bad_certificate",
        },
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => "protocol",
        _ => "other",
    }
}
