//! Optional TLS on emberd's API listener: a `tokio-rustls` acceptor built
//! from a PEM certificate chain and private key given at startup (rustls
//! with the `ring` provider; TLS 1.2 and 1.3). The handshake runs in each
//! connection's own task, so a slow or broken client never holds up accept.
//! Also the `ember` CLI's side: a connector trusting a given CA bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The CA bundle clients trust when none is given (Debian's).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the certificate chain {0}")]
    Cert(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("{0} holds no certificate")]
    NoCert(PathBuf),
    #[error("reading the private key {0}")]
    Key(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("the certificate and key do not make a TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("no usable CA certificate in {0}")]
    NoCa(PathBuf),
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Cert(path.into(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(path.into(), e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(path.into()));
    }
    Ok(chain)
}

/// A client connector trusting the certificates in `ca` (PEM).
pub fn connector(ca: &Path) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(read_chain(ca)?);
    if added == 0 {
        return Err(TlsError::NoCa(ca.into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// An acceptor serving `cert` (PEM chain, leaf first) with `key` (PEM,
/// PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only, as the rest of emberd.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = read_chain(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(key.into(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
