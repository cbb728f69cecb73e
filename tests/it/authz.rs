//! One reading of each request: what the gate decides on is what the real registry gets.
//! Every spelling of a cross-repository mount (encoded keys and values, repeated keys,
//! semicolons, form bodies), and every answer the gate builds itself over HTTP/1.1 and HTTP/2.

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;

use crate::support::*;

async fn gate_with_rules(registry: &Registry, extra: &str) -> Gate {
    Gate::with_rules(registry, MOUNT_RULES, extra, TEAM_USERS).await
}

/// One attempt to link `secret` from team-b/app into `target` without pull on team-b.
struct Attempt {
    what: &'static str,
    query: String,
    body: Option<(&'static str, String)>,
}

fn attempts(secret: &str) -> Vec<Attempt> {
    let q = |what, query: String| Attempt {
        what,
        query,
        body: None,
    };
    let boundary = "XbOuNdArY";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{secret}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nteam-b/app\r\n--{boundary}--\r\n"
    );
    vec![
        q(
            "encoded key",
            format!("%6Dount={secret}&%66rom=team-b%2Fapp"),
        ),
        q(
            "encoded value",
            format!("mount={secret}&from=%74eam-b%2fapp"),
        ),
        q(
            "repeated from, the refused one first",
            format!("mount={secret}&from=team-b%2Fapp&from=team-a%2Fone"),
        ),
        q(
            "repeated from, an encoded refused one first",
            format!("mount={secret}&%66rom=team-b%2Fapp&from=team-a%2Fone"),
        ),
        q(
            "semicolon hides the allowed from",
            format!("mount={secret}&from=team-a%2Fone;x&from=team-b%2Fapp"),
        ),
        q(
            "semicolon-joined pair",
            format!("x=1;from=team-a%2Fone&mount={secret}&from=team-b%2Fapp"),
        ),
        Attempt {
            what: "urlencoded body",
            query: String::new(),
            body: Some((
                "application/x-www-form-urlencoded",
                format!("mount={secret}&from=team-b%2Fapp"),
            )),
        },
        Attempt {
            what: "query plus urlencoded body",
            query: format!("mount={secret}"),
            body: Some((
                "Application/X-WWW-Form-Urlencoded; charset=utf-8",
                "from=team-b%2Fapp".into(),
            )),
        },
        Attempt {
            what: "multipart body",
            query: String::new(),
            body: Some(("multipart/form-data; boundary=XbOuNdArY", multipart)),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_mount_links_a_blob_the_caller_may_not_pull() {
    let registry = Registry::start();
    let gate = gate_with_rules(&registry, "").await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let secret = carol.push_blob("team-b/app", random_bytes(4096)).await;
    let own = carol.push_blob("team-a/one", random_bytes(4096)).await;

    for h2 in [false, true] {
        let alice = Api::new(&gate, h2, Some(ALICE));
        for (i, a) in attempts(&secret).into_iter().enumerate() {
            let target = format!("team-a/m{i}-{}", if h2 { "h2" } else { "h1" });
            let mark = registry.log_mark();
            let mut req = alice.req(
                Method::POST,
                &format!("/v2/{target}/blobs/uploads/?{}", a.query),
            );
            if let Some((ct, body)) = &a.body {
                req = req.header(CONTENT_TYPE, *ct).body(body.clone());
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            match a.body {
                // Form bodies are refused and never reach the registry.
                Some(_) => {
                    assert_eq!(status, 415, "{}: {text}", a.what);
                    assert_eq!(error_code(&text), "UNSUPPORTED", "{}", a.what);
                    assert!(
                        !registry.saw_request_since(mark, &target),
                        "{}: a form body reached the registry",
                        a.what
                    );
                }
                // The mount is dropped: an ordinary upload starts.
                None => assert_eq!(status, 202, "{} (h2: {h2}): {text}", a.what),
            }
            assert_eq!(
                carol.blob_status(&target, &secret).await,
                404,
                "{} (h2: {h2}): the blob was linked into {target}",
                a.what
            );
            assert!(
                !registry.saw_request_since(mark, "team-b"),
                "{} (h2: {h2}): the refused source reached the registry",
                a.what
            );
        }

        // Spellings of a mount the caller may make still mount (201): the registry gets
        // the same reading, re-encoded.
        for (i, query) in [
            format!("%6Dount={own}&from=team-a%2fone"),
            format!("from=team-a%2Fone&mount={}", own.replace(':', "%3A")),
        ]
        .into_iter()
        .enumerate()
        {
            let target = format!("team-a/ok{i}-{}", if h2 { "h2" } else { "h1" });
            let r = alice
                .req(
                    Method::POST,
                    &format!("/v2/{target}/blobs/uploads/?{query}"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{query} (h2: {h2})");
            assert_eq!(
                carol.blob_status(&target, &own).await,
                200,
                "{query}: not mounted"
            );
        }
    }

    // Real clients' bodies are not forms: a whole push with an octet-stream PATCH still works.
    let alice = Api::new(&gate, true, Some(ALICE));
    let (manifest, _) = alice
        .push_image("team-a/app", "v1", vec![random_bytes(2048)])
        .await;
    let r = alice
        .req(Method::HEAD, "/v2/team-a/app/manifests/v1")
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], manifest.as_str());
}

/// Asserts the registry API version header is there, once.
fn assert_api_version(r: &reqwest::Response, what: &str) {
    let values: Vec<_> = r
        .headers()
        .get_all("docker-distribution-api-version")
        .iter()
        .collect();
    assert_eq!(values, ["registry/2.0"], "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_gate_builds_work_over_http1_and_http2() {
    let registry = Registry::start();
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(
        ui.path().join("index.html"),
        "<docker-registry-ui registry-url=\"${REGISTRY_URL}\" pull-url=\"${PULL_URL}\">",
    )
    .unwrap();
    let extra = format!(
        "[cors]\nallow_origins = [\"https://ui.example\"]\n[ui]\ndir = \"{}\"\n",
        ui.path().display()
    );
    let gate = gate_with_rules(&registry, &extra).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    carol
        .push_image("team-a/app", "v1", vec![random_bytes(1024)])
        .await;
    carol
        .push_image("team-b/app", "v1", vec![random_bytes(1024)])
        .await;

    for h2 in [false, true] {
        let proto = if h2 { "h2" } else { "h1" };
        let alice = Api::new(&gate, h2, Some(ALICE));
        let anon = Api::new(&gate, h2, None);

        // The filtered catalog: the gate fetches the registry's pages with the request's host.
        let r = alice.req(Method::GET, "/v2/_catalog").send().await.unwrap();
        let version = r.version();
        assert_eq!(r.status(), 200, "{proto} catalog");
        assert_api_version(&r, "catalog");
        assert_eq!(
            version == reqwest::Version::HTTP_2,
            h2,
            "the client spoke {version:?}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["repositories"], serde_json::json!(["team-a/app"]));

        // The challenge and the gate's own errors.
        let r = anon.req(Method::GET, "/v2/").send().await.unwrap();
        assert_eq!(r.status(), 401, "{proto}");
        assert_api_version(&r, "challenge");
        assert!(r.headers().contains_key("www-authenticate"));
        let r = alice
            .req(Method::GET, "/v2/Team-A/app/manifests/v1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{proto}");
        assert_api_version(&r, "NAME_INVALID");
        assert_eq!(error_code(&r.text().await.unwrap()), "NAME_INVALID");
        let r = alice
            .req(Method::GET, "/v2/team-b/app/manifests/v1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{proto}");
        assert_api_version(&r, "DENIED");

        // A proxied answer: the registry's header, not a second one.
        let r = alice
            .req(Method::GET, "/v2/team-a/app/tags/list")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{proto}");
        assert_api_version(&r, "proxied");

        // The CORS preflight, answered by the gate.
        let r = anon
            .req(Method::OPTIONS, "/v2/team-a/app/manifests/v1")
            .header("origin", "https://ui.example")
            .header("access-control-request-method", "DELETE")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{proto}");
        assert_api_version(&r, "preflight");

        // The UI, whose REGISTRY_URL is the origin the request reached.
        let r = anon.req(Method::GET, "/ui/").send().await.unwrap();
        assert_eq!(r.status(), 200, "{proto}");
        assert_api_version(&r, "ui");
        let page = r.text().await.unwrap();
        assert!(
            page.contains(&format!("registry-url=\"{}\"", gate.url()))
                && page.contains(&format!("pull-url=\"{}\"", gate.host())),
            "{proto}: {page}"
        );
    }

    // One host per request: an HTTP/1.1 target naming another authority than Host is refused.
    let (status, text) = raw_request(
        &gate,
        &format!(
            "GET https://evil.example/v2/ HTTP/1.1\r\nHost: {}\r\nAuthorization: {}",
            gate.host(),
            basic(ALICE.0, ALICE.1)
        ),
    )
    .await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_flow_works_over_http1_and_http2() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    registry_gate::token::write_key(&key, false).unwrap();
    let rules = dir.path().join("access.toml");
    std::fs::write(&rules, MOUNT_RULES).unwrap();
    let gate = Gate::start_with_users(
        &registry.url(),
        &format!(
            "[auth]\nmode = \"token\"\ntoken_key = \"{}\"\naccess = \"{}\"\n",
            key.display(),
            rules.display()
        ),
        &[ALICE, CAROL],
    )
    .await;
    for h2 in [false, true] {
        let anon = Api::new(&gate, h2, None);
        // The realm names the gate as the request reached it (on h2, from :authority).
        let r = anon.req(Method::GET, "/v2/").send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_api_version(&r, "bearer challenge");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains(&format!("realm=\"{}/token\"", gate.url()))
                && challenge.contains(&format!("service=\"{}\"", gate.host())),
            "h2 {h2}: {challenge}"
        );
        // GET /token with an encoded key for scope: read as the registry's Go code would.
        let alice = Api::new(&gate, h2, Some(ALICE));
        let r = alice
            .req(
                Method::GET,
                &format!(
                    "/token?service={}&%73cope=repository%3Ateam-a%2Fapp%3Apull%2Cpush&scope=repository:team-b/app:pull",
                    gate.host()
                ),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "h2 {h2}");
        assert_api_version(&r, "token");
        let body: serde_json::Value = r.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        // The token grants team-a and not team-b (not in alice's rules).
        let with_token = Api::with_token(&gate, &token);
        let r = with_token
            .req(Method::GET, "/v2/team-a/app/tags/list")
            .send()
            .await
            .unwrap();
        assert!(r.status() == 200 || r.status() == 404, "{}", r.status());
        let r = with_token
            .req(Method::GET, "/v2/team-b/app/tags/list")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // POST /token with a form body (docker's refresh and password grants).
        let r = anon
            .req(Method::POST, "/token")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=password&username=alice&password=alice-secret&service={}&scope=repository%3Ateam-a%2Fapp%3Apull",
                gate.host()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "h2 {h2}");
    }
}
