//! Certificates generated with rcgen: a CA, and leaf certificates it signs,
//! kept in memory (for tokio-rustls peers) and written as PEM files (for the
//! proxy's configuration).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;

/// A certificate authority. Its files live in a tempdir removed on drop.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
    /// The CA certificate as a PEM file.
    pub pem_path: PathBuf,
    dir: Arc<TempDir>,
}

/// A leaf certificate and its key, in memory and as PEM files.
#[derive(Clone)]
pub struct CertKey {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: Arc<TempDir>,
}

impl CertKey {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).expect("write CA");
        Ca { issuer: Issuer::new(params, key), cert: cert.der().clone(), pem_path, dir }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> CertKey {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for `names` (a DNS name in subjectAltName is
    /// how mutual-TLS peers are identified).
    pub fn client_cert(&self, names: &[&str]) -> CertKey {
        self.leaf(names, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate for `names` whose validity ended years ago.
    pub fn expired_client_cert(&self, names: &[&str]) -> CertKey {
        self.leaf_with(names, ExtendedKeyUsagePurpose::ClientAuth, true)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertKey {
        self.leaf_with(names, usage, false)
    }

    fn leaf_with(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, is_expired: bool) -> CertKey {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("leaf params");
        if is_expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let stem =
            format!("{}-{}", names.first().copied().unwrap_or("leaf").replace([':', '/'], "_"), crate::sip::unique(""));
        let cert_path = self.dir.path().join(format!("{stem}.crt.pem"));
        let key_path = self.dir.path().join(format!("{stem}.key.pem"));
        // The chain file holds the leaf then the CA, as operators deploy it.
        let ca_pem = std::fs::read_to_string(&self.pem_path).expect("read CA");
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), ca_pem)).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        CertKey {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key_der: key.serialize_der(),
            cert_path,
            key_path,
            _dir: Arc::clone(&self.dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
