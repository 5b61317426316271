//! TLS material: certificate generation (rcgen), PEM loading, and the rustls configurations
//! shared by the QUIC and TLS-over-TCP transports.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::wire::ALPN;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{path}: no usable PEM {what} in it")]
    Pem { path: PathBuf, what: &'static str },
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted root certificates: pass --ca FILE")]
    NoRoots,
}

/// File names shared by `burrow certs init` and the hub's generated certificates.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

/// Installs aws-lc-rs as the process-wide rustls provider; harmless when already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Writes a fresh CA and a server certificate for `hosts` (DNS names, `*.` wildcards or IPs)
/// into `dir`, creating it. Keys are written readable by the owner only.
pub fn generate_certs(dir: &Path, hosts: &[String]) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "burrow development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    for (name, contents, secret) in [(CA_CERT, ca_cert.pem(), false), (CA_KEY, ca_key.serialize_pem(), true)] {
        let path = dir.join(name);
        write_file(&path, contents.as_bytes(), secret).map_err(io_err(&path))?;
    }
    issue_server_cert(dir, hosts)
}

/// Writes a new server certificate and key for `hosts` into `dir`, signed by the CA kept
/// there (`ca.pem`, `ca.key`), so agents that trust that CA keep trusting the hub.
pub fn issue_server_cert(dir: &Path, hosts: &[String]) -> Result<(), TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(io_err(&path))
    };
    let ca_key = KeyPair::from_pem(&read(CA_KEY)?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(CA_CERT)?, ca_key)?;
    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(hosts.to_vec())?;
    server_params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map(String::as_str).unwrap_or("burrow"),
    );
    let server_cert = server_params.signed_by(&server_key, &issuer)?;
    for (name, contents, secret) in [
        (SERVER_CERT, server_cert.pem(), false),
        (SERVER_KEY, server_key.serialize_pem(), true),
    ] {
        let path = dir.join(name);
        write_file(&path, contents.as_bytes(), secret).map_err(io_err(&path))?;
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::File { path, source }
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(if secret { 0o600 } else { 0o644 });
    opts.open(path)?.write_all(contents)
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, e, "certificate"))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e, "private key"))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error, what: &'static str) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::File {
            path: path.into(),
            source,
        },
        _ => TlsError::Pem {
            path: path.into(),
            what,
        },
    }
}

/// The hub's server configuration: TLS 1.3 only (QUIC requires it), ALPN `burrow/1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The hub's own HTTPS (its APIs on the main port, by its own name), with the same
/// certificate: HTTP/1.1 for browsers, curl and API clients, TLS 1.2 and 1.3.
pub fn https_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An agent's TLS client settings, with the diagnosis of the last hub certificate they
/// refused.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    refusal: Arc<Mutex<Option<UntrustedCertificate>>>,
}

impl ClientTls {
    /// Why the last handshake refused the hub's certificate, if one did since the last call.
    /// Checked after any failed handshake, QUIC or TLS, so that a certificate problem is told
    /// apart from a network one without reading error texts.
    pub fn take_refusal(&self) -> Option<UntrustedCertificate> {
        self.refusal.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An agent's client configuration: trusts `ca` if given, else the system roots.
pub fn client_config(ca: Option<&Path>) -> Result<ClientTls, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let refusal = Arc::new(Mutex::new(None));
    let verifier = DescribingVerifier {
        inner: rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?,
        trusted: match ca {
            Some(path) => format!("--ca {}", path.display()),
            None => "the system's root certificates (no --ca given)".into(),
        },
        refusal: refusal.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(ClientTls {
        config: Arc::new(config),
        refusal,
    })
}

/// TLS to web servers and proxies other than the hub (`HTTPS` upstream proxies, `--pac`
/// URLs): the system's roots and, if given, the `--ca` bundle's; TLS 1.2 and 1.3.
pub fn web_client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca {
        for cert in load_certs(path)? {
            roots.add(cert)?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A hub certificate the agent refused: rustls' reason, what the hub presented and what the
/// agent trusts.
#[derive(Clone, Debug)]
pub struct UntrustedCertificate {
    reason: rustls::CertificateError,
    presented: String,
    trusted: String,
}

impl std::fmt::Display for UntrustedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = match &self.reason {
            rustls::CertificateError::UnknownIssuer => {
                "it is signed by a CA the agent does not trust (UnknownIssuer)".into()
            }
            rustls::CertificateError::BadSignature => {
                "its signature does not verify with the trusted CA of that name, which was regenerated (BadSignature)"
                    .into()
            }
            other => other.to_string(),
        };
        write!(
            f,
            "the hub presented {}, checked against {}: {reason}",
            self.presented, self.trusted
        )
    }
}

/// The webpki verifier, whose refusals are also described for the agent's error message;
/// every check is the webpki verifier's own.
#[derive(Debug)]
struct DescribingVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    trusted: String,
    refusal: Arc<Mutex<Option<UntrustedCertificate>>>,
}

impl rustls::client::danger::ServerCertVerifier for DescribingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if let Err(rustls::Error::InvalidCertificate(reason)) = &verified {
            *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(UntrustedCertificate {
                reason: reason.clone(),
                presented: describe_certificate(end_entity),
                trusted: self.trusted.clone(),
            });
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// "a certificate for NAMES issued by ISSUER (SHA-256 …)", for error messages and logs.
pub fn describe_certificate(der: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    let fingerprint = hex::encode(&digest.as_ref()[..8]);
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return format!("an unparsable certificate (SHA-256 {fingerprint}…)");
    };
    let mut names = alt_names(&cert);
    if names.is_empty() {
        names.push(cert.subject().to_string());
    }
    format!(
        "a certificate for {} issued by \"{}\" (SHA-256 {fingerprint}…)",
        names.join(", "),
        cert.issuer()
    )
}

/// The hosts the certificate at `path` is valid for: its subjectAltName DNS names and IPs.
pub fn certificate_names(path: &Path) -> Result<Vec<String>, TlsError> {
    let der = load_certs(path)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| TlsError::Pem {
        path: path.into(),
        what: "X.509 certificate",
    })?;
    Ok(alt_names(&cert))
}

fn alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::Ipv4Addr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::Ipv6Addr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certs_load_into_configs() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        generate_certs(
            dir.path(),
            &["localhost".into(), "*.localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
        server_config(&dir.path().join(SERVER_CERT), &dir.path().join(SERVER_KEY)).unwrap();
        client_config(Some(&dir.path().join(CA_CERT))).unwrap();
        let err = load_certs(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = load_certs(&dir.path().join(SERVER_KEY)).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    }
}
