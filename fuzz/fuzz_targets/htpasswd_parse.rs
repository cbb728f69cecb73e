//! htpasswd text from a file the operator may have edited by hand: parsing must never panic,
//! and verifying against whatever it accepted must not either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_gate::auth::htpasswd::parse;

fuzz_target!(|text: &str| {
    let parsed = parse(text);
    for hash in parsed.users.values() {
        // bcrypt, crypt and apr1 take milliseconds each: they would starve the fuzzer.
        if !hash.is_slow() {
            let _ = hash.verify(b"pw");
        }
        let _ = hash.stored();
    }
});
