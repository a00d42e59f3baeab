//! Who may sign in through SSO and with which role, from the settings and what the
//! OpenID Provider says (email, groups). Pure: the caller verified the ID token.

use crate::store::Role;

/// The console's SSO rules (`serve --oidc-*`), validated once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsoRules {
    /// Email domains allowed to sign in (lower case); empty: any.
    pub allowed_domains: Vec<String>,
    /// IdP groups of which a user must be in at least one; empty: any.
    pub allowed_groups: Vec<String>,
    /// Members of these groups are admins...
    pub admin_groups: Vec<String>,
    /// ...and of these, auditors (admin wins); everyone else is a member.
    pub auditor_groups: Vec<String>,
}

/// Why a verified identity may not sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SsoRefusal {
    #[error("the identity provider gave no verified email, and only some domains are allowed")]
    NoEmail,
    #[error("the email's domain is not allowed to sign in")]
    DomainNotAllowed,
    #[error("the user is in none of the groups allowed to sign in")]
    GroupNotAllowed,
}

impl SsoRefusal {
    /// The reason recorded in the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            SsoRefusal::NoEmail => "no email",
            SsoRefusal::DomainNotAllowed => "domain not allowed",
            SsoRefusal::GroupNotAllowed => "group not allowed",
        }
    }
}

impl SsoRules {
    /// The role of a user with this email and these groups, or why they are refused.
    pub fn role_for(&self, email: Option<&str>, groups: &[String]) -> Result<Role, SsoRefusal> {
        if !self.allowed_domains.is_empty() {
            let email = email.ok_or(SsoRefusal::NoEmail)?;
            let domain = email.rsplit_once('@').map(|(_, d)| d.to_lowercase());
            if !domain.is_some_and(|d| self.allowed_domains.contains(&d)) {
                return Err(SsoRefusal::DomainNotAllowed);
            }
        }
        let in_any = |list: &[String]| groups.iter().any(|g| list.contains(g));
        if !self.allowed_groups.is_empty() && !in_any(&self.allowed_groups) {
            return Err(SsoRefusal::GroupNotAllowed);
        }
        Ok(if in_any(&self.admin_groups) {
            Role::Admin
        } else if in_any(&self.auditor_groups) {
            Role::Auditor
        } else {
            Role::Member
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn roles_and_refusals() {
        let r = SsoRules {
            allowed_domains: v(&["example.com"]),
            allowed_groups: v(&["staff", "ops"]),
            admin_groups: v(&["ops"]),
            auditor_groups: v(&["audit"]),
        };
        let ok = |e, g: &[&str]| r.role_for(Some(e), &v(g));
        assert_eq!(ok("a@example.com", &["ops"]), Ok(Role::Admin));
        assert_eq!(ok("a@EXAMPLE.com", &["staff", "audit"]), Ok(Role::Auditor));
        assert_eq!(ok("a@example.com", &["staff"]), Ok(Role::Member));
        assert_eq!(
            ok("a@evil.com", &["ops"]),
            Err(SsoRefusal::DomainNotAllowed)
        );
        assert_eq!(
            ok("a@example.com", &["audit"]),
            Err(SsoRefusal::GroupNotAllowed)
        );
        assert_eq!(r.role_for(None, &v(&["ops"])), Err(SsoRefusal::NoEmail));
        let open = SsoRules::default();
        assert_eq!(open.role_for(None, &[]), Ok(Role::Member));
    }
}
