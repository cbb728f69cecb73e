//! Static files of the registry UI under `/ui/` (e.g. the user's own copy of the Joxit
//! docker-registry-ui `dist/`).
//!
//! Owns: loading the `[ui] dir` folder into memory once, at start (restart the gate to pick up
//! changes), `${NAME}` templating of `index.html`, and the GET/HEAD answers (content type, ETag,
//! Last-Modified, 304, Range, `X-Content-Type-Options: nosniff`). Does not own: authentication
//! (http/service.rs decides, from `[ui] auth`) or CORS (http/cors.rs).
//!
//! Path safety, in this order. At load: dotfiles and dot-folders are skipped; a symlink is kept
//! only when its canonical target lies inside the canonical root and has no dot-component on the
//! way; only regular files are read, and the total is capped ([`MAX_TOTAL_BYTES`]). At request
//! time no request path is ever joined onto a filesystem path: it is percent-decoded once and
//! looked up in the in-memory map; a path with `\`, NUL or another control byte, an empty
//! segment (`//`) or a segment starting with `.` (`.`, `..`, dotfiles) is a 404 before the lookup.
//! Folders answer with their `index.html` or 404, never a listing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};

use crate::config::UiConfig;
use crate::error::{self, Body, GateError};
use crate::http::origin;

/// The UI is held in memory: at most this many bytes of files.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;
/// Folders deeper than this are not walked (also ends symlink loops that canonicalize inside).
const MAX_DEPTH: usize = 32;

/// True for the paths the UI answers: `/ui` and everything under `/ui/`.
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Why the UI folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("[ui] dir {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[ui] dir {0}: not a folder")]
    NotAFolder(PathBuf),
    #[error(
        "[ui] dir {dir}: the files add up to more than {limit} bytes; the UI is held in memory, so point [ui] dir at the UI's dist/ folder only"
    )]
    TooLarge { dir: PathBuf, limit: u64 },
}

/// One file, ready to serve.
struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: String,
    modified: SystemTime,
    /// Set for an `index.html` that has `${NAME}` placeholders: rendered per request.
    template: Option<Template>,
}

/// The UI files, keyed by their relative path with `/` separators (`index.html`, `a/b.js`).
pub struct Ui {
    files: HashMap<String, Asset>,
    auth: bool,
    vars: BTreeMap<String, String>,
}

impl Ui {
    /// Reads the whole folder into memory.
    pub fn load(config: &UiConfig) -> Result<Ui, UiError> {
        let dir = &config.dir;
        let root = std::fs::canonicalize(dir).map_err(|source| UiError::Read {
            path: dir.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(UiError::NotAFolder(dir.clone()));
        }
        let mut walk = Walk {
            root: &root,
            dir,
            files: HashMap::new(),
            total: 0,
            visited: HashSet::from([root.clone()]),
        };
        walk.folder(&root, "", 0)?;
        for name in config.vars.keys() {
            if !is_var_name(name) {
                tracing::warn!(
                    "[ui.vars] {name:?} never matches a placeholder: names are A-Z, 0-9 and _"
                );
            }
        }
        if !walk.files.contains_key("index.html") {
            tracing::warn!(
                "[ui] dir {} has no index.html: /ui/ will answer 404",
                dir.display()
            );
        }
        tracing::info!(
            dir = %dir.display(),
            files = walk.files.len(),
            bytes = walk.total,
            "loaded the UI (changes need a restart)"
        );
        Ok(Ui {
            files: walk.files,
            auth: config.auth,
            vars: config.vars.clone(),
        })
    }

    /// How many files were loaded.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// `[ui] auth`: the UI is behind the same Basic auth as the registry.
    pub fn needs_auth(&self) -> bool {
        self.auth
    }

    /// Answers a request for `/ui` or a path under `/ui/`. `origin` is the gate's public
    /// origin for this request (http/origin.rs), the default of `REGISTRY_URL`.
    pub fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        request: &HeaderMap,
        origin: Option<&str>,
    ) -> Result<Response<Body>, GateError> {
        let path = uri.path();
        if path == "/ui" {
            return redirect_to_folder(uri);
        }
        if method != Method::GET && method != Method::HEAD {
            return Err(GateError::Unsupported(
                "the UI answers GET and HEAD only".into(),
            ));
        }
        let rest = path.strip_prefix("/ui/").unwrap_or_default();
        let key = lookup_key(rest).ok_or(GateError::NotFound("no such file in the UI"))?;
        let Some(asset) = self.files.get(&key) else {
            // `/ui/docs` when `docs/index.html` exists: send the browser to the folder, so that
            // relative links inside the page resolve.
            if !rest.is_empty() && self.files.contains_key(&format!("{key}/index.html")) {
                return redirect_to_folder(uri);
            }
            return Err(GateError::NotFound("no such file in the UI"));
        };
        let (body, etag) = match &asset.template {
            Some(t) => {
                let rendered = Bytes::from(t.render(&|name| self.value(name, origin)));
                let etag = etag_of(&rendered);
                (rendered, etag)
            }
            None => (asset.body.clone(), asset.etag.clone()),
        };
        Ok(answer(method, request, asset, body, &etag))
    }

    /// The value of `${name}` for one request: `[ui.vars]` first, then the gate's defaults.
    fn value(&self, name: &str, origin: Option<&str>) -> String {
        if let Some(v) = self.vars.get(name) {
            return v.clone();
        }
        match name {
            "REGISTRY_URL" => origin.unwrap_or_default().to_owned(),
            "PULL_URL" => origin.map(origin::host_of).unwrap_or_default().to_owned(),
            "SINGLE_REGISTRY" => "true".into(),
            // Otherwise the page asks a public code-hosting API for release news.
            "ENABLE_VERSION_NOTIFICATION" => "false".into(),
            _ => String::new(),
        }
    }
}

/// The folder walk at load time.
struct Walk<'a> {
    root: &'a Path,
    /// As configured, for messages.
    dir: &'a Path,
    files: HashMap<String, Asset>,
    total: u64,
    /// Canonical folders already walked (symlink loops).
    visited: HashSet<PathBuf>,
}

impl Walk<'_> {
    fn folder(&mut self, folder: &Path, rel: &str, depth: usize) -> Result<(), UiError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| UiError::Read { path, source }
        };
        let mut entries = std::fs::read_dir(folder)
            .map_err(read_err(folder))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err(folder))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!("UI: skipping {}: the name is not UTF-8", path.display());
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if name.contains('\\') || name.chars().any(char::is_control) {
                tracing::warn!("UI: skipping {}: unusable name", path.display());
                continue;
            }
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let file_type = entry.file_type().map_err(read_err(&path))?;
            let real = if file_type.is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(target) if self.inside(&target) => target,
                    Ok(target) => {
                        tracing::warn!(
                            "UI: skipping {}: it points to {}, outside {} or at a dotfile",
                            path.display(),
                            target.display(),
                            self.root.display()
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("UI: skipping {}: {e}", path.display());
                        continue;
                    }
                }
            } else {
                path.clone()
            };
            let meta = std::fs::metadata(&real).map_err(read_err(&path))?;
            if meta.is_dir() {
                if depth >= MAX_DEPTH || !self.visited.insert(real.clone()) {
                    continue;
                }
                self.folder(&real, &rel_name, depth + 1)?;
            } else if meta.is_file() {
                self.total = self.total.saturating_add(meta.len());
                if self.total > MAX_TOTAL_BYTES {
                    return Err(UiError::TooLarge {
                        dir: self.dir.to_owned(),
                        limit: MAX_TOTAL_BYTES,
                    });
                }
                let data = std::fs::read(&real).map_err(read_err(&path))?;
                let modified = meta.modified().map_or(UNIX_EPOCH, whole_seconds);
                let asset = Asset::new(&rel_name, data, modified);
                self.files.insert(rel_name, asset);
            }
        }
        Ok(())
    }

    /// A canonical path inside the root, with no dot-component below it.
    fn inside(&self, target: &Path) -> bool {
        target.strip_prefix(self.root).is_ok_and(|below| {
            below
                .components()
                .all(|c| !c.as_os_str().to_string_lossy().starts_with('.'))
        })
    }
}

impl Asset {
    fn new(rel: &str, data: Vec<u8>, modified: SystemTime) -> Asset {
        let is_index = rel == "index.html" || rel.ends_with("/index.html");
        let template = is_index
            .then(|| std::str::from_utf8(&data).ok())
            .flatten()
            .map(Template::parse)
            .filter(Template::has_vars);
        // A rendered page also depends on the config, which is read at start.
        let modified = match template {
            Some(_) => modified.max(whole_seconds(SystemTime::now())),
            None => modified,
        };
        let body = Bytes::from(data);
        Asset {
            etag: etag_of(&body),
            content_type: content_type(rel),
            modified,
            template,
            body,
        }
    }
}

/// Drops sub-second precision: HTTP dates have whole seconds, and `If-Modified-Since` compares.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A strong validator: the first 128 bits of the SHA-256 of the bytes served.
fn etag_of(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let mut tag = String::from("\"");
    for b in &digest.as_ref()[..16] {
        let _ = write!(tag, "{b:02x}");
    }
    tag.push('"');
    tag
}

/// The map key for the part of a request path after `/ui/`, or `None` when it is not one that
/// could name a file (see the module header). Decoded exactly once: `%252e` stays `%2e`.
fn lookup_key(raw: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
    let decoded = String::from_utf8(decoded).ok()?;
    if decoded.chars().any(|c| c == '\\' || c.is_control()) {
        return None;
    }
    let (folder, file) = match decoded.strip_suffix('/') {
        Some(folder) => (folder, "index.html"),
        None if decoded.is_empty() => ("", "index.html"),
        None => (decoded.as_str(), ""),
    };
    if !folder.is_empty()
        && folder
            .split('/')
            .any(|seg| seg.is_empty() || seg.starts_with('.'))
    {
        return None;
    }
    Some(match (folder, file) {
        ("", f) => f.to_owned(),
        (d, "") => d.to_owned(),
        (d, f) => format!("{d}/{f}"),
    })
}

/// `301` to the same path with a `/` added, keeping the query.
fn redirect_to_folder(uri: &Uri) -> Result<Response<Body>, GateError> {
    let mut location = format!("{}/", uri.path());
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let location = HeaderValue::from_str(&location)
        .map_err(|_| GateError::NotFound("no such file in the UI"))?;
    let mut resp = Response::new(error::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

/// The GET/HEAD answer for one file: 304, 206, 416 or 200.
fn answer(
    method: &Method,
    request: &HeaderMap,
    asset: &Asset,
    body: Bytes,
    etag: &str,
) -> Response<Body> {
    let mut resp = Response::new(error::empty());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(asset.modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    // Revalidate every time: the Joxit bundles have fixed names, and the check is a cheap 304.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if not_modified(request, etag, asset.modified) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let len = body.len() as u64;
    let range = if method == Method::GET {
        requested_range(request, len, etag, asset.modified)
    } else {
        RangeAnswer::Whole
    };
    let (status, part) = match range {
        RangeAnswer::Whole => (StatusCode::OK, body),
        RangeAnswer::Part { first, last } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            // first <= last < len, checked by requested_range.
            let part = usize::try_from(first)
                .ok()
                .zip(usize::try_from(last).ok())
                .map_or_else(Bytes::new, |(a, b)| body.slice(a..=b));
            (StatusCode::PARTIAL_CONTENT, part)
        }
        RangeAnswer::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
    *resp.status_mut() = status;
    if method == Method::GET {
        *resp.body_mut() = error::full(part);
    }
    resp
}

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison) wins over
/// `If-Modified-Since`.
fn not_modified(request: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    let inm: Vec<&str> = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !inm.is_empty() {
        return inm
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag);
    }
    request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| modified <= since)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    Whole,
    Part { first: u64, last: u64 },
    Unsatisfiable,
}

/// RFC 9110 §14.2: one `bytes=` range; several ranges, bad syntax or a failed `If-Range` are
/// answered with the whole file, as the RFC allows.
fn requested_range(request: &HeaderMap, len: u64, etag: &str, modified: SystemTime) -> RangeAnswer {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Whole;
    };
    if let Some(if_range) = request.get(header::IF_RANGE) {
        let if_range = if_range.to_str().unwrap_or_default().trim();
        // §13.1.5: an entity tag must match strongly; a date must be exactly the last change.
        let fresh = if if_range.starts_with('"') || if_range.starts_with("W/") {
            if_range == etag
        } else {
            httpdate::parse_http_date(if_range).is_ok_and(|d| d == modified)
        };
        if !fresh {
            return RangeAnswer::Whole;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a, b) {
        ("", suffix) => match num(suffix) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part {
                first: len.saturating_sub(n),
                last: len - 1,
            },
        },
        (first, last) => {
            let Some(first) = num(first) else {
                return RangeAnswer::Whole;
            };
            let last = match last {
                "" => None,
                l => match num(l) {
                    Some(l) if l >= first => Some(l),
                    _ => return RangeAnswer::Whole,
                },
            };
            if first >= len {
                return RangeAnswer::Unsatisfiable;
            }
            RangeAnswer::Part {
                first,
                last: last.map_or(len - 1, |l| l.min(len - 1)),
            }
        }
    }
}

/// The `Content-Type` for a file name; anything unknown is `application/octet-stream`.
fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// `index.html` split at its `${NAME}` placeholders once, at load; rendering is a concatenation.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// Placeholder names: `[A-Z_][A-Z0-9_]*`, as the Joxit UI's are. Upper case only, so that a
/// JavaScript template literal such as `${name}` in an inline script is left alone.
fn is_var_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl Template {
    fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) if is_var_name(&after[..end]) => {
                    literal.push_str(&rest[..start]);
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                    parts.push(Part::Var(after[..end].to_owned()));
                    rest = &after[end + 1..];
                }
                _ => {
                    literal.push_str(&rest[..start + 2]);
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        parts.push(Part::Text(literal));
        parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        Template { parts }
    }

    fn has_vars(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    /// Fills each placeholder with `value(name)`, HTML-escaped.
    fn render(&self, value: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(name) => escape_html_into(&value(name), &mut out),
            }
        }
        out
    }
}

/// Escapes `& < > " '` so a value is safe in text and in quoted attributes.
fn escape_html_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"<!DOCTYPE html><html><body>
<docker-registry-ui registry-url="${REGISTRY_URL}" name="${REGISTRY_TITLE}" pull-url="${PULL_URL}" single-registry="${SINGLE_REGISTRY}" delete-images="${DELETE_IMAGES}" enable-version-notification="${ENABLE_VERSION_NOTIFICATION}" theme="${THEME}"></docker-registry-ui>
<script>const s = `${name} costs ${ 1 }`; const t = "$"; const u = "${";</script>
</body></html>"#;

    fn load(vars: &[(&str, &str)]) -> (tempfile::TempDir, Ui) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), FIXTURE).unwrap();
        let config = UiConfig {
            dir: dir.path().to_owned(),
            auth: false,
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let ui = Ui::load(&config).unwrap();
        (dir, ui)
    }

    /// GET /ui/ over TLS with this `public_url` and Host; the response and its body.
    fn get(ui: &Ui, public_url: Option<&str>, host: &str) -> (Response<Body>, String) {
        use http_body_util::BodyExt as _;
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_str(host).unwrap();
        h.insert(header::HOST, host.clone());
        let uri: Uri = "/ui/".parse().unwrap();
        let origin = origin::public_origin(public_url, Some(&host), true);
        let (parts, body) = ui
            .serve(&Method::GET, &uri, &h, origin.as_deref())
            .unwrap()
            .into_parts();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes();
        let page = String::from_utf8(bytes.to_vec()).unwrap();
        (Response::from_parts(parts, error::empty()), page)
    }

    fn attr<'a>(page: &'a str, name: &str) -> &'a str {
        let start = page.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let len = page[start..].find('"').unwrap();
        &page[start..start + len]
    }

    #[test]
    fn config_values_fill_the_placeholders() {
        let (_d, ui) = load(&[
            ("REGISTRY_TITLE", "Team registry"),
            ("DELETE_IMAGES", "true"),
            ("SINGLE_REGISTRY", "false"),
        ]);
        let (_, page) = get(&ui, None, "registry.example:5443");
        assert_eq!(attr(&page, "name"), "Team registry");
        assert_eq!(attr(&page, "delete-images"), "true");
        assert_eq!(attr(&page, "single-registry"), "false");
        // Unknown names are left empty; lower-case JS template literals are left alone.
        assert_eq!(attr(&page, "theme"), "");
        assert!(page.contains("`${name} costs ${ 1 }`"), "{page}");
        assert!(page.contains(r#"const u = "${";"#), "{page}");
    }

    #[test]
    fn defaults_come_from_the_host() {
        let (_d, ui) = load(&[]);
        let (_, page) = get(&ui, None, "registry.example:5443");
        assert_eq!(attr(&page, "registry-url"), "https://registry.example:5443");
        assert_eq!(attr(&page, "pull-url"), "registry.example:5443");
        assert_eq!(attr(&page, "single-registry"), "true");
        assert_eq!(attr(&page, "enable-version-notification"), "false");
        assert_eq!(attr(&page, "delete-images"), "");
        // A Host with odd characters is not trusted into the page.
        let (_, page) = get(&ui, None, "evil.example\"><script>");
        assert_eq!(attr(&page, "registry-url"), "");
        assert_eq!(attr(&page, "pull-url"), "");
    }

    #[test]
    fn defaults_come_from_public_url_first() {
        let (_d, ui) = load(&[]);
        let (_, page) = get(&ui, Some("https://registry.example.com"), "10.0.0.5:5443");
        assert_eq!(attr(&page, "registry-url"), "https://registry.example.com");
        assert_eq!(attr(&page, "pull-url"), "registry.example.com");
        let (_d, ui) = load(&[("REGISTRY_URL", "https://other.example")]);
        let (_, page) = get(&ui, Some("https://r.example:8443"), "10.0.0.5:5443");
        assert_eq!(attr(&page, "registry-url"), "https://other.example");
        assert_eq!(attr(&page, "pull-url"), "r.example:8443");
    }

    #[test]
    fn values_are_html_escaped() {
        let (_d, ui) = load(&[("REGISTRY_TITLE", r#""><script>alert('x')&</script>"#)]);
        let (_, page) = get(&ui, None, "localhost");
        assert_eq!(
            attr(&page, "name"),
            "&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&amp;&lt;/script&gt;"
        );
        assert!(!page.contains("<script>alert"));
    }

    #[test]
    fn the_etag_follows_the_rendered_page() {
        let (_d, ui) = load(&[]);
        let (a, _) = get(&ui, None, "a.example");
        let (b, _) = get(&ui, None, "b.example");
        let (a2, _) = get(&ui, None, "a.example");
        assert_ne!(a.headers()[header::ETAG], b.headers()[header::ETAG]);
        assert_eq!(a.headers()[header::ETAG], a2.headers()[header::ETAG]);
    }

    #[test]
    fn lookup_keys() {
        assert_eq!(lookup_key("").as_deref(), Some("index.html"));
        assert_eq!(lookup_key("a/b.js").as_deref(), Some("a/b.js"));
        assert_eq!(lookup_key("a/").as_deref(), Some("a/index.html"));
        assert_eq!(lookup_key("a%20b.js").as_deref(), Some("a b.js"));
        // Decoded once: a doubly encoded dot-dot is a plain (missing) name.
        assert_eq!(lookup_key("%252e%252e/x").as_deref(), Some("%2e%2e/x"));
        for bad in [
            "../x",
            "%2e%2e/x",
            "%2E%2E/x",
            "a/../x",
            "./x",
            "a/./x",
            ".hidden",
            "a/.git/config",
            "..%5cx",
            "a\\b",
            "a%00b",
            "a//b",
            "/x",
            "a/%2e",
            "%ff",
            "a%0ab",
        ] {
            assert_eq!(lookup_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = |range: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
            requested_range(&h, 100, "\"e\"", t)
        };
        assert_eq!(r("bytes=0-9"), RangeAnswer::Part { first: 0, last: 9 });
        assert_eq!(
            r("bytes=90-"),
            RangeAnswer::Part {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            r("bytes=-10"),
            RangeAnswer::Part {
                first: 90,
                last: 99
            }
        );
        assert_eq!(r("bytes=-1000"), RangeAnswer::Part { first: 0, last: 99 });
        assert_eq!(
            r("bytes=50-1000"),
            RangeAnswer::Part {
                first: 50,
                last: 99
            }
        );
        assert_eq!(r("bytes=100-"), RangeAnswer::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAnswer::Unsatisfiable);
        for whole in [
            "bytes=9-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(r(whole), RangeAnswer::Whole, "{whole}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(requested_range(&h, 100, "\"e\"", t), RangeAnswer::Whole);
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"e\""));
        assert_eq!(
            requested_range(&h, 100, "\"e\"", t),
            RangeAnswer::Part { first: 0, last: 9 }
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.woff2"), "font/woff2");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
