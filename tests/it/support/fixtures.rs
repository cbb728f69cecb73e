//! What several tests share: users, htpasswd files, files written as rotating tools do.

use std::path::Path;

pub const ALICE: (&str, &str) = ("alice", "alice-secret");
pub const BOB: (&str, &str) = ("bob", "bob-secret");

/// bcrypt cost used for test users (fast; the format is the same at any cost).
pub const TEST_COST: u32 = 5;

/// Writes an htpasswd file with bcrypt users.
pub fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    for (u, p) in users {
        let h = bcrypt::hash(p, TEST_COST).unwrap();
        text.push_str(&format!("{u}:{h}\n"));
    }
    write_atomic(path, text.as_bytes());
}

/// Writes through a temp file and a rename, as tools that rotate files do.
pub fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
