//! TLS material: certificate generation (rcgen), PEM loading, and the rustls configurations
//! shared by the QUIC and TLS-over-TCP transports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::File { path, source }
    };
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
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(hosts.to_vec())?;
    server_params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map(String::as_str).unwrap_or("burrow"),
    );
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    for (name, contents, secret) in [
        (CA_CERT, ca_cert.pem(), false),
        (CA_KEY, ca_key.serialize_pem(), true),
        (SERVER_CERT, server_cert.pem(), false),
        (SERVER_KEY, server_key.serialize_pem(), true),
    ] {
        let path = dir.join(name);
        write_file(&path, contents.as_bytes(), secret).map_err(io_err(&path))?;
    }
    Ok(())
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
    // TLS lanes leave rustls after their handshake (see `relay::sealed`).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// An agent's client configuration: trusts `ca` if given, else the system roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
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
    let mut config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
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
