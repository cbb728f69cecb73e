//! TLS termination: loading the certificate and key, and swapping them while running.
//!
//! Owns: PEM loading with rustls-pki-types' `PemObject` (a provider's `.pem` leaf plus chain; a
//! PKCS#8, PKCS#1 RSA or SEC1 EC key), the check that key and certificate match, the rustls
//! `ServerConfig` (TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`), and [`CertStore`], a
//! resolver whose pair can be replaced for new connections without touching open ones.
//! A pair that fails to load never replaces a good one. Also reads the leaf's subject and
//! notAfter (x509-parser) for the logs, the metrics and `check`. With ACME the store starts
//! empty (handshakes fail with an alert until a certificate is set) and also answers TLS-ALPN-01
//! (RFC 8737): a ClientHello offering only `acme-tls/1` gets the challenge certificate published
//! for its SNI name, or nothing. Does not own: watching the files (ops/reload.rs), obtaining
//! certificates (acme/) or accepting connections (net/server.rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::CipherSuite;
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

/// The crypto provider used everywhere (explicit, so a second provider in the graph is harmless):
/// aws-lc-rs, with the AES-128-GCM suites first. Go clients (docker, podman, skopeo) list them
/// first themselves; OpenSSL-based ones (curl) list AES-256-GCM with SHA-384 first, and on CPUs
/// without SHA-512 instructions the SHA-384 key schedule costs about 45 µs more per handshake
/// (measured in-process with a P-256 certificate: 164 µs against 119 µs).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
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

/// A certificate with fewer days left than this is warned about (log and `check`).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// What the logs, the metrics and `check` say about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The subject's common name, or the whole subject when it has none.
    pub subject: String,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

impl LeafInfo {
    /// notAfter as RFC 3339 UTC, e.g. `2026-08-01T12:00:00Z`.
    pub fn not_after_utc(&self) -> String {
        crate::time::rfc3339(self.not_after)
    }

    /// Whole days from `now` (unix seconds) to notAfter; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Why a certificate's subject and dates could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the certificate's subject and validity: {0}")]
pub struct LeafInfoError(String);

/// Reads subject and notAfter from a DER certificate.
pub fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, LeafInfoError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| LeafInfoError(e.to_string()))?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.subject().to_string(), str::to_owned);
    Ok(LeafInfo {
        subject,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where a store's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `[tls] cert` and `key`, reloaded when they change.
    Files(TlsPaths),
    /// Set by the ACME client (acme/), kept in this cache folder.
    Acme { cache: PathBuf },
}

/// The serving certificate, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    source: CertSource,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by lower-case server name (ACME only).
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    /// Loads the pair named by `paths`.
    pub fn load(paths: TlsPaths) -> Result<Self, TlsError> {
        let pair = load_pair(&paths)?;
        Ok(CertStore {
            source: CertSource::Files(paths),
            current: RwLock::new(Some(pair)),
            alpn_challenges: RwLock::default(),
        })
    }

    /// A store for ACME: empty until [`CertStore::set`] is called.
    pub fn for_acme(cache: PathBuf) -> Self {
        CertStore {
            source: CertSource::Acme { cache },
            current: RwLock::new(None),
            alpn_challenges: RwLock::default(),
        }
    }

    /// The files this store reads (`None` for ACME).
    pub fn paths(&self) -> Option<&TlsPaths> {
        match &self.source {
            CertSource::Files(paths) => Some(paths),
            CertSource::Acme { .. } => None,
        }
    }

    /// Whether TLS-ALPN-01 challenges are answered (ACME stores).
    pub fn is_acme(&self) -> bool {
        matches!(self.source, CertSource::Acme { .. })
    }

    /// Where the certificate comes from, for the logs: a file or the ACME cache folder.
    pub fn describe(&self) -> String {
        match &self.source {
            CertSource::Files(paths) => paths.cert.display().to_string(),
            CertSource::Acme { cache } => format!("ACME cache {}", cache.display()),
        }
    }

    /// Reads the files again; on success new connections get the new pair, on failure the
    /// previous pair stays. Nothing to read for ACME stores.
    pub fn reload(&self) -> Result<(), TlsError> {
        let CertSource::Files(paths) = &self.source else {
            return Ok(());
        };
        let pair = load_pair(paths)?;
        self.set(pair);
        Ok(())
    }

    /// Serves `pair` on new connections; open connections keep theirs.
    pub fn set(&self, pair: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(pair);
    }

    /// The leaf certificate currently served (DER), if any.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let pair = self.current.read().unwrap_or_else(|e| e.into_inner());
        pair.as_ref().map(|p| p.cert[0].clone())
    }

    /// Subject and notAfter of the leaf currently served.
    pub fn leaf_info(&self) -> Result<LeafInfo, LeafInfoError> {
        match self.leaf() {
            Some(leaf) => leaf_info(&leaf),
            None => Err(LeafInfoError("no certificate yet".into())),
        }
    }

    /// Publishes (`Some`) or withdraws (`None`) the TLS-ALPN-01 certificate for `name`.
    pub fn set_alpn_challenge(&self, name: &str, cert: Option<Arc<CertifiedKey>>) {
        let mut map = self
            .alpn_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match cert {
            Some(c) => map.insert(name.to_ascii_lowercase(), c),
            None => map.remove(&name.to_ascii_lowercase()),
        };
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: the validation client offers exactly `acme-tls/1`; only then, and only
        // for a name with a pending challenge, is the challenge certificate served.
        let mut alpn = hello.alpn().into_iter().flatten();
        if self.is_acme() && alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none() {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .alpn_challenges
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The rustls server config: TLS 1.2 and 1.3, ALPN h2 then http/1.1 (then `acme-tls/1` for an
/// ACME store, which only a validation client offers), certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let acme = store.is_acme();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    // The server's suite order (provider()), not the client's.
    config.ignore_client_order = true;
    // Stateless tickets let clients that keep a session cache (curl, browsers on the UI) resume
    // instead of doing a full handshake. Go's client keeps none unless asked, so docker, podman
    // and skopeo do a full handshake on every new connection either way.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
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
    fn reads_subject_and_not_after() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gate.example");
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let cert = params.self_signed(&key).unwrap();
        let info = leaf_info(cert.der()).unwrap();
        assert_eq!(info.subject, "gate.example");
        assert_eq!(info.not_after_utc(), "2031-07-15T00:00:00Z");
        assert_eq!(info.not_after, 1_941_840_000);
        assert_eq!(info.days_left(info.not_after - 86_400 * 3 - 1), 3);
        assert_eq!(info.days_left(info.not_after + 1), -1);
        assert!(leaf_info(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }

    #[test]
    fn failed_reload_keeps_the_previous_pair() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair_files(dir.path(), "a");
        let store = CertStore::load(a.clone()).unwrap();
        let before = store.leaf().unwrap();
        std::fs::write(&a.key, "garbage").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.leaf().unwrap(), before);
        let fresh = pair_files(dir.path(), "a");
        store.reload().unwrap();
        assert_ne!(store.leaf().unwrap(), before);
        assert_eq!(fresh.cert, a.cert);
    }

    #[test]
    fn the_server_picks_aes_128_even_when_the_client_lists_aes_256_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CertStore::load(pair_files(dir.path(), "a")).unwrap());
        let server_config = server_config(store.clone()).unwrap();
        // rustls' own client order, like OpenSSL's: AES-256-GCM/SHA-384 first.
        let client_provider = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            client_provider.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        // The client trusts the self-signed test certificate itself.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(store.leaf().unwrap()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert_eq!(
            server.negotiated_cipher_suite().unwrap().suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }
}
