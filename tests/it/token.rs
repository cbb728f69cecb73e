//! Token mode: the distribution token flow served by the gate, with real clients.

use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use reqwest::Method;

async fn get_token(api: &Api, query: &str) -> reqwest::Response {
    api.send(Method::GET, &format!("/token?{query}")).await
}

async fn token_json(api: &Api, query: &str) -> serde_json::Value {
    let r = get_token(api, query).await;
    assert_eq!(r.status(), 200, "token request {query}");
    r.json().await.unwrap()
}

fn claims(token: &str) -> serde_json::Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64URL.decode(body).unwrap()).unwrap()
}

fn bearer(gate: &Gate, token: &str) -> Api {
    Api::with_token(gate, token)
}

/// The gate after carol pushed a small image as team-a/app:v1.
async fn with_team_a_app(s: TokenGate) -> TokenGate {
    Api::new(&s.gate, false, Some(CAROL))
        .push_image("team-a/app", "v1", vec![random_bytes(64)])
        .await;
    s
}

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test(flavor = "current_thread")]
async fn the_token_endpoint_speaks_the_protocol() {
    let registry = Registry::start();
    let s = with_team_a_app(TokenGate::start(&registry).await).await;
    let gate = &s.gate;
    Api::new(gate, false, Some(CAROL))
        .push_image("public/base", "v1", vec![random_bytes(64)])
        .await;

    // The ping challenges anonymous callers with the realm and service, no scope.
    let anon = Api::new(gate, false, None);
    let r = anon.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer realm=\"{}/token\",service=\"{SERVICE}\"",
            gate.url()
        )
        .as_str()
    );
    // A repository request names the scope it needs.
    let r = anon.send(Method::GET, "/v2/team-a/app/manifests/v1").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"repository:team-a/app:pull\"")
    );

    // Anonymous: a token for what anonymous may do, nothing more.
    let v = token_json(
        &anon,
        &format!(
            "service={SERVICE}&scope=repository:public/base:pull&scope=repository:team-a/app:pull"
        ),
    )
    .await;
    let c = claims(v["token"].as_str().unwrap());
    assert_eq!(
        c["access"],
        serde_json::json!([{"type":"repository","name":"public/base","actions":["pull"]}])
    );
    assert_eq!(c["sub"], "");
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    let issued = v["issued_at"].as_str().unwrap();
    assert!(
        issued.len() == 20 && issued.ends_with('Z') && issued.as_bytes()[10] == b'T',
        "{issued}"
    );

    // Scope intersection for a user, several scopes, actions narrowed.
    let alice = Api::new(gate, false, Some(ALICE));
    let v = token_json(&alice, "service=registry.test&scope=repository:team-a/app:pull,push,delete&scope=repository:team-b/app:pull&scope=registry:catalog:*").await;
    let c = claims(v["token"].as_str().unwrap());
    assert_eq!(
        c["access"],
        serde_json::json!([
            {"type":"repository","name":"team-a/app","actions":["pull","push"]},
            {"type":"registry","name":"catalog","actions":["*"]}
        ])
    );

    // The token works for what it grants, and only that.
    let tok = v["token"].as_str().unwrap();
    let with = bearer(gate, tok);
    let r = with
        .req(Method::GET, "/v2/team-a/app/manifests/v1")
        .header("accept", OCI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = with.send(Method::GET, "/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    let r = with
        .req(Method::GET, "/v2/public/base/manifests/v1")
        .header("accept", OCI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the token does not carry public/base");
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        www.contains("error=\"insufficient_scope\"") && www.contains("repository:public/base:pull"),
        "{www}"
    );
    // A user whose rules deny gets a clear 403.
    let bob = Api::new(gate, false, Some(BOB));
    let v = token_json(&bob, "scope=repository:team-a/app:pull,push").await;
    let r = bearer(gate, v["token"].as_str().unwrap())
        .send(Method::POST, "/v2/team-a/app/blobs/uploads/")
        .await;
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("bob may not push team-a/app")
    );

    // Wrong password: 401, so `docker login` fails.
    let wrong = Api::new(gate, false, Some(("alice", "nope")));
    assert_eq!(get_token(&wrong, "account=alice").await.status(), 401);

    // docker login: a scope-less token with a refresh token; the ping then answers 200.
    let v = token_json(
        &alice,
        &format!("account=alice&client_id=docker&offline_token=true&service={SERVICE}"),
    )
    .await;
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let r = bearer(gate, v["token"].as_str().unwrap())
        .send(Method::GET, "/v2/")
        .await;
    assert_eq!(r.status(), 200);

    // POST with the refresh_token grant, scopes joined by spaces.
    let form = format!(
        "grant_type=refresh_token&client_id=docker&service={SERVICE}&refresh_token={refresh}&scope=repository%3Ateam-a%2Fapp%3Apull+registry%3Acatalog%3A*"
    );
    let r = gate
        .pki
        .client(false)
        .post(format!("{}/token", gate.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let c = claims(v["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["access"].as_array().unwrap().len(), 2);
    // POST with the password grant.
    let r = gate.pki.client(false).post(format!("{}/token", gate.url()))
        .body(format!("grant_type=password&username=alice&password={}&service={SERVICE}&scope=repository:team-a/app:pull&access_type=offline&client_id=podman", ALICE.1))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["refresh_token"].is_string());
    // A password change revokes refresh tokens.
    write_htpasswd(&gate.htpasswd, &[("alice", "new-password"), BOB, CAROL]);
    let client = gate.pki.client(false);
    eventually(Duration::from_secs(2), "refresh token revoked", || {
        let (client, form, url) = (
            client.clone(),
            form.clone(),
            format!("{}/token", gate.url()),
        );
        async move { client.post(url).body(form).send().await.unwrap().status() == 401 }
    })
    .await;

    // Basic credentials still work on /v2/ in token mode, for curl scripts.
    let r = Api::new(gate, false, Some(CAROL))
        .send(Method::GET, "/v2/_catalog")
        .await;
    assert_eq!(r.status(), 200);
}

/// Signs claims with the gate's key, the way the gate does, to make tokens it would not issue.
fn forge(key_file: &std::path::Path, claims: &serde_json::Value) -> String {
    let key = STANDARD
        .decode(std::fs::read_to_string(key_file).unwrap().trim())
        .unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let input = format!(
        "{}.{}",
        B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        B64URL.encode(claims.to_string())
    );
    let sig = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", B64URL.encode(sig.as_ref()))
}

#[tokio::test(flavor = "current_thread")]
async fn expired_tampered_foreign_and_revoked_tokens_are_refused() {
    let registry = Registry::start();
    let s = with_team_a_app(TokenGate::start(&registry).await).await;
    let gate = &s.gate;
    let alice = Api::new(gate, false, Some(ALICE));
    let v = token_json(&alice, "scope=repository:team-a/app:pull,push").await;
    let tok = v["token"].as_str().unwrap().to_owned();
    let pull = |t: String| async move {
        bearer(gate, &t)
            .req(Method::GET, "/v2/team-a/app/manifests/v1")
            .header("accept", OCI)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(pull(tok.clone()).await, 200);

    let mut c = claims(&tok);
    c["exp"] = serde_json::json!(c["iat"].as_u64().unwrap() - 10);
    assert_eq!(pull(forge(&s.key(), &c)).await, 401, "expired");
    let mut c = claims(&tok);
    c["aud"] = serde_json::json!("other.service");
    assert_eq!(pull(forge(&s.key(), &c)).await, 401, "other service");
    let parts: Vec<&str> = tok.split('.').collect();
    let mut c = claims(&tok);
    c["access"][0]["name"] = serde_json::json!("team-b/app");
    let tampered = format!("{}.{}.{}", parts[0], B64URL.encode(c.to_string()), parts[2]);
    assert_eq!(pull(tampered).await, 401, "tampered");
    let other_key = s.dir.path().join("other.key");
    registry_gate::token::write_key(&other_key, false).unwrap();
    assert_eq!(
        pull(forge(&other_key, &claims(&tok))).await,
        401,
        "other key"
    );
    let r = bearer(gate, "not-a-token").send(Method::GET, "/v2/").await;
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // The rules stop granting the scope: refused within 2 s, with no new token.
    write_atomic(
        &s.rules(),
        TEAM_RULES
            .replace("users = [\"alice\"]", "users = [\"nobody\"]")
            .as_bytes(),
    );
    eventually(Duration::from_secs(2), "grant revoked", || {
        pull(tok.clone()).then_is(403)
    })
    .await;
    write_atomic(&s.rules(), TEAM_RULES.as_bytes());
    eventually(Duration::from_secs(2), "grant back", || {
        pull(tok.clone()).then_is(200)
    })
    .await;
    // The user leaves the htpasswd file: the token dies with the account.
    write_htpasswd(&gate.htpasswd, &[BOB, CAROL]);
    eventually(Duration::from_secs(2), "user removed", || {
        pull(tok.clone()).then_is(401)
    })
    .await;
}

trait ThenIs {
    fn then_is(self, want: u16) -> impl std::future::Future<Output = bool>;
}
impl<F: std::future::Future<Output = reqwest::StatusCode>> ThenIs for F {
    async fn then_is(self, want: u16) -> bool {
        self.await.as_u16() == want
    }
}

#[tokio::test(flavor = "current_thread")]
async fn two_gates_sharing_a_key_accept_each_others_tokens() {
    let registry = Registry::start();
    let s = TokenGate::start(&registry).await;
    let second = TokenGate::start_gate(&registry, s.dir.path()).await;
    Api::new(&s.gate, false, Some(CAROL))
        .push_image("team-a/app", "v1", vec![random_bytes(64)])
        .await;
    let v = token_json(
        &Api::new(&s.gate, false, Some(ALICE)),
        "scope=repository:team-a/app:pull",
    )
    .await;
    let r = bearer(&second, v["token"].as_str().unwrap())
        .req(Method::GET, "/v2/team-a/app/manifests/v1")
        .header("accept", OCI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_pull_anonymously_and_push_after_login() {
    let registry = Registry::start();
    let s = TokenGate::start(&registry).await;
    let gate = &s.gate;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    oci_layout(
        &src,
        "v1",
        &[
            tar(&[("hello", b"hi\n")]),
            tar(&[("data", &random_bytes(1 << 20))]),
        ],
    );
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    let skopeo = Skopeo::new();
    let carol = creds(CAROL);
    let public = format!("docker://{}/public/base:v1", gate.host());
    let (ok, err) = skopeo
        .push(
            &cert_dir,
            Some(&carol),
            &format!("oci:{}:v1", src.display()),
            &public,
        )
        .await;
    assert!(ok, "carol pushes public/base: {err}");

    // skopeo: anonymous pull without login; push without login refused.
    let (ok, err) = skopeo
        .run(&["inspect", "--cert-dir", &cert_dir, &public])
        .await;
    assert!(ok, "anonymous inspect: {err}");
    let (ok, _) = skopeo
        .run(&[
            "copy",
            "--dest-cert-dir",
            &cert_dir,
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{}/team-a/app:v1", gate.host()),
        ])
        .await;
    assert!(!ok, "push without login must fail");

    // podman: the same, then login, push to an allowed and a forbidden repository.
    let podman = Podman::new();
    let local_image = format!("{}/public/base:v1", gate.host());
    let team_a = format!("docker://{}/team-a/app:v1", gate.host());
    let team_b = format!("docker://{}/team-b/app:v1", gate.host());
    let (ok, err) = podman
        .run(&["pull", "--cert-dir", &cert_dir, &local_image])
        .await;
    assert!(ok, "podman anonymous pull: {err}");
    let (ok, _) = podman.push(&cert_dir, &local_image, &team_a).await;
    assert!(!ok, "podman push without login must fail");
    let (ok, _) = podman
        .login(&cert_dir, &gate.host(), ALICE.0, "wrong")
        .await;
    assert!(!ok, "login with a wrong password must fail");
    let (ok, err) = podman
        .login(&cert_dir, &gate.host(), ALICE.0, ALICE.1)
        .await;
    assert!(ok, "podman login: {err}");
    let (ok, err) = podman.push(&cert_dir, &local_image, &team_a).await;
    assert!(ok, "alice pushes team-a/app: {err}");
    let (ok, err) = podman.push(&cert_dir, &local_image, &team_b).await;
    assert!(!ok, "alice may not push team-b");
    assert!(
        err.contains("denied") || err.contains("403") || err.contains("unauthorized"),
        "{err}"
    );

    // skopeo login, then push.
    let (ok, err) = skopeo
        .login(&cert_dir, &gate.host(), ALICE.0, ALICE.1)
        .await;
    assert!(ok, "skopeo login: {err}");
    let (ok, err) = skopeo
        .push(
            &cert_dir,
            None,
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{}/team-a/tool:v1", gate.host()),
        )
        .await;
    assert!(ok, "skopeo push after login: {err}");
}
