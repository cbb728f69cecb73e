//! The ACME cache folder: the account and the certificate, on disk.
//!
//! Owns: creating the folder with mode 0700, writing files with mode 0600 through a temporary
//! file and `rename` (a reader, another replica included, sees the old file or the new one,
//! never half of one), and reading them back. The certificate and its key live in ONE file,
//! `certificate.pem` (key first, then the chain, leaf first), so they can never be seen out of
//! step. The account is `account.json`: the directory URL it belongs to and instant-acme's
//! credentials (which hold the account's private key). Does not own: what is in the files
//! (mod.rs, order.rs).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The file holding the key and the chain.
pub const CERTIFICATE_FILE: &str = "certificate.pem";
/// The file holding the account.
pub const ACCOUNT_FILE: &str = "account.json";

/// A cache problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// A certificate read from the cache (or just obtained), with what the schedule needs.
#[derive(Clone)]
pub struct Cached {
    pub pair: Arc<CertifiedKey>,
    /// notBefore and notAfter, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The DNS names of the leaf, lower case.
    pub names: Vec<String>,
}

impl Cached {
    /// Reads a PEM holding a private key and a chain (leaf first).
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<Cached, CacheError> {
        let invalid = |message: String| CacheError::Invalid {
            path: path.to_owned(),
            message,
        };
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("cannot read the certificates: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| invalid(format!("cannot read the private key: {e}")))?;
        let (not_before, not_after, names) = validity_and_names(&chain[0]).map_err(&invalid)?;
        let pair = CertifiedKey::from_der(chain, key, &crate::net::tls::provider())
            .map_err(|e| invalid(format!("key does not fit the certificate: {e}")))?;
        Ok(Cached {
            pair: Arc::new(pair),
            not_before,
            not_after,
            names,
        })
    }

    /// Whether the leaf names every one of `domains`.
    pub fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.names.iter().any(|n| n == d))
    }
}

/// notBefore, notAfter (unix seconds) and the DNS names of a certificate.
fn validity_and_names(der: &CertificateDer<'_>) -> Result<(i64, i64, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        names,
    ))
}

impl Cache {
    /// Creates the folder (and its parents) if needed, with mode 0700; an existing folder's
    /// mode is tightened to 0700 too.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Cache {
            dir: dir.to_owned(),
        })
    }

    /// The folder as it is, created or changed by nothing (for `check`).
    pub fn existing(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The file's bytes, `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }

    /// Writes `data` to `name` with mode 0600: a temporary file, fsync, then `rename`.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), CacheError> {
        let path = self.path(name);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let io = |source| CacheError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The cached certificate, `None` when there is none.
    pub fn certificate(&self) -> Result<Option<Cached>, CacheError> {
        match self.read(CERTIFICATE_FILE)? {
            None => Ok(None),
            Some(pem) => Cached::from_pem(&pem, &self.path(CERTIFICATE_FILE)).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_for(names: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        format!("{}{}", key.serialize_pem(), cert.pem())
    }

    #[test]
    fn folder_and_files_are_private_and_the_pair_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("a/b");
        let cache = Cache::open(&cache_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert!(cache.certificate().unwrap().is_none());
        cache
            .write(
                CERTIFICATE_FILE,
                pem_for(&["Registry.Example.com", "b.example"]).as_bytes(),
            )
            .unwrap();
        assert_eq!(mode(&cache.path(CERTIFICATE_FILE)), 0o600);
        let c = cache.certificate().unwrap().unwrap();
        assert_eq!(c.names, ["registry.example.com", "b.example"]);
        assert!(c.covers(&["b.example".into()]));
        assert!(!c.covers(&["c.example".into()]));
        assert!(c.not_after > c.not_before);
        // Left-over temporaries are not there.
        let names: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_broken_or_mismatched_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let a = pem_for(&["a.example"]);
        let b = pem_for(&["b.example"]);
        let key_a = &a[..a.find("-----BEGIN CERTIFICATE").unwrap()];
        let cert_b = &b[b.find("-----BEGIN CERTIFICATE").unwrap()..];
        cache
            .write(CERTIFICATE_FILE, format!("{key_a}{cert_b}").as_bytes())
            .unwrap();
        let err = cache.certificate().err().unwrap().to_string();
        assert!(
            err.contains(CERTIFICATE_FILE) && err.contains("does not fit"),
            "{err}"
        );
        cache.write(CERTIFICATE_FILE, b"junk").unwrap();
        let err = cache.certificate().err().unwrap().to_string();
        assert!(err.contains("no certificate"), "{err}");
    }
}
