//! Any request path and user agent: routing and the old-client rule must never panic, and a
//! route that parses names a repository that is valid by the spec's grammar.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_gate::http::route;

fuzz_target!(|data: &[u8]| {
    let _ = registry_gate::http::ua::is_old_docker_client(data);
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/v2/{path}");
    if let Ok(r) = route::parse(&path) {
        if let Some(name) = r.repository() {
            assert!(route::is_valid_name(name), "{path} routed to invalid name {name}");
            assert!(!name.contains(".."), "{path}");
        }
    }
});
