//! The registry side: forwarding requests (`proxy`), the header rules applied on the way
//! (`headers`), and the filtered catalog the gate composes from the registry's pages
//! (`catalog`).

pub mod catalog;
pub mod headers;
mod pool;
mod proxy;

pub use proxy::{Proxy, UpstreamSetupError};
