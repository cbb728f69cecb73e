//! What a caller may do: the access rules file (`rules`) and the decisions made from it.

pub mod rules;

pub use rules::{AccessControl, AccessError, Action, Decision, Rules};
