//! One ACME order, from account to certificate, with instant-acme doing the protocol.
//!
//! Owns: the HTTP client instant-acme talks through (hyper-rustls with the gate's crypto
//! provider, the system's roots plus `[acme] ca`), loading the account from the cache or
//! registering one (its key is generated once and reused), publishing each authorization's
//! challenge (TLS-ALPN-01 in the certificate store, or HTTP-01 in the token table) and
//! withdrawing it afterwards, the CSR (a fresh ECDSA P-256 key per certificate, made with
//! rcgen), and waiting for the certificate. instant-acme retries `badNonce` itself. Nothing here
//! logs a key, a key authorization or a token value. Does not own: when to order (mod.rs) or
//! the files (cache.rs).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use super::cache::{ACCOUNT_FILE, Cache, CacheError, Cached};
use crate::config::AcmeConfig;
use crate::net::tls::CertStore;

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("[acme] ca: {0}")]
    Ca(#[source] Box<crate::net::tls::TlsError>),
    #[error("ACME client TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("no system CA certificates could be loaded and [acme] ca is not set")]
    NoRoots,
    #[error("TLS-ALPN-01 challenge certificate: {0}")]
    ChallengeCert(#[source] rustls::Error),
    #[error("key or certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("authorization for {name} is {status:?}")]
    Authorization {
        name: String,
        status: AuthorizationStatus,
    },
    #[error("the CA offers no {kind} challenge for {name}")]
    NoChallenge { name: String, kind: &'static str },
    #[error("the order ended {0:?} (a challenge failed: is this gate reachable as the domain?)")]
    NotReady(OrderStatus),
    #[error("the CA's certificate is unusable: {0}")]
    Issued(CacheError),
}

/// Which challenge the gate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// On the TLS listener (the CA connects to port 443 of the name).
    TlsAlpn01,
    /// On `acme_http_listen` (the CA asks port 80 of the name).
    Http01,
}

impl ChallengeKind {
    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Http01 => ChallengeType::Http01,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

/// HTTP-01 answers by token: what `GET /.well-known/acme-challenge/<token>` returns.
#[derive(Debug, Default)]
pub struct Http01Tokens(RwLock<HashMap<String, String>>);

impl Http01Tokens {
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    pub fn set(&self, token: &str, key_authorization: Option<String>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        match key_authorization {
            Some(k) => map.insert(token.to_owned(), k),
            None => map.remove(token),
        };
    }
}

/// The HTTP client instant-acme uses: HTTPS only, the gate's crypto provider.
struct AcmeHttp(Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl AcmeHttp {
    fn new(ca: Option<&std::path::Path>) -> Result<Self, OrderError> {
        let mut roots = rustls::RootCertStore::empty();
        // The system's roots; unreadable ones are skipped, as rustls-native-certs reports them.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca {
            let certs =
                crate::net::tls::load_certs(path).map_err(|e| OrderError::Ca(Box::new(e)))?;
            for cert in certs {
                roots.add(cert)?;
            }
        }
        if roots.is_empty() {
            return Err(OrderError::NoRoots);
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(AcmeHttp(
            Client::builder(TokioExecutor::new()).build(connector),
        ))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            // Every request has a deadline: a CA that accepts and never answers is an error.
            match tokio::time::timeout(Duration::from_secs(30), fut).await {
                Ok(Ok(resp)) => Ok(BytesResponse::from(resp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Str(
                    "no answer from the ACME server within 30 s",
                )),
            }
        })
    }
}

/// `account.json`: the directory the account belongs to, and its credentials.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// What an order needs.
pub struct Orderer<'a> {
    pub config: &'a AcmeConfig,
    pub cache: &'a Cache,
    pub store: &'a CertStore,
    pub tokens: &'a Http01Tokens,
    pub kind: ChallengeKind,
}

impl Orderer<'_> {
    /// The account from the cache, or a new one registered and saved.
    async fn account(&self) -> Result<Account, OrderError> {
        let http = || AcmeHttp::new(self.config.ca.as_deref());
        if let Some(bytes) = self.cache.read(ACCOUNT_FILE)? {
            match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored) if stored.directory == self.config.directory => {
                    let account = Account::builder_with_http(Box::new(http()?))
                        .from_credentials(stored.credentials)
                        .await?;
                    return Ok(account);
                }
                Ok(_) => tracing::info!(
                    directory = %self.config.directory,
                    "the cached ACME account belongs to another directory; registering a new one"
                ),
                Err(e) => tracing::warn!(
                    file = %self.cache.path(ACCOUNT_FILE).display(),
                    "unreadable ACME account ({e}); registering a new one"
                ),
            }
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(Box::new(http()?))
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        let stored = StoredAccount {
            directory: self.config.directory.clone(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(instant_acme::Error::from)?;
        self.cache.write(ACCOUNT_FILE, &json)?;
        tracing::info!(
            directory = %self.config.directory,
            account = %account.id(),
            "registered an ACME account"
        );
        Ok(account)
    }

    /// Orders a certificate for the configured domains and returns it (not yet cached) with
    /// the PEM text of its key and chain, as the cache stores it.
    pub async fn order(&self) -> Result<(Cached, String), OrderError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        tracing::info!(domains = ?self.config.domains, challenge = self.kind.name(), "ACME order placed");
        let mut published = Published {
            store: self.store,
            tokens: self.tokens,
            names: Vec::new(),
            tokens_set: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(OrderError::Authorization { name, status }),
            }
            let mut challenge =
                authz
                    .challenge(self.kind.acme_type())
                    .ok_or(OrderError::NoChallenge {
                        name: name.clone(),
                        kind: self.kind.name(),
                    })?;
            let key_authorization = challenge.key_authorization();
            match self.kind {
                ChallengeKind::TlsAlpn01 => {
                    let cert = alpn_challenge_cert(&name, key_authorization.digest().as_ref())?;
                    self.store.set_alpn_challenge(&name, Some(cert));
                    published.names.push(name.clone());
                }
                ChallengeKind::Http01 => {
                    let token = challenge.token.clone();
                    self.tokens
                        .set(&token, Some(key_authorization.as_str().to_owned()));
                    published.tokens_set.push(token);
                }
            }
            challenge.set_ready().await?;
            tracing::info!(name = %name, challenge = self.kind.name(), "ACME challenge ready");
        }
        let patient = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(120));
        match order.poll_ready(&patient).await? {
            OrderStatus::Ready => {}
            other => return Err(OrderError::NotReady(other)),
        }
        drop(published);
        let mut params = rcgen::CertificateParams::new(self.config.domains.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&patient).await?;
        let pem = format!("{}{chain}", key.serialize_pem());
        let cached = Cached::from_pem(
            pem.as_bytes(),
            &self.cache.path(super::cache::CERTIFICATE_FILE),
        )
        .map_err(OrderError::Issued)?;
        Ok((cached, pem))
    }
}

/// Challenges published for one order, withdrawn when it is dropped (success or error).
struct Published<'a> {
    store: &'a CertStore,
    tokens: &'a Http01Tokens,
    names: Vec<String>,
    tokens_set: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            self.store.set_alpn_challenge(name, None);
        }
        for token in &self.tokens_set {
            self.tokens.set(token, None);
        }
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed, the name as its only
/// SAN, the SHA-256 of the key authorization in a critical acmeIdentifier extension.
pub fn alpn_challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, OrderError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension. The key was made for this certificate.
    let signing_key = crate::net::tls::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(OrderError::ChallengeCert)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}
