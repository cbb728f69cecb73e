//! The integration tests, one binary: the gate in front of Debian's real registry, driven by real
//! clients (skopeo, podman, docker, Chromium) and by the command line. `support` holds what the
//! test modules share.

mod support;

mod abuse;
mod access;
mod acme;
mod attack;
mod auth;
mod authz;
mod browser;
mod cli;
mod cors_ui;
mod docker;
mod e2e_skopeo;
mod fleet;
mod htpasswd_cli;
mod ops;
mod proxy;
mod robots;
mod soak;
mod token;
