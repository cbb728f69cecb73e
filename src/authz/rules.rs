//! Access rules: who may pull, push and delete which repositories.
//!
//! Owns: the rules file (`[auth] access`), its validation with file, line and reason, the
//! decision for (identity, action, repository) with the rule that made it, and keeping the last
//! good rules when a reload fails. Patterns: `*` matches within one path segment, `**` matches
//! any number of segments (zero or more, so `team-a/**` matches `team-a/x` and `team-a/x/y`
//! but, as a whole segment after a slash that must be followed by something, not `team-a`
//! itself: write `team-a` too to include it). Users: a name, `@group`, `*` (any authenticated
//! user), `anonymous` (no credentials). Without a rules file every authenticated user may do
//! everything and anonymous nothing. Does not own: identity (auth/) or routing (http/route.rs).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, RwLock};

use regex::Regex;
use serde::Deserialize;

use crate::config::{FileError, line_of};
use toml::Spanned;

use crate::auth::Identity;
use crate::auth::users::UserTable;

/// The spec's repository-name grammar (written without look-around).
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    Regex::new(&format!("^{component}(?:/{component})*$")).expect("valid regex")
});
/// Longest repository name the registry accepts.
const MAX_NAME: usize = 255;

/// True when `name` is a valid repository name (the distribution spec's grammar).
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME && NAME.is_match(name)
}

/// True when `pattern` is a usable repository pattern: non-empty, no empty segment.
pub fn is_valid_pattern(pattern: &str) -> bool {
    !(pattern.is_empty()
        || pattern.starts_with('/')
        || pattern.ends_with('/')
        || pattern.contains("//"))
}

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull = 0,
    Push = 1,
    Delete = 2,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRules {
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<FileRule>>,
    #[serde(default)]
    immutable: Vec<Spanned<FileImmutable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileImmutable {
    repos: Vec<Spanned<String>>,
    tags: Vec<Spanned<String>>,
}

/// One `[[immutable]]`: tags matching `tags` in repositories matching `repos` are never moved
/// or deleted once they exist. Tags are matched as one segment (`*` within it).
#[derive(Debug, Clone)]
pub struct Immutable {
    /// 1-based line of the `[[immutable]]` in the file.
    pub line: usize,
    pub repos: Vec<String>,
    pub tags: Vec<String>,
}

impl Immutable {
    fn covers_repo(&self, repo: &str) -> bool {
        self.repos.iter().any(|p| glob_match(p, repo))
    }

    fn covers(&self, repo: &str, tag: &str) -> bool {
        self.covers_repo(repo) && self.tags.iter().any(|p| segment_match(p, tag))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    repos: Vec<Spanned<String>>,
    users: Vec<Spanned<String>>,
    allow: Vec<Spanned<String>>,
}

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
    AnyUser,
    Anonymous,
}

/// One `[[rule]]`, validated.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based line of the `[[rule]]` in the file, for explanations.
    pub line: usize,
    repos: Vec<String>,
    subjects: Vec<Subject>,
    allow: BTreeSet<Action>,
}

impl Rule {
    fn applies_to(&self, who: &Identity, groups: &BTreeMap<String, HashSet<String>>) -> bool {
        self.subjects.iter().any(|s| match (s, who) {
            (Subject::Anonymous, Identity::Anonymous) => true,
            (Subject::AnyUser, Identity::User(_)) => true,
            (Subject::User(u), Identity::User(name)) => u.as_str() == &**name,
            (Subject::Group(g), Identity::User(name)) => groups
                .get(g)
                .is_some_and(|members| members.contains(&**name)),
            _ => false,
        })
    }

    fn covers(&self, repo: &str) -> bool {
        self.repos.iter().any(|p| glob_match(p, repo))
    }
}

/// A loaded rules file.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    groups: BTreeMap<String, HashSet<String>>,
    rules: Vec<Rule>,
    immutable: Vec<Immutable>,
}

impl Rules {
    /// Parses and validates rules text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Rules, FileError> {
        let file: FileRules = FileError::parse_toml(text, path)?;
        let invalid =
            |offset: usize, message: String| FileError::invalid(path, text, offset, message);
        let mut rules = Vec::new();
        for spanned in &file.rules {
            let start = spanned.span().start;
            let r = spanned.get_ref();
            if r.repos.is_empty() || r.users.is_empty() || r.allow.is_empty() {
                return Err(invalid(start, "a rule needs repos, users and allow".into()));
            }
            let mut allow = BTreeSet::new();
            for a in &r.allow {
                let action = Action::parse(a.get_ref()).ok_or_else(|| {
                    invalid(
                        a.span().start,
                        format!("unknown action {:?}; use pull, push or delete", a.get_ref()),
                    )
                })?;
                allow.insert(action);
            }
            let mut subjects = Vec::new();
            for u in &r.users {
                let s = u.get_ref().trim();
                let subject = match s {
                    "" => return Err(invalid(u.span().start, "empty user".into())),
                    "*" => Subject::AnyUser,
                    "anonymous" => Subject::Anonymous,
                    g if g.starts_with('@') => {
                        let g = &g[1..];
                        if !file.groups.contains_key(g) {
                            return Err(invalid(u.span().start, format!("unknown group @{g}")));
                        }
                        Subject::Group(g.to_owned())
                    }
                    name => Subject::User(name.to_owned()),
                };
                subjects.push(subject);
            }
            let mut repos = Vec::new();
            for p in &r.repos {
                let pattern = p.get_ref().trim();
                if !is_valid_pattern(pattern) {
                    return Err(invalid(
                        p.span().start,
                        format!(
                            "repository pattern {pattern:?} is not like \"team/*\" or \"team/**\""
                        ),
                    ));
                }
                repos.push(pattern.to_owned());
            }
            rules.push(Rule {
                line: line_of(text, start),
                repos,
                subjects,
                allow,
            });
        }
        let mut immutable = Vec::new();
        for spanned in &file.immutable {
            let start = spanned.span().start;
            let entry = spanned.get_ref();
            if entry.repos.is_empty() || entry.tags.is_empty() {
                return Err(invalid(
                    start,
                    "an immutable entry needs repos and tags".into(),
                ));
            }
            for p in &entry.repos {
                if !is_valid_pattern(p.get_ref().trim()) {
                    return Err(invalid(
                        p.span().start,
                        format!(
                            "repository pattern {:?} is not like \"team/*\" or \"team/**\"",
                            p.get_ref()
                        ),
                    ));
                }
            }
            for spanned_tag in &entry.tags {
                let t = spanned_tag.get_ref().trim();
                let bad = t.is_empty()
                    || t.len() > 128
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*'));
                if bad {
                    return Err(invalid(
                        spanned_tag.span().start,
                        format!("tag pattern {t:?}: use tag characters and `*`, like \"v*\""),
                    ));
                }
            }
            immutable.push(Immutable {
                line: line_of(text, start),
                repos: entry
                    .repos
                    .iter()
                    .map(|p| p.get_ref().trim().to_owned())
                    .collect(),
                tags: entry
                    .tags
                    .iter()
                    .map(|t| t.get_ref().trim().to_owned())
                    .collect(),
            });
        }
        let groups = file
            .groups
            .into_iter()
            .map(|(g, members)| (g, members.into_iter().collect()))
            .collect();
        Ok(Rules {
            groups,
            rules,
            immutable,
        })
    }

    /// Users named in rules or groups that are not in `known`, for a warning at load.
    pub fn unknown_users(&self, known: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for members in self.groups.values() {
            names.extend(members.iter().cloned());
        }
        for r in &self.rules {
            for s in &r.subjects {
                if let Subject::User(u) = s {
                    names.insert(u.clone());
                }
            }
        }
        names.into_iter().filter(|n| !known(n)).collect()
    }

    /// The line of the first rule granting `who` `action` on `repo`, if any.
    pub fn grant_line(&self, who: &Identity, action: Action, repo: &str) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| {
                r.allow.contains(&action) && r.covers(repo) && r.applies_to(who, &self.groups)
            })
            .map(|r| r.line)
    }

    /// The line of the first rule granting `who` `action` on some repository, if any.
    pub fn first_grant_of(&self, who: &Identity, action: Action) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.allow.contains(&action) && r.applies_to(who, &self.groups))
            .map(|r| r.line)
    }

    /// What `who` may do, as (actions, repository patterns) per applying rule.
    pub fn grants_for(&self, who: &Identity) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.applies_to(who, &self.groups))
            .map(|r| {
                let allow: Vec<&str> = r.allow.iter().map(|a| a.as_str()).collect();
                format!(
                    "{} on {} (line {})",
                    allow.join(", "),
                    r.repos.join(", "),
                    r.line
                )
            })
            .collect()
    }

    /// The line of the first `[[immutable]]` entry covering `tag` in `repo`, if any.
    pub fn immutable_line(&self, repo: &str, tag: &str) -> Option<usize> {
        self.immutable
            .iter()
            .find(|i| i.covers(repo, tag))
            .map(|i| i.line)
    }

    /// True when some `[[immutable]]` entry covers tags of `repo`.
    pub fn has_immutable_tags(&self, repo: &str) -> bool {
        self.immutable.iter().any(|i| i.covers_repo(repo))
    }

    /// The `[[immutable]]` entries, one line each, for `check` and `access explain`.
    pub fn describe_immutable(&self) -> Vec<String> {
        self.immutable
            .iter()
            .map(|i| {
                format!(
                    "line {}: tags {} on {} are immutable",
                    i.line,
                    i.tags.join(", "),
                    i.repos.join(", ")
                )
            })
            .collect()
    }

    /// A human summary of the rules, one line a rule, for `registry-gate check`.
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let who: Vec<String> = r
                    .subjects
                    .iter()
                    .map(|s| match s {
                        Subject::User(u) => u.clone(),
                        Subject::Group(g) => {
                            let mut m: Vec<&String> = self
                                .groups
                                .get(g)
                                .map(|m| m.iter().collect())
                                .unwrap_or_default();
                            m.sort();
                            format!(
                                "@{g} ({})",
                                m.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                            )
                        }
                        Subject::AnyUser => "any authenticated user".into(),
                        Subject::Anonymous => "anonymous".into(),
                    })
                    .collect();
                let allow: Vec<&str> = r.allow.iter().map(|a| a.as_str()).collect();
                format!(
                    "line {}: {} may {} on {}",
                    r.line,
                    who.join(", "),
                    allow.join(", "),
                    r.repos.join(", ")
                )
            })
            .collect()
    }
}

/// Matches a repository name against a pattern of `/`-separated segments, where a segment
/// `**` matches zero or more segments and `*` inside a segment matches any characters but `/`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    match_segments(&p, &n)
}

fn match_segments(p: &[&str], n: &[&str]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((&"**", rest)) => {
            // `a/**` needs at least one segment after `a`; `**` in the middle may match none.
            let min = usize::from(rest.is_empty());
            (min..=n.len()).any(|k| match_segments(rest, &n[k..]))
        }
        Some((seg, rest)) => match n.split_first() {
            Some((first, n_rest)) => segment_match(seg, first) && match_segments(rest, n_rest),
            None => false,
        },
    }
}

/// `*` matches any run of characters within one segment.
fn segment_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The rules in force, replaceable at run time. `None` rules mean: no rules file.
pub struct AccessControl {
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<Rules>>>,
}

impl AccessControl {
    /// Loads the rules file, if one is configured.
    pub fn load(path: Option<PathBuf>) -> Result<Self, FileError> {
        let rules = match &path {
            Some(p) => Some(Arc::new(read(p)?)),
            None => None,
        };
        Ok(AccessControl {
            path,
            current: RwLock::new(rules),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// True when a rules file is in force (otherwise every user may do everything).
    pub fn has_rules(&self) -> bool {
        self.snapshot().is_some()
    }

    /// The rules in force now (`None`: no rules file), for one decision (authz/policy.rs).
    pub fn snapshot(&self) -> Option<Arc<Rules>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file again; on failure the last good rules stay.
    pub fn reload(&self) -> Result<(), FileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let rules = read(path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(rules));
        Ok(())
    }

    /// Logs a warning for each user named in the rules but absent from `users`.
    pub fn warn_unknown_users(&self, users: &UserTable) {
        if let (Some(rules), Some(path)) = (self.snapshot(), &self.path) {
            for u in rules.unknown_users(&|n| users.users.contains_key(n)) {
                tracing::warn!(file = %path.display(), user = %u, "rules name a user who is not in the htpasswd file");
            }
        }
    }
}

/// Reads and parses a rules file.
pub fn read(path: &Path) -> Result<Rules, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Rules::parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[groups]
ci = ["ci-bot", "renovate"]
admins = ["carol"]

[[rule]]
repos = ["public/**"]
users = ["anonymous", "*"]
allow = ["pull"]

[[rule]]
repos = ["team-a/**", "tools/*"]
users = ["alice", "@ci"]
allow = ["pull", "push"]

[[rule]]
repos = ["**"]
users = ["@admins"]
allow = ["pull", "push", "delete"]
"#;

    fn user(n: &str) -> Identity {
        Identity::User(n.into())
    }

    #[test]
    fn globs() {
        assert!(glob_match("team-a/**", "team-a/x"));
        assert!(glob_match("team-a/**", "team-a/x/y"));
        assert!(!glob_match("team-a/**", "team-a"));
        assert!(!glob_match("team-a/**", "team-ab/x"));
        assert!(glob_match("tools/*", "tools/x"));
        assert!(!glob_match("tools/*", "tools/x/y"));
        assert!(glob_match("**", "a"));
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("a/**/z", "a/z"));
        assert!(glob_match("a/**/z", "a/b/c/z"));
        assert!(glob_match("team-*/app", "team-b/app"));
        assert!(!glob_match("team-*/app", "team-b/x/app"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn the_issue_example_decides_as_documented() {
        let r = Rules::parse(EXAMPLE, Path::new("access.toml")).unwrap();
        let anon = Identity::Anonymous;
        assert!(r.grant_line(&anon, Action::Pull, "public/x").is_some());
        assert!(r.grant_line(&anon, Action::Push, "public/x").is_none());
        assert!(r.grant_line(&anon, Action::Pull, "team-a/x").is_none());
        assert!(
            r.grant_line(&user("bob"), Action::Pull, "public/x/y")
                .is_some()
        );
        assert!(
            r.grant_line(&user("alice"), Action::Push, "team-a/sub/app")
                .is_some()
        );
        assert!(
            r.grant_line(&user("alice"), Action::Delete, "team-a/app")
                .is_none()
        );
        assert!(
            r.grant_line(&user("alice"), Action::Pull, "team-b/app")
                .is_none()
        );
        assert!(
            r.grant_line(&user("renovate"), Action::Push, "tools/x")
                .is_some()
        );
        assert!(
            r.grant_line(&user("renovate"), Action::Push, "tools/x/y")
                .is_none()
        );
        assert_eq!(
            r.grant_line(&user("carol"), Action::Delete, "anything/here"),
            Some(16)
        );
        assert_eq!(
            r.grant_line(&user("alice"), Action::Push, "team-a/x"),
            Some(11)
        );
        assert_eq!(r.first_grant_of(&anon, Action::Pull), Some(6));
        assert_eq!(r.first_grant_of(&anon, Action::Push), None);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = EXAMPLE.replace(
            "allow = [\"pull\", \"push\"]",
            "allow = [\"pull\", \"pish\"]",
        );
        let e = Rules::parse(&bad, Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.toml:14:") && e.contains("pish"), "{e}");
        let bad = EXAMPLE.replace("@ci", "@cj");
        let e = Rules::parse(&bad, Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.toml:13:") && e.contains("@cj"), "{e}");
        let e = Rules::parse("[[rule]]\nrepo = [\"x\"]\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("repo") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn the_example_rules_file_parses() {
        let r = Rules::parse(
            include_str!("../../examples/access.toml"),
            Path::new("examples/access.toml"),
        )
        .unwrap();
        assert_eq!(r.immutable_line("team-a/app", "v1.2"), Some(21));
        assert_eq!(r.immutable_line("team-a/app", "latest"), None);
    }

    #[test]
    fn unknown_users_are_listed() {
        let r = Rules::parse(EXAMPLE, Path::new("a.toml")).unwrap();
        let known = |u: &str| u == "alice" || u == "carol";
        assert_eq!(r.unknown_users(&known), ["ci-bot", "renovate"]);
    }
}
