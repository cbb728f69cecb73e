//! Any request target through the router and the query reading: never a panic, and what the
//! gate would forward re-parses to exactly the pairs it decided on (and the same path).
#![no_main]

use http::{HeaderMap, Method, Uri};
use libfuzzer_sys::fuzz_target;
use registry_gate::http::route::{RegistryRequest, Target};
use registry_gate::query::Query;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/v2/{text}").parse::<Uri>() else {
        return;
    };
    let Ok(Target::Registry(route)) = Target::of(uri.path()) else {
        return;
    };
    let Ok(decided) = RegistryRequest::read(&Method::POST, route, &uri, &HeaderMap::new()) else {
        return;
    };
    let forwarded: Uri = decided
        .path_and_query(uri.path())
        .parse()
        .expect("the forwarded target is a valid URI");
    assert_eq!(forwarded.path(), uri.path());
    assert_eq!(Query::of(forwarded.query()), decided.query, "{text}");
});
