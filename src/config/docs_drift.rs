//! Tests that fail when README.md, examples/ or docs/ drift from the config loader: keys,
//! defaults and `REGISTRY_GATE_*` variables as documented must be the ones the code reads, and
//! `registry-gate check` must print what the README says it prints. Each failure names the
//! document, its line and the key or variable that drifted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};

use regex::Regex;

use super::{Config, ConfigError, ENV_KEYS, ENV_PREFIX, ENV_UI_VAR_PREFIX};

const README: &str = include_str!("../../README.md");
const GATE_TOML: &str = include_str!("../../examples/gate.toml");
const COMPOSE: &str = include_str!("../../examples/docker-compose.yml");
const K8S_DEPLOYMENT: &str = include_str!("../../examples/kubernetes/deployment.yaml");

/// Every text that may name a `REGISTRY_GATE_*` variable.
const DOCUMENTS: &[(&str, &str)] = &[
    ("README.md", README),
    ("examples/gate.toml", GATE_TOML),
    ("examples/docker-compose.yml", COMPOSE),
    ("examples/kubernetes/deployment.yaml", K8S_DEPLOYMENT),
    (
        "examples/kubernetes/secrets.yaml",
        include_str!("../../examples/kubernetes/secrets.yaml"),
    ),
    (
        "examples/kubernetes/service.yaml",
        include_str!("../../examples/kubernetes/service.yaml"),
    ),
    ("examples/ui.toml", include_str!("../../examples/ui.toml")),
    (
        "examples/registry-gate.service",
        include_str!("../../examples/registry-gate.service"),
    ),
    ("docs/access.md", include_str!("../../docs/access.md")),
    ("docs/token.md", include_str!("../../docs/token.md")),
    ("docs/keys.md", include_str!("../../docs/keys.md")),
    ("docs/ui.md", include_str!("../../docs/ui.md")),
    ("docs/acme.md", include_str!("../../docs/acme.md")),
    (
        "docs/garbage-collection.md",
        include_str!("../../docs/garbage-collection.md"),
    ),
];

/// Keys whose README default must be a literal value the test can compare with the loader's.
const SCALAR_DEFAULTS: &[&str] = &[
    "admin_listen",
    "block_old_clients",
    "[auth] realm",
    "[auth] cache_ttl",
    "[auth] brake_failures",
    "[auth] brake_window",
    "[auth] token_ttl",
    "[timeouts] header_read",
    "[timeouts] handshake",
    "[timeouts] upstream_connect",
    "[timeouts] upstream_response",
    "[timeouts] upstream_retry",
    "[timeouts] idle",
    "[timeouts] drain",
    "[cors] allow_credentials",
    "[cors] max_age",
    "[log] format",
    "[log] level",
];

/// `listen` or `[auth] realm`, as the README and the messages write a key.
fn key_name(path: &[&str]) -> String {
    match path {
        [key] => (*key).to_owned(),
        [section, key] => format!("[{section}] {key}"),
        _ => path.join("."),
    }
}

/// The variable the loader reads for a key, if any.
fn env_var_for(path: &[&str]) -> Option<String> {
    ENV_KEYS
        .iter()
        .find(|(_, p, _)| *p == path)
        .map(|(name, _, _)| format!("{ENV_PREFIX}{name}"))
}

/// Loads `text` as `gate.toml` in a fresh folder.
fn load_text(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    load_in(dir.path(), text)
}

/// Loads `text` as `gate.toml` in `dir` (relative paths resolve there).
fn load_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("gate.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), [])
}

/// examples/gate.toml with every `# key = value` and `# [section]` line uncommented, line for
/// line (so the loader's line numbers are those of the file).
fn uncommented_gate_toml() -> String {
    let section = Regex::new(r"^#\s?(\[[A-Za-z0-9_.]+\].*)$").unwrap();
    let key = Regex::new(r"^#\s?([A-Za-z_][A-Za-z0-9_]*\s*=.*)$").unwrap();
    GATE_TOML
        .lines()
        .map(|line| {
            section
                .captures(line)
                .or_else(|| key.captures(line))
                .map_or(line, |c| c.get(1).unwrap().as_str())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// [`uncommented_gate_toml`] without one of the two certificate sources, which exclude each
/// other: `"acme"` leaves out the `[acme]` section, `"tls"` the keys of `[tls]`. Left-out lines
/// are blank, so line numbers stay the file's.
fn uncommented_without(left_out: &str) -> String {
    let header = Regex::new(r"^\[([A-Za-z0-9_.]+)\]").unwrap();
    let mut current = String::new();
    uncommented_gate_toml()
        .lines()
        .map(|line| {
            if let Some(c) = header.captures(line) {
                current = c[1].to_owned();
                return if current == left_out && left_out == "acme" {
                    ""
                } else {
                    line
                };
            }
            if current == left_out { "" } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every key path of a TOML table, `[ui.vars]` entries left out (they are free-form names).
fn key_paths(table: &toml::Table) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(t) if k == "ui" => {
                out.extend(
                    t.keys()
                        .filter(|k| *k != "vars")
                        .map(|sub| vec![k.clone(), sub.clone()]),
                );
            }
            toml::Value::Table(t) => {
                out.extend(t.keys().map(|sub| vec![k.clone(), sub.clone()]));
            }
            _ => out.push(vec![k.clone()]),
        }
    }
    out
}

#[test]
fn gate_toml_loads_as_shipped() {
    if let Err(e) = load_text(GATE_TOML) {
        panic!("examples/gate.toml no longer loads: {e}");
    }
}

#[test]
fn gate_toml_loads_with_every_key_uncommented_and_shows_every_key() {
    let mut shown = Vec::new();
    for left_out in ["acme", "tls"] {
        let text = uncommented_without(left_out);
        if let Err(e) = load_text(&text) {
            panic!(
                "examples/gate.toml with its commented-out keys and sections uncommented, \
                 [{left_out}] left out, does not load (line numbers are the file's): {e}"
            );
        }
        let table: toml::Table = toml::from_str(&text).unwrap();
        shown.extend(key_paths(&table));
    }
    for (name, path, _) in ENV_KEYS {
        assert!(
            shown
                .iter()
                .any(|s| s.iter().map(String::as_str).eq(path.iter().copied())),
            "examples/gate.toml does not show `{}` ({ENV_PREFIX}{name}), which the loader reads",
            key_name(path)
        );
    }
}

/// The README's configuration table: key, Default cell, Variable cell, line number.
fn readme_rows() -> Vec<(String, String, String, usize)> {
    let cell = |s: &str| s.trim().trim_matches('`').to_owned();
    README
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let cols: Vec<&str> = line.split('|').collect();
            if cols.len() < 6 || !cols[4].trim().starts_with("`REGISTRY_GATE_") {
                return None;
            }
            Some((
                cell(cols[1]),
                cols[3].trim().to_owned(),
                cell(cols[4]),
                i + 1,
            ))
        })
        .collect()
}

/// `[auth] realm` -> `["auth", "realm"]`.
fn parse_key_name(name: &str) -> Vec<String> {
    match name.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((section, key)) => vec![section.to_owned(), key.to_owned()],
        None => vec![name.to_owned()],
    }
}

#[test]
fn readme_table_names_every_key_with_its_variable() {
    let rows = readme_rows();
    assert!(
        rows.len() > 20,
        "README.md: the configuration table was not found"
    );
    for (key, _, var, line) in &rows {
        if key == "[ui.vars] NAME" {
            assert_eq!(
                var,
                &format!("{ENV_UI_VAR_PREFIX}<NAME>"),
                "README.md line {line}"
            );
            continue;
        }
        let path = parse_key_name(key);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        match env_var_for(&path) {
            Some(expected) => assert_eq!(
                var, &expected,
                "README.md line {line}: `{key}` is read from {expected}, not {var}"
            ),
            None => panic!("README.md line {line}: `{key}` is not a key the loader has"),
        }
    }
    for (name, path, _) in ENV_KEYS {
        let key = key_name(path);
        assert!(
            rows.iter().any(|(k, ..)| *k == key),
            "README.md: the configuration table has no row for `{key}` ({ENV_PREFIX}{name})"
        );
    }
}

/// A config where `path` matters: the section exists (CORS and the UI are off without one) and
/// token keys are in token mode.
fn baseline_for(path: &[String]) -> toml::Table {
    let mut text = String::from(
        "plain_listen = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:5000\"\n\
         [auth]\nhtpasswd = \"htpasswd\"\n[cors]\n[ui]\ndir = \"ui\"\n",
    );
    if path[0] == "auth" && ["service", "token_key", "token_ttl"].contains(&path[1].as_str()) {
        text = text.replace(
            "[auth]\n",
            "[auth]\nmode = \"token\"\ntoken_key = \"token.key\"\n",
        );
    }
    toml::from_str(&text).unwrap()
}

#[test]
fn readme_defaults_are_the_loaders_defaults() {
    let rows = readme_rows();
    let mut compared = Vec::new();
    for (key, default, _, line) in &rows {
        // Only a backticked TOML value is a literal default ("none", "required" are prose).
        let Some(literal) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else {
            continue;
        };
        let Ok(value) = toml::from_str::<toml::Table>(&format!("v = {literal}")) else {
            panic!("README.md line {line}: the default of `{key}`, {default}, is not a TOML value");
        };
        let value = value["v"].clone();
        let path = parse_key_name(key);
        let base = baseline_for(&path);
        let mut with = base.clone();
        let target = match path.as_slice() {
            [k] => (&mut with, k),
            [section, k] => (
                with.entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .unwrap(),
                k,
            ),
            _ => unreachable!(),
        };
        target.0.insert(target.1.clone(), value);
        let dir = tempfile::tempdir().unwrap();
        let without = load_in(dir.path(), &toml::to_string(&base).unwrap())
            .unwrap_or_else(|e| panic!("baseline for `{key}`: {e}"));
        let set = load_in(dir.path(), &toml::to_string(&with).unwrap()).unwrap_or_else(|e| {
            panic!("README.md line {line}: `{key}` = {literal} (its documented default) fails: {e}")
        });
        assert_eq!(
            format!("{set:?}"),
            format!("{without:?}"),
            "README.md line {line}: `{key}` documents default {literal}, but the loader's default \
             differs (setting it changes the loaded config)"
        );
        compared.push(key.clone());
    }
    for key in SCALAR_DEFAULTS {
        assert!(
            compared.iter().any(|k| k == key),
            "README.md: `{key}` has no literal default in the configuration table"
        );
    }
}

#[test]
fn gate_toml_annotations_match_the_loader_and_the_readme() {
    let readme: BTreeMap<String, String> = readme_rows()
        .into_iter()
        .map(|(k, d, ..)| (k, d.replace('`', "")))
        .collect();
    let section_re = Regex::new(r"^#?\s?\[([A-Za-z0-9_.]+)\]").unwrap();
    let key_re = Regex::new(r"^#?\s?([A-Za-z_][A-Za-z0-9_]*)\s*=").unwrap();
    let note_re = Regex::new(r"#\s*(REGISTRY_GATE_[A-Z0-9_]+); default: (.+?)\s*$").unwrap();
    let mut section = String::new();
    let mut seen = 0;
    for (i, line) in uncommented_gate_toml().lines().enumerate() {
        let n = i + 1;
        if let Some(c) = section_re.captures(line) {
            section = c[1].to_owned();
            continue;
        }
        let Some(c) = key_re.captures(line) else {
            continue;
        };
        if section == "ui.vars" {
            continue;
        }
        let path: Vec<&str> = if section.is_empty() {
            vec![&c[1]]
        } else {
            vec![&section, &c[1]]
        };
        let key = key_name(&path);
        let Some(note) = note_re.captures(line) else {
            panic!(
                "examples/gate.toml line {n}: `{key}` lacks its `# REGISTRY_GATE_...; default: ...` note"
            );
        };
        let expected = env_var_for(&path)
            .unwrap_or_else(|| panic!("examples/gate.toml line {n}: `{key}` is not a known key"));
        assert_eq!(
            &note[1], expected,
            "examples/gate.toml line {n}: `{key}` is read from {expected}"
        );
        let readme_default = readme.get(&key).unwrap_or_else(|| {
            panic!("examples/gate.toml line {n}: `{key}` has no row in README.md's table")
        });
        assert_eq!(
            &note[2], readme_default,
            "examples/gate.toml line {n}: the default of `{key}` differs from README.md's table"
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        ENV_KEYS.len(),
        "examples/gate.toml: annotated keys vs keys the loader reads"
    );
}

#[test]
fn every_documented_variable_is_accepted() {
    let var_re = Regex::new(r"REGISTRY_GATE_[A-Z0-9_]+").unwrap();
    let mut checked = 0;
    for (doc, text) in DOCUMENTS {
        for (i, line) in text.lines().enumerate() {
            for m in var_re.find_iter(line) {
                let var = m.as_str();
                // `REGISTRY_GATE_UI_VAR_<NAME>`, `REGISTRY_GATE_UI_*`: a pattern, which must match
                // some variable.
                if var.ends_with('_') {
                    assert!(
                        ENV_UI_VAR_PREFIX.starts_with(var)
                            || ENV_KEYS
                                .iter()
                                .any(|(n, ..)| format!("{ENV_PREFIX}{n}").starts_with(var)),
                        "{doc} line {}: no variable the loader accepts starts with {var}",
                        i + 1
                    );
                    continue;
                }
                match Config::load(None, [(var.to_owned(), "1".to_owned())]) {
                    Err(ConfigError::Env { message, .. })
                        if message.starts_with("unknown variable") =>
                    {
                        panic!(
                            "{doc} line {}: {var} is not a variable the loader accepts",
                            i + 1
                        )
                    }
                    _ => checked += 1,
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} variables found in the documents"
    );
}

/// `REGISTRY_GATE_*: value` lines of the compose file's gate service.
fn compose_env() -> Vec<(String, String)> {
    let re = Regex::new(r#"^\s+(REGISTRY_GATE_[A-Z0-9_]+):\s*"?(.*?)"?\s*$"#).unwrap();
    COMPOSE
        .lines()
        .filter_map(|l| re.captures(l).map(|c| (c[1].to_owned(), c[2].to_owned())))
        .collect()
}

/// `- name: REGISTRY_GATE_*` / `value: ...` pairs of the Kubernetes Deployment.
fn k8s_env() -> Vec<(String, String)> {
    let name = Regex::new(r"^\s*- name: (REGISTRY_GATE_[A-Z0-9_]+)\s*$").unwrap();
    let value = Regex::new(r#"^\s*value: "?(.*?)"?\s*$"#).unwrap();
    let lines: Vec<&str> = K8S_DEPLOYMENT.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let n = name.captures(w[0])?;
            let v = value.captures(w[1])?;
            Some((n[1].to_owned(), v[1].to_owned()))
        })
        .collect()
}

#[test]
fn compose_and_kubernetes_variables_are_a_whole_config() {
    for (doc, env) in [
        ("examples/docker-compose.yml", compose_env()),
        ("examples/kubernetes/deployment.yaml", k8s_env()),
    ] {
        assert!(env.len() >= 5, "{doc}: found only {env:?}");
        if let Err(e) = Config::load(None, env.clone()) {
            panic!("{doc}: its REGISTRY_GATE_* variables alone do not load: {e}");
        }
    }
}

/// Names the child process's config file; not a `REGISTRY_GATE_` variable, which check rejects.
const CHILD_CONFIG: &str = "DOCS_DRIFT_CHECK_CONFIG";

/// Runs `registry-gate check` in a child process (this test binary, running only this test), so
/// its stdout can be read without changing how `check` prints.
#[test]
#[ignore = "run by check_prints_what_the_readme_promises, in a child process"]
fn check_child() {
    let Some(config) = std::env::var_os(CHILD_CONFIG) else {
        return;
    };
    println!("DOCS_DRIFT begin");
    let code = crate::cli::check::run(Some(Path::new(&config)));
    println!(
        "DOCS_DRIFT exit: {}",
        if code == ExitCode::SUCCESS {
            "success"
        } else {
            "failure"
        }
    );
}

/// Throwaway files for check: a two-certificate chain, its key, users, rules and a UI folder.
fn check_fixture(dir: &Path) -> Vec<(String, String)> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let users = dir.join("htpasswd");
    let ui = dir.join("ui");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    // The uncommented gate.toml names `access = "access.toml"`, next to itself.
    std::fs::write(
        dir.join("access.toml"),
        "[[rule]]\nrepos = [\"**\"]\nusers = [\"*\"]\nallow = [\"pull\"]\n",
    )
    .unwrap();
    std::fs::create_dir(&ui).unwrap();
    std::fs::write(ui.join("index.html"), "<title>${REGISTRY_TITLE}</title>").unwrap();
    [
        ("REGISTRY_GATE_TLS_CERT", &cert),
        ("REGISTRY_GATE_TLS_KEY", &key),
        ("REGISTRY_GATE_AUTH_HTPASSWD", &users),
    ]
    .map(|(k, p)| (k.to_owned(), p.display().to_string()))
    .to_vec()
}

/// `registry-gate check --config FILE` with `env`, as (stdout, stderr).
fn run_check(config: &Path, env: &[(String, String)]) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "config::docs_drift::check_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with(ENV_PREFIX) {
            cmd.env_remove(k);
        }
    }
    cmd.env(CHILD_CONFIG, config).envs(env.iter().cloned());
    let out = cmd.output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's `check` bullet, joined into one line.
fn readme_check_bullet() -> String {
    let start = README
        .find("- `check` loads")
        .expect("README.md: the CLI section's `check` bullet is gone");
    let rest = &README[start..];
    let end = rest[2..].find("\n- ").map_or(rest.len(), |e| e + 2);
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn check_prints_what_the_readme_promises() {
    let bullet = readme_check_bullet();
    // What the README says check prints, and the line of check's output that shows it.
    let promises: &[(&str, &str)] = &[
        ("the certificate's subject and expiry", "certificate: "),
        ("the users and their hash formats", "users: 1 from "),
        ("the rules and who may do what", "who may do what:"),
        ("the UI folder", "ui: 1 file(s) from "),
        (
            "the CORS origins",
            "cors: allowed origins https://ui.example.com",
        ),
        ("the listeners", "listen: https://0.0.0.0:443"),
        ("the upstream", "upstream: http://127.0.0.1:5000"),
    ];
    // Backticked samples such as `tls: ... (2 certificate(s))`: "..." stands for anything.
    let samples: Vec<Regex> = Regex::new(r"`([a-z_]+: [^`]*)`")
        .unwrap()
        .captures_iter(&bullet)
        .map(|c| {
            let parts: Vec<String> = c[1].split("...").map(regex::escape).collect();
            Regex::new(&format!("^{}", parts.join(".*"))).unwrap()
        })
        .collect();
    assert!(
        !samples.is_empty(),
        "README.md's check bullet has no sample line: {bullet}"
    );
    assert!(
        bullet.contains("0 with `ok`"),
        "README.md's check bullet: {bullet}"
    );

    let dir = tempfile::tempdir().unwrap();
    let env = check_fixture(dir.path());
    let shipped = dir.path().join("gate.toml");
    let all = dir.path().join("gate-all.toml");
    std::fs::write(&shipped, GATE_TOML).unwrap();
    std::fs::write(&all, uncommented_without("acme")).unwrap();
    let mut env_all = env.clone();
    env_all.push((
        "REGISTRY_GATE_UI_DIR".to_owned(),
        dir.path().join("ui").display().to_string(),
    ));
    for (config, env, promised) in [(&shipped, &env, &promises[..2]), (&all, &env_all, promises)] {
        let what = format!(
            "`registry-gate check` on examples/gate.toml{}",
            if config == &all {
                " with every key uncommented"
            } else {
                ""
            }
        );
        let (stdout, stderr) = run_check(config, env);
        // check's own lines, between the child's markers (libtest prints around them).
        let lines: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.ends_with("DOCS_DRIFT begin"))
            .skip(1)
            .take_while(|l| !l.starts_with("DOCS_DRIFT exit"))
            .collect();
        assert!(
            stdout.contains("DOCS_DRIFT exit: success"),
            "{what} failed:\n{stdout}\n{stderr}"
        );
        for sample in &samples {
            assert!(
                lines.iter().any(|l| sample.is_match(l)),
                "{what}: README.md promises a line like {sample}, got:\n{stdout}"
            );
        }
        for (phrase, prefix) in promised {
            assert!(
                bullet.contains(phrase),
                "README.md's check bullet no longer mentions {phrase:?}; update this test"
            );
            assert!(
                lines.iter().any(|l| l.starts_with(prefix)),
                "{what}: README.md says it prints {phrase}, expected a line starting {prefix:?}, got:\n{stdout}"
            );
        }
        assert_eq!(
            lines.last(),
            Some(&"ok"),
            "{what}: README.md says it ends with `ok`:\n{stdout}"
        );
    }
}
