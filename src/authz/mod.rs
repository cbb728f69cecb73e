//! What a caller may do: the access rules file (`rules`) and the one policy that decides every
//! question from it (`policy`).

pub mod policy;
pub mod rules;

pub use policy::{Ask, Caller, Decision, Grant, Part, Policy, PushesInFlight, ReadOnly, Reason};
pub use rules::{AccessControl, Action, Rules};
