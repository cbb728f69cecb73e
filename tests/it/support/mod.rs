//! Test support, by concern: the real registry process, the test PKI, the gate, HTTP clients
//! trusting the test CA, the container tools (skopeo, podman, docker), test images, shared
//! fixtures (users, rules) and waiting on conditions. Everything is re-exported here, so a test
//! module says `use crate::support::*;`.
#![allow(dead_code)]

mod acme;
mod clients;
mod container_tools;
mod fixtures;
mod gate;
mod images;
mod pki;
mod registry;
mod wait;

pub use acme::*;
pub use clients::*;
pub use container_tools::*;
pub use fixtures::*;
pub use gate::*;
pub use images::*;
pub use pki::*;
pub use registry::*;
pub use wait::*;
