//! The official nginx recipe's rule against old docker clients, without look-ahead.
//!
//! The recipe answers 404 on `/v2/` to user agents matching
//! `^(docker\/1\.(3|4|5(?!\.[0-9]-dev))|Go ).*$`: docker 1.3 to 1.5 (their v2 support was broken)
//! except 1.5.x-dev builds, and the Go 1.4-era default agent `Go 1.1 package http`. Modern Go
//! clients send `Go-http-client/1.1` and must pass. Rust's `regex` has no look-ahead, so the
//! same language is written out by hand here.

/// True when the recipe's regex would match this `User-Agent` value.
pub fn is_old_docker_client(user_agent: &[u8]) -> bool {
    if user_agent.starts_with(b"Go ") {
        return true;
    }
    let Some(rest) = user_agent.strip_prefix(b"docker/1.") else {
        return false;
    };
    match rest.first() {
        Some(b'3' | b'4') => true,
        // `5(?!\.[0-9]-dev)`: a 5 not followed by ".<digit>-dev".
        Some(b'5') => {
            !matches!(&rest[1..], [b'.', d, b'-', b'd', b'e', b'v', ..] if d.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_old_docker_client as old;

    #[test]
    fn blocks_what_the_recipe_blocks() {
        for ua in [
            "docker/1.3.0 go/go1.3.3",
            "docker/1.4.1 go/go1.4",
            "docker/1.5.0 go/go1.4.1 git-commit/a8a31ef",
            "docker/1.5.10-dev",
            "docker/1.5.x-dev",
            "docker/1.5",
            "docker/1.30.0",
            "Go 1.1 package http",
        ] {
            assert!(old(ua.as_bytes()), "{ua} should be blocked");
        }
    }

    #[test]
    fn lets_modern_and_dev_builds_through() {
        for ua in [
            "docker/1.5.0-dev go/go1.4",
            "docker/1.5.9-dev",
            "docker/1.6.0 go/go1.4.2",
            "docker/1.2.0",
            "docker/20.10.24 go/go1.19.10 git-commit/5d6db84",
            "Go-http-client/1.1",
            "Go-http-client/2.0",
            "containers/5.24.1 (github.com/containers/image)",
            "skopeo/1.9.3",
            "",
            "Go",
            "docker/1.",
        ] {
            assert!(!old(ua.as_bytes()), "{ua} should pass");
        }
    }
}
