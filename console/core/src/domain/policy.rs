//! The console's side of access policies: the built-in default policy, the inventory
//! the policy engine sees (built from device rows), validation of a proposed text with
//! its diff summary, compilation of a snapshot, and the rule that tags must be declared
//! in the policy before enrollment keys or admins may hand them out.

use zmesh_shared::policy::{self, Compiled, InvDevice, Inventory, Policy, PolicyError};
use zmesh_shared::wire::DeviceState;

use super::DomainError;
use crate::store::{ApprovedRoutes, DeviceRow, NetworkSnapshot, OwnerGroups};

pub use crate::store::DEFAULT_POLICY;

/// The policy engine's view of the devices: revoked ones are left out (they never
/// come back); pending ones are present but inactive; tags get their `tag:` prefix.
/// Without routes: validating a policy text does not depend on them.
pub fn inventory(devices: &[DeviceRow], owners: &OwnerGroups) -> Inventory {
    inventory_with_routes(devices, owners, &ApprovedRoutes::new())
}

/// The inventory of a snapshot, with each device's approved routes (what compiles
/// into route grants and forwarding rules).
pub fn snapshot_inventory(snap: &NetworkSnapshot) -> Inventory {
    inventory_with_routes(&snap.devices, &snap.owner_groups, &snap.routes)
}

pub fn inventory_with_routes(
    devices: &[DeviceRow],
    owners: &OwnerGroups,
    routes: &ApprovedRoutes,
) -> Inventory {
    Inventory {
        devices: devices
            .iter()
            .filter(|d| d.state != DeviceState::Revoked)
            .map(|d| InvDevice {
                routes: routes.get(&d.id).cloned().unwrap_or_default(),
                id: d.id,
                name: d.name.clone(),
                // `user:NAME` owners are people: `user:EMAIL` selectors name them
                owner: d
                    .owner
                    .strip_prefix("user:")
                    .unwrap_or(&d.owner)
                    .to_string(),
                user_owned: d.owner.starts_with("user:"),
                groups: owners
                    .get(&d.owner)
                    .map(|g| g.iter().map(|g| format!("group:{g}")).collect())
                    .unwrap_or_default(),
                tags: d.tags.iter().map(|t| full_tag(t)).collect(),
                overlay_v4: d.overlay_v4,
                overlay_v6: d.overlay_v6,
                // Key expiry is not a revision change, so it is left to the map builder:
                // compiling per revision stays deterministic.
                active: d.state == DeviceState::Active,
            })
            .collect(),
    }
}

pub fn full_tag(t: &str) -> String {
    if t.starts_with("tag:") {
        t.to_string()
    } else {
        format!("tag:{t}")
    }
}

/// What a proposed policy changes relative to the one in force.
pub struct Validated {
    pub policy: Policy,
    /// `N edges added, M removed`.
    pub summary: String,
    /// The rules added and removed (with their descriptions), for the audit event.
    pub rules: RuleChanges,
}

/// Rules added and removed, as the audit event and the diff show them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuleChanges {
    pub added: Vec<policy::RuleSpec>,
    pub removed: Vec<policy::RuleSpec>,
}

impl RuleChanges {
    pub fn between(old: &Policy, new: &Policy) -> Self {
        let (added, removed) = policy::rule_changes(old, new);
        RuleChanges { added, removed }
    }
}

/// Parses and validates `text` against `devices`, and summarises the edges and rules
/// it changes relative to `current` (the policy in force). Every problem is returned.
pub fn validate(
    text: &str,
    devices: &[DeviceRow],
    owners: &OwnerGroups,
    current: &str,
) -> Result<Validated, Vec<PolicyError>> {
    let inv = inventory(devices, owners);
    let new = Policy::parse_and_validate(text, &inv)?;
    let (summary, rules) = match Policy::parse(current) {
        Ok(old) => (
            // counts only: the list of a full mesh's edges would be N*(N-1) long
            summary_text(policy::diff_counts(&old, &new, &inv)),
            RuleChanges::between(&old, &new),
        ),
        Err(_) => (
            "previous policy unreadable; no edge summary".to_string(),
            RuleChanges::default(),
        ),
    };
    Ok(Validated {
        policy: new,
        summary,
        rules,
    })
}

pub fn summarize(changes: &[policy::EdgeChange]) -> String {
    let added = changes.iter().filter(|c| c.added).count();
    summary_text((added, changes.len() - added))
}

/// `N edges added, M removed`, from (added, removed).
pub fn summary_text((added, removed): (usize, usize)) -> String {
    format!("{added} edges added, {removed} removed")
}

/// Compiles the snapshot's policy. The text was validated when it was saved; should it
/// not parse now (a database edited by hand), nothing is allowed, which fails closed.
pub fn compile_snapshot(snap: &NetworkSnapshot) -> Compiled {
    match Policy::parse(&snap.policy.text) {
        Ok(p) => policy::compile(&p, &snapshot_inventory(snap)),
        Err(errs) => {
            tracing::error!(
                network = %snap.network.id,
                version = snap.policy.version,
                errors = errs.len(),
                "stored policy does not parse; denying everything"
            );
            Compiled::default()
        }
    }
}

/// Every tag in `tags` must be declared in the policy's `tag_owners` (422 naming
/// `field[i]` otherwise). Admin tokens may assign any declared tag; the owner lists
/// restrict who else may (users, tagged devices) once such actors exist.
pub fn check_tags_declared(
    policy_text: &str,
    field: &str,
    tags: &[String],
) -> Result<(), DomainError> {
    if tags.is_empty() {
        return Ok(());
    }
    let p = Policy::parse(policy_text).map_err(|_| {
        DomainError::Internal("the policy in force does not parse; cannot check tags".into())
    })?;
    for (i, t) in tags.iter().enumerate() {
        let full = full_tag(t);
        if !p.tag_owners.contains_key(&full) {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!(
                    "{full} is not declared in the access policy's tag_owners; add it to the policy first"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_allows_all() {
        let p = Policy::parse_and_validate(DEFAULT_POLICY, &Inventory::default()).unwrap();
        assert_eq!(p.rules.len(), 1);
        assert!(p.tag_owners.is_empty());
        assert_eq!(full_tag("web"), "tag:web");
        assert_eq!(full_tag("tag:web"), "tag:web");
        assert!(check_tags_declared(DEFAULT_POLICY, "tags", &[]).is_ok());
        // documented verbatim in docs/policy.md
        let docs = include_str!("../../../../docs/policy.md");
        assert!(
            docs.contains(DEFAULT_POLICY.trim_end()),
            "docs/policy.md shows the default policy"
        );
        match check_tags_declared(DEFAULT_POLICY, "tags", &["web".into()]) {
            Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "tags[0]"),
            other => panic!("{other:?}"),
        }
    }
}
