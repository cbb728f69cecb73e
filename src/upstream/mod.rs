//! The registry side: forwarding requests (`proxy`), the header rules applied on the way
//! (`headers`), and the filtered catalog the gate composes from the registry's pages
//! (`catalog`), and what a tag points at, for immutable tags (`tags`).

pub mod catalog;
pub mod headers;
mod pool;
mod proxy;
pub mod tags;

pub use proxy::{Proxy, UpstreamSetupError};
