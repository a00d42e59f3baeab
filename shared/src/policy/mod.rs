//! Access policy: default deny; a device is told only about peers it may reach or
//! that may reach it, and the receiver enforces an inbound filter compiled here.
//!
//! Pipeline: [`parse`] text into a [`Policy`], [`validate`] it against an
//! [`Inventory`], [`compile`] it into per-device peer sets and filter rules, and
//! answer "who can reach whom" with [`check`] and [`diff`]. All pure and deterministic.

pub mod check;
pub mod compile;
pub mod edit;
mod json;
pub mod model;
pub mod parse;
mod resolve;
mod routes;
pub mod validate;

pub use check::{check, diff, diff_counts, rule_changes, rule_summary, EdgeChange};
pub use compile::{compile, route_auto_approved, Compiled, DevicePolicy, FilterRule, RouteGrant};
pub use edit::{Edit, EditError, Outline, RuleSpec};
pub use model::*;
pub use validate::{tag_owner_allows, validate};

impl Policy {
    /// Parses without an inventory: syntax and shape only.
    pub fn parse(text: &str) -> Result<Policy, Vec<PolicyError>> {
        parse::parse(text)
    }

    /// Parses and checks against the devices that exist; every reason is listed.
    pub fn parse_and_validate(text: &str, inv: &Inventory) -> Result<Policy, Vec<PolicyError>> {
        let p = parse::parse(text)?;
        validate(&p, inv)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests;
