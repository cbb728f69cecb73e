//! Several gates in front of several registries (issue #16): real registries on one shared
//! filesystem store with one `http.secret`, gates balancing over them, registries killed and
//! restarted under load, and the read-only switch thrown on every gate at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::support::*;

/// Registries sharing one store (and the tests' one `http.secret`).
struct Fleet {
    store: tempfile::TempDir,
    registries: Vec<Registry>,
}

impl Fleet {
    fn start(n: usize) -> Fleet {
        let store = tempfile::tempdir().unwrap();
        let registries = (0..n)
            .map(|_| Registry::start_shared(store.path(), "127.0.0.1:0".parse().unwrap()))
            .collect();
        Fleet { store, registries }
    }

    /// `["http://..", ..]`, as the gate's `upstream` takes a list.
    fn upstream(&self) -> String {
        let urls: Vec<String> = self
            .registries
            .iter()
            .map(|r| format!("\"{}\"", r.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Stops registry `i` (SIGKILL when `kill`, else SIGTERM) and returns its address.
    fn stop(&mut self, i: usize, kill: bool) -> SocketAddr {
        let r = &mut self.registries[i];
        if kill {
            r.stop();
        } else {
            r.stop_gracefully();
        }
        r.addr
    }

    /// Starts registry `i` again on its old port.
    fn restart(&mut self, i: usize, addr: SocketAddr) {
        self.registries[i] = Registry::start_shared(self.store.path(), addr);
    }
}

async fn gate_with_admin(upstream: &str) -> (Gate, String) {
    let gate = Gate::start(upstream, "admin_listen = \"127.0.0.1:0\"").await;
    let admin = gate.admin_url().trim_start_matches("http://").to_owned();
    (gate, admin)
}

/// The gate's `/metrics` value of `registry_gate_upstream_member_up` for `member`.
async fn member_up(gate: &Gate, member: SocketAddr) -> Option<bool> {
    let text = gate
        .pki
        .client(false)
        .get(format!("{}/metrics", gate.admin_url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let key = format!("registry_gate_upstream_member_up{{member=\"{member}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim() == "1")
}

/// Pulls `repo:tag` through `api` the way a client does: manifest, then every blob, each
/// checked against its digest. The status of the first failed request, if any.
async fn pull(api: &Api, repo: &str, tag: &str, blobs: &[String]) -> Result<(), String> {
    let r = api
        .req(Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .map_err(|e| format!("manifest: {e}"))?;
    if r.status() != 200 {
        return Err(format!("manifest: {}", r.status()));
    }
    r.bytes().await.map_err(|e| format!("manifest body: {e}"))?;
    for b in blobs {
        let r = api
            .send_checked(Method::GET, &format!("/v2/{repo}/blobs/{b}"))
            .await?;
        if r.status() != 200 {
            return Err(format!("blob {b}: {}", r.status()));
        }
        let data = r.bytes().await.map_err(|e| format!("blob {b} body: {e}"))?;
        if format!("sha256:{}", sha256_hex(&data)) != *b {
            return Err(format!("blob {b}: wrong content"));
        }
    }
    Ok(())
}

trait SendChecked {
    async fn send_checked(&self, method: Method, path: &str) -> Result<reqwest::Response, String>;
}

impl SendChecked for Api {
    async fn send_checked(&self, method: Method, path: &str) -> Result<reqwest::Response, String> {
        self.req(method, path)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// `registry-gate read-only ARGS --admin A --admin B ...`.
fn read_only(admins: &[&str], args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(GATE_BIN);
    c.arg("read-only").args(args).kill_on_drop(true);
    for a in admins {
        c.args(["--admin", a]);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_spreads_over_both_registries_and_pulls_back_through_the_other_gate() {
    let fleet = Fleet::start(2);
    let gate1 = Gate::start(&fleet.upstream(), "").await;
    let gate2 = Gate::start(&fleet.upstream(), "").await;
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let layers = vec![
        tar(&[("etc/hello", b"hello fleet\n")]),
        tar(&[("data/a.bin", &random_bytes(3 << 20))]),
        tar(&[("data/b.bin", &random_bytes(1 << 20))]),
    ];
    let (manifest_digest, blobs) = oci_layout(&src, "v1", &layers);
    let creds = creds(ALICE);
    let (ok, err) = skopeo
        .push(
            gate1.pki.cert_dir.to_str().unwrap(),
            Some(&creds),
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{}/team/fleet:v1", gate1.host()),
        )
        .await;
    assert!(ok, "push through gate 1 failed: {err}");

    // Both registries took upload requests, and at least one upload session was continued on
    // the registry that did not start it (the shared http.secret and store make that work).
    let s0 = fleet.registries[0].upload_sessions();
    let s1 = fleet.registries[1].upload_sessions();
    assert!(!s0.is_empty() && !s1.is_empty(), "{s0:?} / {s1:?}");
    let crossed: Vec<&String> = s0.intersection(&s1).collect();
    assert!(
        !crossed.is_empty(),
        "no upload session reached both registries: {s0:?} / {s1:?}"
    );

    let out = work.path().join("out");
    let (ok, err) = skopeo
        .pull(
            gate2.pki.cert_dir.to_str().unwrap(),
            &creds,
            &format!("docker://{}/team/fleet:v1", gate2.host()),
            &format!("oci:{}:v1", out.display()),
        )
        .await;
    assert!(ok, "pull through gate 2 failed: {err}");
    let mut pulled: Vec<String> = std::fs::read_dir(out.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let data = std::fs::read(e.path()).unwrap();
            assert_eq!(sha256_hex(&data), e.file_name().to_string_lossy());
            format!("sha256:{}", e.file_name().to_string_lossy())
        })
        .collect();
    pulled.sort();
    let mut expected = blobs;
    expected.push(manifest_digest);
    expected.sort();
    assert_eq!(pulled, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_go_on_while_a_registry_is_killed_and_it_rejoins_when_back() {
    let mut fleet = Fleet::start(2);
    let (gate, _) = gate_with_admin(&fleet.upstream()).await;
    let alice = Api::new(&gate, false, Some(ALICE));
    // Small blobs: a registry killed mid-response cannot be hidden by any proxy once the
    // response headers went out; this test is about requests not yet answered.
    let (_, blobs) = alice
        .push_image(
            "team/pull",
            "v1",
            vec![random_bytes(1024), random_bytes(2048)],
        )
        .await;
    let mut all = blobs.clone();
    all.sort();

    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let loop_api = Api::new(&gate, false, Some(ALICE));
    let (stop2, pulls2, blobs2) = (stop.clone(), pulls.clone(), blobs.clone());
    let puller = tokio::spawn(async move {
        let started = Instant::now();
        let mut failures = Vec::new();
        while !stop2.load(Ordering::Relaxed)
            && pulls2.load(Ordering::Relaxed) < 5_000
            && started.elapsed() < Duration::from_secs(90)
        {
            if let Err(e) = pull(&loop_api, "team/pull", "v1", &blobs2).await {
                failures.push(e);
            }
            pulls2.fetch_add(1, Ordering::Relaxed);
        }
        failures
    });

    let after = |n: usize| {
        let pulls = pulls.clone();
        async move {
            eventually(Duration::from_secs(30), "pulls go on", || async {
                pulls.load(Ordering::Relaxed) >= n
            })
            .await
        }
    };
    after(20).await;
    let addr = fleet.stop(0, true);
    eventually(
        Duration::from_secs(10),
        "the killed registry is out",
        || async { member_up(&gate, addr).await == Some(false) },
    )
    .await;
    let at_kill = pulls.load(Ordering::Relaxed);
    after(at_kill + 30).await;
    fleet.restart(0, addr);
    eventually(
        Duration::from_secs(40),
        "the registry is back in the pool",
        || async { member_up(&gate, addr).await == Some(true) },
    )
    .await;
    let mark = fleet.registries[0].log_mark();
    let at_back = pulls.load(Ordering::Relaxed);
    after(at_back + 30).await;
    stop.store(true, Ordering::Relaxed);
    let failures = tokio::time::timeout(Duration::from_secs(60), puller)
        .await
        .unwrap()
        .unwrap();
    let total = pulls.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} pulls failed: {failures:?}",
        failures.len()
    );
    assert!(
        fleet.registries[0].saw_request_since(mark, "/v2/team/pull/"),
        "the restarted registry takes pulls again"
    );
    let r = gate
        .pki
        .client(false)
        .get(format!("{}/readyz", gate.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eprintln!("pulls: {total} ({at_kill} before the kill, {at_back} when back)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_on_every_gate_waits_for_a_push_in_flight_and_gc_keeps_its_blobs() {
    let fleet = Fleet::start(2);
    let (gate1, admin1) = gate_with_admin(&fleet.upstream()).await;
    let (gate2, admin2) = gate_with_admin(&fleet.upstream()).await;
    let admins = [admin1.as_str(), admin2.as_str()];
    let alice1 = Api::new(&gate1, false, Some(ALICE));
    let alice2 = Api::new(&gate2, false, Some(ALICE));

    // A push through gate 1 is in flight: its config blob stored, its layer's session open.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = alice1.push_blob("team/gc", config.clone()).await;
    let layer = random_bytes(1 << 20);
    let r = alice1
        .send(Method::POST, "/v2/team/gc/blobs/uploads/")
        .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();

    let on = tokio::spawn(read_only(&admins, &["on", "--timeout", "60"]).output());
    let status = || async {
        let out = read_only(&admins, &["status"]).output().await.unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(
        Duration::from_secs(10),
        "both gates are read-only",
        || async {
            let s = status().await;
            s.contains(&format!("{admin1}: read-only: on"))
                && s.contains(&format!("{admin2}: read-only: on"))
                && s.contains("team/gc (1 open session(s)")
        },
    )
    .await;
    assert!(
        !on.is_finished(),
        "`on` must wait for the push in flight on gate 1"
    );

    // Neither gate takes a new push.
    for api in [&alice1, &alice2] {
        let r = api
            .send(Method::POST, "/v2/team/other/blobs/uploads/")
            .await;
        assert_eq!(r.status(), 405);
    }

    // The push in flight finishes through gate 1.
    let layer_len = layer.len();
    let digest = alice1.finish_upload(&location, layer).await;
    alice1
        .put_manifest(
            "team/gc",
            "v1",
            (&config_digest, config.len()),
            &[(&digest, layer_len)],
        )
        .await;
    let out = tokio::time::timeout(Duration::from_secs(60), on)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 2 replicas are read-only"), "{stdout}");

    // The real garbage collector on the shared store loses no referenced blob.
    let gc = tokio::process::Command::new(REGISTRY_BIN)
        .args(["garbage-collect", "--delete-untagged"])
        .arg(fleet.registries[0].config_path())
        .output()
        .await
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    for b in [&config_digest, &digest] {
        let r = alice2
            .send(Method::GET, &format!("/v2/team/gc/blobs/{b}"))
            .await;
        assert_eq!(r.status(), 200, "{b} lost");
        assert_eq!(
            format!("sha256:{}", sha256_hex(&r.bytes().await.unwrap())),
            *b
        );
    }

    // `off` restores both.
    let out = read_only(&admins, &["off"]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    for api in [&alice1, &alice2] {
        let r = api
            .send(Method::POST, "/v2/team/other/blobs/uploads/")
            .await;
        assert_eq!(r.status(), 202);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_on_names_an_unreachable_gate_and_fails() {
    let fleet = Fleet::start(1);
    let (gate, admin) = gate_with_admin(&fleet.upstream()).await;
    // A port nothing listens on: bound, then released.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = read_only(&[&admin, &gone], &["on", "--timeout", "5"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("not reached: {gone}")), "{stderr}");
    assert!(stderr.contains("not safe to garbage-collect"), "{stderr}");
    // The reachable one was switched all the same.
    assert!(
        gate.running
            .as_ref()
            .unwrap()
            .gate
            .maintenance
            .is_read_only()
    );
    let out = read_only(&[&admin], &["off"]).output().await.unwrap();
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restart_fails_no_round_trip_and_no_request() {
    let mut fleet = Fleet::start(1);
    let gate = Gate::start(&fleet.upstream(), "").await;
    let alice = Api::new(&gate, false, Some(ALICE));
    let (_, blobs) = alice
        .push_image("team/load", "v1", vec![random_bytes(4096)])
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    // Keep-alive load: one client, its pooled connections reused, reads and small pushes.
    let load_api = Api::new(&gate, false, Some(ALICE));
    let stop_load = stop.clone();
    let load = tokio::spawn(async move {
        let started = Instant::now();
        let (mut n, mut bad, mut longest) = (0usize, Vec::new(), Duration::ZERO);
        while !stop_load.load(Ordering::Relaxed)
            && n < 20_000
            && started.elapsed() < Duration::from_secs(120)
        {
            let path = if n % 2 == 0 {
                "/v2/".to_owned()
            } else {
                format!("/v2/team/load/blobs/{}", blobs[0])
            };
            let sent = Instant::now();
            let answer = load_api.send_checked(Method::GET, &path).await;
            longest = longest.max(sent.elapsed());
            match answer {
                Ok(r) if r.status().is_server_error() => {
                    bad.push(format!("{path}: {}", r.status()))
                }
                Ok(r) => {
                    if let Err(e) = r.bytes().await {
                        bad.push(format!("{path}: body: {e}"));
                    }
                }
                Err(e) => bad.push(e),
            }
            n += 1;
        }
        (n, bad, longest)
    });

    // Skopeo round trips: push a fresh image, pull it back, until the restart is over.
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    let creds = creds(ALICE);
    let restarted = Arc::new(AtomicBool::new(false));
    let restarted2 = restarted.clone();
    let gate_host = gate.host();
    let work_path = work.path().to_owned();
    let trips = tokio::spawn(async move {
        let started = Instant::now();
        let mut done = 0usize;
        let mut after_restart = 0usize;
        let mut failed = Vec::new();
        while done < 40 && started.elapsed() < Duration::from_secs(150) && after_restart < 2 {
            if restarted2.load(Ordering::Relaxed) {
                after_restart += 1;
            }
            let src = work_path.join(format!("src{done}"));
            let layers = vec![tar(&[("data/x.bin", &random_bytes(256 << 10))])];
            oci_layout(&src, "v1", &layers);
            let dest = format!("docker://{gate_host}/team/trip:{done}");
            let (ok, err) = skopeo
                .push(
                    &cert_dir,
                    Some(&creds),
                    &format!("oci:{}:v1", src.display()),
                    &dest,
                )
                .await;
            if !ok {
                failed.push(format!("push {done}: {err}"));
            }
            let out = work_path.join(format!("out{done}"));
            let (ok, err) = skopeo
                .pull(
                    &cert_dir,
                    &creds,
                    &dest,
                    &format!("oci:{}:v1", out.display()),
                )
                .await;
            if !ok {
                failed.push(format!("pull {done}: {err}"));
            }
            done += 1;
        }
        (done, failed)
    });

    // Let both loads run, then stop the registry for 3 seconds (the outage being tested, not
    // a wait for something) and start it again on the same port.
    eventually(Duration::from_secs(60), "the registry is busy", || async {
        fleet.registries[0].requests_since(0, "/blobs/uploads/") >= 2
    })
    .await;
    let addr = fleet.stop(0, false);
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.restart(0, addr);
    let outage = down.elapsed();
    restarted.store(true, Ordering::Relaxed);

    let (done, failed) = tokio::time::timeout(Duration::from_secs(180), trips)
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (n, bad, longest) = tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "outage {outage:?}: {done} round trips, {n} keep-alive requests, the longest held {longest:?}"
    );
    assert!(
        failed.is_empty(),
        "{} failed round trips: {failed:#?}",
        failed.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {n} requests failed: {bad:#?}",
        bad.len()
    );
    assert!(done >= 2);
    assert!(
        longest >= Duration::from_secs(1),
        "no request was held through the outage ({longest:?}): the load did not run across it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gate_keeps_its_own_brake_counts() {
    // docs/fleet.md: the brake counts per replica, so a client spread over two gates gets
    // twice the guesses. This pins down that cost.
    let fleet = Fleet::start(1);
    let extra = "[auth]\nbrake_failures = 3\nbrake_window = 60\n";
    let gate1 = Gate::start(&fleet.upstream(), extra).await;
    let gate2 = Gate::start(&fleet.upstream(), extra).await;
    let wrong1 = Api::new(&gate1, false, Some((ALICE.0, "wrong")));
    let wrong2 = Api::new(&gate2, false, Some((ALICE.0, "wrong")));
    for _ in 0..3 {
        assert_eq!(wrong1.send(Method::GET, "/v2/").await.status(), 401);
    }
    assert_eq!(wrong1.send(Method::GET, "/v2/").await.status(), 429);
    // Gate 2 has counted nothing: three more guesses there.
    for _ in 0..3 {
        assert_eq!(wrong2.send(Method::GET, "/v2/").await.status(), 401);
    }
    assert_eq!(wrong2.send(Method::GET, "/v2/").await.status(), 429);
}
