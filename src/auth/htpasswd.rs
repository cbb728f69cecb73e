//! htpasswd files: parsing every format users already have, and verifying a password.
//!
//! Owns: the line grammar (`user:hash`, split at the first colon; `#` comments, blank lines and
//! CRLF tolerated), one [`Hash`] variant per format, and pure, synchronous verification with
//! constant-time comparison. Formats: bcrypt `$2a$`/`$2b$`/`$2x$`/`$2y$`, apr1 `$apr1$`
//! (`htpasswd -m`, `openssl passwd -apr1`), `{SHA}`, `{SSHA}`, `{PLAIN}`, SHA-256/512 crypt
//! `$5$`/`$6$` (`rounds=` included), and Apache `htpasswd -p` plain text. A line in a format the
//! gate does not support (DES crypt, unknown `$id$`) is reported and that user cannot log in.
//! Does not own: reloading the file (users.rs) or caching results (cache.rs).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// A stored password hash, one variant per format.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$2a$`, `$2b$`, `$2x$`, `$2y$` (the whole string, as the bcrypt crate verifies it).
    Bcrypt(String),
    /// `$apr1$salt$hash`.
    Apr1 { salt: String, full: String },
    /// `{SHA}` + base64(SHA-1(password)).
    Sha1(Vec<u8>),
    /// `{SSHA}` + base64(SHA-1(password + salt) + salt).
    Ssha { digest: Vec<u8>, salt: Vec<u8> },
    /// `$5$` / `$6$` crypt, verified by the sha-crypt crate.
    ShaCrypt(String),
    /// `{PLAIN}password`, or a bare password as Apache's `htpasswd -p` writes it.
    Plain(String),
}

impl fmt::Debug for Hash {
    // Never print hashes or plain passwords into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.format_name())
    }
}

impl Hash {
    /// A short name of the format, for messages.
    pub fn format_name(&self) -> &'static str {
        match self {
            Hash::Bcrypt(_) => "bcrypt",
            Hash::Apr1 { .. } => "apr1",
            Hash::Sha1(_) => "{SHA}",
            Hash::Ssha { .. } => "{SSHA}",
            Hash::ShaCrypt(s) if s.starts_with("$5$") => "sha256-crypt",
            Hash::ShaCrypt(_) => "sha512-crypt",
            Hash::Plain(_) => "plain text",
        }
    }

    /// The text stored in the file (for keying the cache on the exact stored value).
    pub fn stored(&self) -> String {
        match self {
            Hash::Bcrypt(s) | Hash::ShaCrypt(s) => s.clone(),
            Hash::Apr1 { full, .. } => full.clone(),
            Hash::Sha1(d) => format!("{{SHA}}{}", B64.encode(d)),
            Hash::Ssha { digest, salt } => {
                format!("{{SSHA}}{}", B64.encode([digest.as_slice(), salt].concat()))
            }
            Hash::Plain(p) => format!("{{PLAIN}}{p}"),
        }
    }

    /// True when verifying this hash is slow enough to need the blocking pool and the cache.
    pub fn is_slow(&self) -> bool {
        matches!(
            self,
            Hash::Bcrypt(_) | Hash::ShaCrypt(_) | Hash::Apr1 { .. }
        )
    }

    /// Hashes of one work class cost the same to verify: the format plus its cost parameter
    /// (bcrypt's cost, SHA-crypt's `rounds=`). users.rs verifies one hash of every class in the
    /// file on every check, so known and unknown users cost the same.
    pub fn work_class(&self) -> String {
        match self {
            Hash::Bcrypt(s) => format!("bcrypt-{}", s.get(4..6).unwrap_or("")),
            Hash::ShaCrypt(s) => {
                let rounds = s
                    .get(3..)
                    .and_then(|r| r.strip_prefix("rounds="))
                    .and_then(|r| r.split('$').next())
                    .unwrap_or("default");
                format!("{}-{rounds}", self.format_name())
            }
            other => other.format_name().to_owned(),
        }
    }

    /// Parses the hash part of a line.
    pub fn parse(text: &str) -> Result<Hash, String> {
        if let Some(rest) = text.strip_prefix("{SHA}") {
            let d = B64
                .decode(rest)
                .map_err(|_| "{SHA} value is not base64".to_owned())?;
            if d.len() != 20 {
                return Err("{SHA} value is not a SHA-1 digest".into());
            }
            return Ok(Hash::Sha1(d));
        }
        if let Some(rest) = text.strip_prefix("{SSHA}") {
            let d = B64
                .decode(rest)
                .map_err(|_| "{SSHA} value is not base64".to_owned())?;
            if d.len() <= 20 {
                return Err("{SSHA} value is too short to hold a digest and salt".into());
            }
            let (digest, salt) = d.split_at(20);
            return Ok(Hash::Ssha {
                digest: digest.to_vec(),
                salt: salt.to_vec(),
            });
        }
        if let Some(rest) = text.strip_prefix("{PLAIN}") {
            return Ok(Hash::Plain(rest.to_owned()));
        }
        if text.starts_with('{') {
            // Never echo the value: with `htpasswd -p` it may be a plain password.
            return Err("unsupported {SCHEME} (known: {SHA}, {SSHA}, {PLAIN})".into());
        }
        if let Some(rest) = text.strip_prefix('$') {
            let id = rest.split('$').next().unwrap_or("");
            return match id {
                "2a" | "2b" | "2x" | "2y" => {
                    // `$2y$10$` + 53 characters of salt and hash.
                    let cost = rest.get(3..5).and_then(|c| c.parse::<u32>().ok());
                    match cost {
                        Some(4..=31)
                            if text.len() == 60 && rest.as_bytes().get(5) == Some(&b'$') =>
                        {
                            Ok(Hash::Bcrypt(text.to_owned()))
                        }
                        Some(4..=31) => Err("bcrypt hash has the wrong length".into()),
                        _ => Err("bcrypt cost must be 04 to 31".into()),
                    }
                }
                "apr1" => {
                    let mut parts = rest.splitn(3, '$');
                    let (_, salt, hash) = (parts.next(), parts.next(), parts.next());
                    match (salt, hash) {
                        (Some(salt), Some(hash)) if salt.len() <= 8 && hash.len() == 22 => {
                            Ok(Hash::Apr1 {
                                salt: salt.to_owned(),
                                full: text.to_owned(),
                            })
                        }
                        _ => Err("apr1 hash is malformed".into()),
                    }
                }
                "5" | "6" => {
                    // Check the form now so a broken line is reported at load, not at login.
                    sha_crypt::PasswordHashRef::new(text)
                        .map_err(|_| "SHA-crypt ($5$/$6$) hash is malformed".to_owned())?;
                    Ok(Hash::ShaCrypt(text.to_owned()))
                }
                "1" => Err("MD5 crypt ($1$) is not supported; use bcrypt or apr1".into()),
                _ => Err(
                    "unsupported $id$ hash scheme (known: $2a$/$2b$/$2x$/$2y$, $apr1$, $5$, $6$)"
                        .into(),
                ),
            };
        }
        if text.len() == 13
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
        {
            return Err("DES crypt is not supported (weak and ambiguous); re-create the password with bcrypt".into());
        }
        if text.is_empty() {
            return Err("empty password hash".into());
        }
        Ok(Hash::Plain(text.to_owned()))
    }

    /// Checks `password` against this hash. Slow for bcrypt and crypt; call off the reactor.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Apr1 { salt, full } => {
                let computed = apr1(password, salt.as_bytes());
                computed.as_bytes().ct_eq(full.as_bytes()).into()
            }
            Hash::Sha1(d) => sha1(&[password]).as_slice().ct_eq(d).into(),
            Hash::Ssha { digest, salt } => sha1(&[password, salt]).as_slice().ct_eq(digest).into(),
            Hash::ShaCrypt(h) => {
                use sha_crypt::PasswordVerifier as _;
                let Ok(parsed) = sha_crypt::PasswordHashRef::new(h) else {
                    return false;
                };
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, parsed)
                    .is_ok()
            }
            Hash::Plain(p) => {
                // Compare digests so the comparison's time does not depend on the length.
                sha256(password).ct_eq(&sha256(p.as_bytes())).into()
            }
        }
    }
}

fn sha1(parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish().as_ref().to_vec()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The crypt alphabet apr1 writes its salt and hash in.
pub(crate) const ITOA64: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's MD5-based `$apr1$` crypt (the FreeBSD MD5 crypt with another magic string).
pub fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize().into();
    }
    let mut out = String::with_capacity(37);
    out.push_str("$apr1$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    to64(u32::from(fin[11]), 2);
    out
}

/// A problem with one line of an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: usize,
    pub user: Option<String>,
    pub message: String,
}

/// The users of one htpasswd file, and what was wrong with the lines that did not load.
#[derive(Debug, Default)]
pub struct Parsed {
    pub users: HashMap<String, Hash>,
    /// Lines that were skipped; their users cannot log in.
    pub errors: Vec<LineProblem>,
    /// Loaded, but worth telling (duplicates, plain-text passwords).
    pub warnings: Vec<LineProblem>,
}

/// Parses htpasswd text. Never fails as a whole: bad lines are reported and skipped.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, hash)) = l.split_once(':') else {
            parsed.errors.push(LineProblem {
                line,
                user: None,
                message: "no ':' between user name and password hash".into(),
            });
            continue;
        };
        let problem = |message: String| LineProblem {
            line,
            user: Some(user.to_owned()),
            message,
        };
        if user.is_empty() {
            parsed.errors.push(problem("empty user name".into()));
            continue;
        }
        match Hash::parse(hash) {
            Ok(h) => {
                if parsed.users.contains_key(user) {
                    parsed
                        .warnings
                        .push(problem("duplicate user; the first entry wins".into()));
                    continue;
                }
                if matches!(h, Hash::Plain(_)) {
                    parsed.warnings.push(problem(
                        "password stored in plain text; prefer bcrypt (registry-gate htpasswd set)"
                            .into(),
                    ));
                }
                parsed.users.insert(user.to_owned(), h);
            }
            Err(message) => parsed.errors.push(problem(message)),
        }
    }
    parsed
}

/// Formats a problem as `file:line: user "x": message`.
pub fn describe(path: &Path, p: &LineProblem) -> String {
    match &p.user {
        Some(u) => format!("{}:{}: user {u:?}: {}", path.display(), p.line, p.message),
        None => format!("{}:{}: {}", path.display(), p.line, p.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_known_vectors() {
        // Made with `openssl passwd -apr1 -salt <salt> <password>`.
        assert_eq!(
            apr1(b"password", b"saltsalt"),
            "$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/"
        );
        assert_eq!(apr1(b"", b"abc"), "$apr1$abc$BfqKdn9xFDWJPa3kcp/PH0");
    }

    #[test]
    fn each_format_verifies() {
        let bc = bcrypt::hash("s3cret", 4).unwrap();
        let cases = [
            bc.clone(),
            bc.replacen("$2b$", "$2y$", 1),
            bc.replacen("$2b$", "$2a$", 1),
            apr1(b"s3cret", b"AbCd1234"),
            format!("{{SHA}}{}", B64.encode(sha1(&[b"s3cret"]))),
            format!(
                "{{SSHA}}{}",
                B64.encode([sha1(&[b"s3cret", b"salt"]), b"salt".to_vec()].concat())
            ),
            "{PLAIN}s3cret".into(),
            "s3cret".into(),
        ];
        for stored in cases {
            let h = Hash::parse(&stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert!(h.verify(b"s3cret"), "{stored} should accept");
            assert!(!h.verify(b"s3creT"), "{stored} should reject");
            assert!(!h.verify(b""), "{stored} should reject empty");
        }
    }

    #[test]
    fn lines_comments_crlf_duplicates_and_errors() {
        let text = "# team\r\nalice:{PLAIN}a\r\n\r\nbob:$1$abc$def\nnocolon\nalice:{PLAIN}other\ncarol:abcdefghijklm\n:x\ndave:pass:with:colons\n";
        let p = parse(text);
        assert!(p.users["alice"].verify(b"a"), "first entry wins");
        assert!(p.users["dave"].verify(b"pass:with:colons"));
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 5, 7, 8]);
        assert_eq!(p.errors[0].user.as_deref(), Some("bob"));
        assert!(p.errors[2].message.contains("DES"));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.line == 6 && w.message.contains("duplicate"))
        );
        assert!(!p.users.contains_key("bob") && !p.users.contains_key("carol"));
    }

    #[test]
    fn malformed_hashes_are_errors_not_plain_text() {
        for bad in [
            "$2y$10$short",
            "$2y$99$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0",
            "$apr1$salt",
            "$6$",
            "$7$foo",
            "{MD5}abc",
            "{SHA}notbase64!",
        ] {
            assert!(Hash::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn errors_never_echo_the_value() {
        for secret in ["$hunter2$x", "{hunter2}x"] {
            let e = Hash::parse(secret).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let h = Hash::parse("{PLAIN}hunter2").unwrap();
        assert_eq!(format!("{h:?}"), "plain text");
    }
}
