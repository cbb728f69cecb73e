//! What several tests share: users, access rules, htpasswd files, files written as rotating
//! tools do.

use std::path::Path;

pub const ALICE: (&str, &str) = ("alice", "alice-secret");
pub const BOB: (&str, &str) = ("bob", "bob-secret");
/// Pulls and pushes anything under the team rules; an admin (group `admins`) under the group rules.
pub const CAROL: (&str, &str) = ("carol", "carol-secret");
/// In group `ci` under the group rules: pulls team-a/** and tools/*.
pub const CI: (&str, &str) = ("ci-bot", "ci-secret");

/// `user:password`, as skopeo's `--creds` options take it.
pub fn creds((user, password): (&str, &str)) -> String {
    format!("{user}:{password}")
}

/// The `service` of the token-mode fixture.
pub const SERVICE: &str = "registry.test";

/// The rules both fixtures start with: anyone pulls public/**, alice pulls and pushes team-a/**.
macro_rules! public_and_team_a_rules {
    () => {
        r#"[[rule]]
repos = ["public/**"]
users = ["anonymous", "*"]
allow = ["pull"]

[[rule]]
repos = ["team-a/**"]
users = ["alice"]
allow = ["pull", "push"]
"#
    };
}

/// Team rules (token and docker tests): public/** for all, team-a/** for alice, all for carol.
pub const TEAM_RULES: &str = concat!(
    "\n",
    public_and_team_a_rules!(),
    r#"
[[rule]]
repos = ["**"]
users = ["carol"]
allow = ["pull", "push", "delete"]
"#
);

/// Group rules (access tests): the team rules' first two, group `ci` pulls team-a/** and tools/*,
/// group `admins` (carol) does everything.
pub const GROUP_RULES: &str = concat!(
    r#"
[groups]
ci = ["ci-bot"]
admins = ["carol"]

"#,
    public_and_team_a_rules!(),
    r#"
[[rule]]
repos = ["team-a/**", "tools/*"]
users = ["@ci"]
allow = ["pull"]

[[rule]]
repos = ["**"]
users = ["@admins"]
allow = ["pull", "push", "delete"]
"#
);

/// alice may pull and push team-a/**; carol may do everything; nobody else may pull team-b.
pub const MOUNT_RULES: &str = r#"
[[rule]]
repos = ["team-a/**"]
users = ["alice"]
allow = ["pull", "push"]

[[rule]]
repos = ["**"]
users = ["carol"]
allow = ["pull", "push", "delete"]
"#;

/// The users of the group rules.
pub const GROUP_USERS: &[(&str, &str)] = &[ALICE, BOB, CI, CAROL];
/// The users of the team rules.
pub const TEAM_USERS: &[(&str, &str)] = &[ALICE, BOB, CAROL];

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
