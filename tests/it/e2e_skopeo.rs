//! Real images through the gate with a real client: skopeo pushes and pulls over verified TLS.

use crate::support::*;

/// Every blob file in an OCI layout has the digest it is named by; returns the digests.
fn layout_blobs(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            sha256_hex(&data),
            name,
            "blob content does not match its digest"
        );
        out.push(format!("sha256:{name}"));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_a_multi_layer_image_over_verified_tls() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let big = random_bytes(64 << 20);
    let layers = vec![
        tar(&[("etc/hello", b"hello\n"), ("etc/motd", b"registry-gate\n")]),
        tar(&[("data/blob.bin", &big)]),
        tar(&[("bin/tool", &random_bytes(512 << 10))]),
    ];
    let (manifest_digest, blobs) = oci_layout(&src, "v1", &layers);
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    let creds = creds(ALICE);
    let dest = format!("docker://{}/team/app:v1", gate.host());

    let (ok, err) = skopeo
        .push(
            &cert_dir,
            Some(&creds),
            &format!("oci:{}:v1", src.display()),
            &dest,
        )
        .await;
    assert!(ok, "push failed: {err}");

    // The manifest arrived unchanged: same digest through the gate.
    let api = Api::new(&gate, false, Some(ALICE));
    let r = api
        .req(reqwest::Method::HEAD, "/v2/team/app/manifests/v1")
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-content-digest"],
        manifest_digest.as_str()
    );

    let out = work.path().join("out");
    let (ok, err) = skopeo
        .pull(
            &cert_dir,
            &creds,
            &dest,
            &format!("oci:{}:v1", out.display()),
        )
        .await;
    assert!(ok, "pull failed: {err}");
    let mut expected = blobs.clone();
    expected.push(manifest_digest.clone());
    expected.sort();
    assert_eq!(layout_blobs(&out), expected);

    // Without the CA, TLS verification fails; with a wrong password, the push is refused.
    let (ok, _) = skopeo.run(&["inspect", "--creds", &creds, &dest]).await;
    assert!(!ok, "an unverified certificate must be refused");
    let (ok, err) = skopeo
        .run(&[
            "copy",
            "--dest-creds",
            "alice:wrong",
            "--dest-cert-dir",
            &cert_dir,
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{}/team/other:v1", gate.host()),
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_login_accepts_the_right_password_only() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let skopeo = Skopeo::new();
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    let (ok, err) = skopeo
        .login(&cert_dir, &gate.host(), ALICE.0, ALICE.1)
        .await;
    assert!(ok, "login failed: {err}");
    let (ok, _) = skopeo
        .login(&cert_dir, &gate.host(), ALICE.0, "wrong")
        .await;
    assert!(!ok, "a wrong password must not log in");
}
