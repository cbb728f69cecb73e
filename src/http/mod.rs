//! The request side: the pipeline every request goes through (`service`), the one reading of a
//! request the gate decides on (`route`, `origin`), and the answers made before or
//! beside the registry (`cors`, `ua`, `ui`). The query reading itself is crate::query, shared
//! with the modules below.

pub mod cors;
pub mod origin;
pub mod route;
pub mod service;
pub mod ua;
pub mod ui;
