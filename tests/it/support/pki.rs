//! The test PKI, made with rcgen: a CA and server certificates signed by it.

use std::path::{Path, PathBuf};

use super::write_atomic;

/// A CA and a server certificate for localhost, 127.0.0.1 and ::1, written to a folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A folder with `ca.crt`, for skopeo/podman `--cert-dir`.
    pub cert_dir: PathBuf,
    pub ca_file: PathBuf,
    /// Base64 SHA-256 of the server certificate's SubjectPublicKeyInfo, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub leaf_spki_sha256: String,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    pub(super) ca_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "registry-gate test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        let ca_der = ca_cert.der().to_vec();
        let cert_dir = dir.path().join("certs.d");
        std::fs::create_dir(&cert_dir).unwrap();
        std::fs::write(cert_dir.join("ca.crt"), &ca_pem).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let mut pki = Pki {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            dir,
            ca_pem,
            cert_dir,
            ca_file,
            leaf_spki_sha256: String::new(),
            ca_key,
            ca_params,
            ca_der,
        };
        pki.issue_to(&pki.cert.clone(), &pki.key.clone(), "server-1");
        pki
    }

    /// Issues a new server certificate signed by the CA into `cert`/`key`, through a rename.
    pub fn issue_to(&mut self, cert: &Path, key: &Path, cn: &str) {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&leaf_key);
        self.leaf_spki_sha256 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki),
        );
        let chain = format!("{}{}", leaf.pem(), self.ca_pem);
        write_atomic(cert, chain.as_bytes());
        write_atomic(key, leaf_key.serialize_pem().as_bytes());
    }
}
