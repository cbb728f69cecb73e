//! The request side: the pipeline every request goes through (`service`), the one reading of a
//! request the gate decides on (`route`, `query`, `origin`), and the answers made before or
//! beside the registry (`cors`, `ua`, `ui`).

pub mod cors;
pub mod origin;
pub mod query;
pub mod route;
pub mod service;
pub mod ua;
pub mod ui;
