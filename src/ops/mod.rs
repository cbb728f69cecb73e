//! Running the gate: metrics, logging, hot reload of files, and the read-only maintenance
//! switch.

pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod reload;
