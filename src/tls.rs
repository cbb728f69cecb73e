//! TLS termination: loading the certificate and key, and swapping them while running.
//!
//! Owns: PEM loading with rustls-pki-types' `PemObject` (a provider's `.pem` leaf plus chain; a
//! PKCS#8, PKCS#1 RSA or SEC1 EC key), the check that key and certificate match, the rustls
//! `ServerConfig` (TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`), and [`CertStore`], a
//! resolver whose pair can be replaced for new connections without touching open ones.
//! A pair that fails to load never replaces a good one. Does not own: watching the files
//! (reload.rs) or accepting connections (server.rs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsPaths;

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificates: {source}")]
    Certs {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NoCerts { path: PathBuf },
    #[error(
        "{path}: cannot read a private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM expected): {source}"
    )]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key}: key does not fit certificate {cert}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// The crypto provider used everywhere (explicit, so a second provider in the graph is harmless).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads and checks a certificate chain and its key.
pub fn load_pair(paths: &TlsPaths) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|source| TlsError::Key {
        path: paths.key.clone(),
        source,
    })?;
    let pair =
        CertifiedKey::from_der(certs, key, &provider()).map_err(|source| TlsError::Mismatch {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })?;
    Ok(Arc::new(pair))
}

/// All certificates of a PEM file, in order (leaf first, then the chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The serving certificate, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    paths: TlsPaths,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the pair named by `paths`.
    pub fn load(paths: TlsPaths) -> Result<Self, TlsError> {
        let pair = load_pair(&paths)?;
        Ok(CertStore {
            paths,
            current: RwLock::new(pair),
        })
    }

    /// The files this store reads.
    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// Reads the files again; on success new connections get the new pair, on failure the
    /// previous pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.paths)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = pair;
        Ok(())
    }

    /// The leaf certificate currently served (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        let pair = self.current.read().unwrap_or_else(|e| e.into_inner());
        pair.cert[0].clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The rustls server config: TLS 1.2 and 1.3, ALPN h2 then http/1.1, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless tickets let docker, podman and skopeo, which open a connection per request,
    // resume sessions instead of doing a full handshake every time.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair_files(dir: &Path, name: &str) -> TlsPaths {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let paths = TlsPaths {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn loads_a_pair_and_rejects_a_mismatch_naming_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair_files(dir.path(), "a");
        let b = pair_files(dir.path(), "b");
        load_pair(&a).unwrap();
        let mixed = TlsPaths {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = load_pair(&mixed).unwrap_err().to_string();
        assert!(err.contains("b.key") && err.contains("a.pem"), "{err}");
    }

    #[test]
    fn broken_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair_files(dir.path(), "a");
        std::fs::write(&a.cert, "not a certificate\n").unwrap();
        let err = load_pair(&a).unwrap_err().to_string();
        assert!(
            err.contains("a.pem") && err.contains("no certificate"),
            "{err}"
        );
        let a = pair_files(dir.path(), "a");
        std::fs::write(&a.key, "-----BEGIN PRIVATE KEY-----\n!!!\n").unwrap();
        let err = load_pair(&a).unwrap_err().to_string();
        assert!(err.contains("a.key"), "{err}");
    }

    #[test]
    fn failed_reload_keeps_the_previous_pair() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair_files(dir.path(), "a");
        let store = CertStore::load(a.clone()).unwrap();
        let before = store.leaf();
        std::fs::write(&a.key, "garbage").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.leaf(), before);
        let fresh = pair_files(dir.path(), "a");
        store.reload().unwrap();
        assert_ne!(store.leaf(), before);
        assert_eq!(fresh.cert, a.cert);
    }
}
