//! The one policy: every "may this caller do this?" the gate answers, in one pure function.
//!
//! Owns: [`Policy::decide`], which combines the access rules (authz/rules.rs), the scopes of a
//! presented token, an access key's own grants, immutable tags, mount sources, catalog
//! visibility and read-only admission into a
//! [`Decision`] that names its reason and, when a rules file decided, the rule's line. The
//! request pipeline, the token endpoint, the filtered catalog and `access explain` all ask it,
//! so none restates a part of it. No I/O and no shared state: the caller passes a snapshot of
//! the rules and of the read-only switch. Does not own: who the caller is (auth/), turning a
//! refusal into a response (http/service.rs), or token format (token/).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::rules::{Action, Rules, is_valid_name};
use crate::auth::Identity;

/// One scope entry, as in a token's `access` claim (`repository:team/app:pull,push`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Grant {
    /// Parses `type:name:actions` (actions comma-separated). The name may hold colons.
    pub fn parse_scope(scope: &str) -> Option<Grant> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Grant {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The scope string of this grant.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }

    fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

/// Who is asking, as the policy sees them.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub identity: &'a Identity,
    /// The scopes of the token the request carried (token mode); `None` without a token.
    pub token: Option<&'a [Grant]>,
}

impl<'a> Ask<'a> {
    /// A request that is not part of an upload.
    pub fn request(action: Action, repo: &'a str) -> Self {
        Ask::Request {
            action,
            repo,
            part: Part::Other,
        }
    }
}

impl<'a> Caller<'a> {
    /// A caller known by name or as anonymous, without a token (the token endpoint, `explain`).
    pub fn plain(identity: &'a Identity) -> Self {
        Caller {
            identity,
            token: None,
        }
    }
}

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// A request doing `action` on `repo` (as `part` of a push): the rules, the token's scopes
    /// and, for writes, the read-only switch must all allow it.
    Request {
        action: Action,
        repo: &'a str,
        part: Part<'a>,
    },
    /// Reading a cross-repository mount's source: pull on `from`, by the rules and the token.
    MountSource { from: &'a str },
    /// Listing the catalog: the token (if any) must carry `registry:catalog:*`, and an
    /// anonymous caller must be granted pull somewhere.
    Catalog,
    /// Whether the rules alone grant `action` on `repo` (a valid name): for catalog entries,
    /// token scopes being issued, and `access explain`. For an access key: its own grants.
    Grant { action: Action, repo: &'a str },
    /// Moving or deleting tag `tag` of `repo`, which points at `current` now (`None`: no such
    /// tag) and would point at `new` (`None`: deleted). Asked after the request itself was
    /// allowed: a tag an `[[immutable]]` entry covers may be created, and pushed again with the
    /// same digest, but never moved or deleted.
    Retag {
        repo: &'a str,
        tag: &'a str,
        current: Option<&'a str>,
        new: Option<&'a str>,
    },
}

/// Why a decision went the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A rule grants it (its line is in [`Decision::rule`]).
    Rule,
    /// No rules file: every authenticated user may do everything.
    NoRulesFile,
    /// No rule grants it (or, without a rules file, the caller is anonymous).
    NoRule,
    /// The rules allow it but the token presented does not carry the scope.
    TokenScope,
    /// A write while the registry is read-only for maintenance.
    ReadOnly,
    /// Not a valid repository name.
    InvalidName,
    /// An access key's own grants decided (they alone, never the rules).
    Key,
    /// An `[[immutable]]` entry decided (its line is in [`Decision::rule`]).
    Immutable,
    /// No `[[immutable]]` entry covers the tag.
    MutableTag,
}

/// A decision, its reason, and the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// Line of the rule that granted it, when a rules file decided.
    pub rule: Option<usize>,
}

impl Decision {
    fn deny(reason: Reason) -> Self {
        Decision {
            allowed: false,
            reason,
            rule: None,
        }
    }
}

/// Which pushes are in flight (ops/maintenance.rs keeps track).
pub trait PushesInFlight: Sync {
    /// `repo` has a push in flight: its manifest may still come.
    fn push_in_flight(&self, repo: &str) -> bool;
    /// Upload session `session` of `repo` is open.
    fn session_open(&self, repo: &str, session: &str) -> bool;
}

/// No push in flight anywhere.
pub struct NoPushes;

impl PushesInFlight for NoPushes {
    fn push_in_flight(&self, _: &str) -> bool {
        false
    }
    fn session_open(&self, _: &str, _: &str) -> bool {
        false
    }
}

/// Which part of a push a write is, for read-only admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// Starting an upload (or a mount).
    NewUpload,
    /// A request on an open upload session.
    Session(&'a str),
    /// Anything else: a manifest, a delete, a pull.
    Other,
}

/// The read-only switch as the policy sees it.
#[derive(Clone, Copy)]
pub struct ReadOnly<'a> {
    pub on: bool,
    /// Pushes in flight may finish while read-only.
    pub pushes: &'a dyn PushesInFlight,
}

impl ReadOnly<'_> {
    /// The switch is off.
    pub const OFF: ReadOnly<'static> = ReadOnly {
        on: false,
        pushes: &NoPushes,
    };
}

/// A snapshot of everything a decision depends on.
pub struct Policy<'a> {
    /// `None`: no rules file is configured.
    pub rules: Option<Arc<Rules>>,
    pub read_only: ReadOnly<'a>,
}

impl Policy<'_> {
    /// Decides `ask` for `caller`.
    pub fn decide(&self, caller: Caller<'_>, ask: Ask<'_>) -> Decision {
        match ask {
            Ask::Grant { repo, .. } | Ask::MountSource { from: repo } if !is_valid_name(repo) => {
                Decision::deny(Reason::InvalidName)
            }
            Ask::Grant { action, repo } => self.rules_decide(caller.identity, action, repo),
            Ask::Retag {
                repo,
                tag,
                current,
                new,
            } => match self.immutable_line(repo, tag) {
                None => Decision {
                    allowed: true,
                    reason: Reason::MutableTag,
                    rule: None,
                },
                Some(line) => Decision {
                    allowed: current.is_none() || current == new,
                    reason: Reason::Immutable,
                    rule: Some(line),
                },
            },
            Ask::MountSource { from } => self.with_token(caller, Action::Pull, from),
            Ask::Request { action, repo, part } => {
                let d = self.with_token(caller, action, repo);
                if !d.allowed || action == Action::Pull || !self.read_only.on {
                    return d;
                }
                // While read-only: deletes and new uploads are refused; a push already in
                // flight may finish (its open sessions, then its manifest), so turning the
                // switch on never cuts a push in half and the pushes in flight only shrink.
                let pushes = self.read_only.pushes;
                let finishing = match part {
                    Part::NewUpload => false,
                    Part::Session(id) => pushes.session_open(repo, id),
                    Part::Other => pushes.push_in_flight(repo),
                };
                if action == Action::Push && finishing {
                    return d;
                }
                Decision::deny(Reason::ReadOnly)
            }
            Ask::Catalog => {
                if let Some(scopes) = caller.token
                    && !scopes.iter().any(|g| g.allows("registry", "catalog", "*"))
                {
                    return Decision::deny(Reason::TokenScope);
                }
                match (&self.rules, caller.identity) {
                    // A key lists; what it sees is filtered by its grants.
                    (_, Identity::Key(_)) => Decision {
                        allowed: true,
                        reason: Reason::Key,
                        rule: None,
                    },
                    (None, Identity::User(_)) => Decision {
                        allowed: true,
                        reason: Reason::NoRulesFile,
                        rule: None,
                    },
                    (None, Identity::Anonymous) => Decision::deny(Reason::NoRule),
                    (Some(_), Identity::User(_)) => Decision {
                        // Every user may list; what they see is filtered entry by entry.
                        allowed: true,
                        reason: Reason::Rule,
                        rule: None,
                    },
                    (Some(rules), who) => match rules.first_grant_of(who, Action::Pull) {
                        Some(line) => Decision {
                            allowed: true,
                            reason: Reason::Rule,
                            rule: Some(line),
                        },
                        None => Decision::deny(Reason::NoRule),
                    },
                }
            }
        }
    }

    /// The rules, then the token's scope.
    fn with_token(&self, caller: Caller<'_>, action: Action, repo: &str) -> Decision {
        let d = self.rules_decide(caller.identity, action, repo);
        if !d.allowed {
            return d;
        }
        match caller.token {
            Some(scopes)
                if !scopes
                    .iter()
                    .any(|g| g.allows("repository", repo, action.as_str())) =>
            {
                Decision::deny(Reason::TokenScope)
            }
            _ => d,
        }
    }

    /// The line of the `[[immutable]]` entry covering `tag` of `repo`, if any: whether a push
    /// or delete of it needs to know what the tag points at.
    pub fn immutable_line(&self, repo: &str, tag: &str) -> Option<usize> {
        self.rules.as_ref()?.immutable_line(repo, tag)
    }

    /// True when some `[[immutable]]` entry covers tags of `repo`.
    pub fn has_immutable_tags(&self, repo: &str) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|r| r.has_immutable_tags(repo))
    }

    fn rules_decide(&self, who: &Identity, action: Action, repo: &str) -> Decision {
        // An access key may do what its own grants say, whatever the rules say of anyone.
        if let Identity::Key(key) = who {
            return if key.allows(action, repo) {
                Decision {
                    allowed: true,
                    reason: Reason::Key,
                    rule: None,
                }
            } else {
                Decision::deny(Reason::NoRule)
            };
        }
        match &self.rules {
            Some(rules) => match rules.grant_line(who, action, repo) {
                Some(line) => Decision {
                    allowed: true,
                    reason: Reason::Rule,
                    rule: Some(line),
                },
                None => Decision::deny(Reason::NoRule),
            },
            None => match who {
                Identity::User(_) => Decision {
                    allowed: true,
                    reason: Reason::NoRulesFile,
                    rule: None,
                },
                Identity::Anonymous | Identity::Key(_) => Decision::deny(Reason::NoRule),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const RULES: &str = r#"
[groups]
ci = ["ci-bot"]

[[rule]]
repos = ["public/**"]
users = ["anonymous", "*"]
allow = ["pull"]

[[rule]]
repos = ["team-a/**"]
users = ["alice", "@ci"]
allow = ["pull", "push"]

[[rule]]
repos = ["team-b/secret"]
users = ["bob"]
allow = ["pull", "push", "delete"]
"#;

    fn rules() -> Option<Arc<Rules>> {
        Some(Arc::new(
            Rules::parse(RULES, Path::new("rules.toml")).unwrap(),
        ))
    }

    fn user(name: &str) -> Identity {
        if name == "anonymous" {
            Identity::Anonymous
        } else {
            Identity::User(name.into())
        }
    }

    fn scopes(list: &[&str]) -> Vec<Grant> {
        list.iter().filter_map(|s| Grant::parse_scope(s)).collect()
    }

    use super::ReadOnly;
    use Action::{Delete, Pull, Push};
    use Reason::{InvalidName, NoRule, NoRulesFile, Rule, TokenScope};

    /// Users × asks, each row naming the expected decision.
    #[test]
    fn rules_table() {
        let policy = Policy {
            rules: rules(),
            read_only: ReadOnly::OFF,
        };
        let rows: &[(&str, Ask, bool, Reason, Option<usize>)] = &[
            (
                "anonymous",
                Ask::request(Pull, "public/x"),
                true,
                Rule,
                Some(5),
            ),
            (
                "anonymous",
                Ask::request(Push, "public/x"),
                false,
                NoRule,
                None,
            ),
            (
                "anonymous",
                Ask::request(Pull, "team-a/app"),
                false,
                NoRule,
                None,
            ),
            (
                "alice",
                Ask::request(Pull, "public/x/y"),
                true,
                Rule,
                Some(5),
            ),
            (
                "alice",
                Ask::request(Push, "team-a/app"),
                true,
                Rule,
                Some(10),
            ),
            (
                "alice",
                Ask::request(Push, "team-a/sub/app"),
                true,
                Rule,
                Some(10),
            ),
            // `team-a/**` does not match `team-a` itself.
            ("alice", Ask::request(Push, "team-a"), false, NoRule, None),
            (
                "alice",
                Ask::request(Delete, "team-a/app"),
                false,
                NoRule,
                None,
            ),
            (
                "alice",
                Ask::request(Pull, "team-b/secret"),
                false,
                NoRule,
                None,
            ),
            (
                "ci-bot",
                Ask::request(Push, "team-a/app"),
                true,
                Rule,
                Some(10),
            ),
            (
                "bob",
                Ask::request(Delete, "team-b/secret"),
                true,
                Rule,
                Some(15),
            ),
            (
                "bob",
                Ask::request(Pull, "team-b/other"),
                false,
                NoRule,
                None,
            ),
            // Mount sources: pull on the source, and a valid name.
            (
                "alice",
                Ask::MountSource {
                    from: "team-b/secret",
                },
                false,
                NoRule,
                None,
            ),
            (
                "alice",
                Ask::MountSource {
                    from: "team-a/other",
                },
                true,
                Rule,
                Some(10),
            ),
            (
                "alice",
                Ask::MountSource {
                    from: "team-a/../team-b/secret",
                },
                false,
                InvalidName,
                None,
            ),
            (
                "alice",
                Ask::MountSource { from: "Team-A/x" },
                false,
                InvalidName,
                None,
            ),
            (
                "bob",
                Ask::MountSource {
                    from: "team-b/secret",
                },
                true,
                Rule,
                Some(15),
            ),
            // The catalog: any user lists (filtered); anonymous only with some pull grant.
            ("alice", Ask::Catalog, true, Rule, None),
            ("anonymous", Ask::Catalog, true, Rule, Some(5)),
            (
                "bob",
                Ask::Grant {
                    action: Pull,
                    repo: "team-a/app",
                },
                false,
                NoRule,
                None,
            ),
            (
                "alice",
                Ask::Grant {
                    action: Pull,
                    repo: "team-a/app",
                },
                true,
                Rule,
                Some(10),
            ),
            (
                "alice",
                Ask::Grant {
                    action: Pull,
                    repo: "team-a/App",
                },
                false,
                InvalidName,
                None,
            ),
        ];
        for (who, ask, allowed, reason, rule) in rows {
            let identity = user(who);
            let d = policy.decide(Caller::plain(&identity), *ask);
            assert_eq!(
                d,
                Decision {
                    allowed: *allowed,
                    reason: *reason,
                    rule: *rule
                },
                "{who} {ask:?}"
            );
        }
    }

    #[test]
    fn without_a_rules_file_users_may_everything_and_anonymous_nothing() {
        let policy = Policy {
            rules: None,
            read_only: ReadOnly::OFF,
        };
        for action in [Pull, Push, Delete] {
            let alice = user("alice");
            let d = policy.decide(Caller::plain(&alice), Ask::request(action, "any/x"));
            assert_eq!((d.allowed, d.reason), (true, NoRulesFile));
            let anon = user("anonymous");
            let d = policy.decide(Caller::plain(&anon), Ask::request(action, "any/x"));
            assert_eq!((d.allowed, d.reason), (false, NoRule));
        }
        let anon = user("anonymous");
        assert!(!policy.decide(Caller::plain(&anon), Ask::Catalog).allowed);
    }

    #[test]
    fn token_scopes_narrow_what_the_rules_allow() {
        let policy = Policy {
            rules: rules(),
            read_only: ReadOnly::OFF,
        };
        let alice = user("alice");
        let token = scopes(&[
            "repository:team-a/app:pull,push",
            "repository:team-a/lib:pull",
        ]);
        let caller = Caller {
            identity: &alice,
            token: Some(&token),
        };
        let rows: &[(Ask, bool, Reason)] = &[
            (Ask::request(Push, "team-a/app"), true, Rule),
            (Ask::request(Push, "team-a/lib"), false, TokenScope),
            (Ask::request(Pull, "team-a/other"), false, TokenScope),
            // The token never adds to the rules.
            (Ask::request(Pull, "team-b/secret"), false, NoRule),
            (Ask::MountSource { from: "team-a/lib" }, true, Rule),
            (
                Ask::MountSource {
                    from: "team-a/other",
                },
                false,
                TokenScope,
            ),
            (Ask::Catalog, false, TokenScope),
            // Grants are the rules' alone.
            (
                Ask::Grant {
                    action: Push,
                    repo: "team-a/other",
                },
                true,
                Rule,
            ),
        ];
        for (ask, allowed, reason) in rows {
            let d = policy.decide(caller, *ask);
            assert_eq!((d.allowed, d.reason), (*allowed, *reason), "{ask:?}");
        }
        let with_catalog = scopes(&["registry:catalog:*"]);
        let d = policy.decide(
            Caller {
                identity: &alice,
                token: Some(&with_catalog),
            },
            Ask::Catalog,
        );
        assert!(d.allowed);
        let star = scopes(&["repository:team-a/app:*"]);
        let d = policy.decide(
            Caller {
                identity: &alice,
                token: Some(&star),
            },
            Ask::request(Push, "team-a/app"),
        );
        assert!(d.allowed);
    }

    fn session<'a>(repo: &'a str, id: &'a str) -> Ask<'a> {
        Ask::Request {
            action: Push,
            repo,
            part: Part::Session(id),
        }
    }

    #[test]
    fn read_only_refuses_writes_but_lets_pushes_in_flight_finish() {
        struct Busy;
        impl PushesInFlight for Busy {
            fn push_in_flight(&self, repo: &str) -> bool {
                repo == "team-a/busy"
            }
            fn session_open(&self, repo: &str, session: &str) -> bool {
                repo == "team-a/busy" && session == "s1"
            }
        }
        let policy = Policy {
            rules: rules(),
            read_only: ReadOnly {
                on: true,
                pushes: &Busy,
            },
        };
        let alice = user("alice");
        let bob = user("bob");
        let rows: &[(&Identity, Ask, bool, Reason)] = &[
            (&alice, Ask::request(Pull, "team-a/app"), true, Rule),
            (
                &alice,
                Ask::request(Push, "team-a/app"),
                false,
                Reason::ReadOnly,
            ),
            (&alice, Ask::request(Push, "team-a/busy"), true, Rule),
            (&alice, session("team-a/busy", "s1"), true, Rule),
            // Even a repository with a push in flight starts no new upload, and a session
            // that is not open does not continue: the pushes in flight only shrink.
            (
                &alice,
                Ask::Request {
                    action: Push,
                    repo: "team-a/busy",
                    part: Part::NewUpload,
                },
                false,
                Reason::ReadOnly,
            ),
            (
                &alice,
                session("team-a/busy", "s2"),
                false,
                Reason::ReadOnly,
            ),
            (&alice, session("team-a/app", "s1"), false, Reason::ReadOnly),
            (
                &bob,
                Ask::request(Delete, "team-b/secret"),
                false,
                Reason::ReadOnly,
            ),
            // Authorization comes first: a refused user learns nothing about maintenance.
            (&alice, Ask::request(Push, "team-b/secret"), false, NoRule),
        ];
        for (who, ask, allowed, reason) in rows {
            let d = policy.decide(Caller::plain(who), *ask);
            assert_eq!(
                (d.allowed, d.reason),
                (*allowed, *reason),
                "{who:?} {ask:?}"
            );
        }
    }

    const IMMUTABLE_RULES: &str = r#"
[[rule]]
repos = ["**"]
users = ["alice"]
allow = ["pull", "push", "delete"]

[[immutable]]
repos = ["team-a/**"]
tags = ["v*", "release-*"]
"#;

    #[test]
    fn an_access_key_may_do_its_own_grants_and_nothing_more() {
        use crate::auth::keys::KeyIdentity;
        let key = Identity::Key(Arc::new(KeyIdentity::new(
            "ci",
            vec!["team-a/**".into()],
            [Pull, Push].into(),
        )));
        // Rules that grant everyone everything change nothing for a key; no rules file either.
        let everything = Rules::parse(
            "[[rule]]\nrepos = [\"**\"]\nusers = [\"*\", \"anonymous\", \"key+ci\"]\nallow = [\"pull\", \"push\", \"delete\"]\n",
            Path::new("r.toml"),
        )
        .unwrap();
        for rules in [rules(), Some(Arc::new(everything)), None] {
            let policy = Policy {
                rules,
                read_only: ReadOnly::OFF,
            };
            let rows: &[(Ask, bool, Reason)] = &[
                (Ask::request(Push, "team-a/app"), true, Reason::Key),
                (Ask::request(Pull, "team-a/x/y"), true, Reason::Key),
                (Ask::request(Delete, "team-a/app"), false, NoRule),
                (Ask::request(Pull, "team-b/secret"), false, NoRule),
                (Ask::request(Pull, "public/x"), false, NoRule),
                (
                    Ask::MountSource {
                        from: "team-b/secret",
                    },
                    false,
                    NoRule,
                ),
                (Ask::MountSource { from: "team-a/lib" }, true, Reason::Key),
                (Ask::Catalog, true, Reason::Key),
                (
                    Ask::Grant {
                        action: Push,
                        repo: "team-a/app",
                    },
                    true,
                    Reason::Key,
                ),
                (
                    Ask::Grant {
                        action: Push,
                        repo: "team-b/app",
                    },
                    false,
                    NoRule,
                ),
            ];
            for (ask, allowed, reason) in rows {
                let d = policy.decide(Caller::plain(&key), *ask);
                assert_eq!((d.allowed, d.reason), (*allowed, *reason), "{ask:?}");
            }
        }
        // A token narrows a key as it narrows a user.
        let policy = Policy {
            rules: None,
            read_only: ReadOnly::OFF,
        };
        let token = scopes(&["repository:team-a/app:pull"]);
        let caller = Caller {
            identity: &key,
            token: Some(&token),
        };
        assert_eq!(
            policy
                .decide(caller, Ask::request(Push, "team-a/app"))
                .reason,
            TokenScope
        );
    }

    #[test]
    fn immutable_tags_may_be_created_and_repushed_but_not_moved_or_deleted() {
        let policy = Policy {
            rules: Some(Arc::new(
                Rules::parse(IMMUTABLE_RULES, Path::new("r.toml")).unwrap(),
            )),
            read_only: ReadOnly::OFF,
        };
        let retag = |repo, tag, current, new| Ask::Retag {
            repo,
            tag,
            current,
            new,
        };
        let (a, b) = (Some("sha256:a"), Some("sha256:b"));
        use Reason::{Immutable, MutableTag};
        let rows: &[(Ask, bool, Reason, Option<usize>)] = &[
            (retag("team-a/app", "v1", None, a), true, Immutable, Some(7)),
            (retag("team-a/app", "v1", a, a), true, Immutable, Some(7)),
            (retag("team-a/app", "v1", a, b), false, Immutable, Some(7)),
            (
                retag("team-a/app", "v1", a, None),
                false,
                Immutable,
                Some(7),
            ),
            (
                retag("team-a/app", "v1", None, None),
                true,
                Immutable,
                Some(7),
            ),
            (
                retag("team-a/x/y", "release-2", a, b),
                false,
                Immutable,
                Some(7),
            ),
            // Not covered: another tag, another repository, a pattern needing more.
            (retag("team-a/app", "latest", a, b), true, MutableTag, None),
            (retag("team-a/app", "1.0", a, b), true, MutableTag, None),
            (retag("team-a/app", "release", a, b), true, MutableTag, None),
            (retag("team-b/app", "v1", a, b), true, MutableTag, None),
            (retag("team-a", "v1", a, b), true, MutableTag, None),
        ];
        let alice = user("alice");
        for (ask, allowed, reason, rule) in rows {
            let d = policy.decide(Caller::plain(&alice), *ask);
            assert_eq!(
                d,
                Decision {
                    allowed: *allowed,
                    reason: *reason,
                    rule: *rule
                },
                "{ask:?}"
            );
        }
        assert!(policy.has_immutable_tags("team-a/app"));
        assert!(!policy.has_immutable_tags("team-b/app"));
        assert_eq!(policy.immutable_line("team-a/app", "v2.0.1"), Some(7));
        assert_eq!(policy.immutable_line("team-a/app", "xv1"), None);
        // Without a rules file, no tag is immutable.
        let none = Policy {
            rules: None,
            read_only: ReadOnly::OFF,
        };
        assert!(
            none.decide(Caller::plain(&alice), retag("team-a/app", "v1", a, b))
                .allowed
        );
    }

    #[test]
    fn immutable_entries_are_checked_with_their_line() {
        let bad = IMMUTABLE_RULES.replace("\"v*\"", "\"v/*\"");
        let e = Rules::parse(&bad, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.toml:9:") && e.contains("v/*"), "{e}");
        let bad = IMMUTABLE_RULES.replace("tags = [\"v*\", \"release-*\"]", "tags = []");
        let e = Rules::parse(&bad, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.toml:7:"), "{e}");
        let r = Rules::parse(IMMUTABLE_RULES, Path::new("r.toml")).unwrap();
        assert_eq!(
            r.describe_immutable(),
            ["line 7: tags v*, release-* on team-a/** are immutable"]
        );
    }

    #[test]
    fn scopes_parse() {
        let g = Grant::parse_scope("repository:reg:5000/a:pull,push").unwrap();
        assert_eq!(g.name, "reg:5000/a");
        assert_eq!(g.actions, ["pull", "push"]);
        assert_eq!(g.scope(), "repository:reg:5000/a:pull,push");
        assert!(Grant::parse_scope("repository::pull").is_none());
        assert!(Grant::parse_scope("nothing").is_none());
    }
}
