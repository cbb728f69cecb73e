//! Attacks on the one-reading principle: requests the gate and the real registry could read
//! differently, each tried through a running gate in front of Debian's registry.

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::support::*;

/// alice may push team-a/**; carol may do everything; nobody else may pull team-b.
const RULES: &str = r#"
[[rule]]
repos = ["team-a/**"]
users = ["alice"]
allow = ["pull", "push"]

[[rule]]
repos = ["**"]
users = ["carol"]
allow = ["pull", "push", "delete"]
"#;

async fn gate_with_rules(registry: &Registry) -> Gate {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("access.toml");
    std::fs::write(&path, RULES).unwrap();
    Gate::start_with_users(
        &registry.url(),
        &format!("\n[auth]\naccess = \"{}\"\n", path.display()),
        &[ALICE, BOB, CAROL],
    )
    .await
}

/// Go's `mime.ParseMediaType` lower-cases with `strings.ToLower`, which maps by Unicode's simple
/// case folding: `İ` (U+0130) becomes `i`, `K` (U+212A, Kelvin) becomes `k`. A `Content-Type` of
/// `applİcation/x-www-form-urlencoded` is a form to the registry, so its body can carry a
/// `mount` and `from` the gate never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_case_folding_in_content_type_does_not_smuggle_a_form() {
    let registry = Registry::start();
    let gate = gate_with_rules(&registry).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let secret = carol.push_blob("team-b/app", random_bytes(4096)).await;

    let boundary = "XbOuNdArY";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{secret}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nteam-b/app\r\n--{boundary}--\r\n"
    );
    let attempts: [(&str, String); 3] = [
        (
            "appl\u{130}cation/x-www-form-urlencoded",
            format!("mount={secret}&from=team-b%2Fapp"),
        ),
        (
            "APPL\u{130}CATION/X-WWW-FORM-URLENCODED; charset=utf-8",
            format!("mount={secret}&from=team-b%2Fapp"),
        ),
        (
            "mult\u{130}part/form-data; boundary=XbOuNdArY",
            multipart.clone(),
        ),
    ];
    for h2 in [false, true] {
        let alice = Api::new(&gate, h2, Some(ALICE));
        for (i, (ct, body)) in attempts.iter().enumerate() {
            let target = format!("team-a/fold{i}-{}", if h2 { "h2" } else { "h1" });
            let r = alice
                .req(Method::POST, &format!("/v2/{target}/blobs/uploads/"))
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_bytes(ct.as_bytes()).unwrap(),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let head = carol
                .req(Method::HEAD, &format!("/v2/{target}/blobs/{secret}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.status(),
                404,
                "{ct:?} (h2: {h2}): answered {status} {text}; the blob of team-b/app was linked into {target}"
            );
            assert_eq!(status, 415, "{ct:?} (h2: {h2}): {text}");
        }
    }
}
