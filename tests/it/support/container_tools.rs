//! The container tools as processes, each kept away from the machine's own config: skopeo,
//! podman, and the docker client with a private dockerd.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// skopeo with a permissive policy and its own auth file, so nothing on the machine leaks in.
pub struct Skopeo {
    pub dir: tempfile::TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        Skopeo {
            dir: tool_dir("/usr/bin/skopeo", "skopeo"),
        }
    }

    /// Runs skopeo with `args`; returns (success, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String) {
        let policy = self.dir.path().join("policy.json");
        let mut cmd = tokio::process::Command::new("/usr/bin/skopeo");
        cmd.arg("--policy")
            .arg(&policy)
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .env("HOME", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .kill_on_drop(true);
        success_and_stderr(cmd, "skopeo").await
    }

    /// `skopeo copy --preserve-digests SRC DEST` to a registry trusted through `cert_dir`, with
    /// `--dest-creds` when `creds` (`user:password`) is given, else the login's.
    pub async fn push(
        &self,
        cert_dir: &str,
        creds: Option<&str>,
        src: &str,
        dest: &str,
    ) -> (bool, String) {
        let mut args = vec!["copy", "--preserve-digests"];
        if let Some(creds) = creds {
            args.extend(["--dest-creds", creds]);
        }
        args.extend(["--dest-cert-dir", cert_dir, src, dest]);
        self.run(&args).await
    }

    /// `skopeo copy --preserve-digests SRC DEST` from a registry trusted through `cert_dir`, with
    /// `--src-creds`, into an OCI layout (uncompressed layers accepted).
    pub async fn pull(&self, cert_dir: &str, creds: &str, src: &str, dest: &str) -> (bool, String) {
        self.run(&[
            "copy",
            "--preserve-digests",
            "--dest-oci-accept-uncompressed-layers",
            "--src-creds",
            creds,
            "--src-cert-dir",
            cert_dir,
            src,
            dest,
        ])
        .await
    }

    /// `skopeo login` to `host`, trusted through `cert_dir`.
    pub async fn login(
        &self,
        cert_dir: &str,
        host: &str,
        user: &str,
        password: &str,
    ) -> (bool, String) {
        self.run(&login_args(cert_dir, host, user, password)).await
    }

    /// `skopeo inspect --no-creds` of `image`, trusted through `cert_dir`: what anonymous sees.
    pub async fn inspect_anonymously(&self, cert_dir: &str, image: &str) -> (bool, String) {
        self.run(&["inspect", "--no-creds", "--cert-dir", cert_dir, image])
            .await
    }
}

/// podman as root with vfs storage in its own temp root, and its own auth file.
pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        let dir = tool_dir("/usr/bin/podman", "podman");
        std::fs::write(dir.path().join("auth.json"), r#"{"auths":{}}"#).unwrap();
        Podman { dir }
    }

    /// Runs podman with `args`; returns (success, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String) {
        let d = self.dir.path();
        let mut cmd = tokio::process::Command::new("/usr/bin/podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("CONTAINERS_POLICY", d.join("policy.json"))
            .env("HOME", d)
            .env("TMPDIR", d)
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .kill_on_drop(true);
        success_and_stderr(cmd, "podman").await
    }

    /// `podman login` to `host`, trusted through `cert_dir`.
    pub async fn login(
        &self,
        cert_dir: &str,
        host: &str,
        user: &str,
        password: &str,
    ) -> (bool, String) {
        self.run(&login_args(cert_dir, host, user, password)).await
    }

    /// `podman push` of the local image `image` to `dest`, trusted through `cert_dir`.
    pub async fn push(&self, cert_dir: &str, image: &str, dest: &str) -> (bool, String) {
        self.run(&["push", "--cert-dir", cert_dir, image, dest])
            .await
    }
}

/// Runs `cmd` to the end; returns (success, stderr).
async fn success_and_stderr(mut cmd: tokio::process::Command, tool: &str) -> (bool, String) {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arguments of `login` for skopeo and podman alike.
fn login_args<'a>(
    cert_dir: &'a str,
    host: &'a str,
    user: &'a str,
    password: &'a str,
) -> [&'a str; 8] {
    [
        "login",
        "--cert-dir",
        cert_dir,
        "-u",
        user,
        "-p",
        password,
        host,
    ]
}

/// A temp dir for a tool at `bin` (from Debian's `package`), with a policy that accepts any image.
fn tool_dir(bin: &str, package: &str) -> tempfile::TempDir {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install Debian's {package} package (see .ci/run)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    dir
}

pub const DOCKERD_BIN: &str = "/usr/sbin/dockerd";
pub const DOCKER_BIN: &str = "/usr/bin/docker";

/// A private dockerd (Debian's docker.io) with its own data root, exec root, pid file, socket
/// and config file in a temp dir: vfs storage, no iptables, no bridge. Stopped on drop.
pub struct Dockerd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// `unix://…/docker.sock`, for `DOCKER_HOST`.
    pub host: String,
}

impl Dockerd {
    /// Starts dockerd and waits until `docker version` answers through its socket.
    pub async fn start() -> Dockerd {
        for bin in [DOCKERD_BIN, DOCKER_BIN] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's docker.io package (see .ci/run)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("rg-dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("docker.sock");
        // The trust key would go to /etc/docker/key.json; keep it here, with nothing from
        // /etc/docker/daemon.json.
        std::fs::write(
            d.join("daemon.json"),
            serde_json::json!({ "deprecated-key-path": d.join("key.json") }).to_string(),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let mut cmd = Command::new(DOCKERD_BIN);
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--debug",
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Registry traffic goes to loopback only, never through a proxy.
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd.spawn().expect("start dockerd");
        let mut dockerd = Dockerd {
            child: Some(child),
            host: format!("unix://{}", socket.display()),
            dir,
        };
        let probe = dockerd.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = dockerd.child.as_mut().unwrap().try_wait().unwrap() {
                dockerd.child = None;
                panic!("dockerd exited with {status}:\n{}", dockerd.log_tail(40));
            }
            if socket.exists() && probe.run(&["version"]).await.ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                dockerd.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dockerd
    }

    /// A docker client for this daemon with its own empty `DOCKER_CONFIG` (so its own logins).
    pub fn client(&self) -> Docker {
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("config.json"), r#"{"auths":{}}"#).unwrap();
        Docker {
            config,
            host: self.host.clone(),
        }
    }

    /// The daemon's log (with `--debug`, every registry endpoint it tried).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops dockerd: SIGTERM and a wait with a deadline, then SIGKILL; then the containerd it
    /// started, if still there; then whatever is still mounted under the temp dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let d = self.dir.path();
        let pid_file = d.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*d.to_string_lossy()));
            if ours {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}/cmdline")).exists()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let prefix = d.to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
            .map(str::to_owned)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("--lazy").arg(&m).status();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a docker command did.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Debian's docker client talking to one private dockerd, with its own `DOCKER_CONFIG`.
pub struct Docker {
    pub config: tempfile::TempDir,
    host: String,
}

impl Docker {
    pub async fn run(&self, args: &[&str]) -> Ran {
        self.run_with_stdin(args, "").await
    }

    pub async fn run_with_stdin(&self, args: &[&str], input: &str) -> Ran {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(DOCKER_BIN)
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.config.path())
            .env("HOME", self.config.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run docker");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("docker {args:?} did not finish within 120 s"))
            .unwrap();
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `docker login HOST` with the password on stdin.
    pub async fn login(&self, host: &str, user: &str, password: &str) -> Ran {
        self.run_with_stdin(
            &["login", "--username", user, "--password-stdin", host],
            password,
        )
        .await
    }
}
