//! Subcommands other than `serve`: thin clients of the modules they report on.

pub mod check;
pub mod htpasswd;
pub mod keys;
