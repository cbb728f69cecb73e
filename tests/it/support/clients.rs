//! HTTP clients that trust the test CA, over HTTP/1.1 or HTTP/2: the registry API client, raw
//! requests for paths no client library would send, and helpers for answers.

use std::sync::Arc;
use std::time::Duration;

use super::{Gate, Pki, sha256_hex};

impl Pki {
    /// A rustls client config trusting the test CA, with the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.ca_der.clone()))
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// An HTTP client trusting the test CA; `h2` picks HTTP/2 by ALPN, else HTTP/1.1.
    pub fn client(&self, h2: bool) -> reqwest::Client {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(alpn))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !h2 {
            b = b.http1_only();
        }
        b.build().unwrap()
    }
}

/// A registry API client for one gate and one user (or none).
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub creds: Option<(String, String)>,
    /// A bearer token sent instead of Basic credentials.
    pub token: Option<String>,
}

impl Api {
    pub fn new(gate: &Gate, h2: bool, creds: Option<(&str, &str)>) -> Api {
        Api {
            client: gate.pki.client(h2),
            base: gate.url(),
            creds: creds.map(|(u, p)| (u.to_owned(), p.to_owned())),
            token: None,
        }
    }

    /// A client that shows `token` on every request.
    pub fn with_token(gate: &Gate, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..Api::new(gate, false, None)
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let b = self.client.request(method, url);
        match (&self.creds, &self.token) {
            (Some((u, p)), _) => b.basic_auth(u, Some(p)),
            (None, Some(t)) => b.bearer_auth(t),
            (None, None) => b,
        }
    }

    /// Sends a request without a body and returns the answer.
    pub async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.req(method, path).send().await.unwrap()
    }

    /// Uploads a blob as docker does: POST, one chunked PATCH, PUT `?digest=`.
    pub async fn push_blob(&self, repo: &str, data: Vec<u8>) -> String {
        let digest = format!("sha256:{}", sha256_hex(&data));
        let r = self
            .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "POST upload: {}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
            .chunks(1 << 20)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let r = self
            .req(reqwest::Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH: {}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT digest: {}", r.text().await.unwrap());
        digest
    }

    /// Pushes a config and the given layers and an OCI manifest under `tag`; returns the
    /// manifest digest and the layer digests.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: Vec<Vec<u8>>,
    ) -> (String, Vec<String>) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let config_len = config.len();
        let config_digest = self.push_blob(repo, config).await;
        let mut digests = Vec::new();
        let mut lens = Vec::new();
        for l in layers {
            lens.push(l.len());
            digests.push(self.push_blob(repo, l).await);
        }
        let layers: Vec<(&str, usize)> = digests
            .iter()
            .zip(&lens)
            .map(|(d, n)| (d.as_str(), *n))
            .collect();
        let digest = self
            .put_manifest(repo, tag, (&config_digest, config_len), &layers)
            .await;
        (digest, digests)
    }

    /// The status of `HEAD /v2/<repo>/blobs/<digest>`: 200 when the blob is linked into `repo`.
    pub async fn blob_status(&self, repo: &str, digest: &str) -> u16 {
        self.send(reqwest::Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .await
            .status()
            .as_u16()
    }

    /// Finishes an open upload at `location` with `data` (`PUT ?digest=`, 201); its digest.
    pub async fn finish_upload(&self, location: &str, data: Vec<u8>) -> String {
        let digest = format!("sha256:{}", sha256_hex(&data));
        let r = self
            .req(reqwest::Method::PUT, &format!("{location}&digest={digest}"))
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT digest: {}", r.text().await.unwrap());
        digest
    }

    /// PUTs an OCI manifest of `config` and `layers` (digest, size) under `tag` (201); returns
    /// the manifest digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        config: (&str, usize),
        layers: &[(&str, usize)],
    ) -> String {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
            "layers": layers.iter().map(|(d, n)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n
            })).collect::<Vec<_>>(),
        })
        .to_string();
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT manifest: {}", r.text().await.unwrap());
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    }
}

/// The registry error code of a JSON error response body.
pub fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body}"));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A client-side TLS connection over TCP.
pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects to `addr` over TLS as `localhost` with `config`; errors say which step failed.
pub async fn try_tls_connect(
    config: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> Result<TlsStream, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// A new TLS connection to the gate, trusting the test CA, offering HTTP/1.1.
pub async fn tls_connect(gate: &Gate) -> TlsStream {
    let config = Arc::new(gate.pki.client_config(&[b"http/1.1"]));
    try_tls_connect(&config, gate.addr).await.unwrap()
}

/// Sends `request` (a raw HTTP/1.1 head, `Connection: close` added) over verified TLS and
/// returns the status code and the whole answer. For paths no client library would send as is.
pub async fn raw_request(gate: &Gate, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(gate).await;
    let head = request.trim_end_matches("\r\n");
    tls.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `Authorization: Basic` value for a user.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
