//! Per-plugin grants (`[plugins.grants.NAME]`): the hooks a plugin may export, and the roles
//! and environments its hooks are called for. Pure; the plugin set enforces them.
//!
//! A plugin from another org is trusted to be what its publisher built, not to answer
//! whatever it exports: a grant names what it may do, and a plugin exporting more is refused
//! at load, before any hook runs. Outside its roles or environments a hook is not called at
//! all, so the chain passes the value on as if the plugin had no opinion.

use std::collections::BTreeSet;

use super::Hook;
use crate::definition::Location;

/// What one plugin is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Hooks it may export; `configure` always may, named or not.
    pub hooks: BTreeSet<Hook>,
    /// Roles its hooks are called for; `None`: every role.
    pub roles: Option<BTreeSet<String>>,
    /// Environments its hooks are called in; `None`: every one.
    pub envs: Option<BTreeSet<String>>,
    /// Where the grant's table is, for errors about it.
    pub at: Location,
}

impl Grant {
    /// The hooks of `exports` the grant does not allow.
    pub fn refused(&self, exports: &[Hook]) -> Vec<Hook> {
        exports
            .iter()
            .copied()
            .filter(|h| *h != Hook::Configure && !self.hooks.contains(h))
            .collect()
    }

    /// Whether the plugin's hooks are called for `role` in `env`.
    pub fn covers(&self, role: &str, env: &str) -> bool {
        self.in_env(env) && self.roles.as_ref().is_none_or(|r| r.contains(role))
    }

    /// Whether the plugin's hooks are called at all in `env`.
    pub fn in_env(&self, env: &str) -> bool {
        self.envs.as_ref().is_none_or(|e| e.contains(env))
    }

    /// The hook list as heet.toml writes it: `["naming", "cnames"]`.
    pub fn hooks_written(&self) -> String {
        let names: Vec<String> = self
            .hooks
            .iter()
            .map(|h| format!("{:?}", h.interface()))
            .collect();
        format!("[{}]", names.join(", "))
    }
}

/// A hook by its WIT interface name, as grants write it (`user-data`).
pub fn hook_named(name: &str) -> Option<Hook> {
    Hook::ALL.into_iter().find(|h| h.interface() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(hooks: &[Hook], roles: Option<&[&str]>, envs: Option<&[&str]>) -> Grant {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Grant {
            hooks: hooks.iter().copied().collect(),
            roles: roles.map(set),
            envs: envs.map(set),
            at: Location { line: 1, col: 1 },
        }
    }

    #[test]
    fn a_hook_not_granted_is_refused_but_configure_always_may() {
        let g = grant(&[Hook::Naming], None, None);
        assert_eq!(
            g.refused(&[Hook::Configure, Hook::Naming, Hook::UserData]),
            [Hook::UserData]
        );
        assert!(g.refused(&[Hook::Configure, Hook::Naming]).is_empty());
        assert_eq!(g.hooks_written(), r#"["naming"]"#);
    }

    #[test]
    fn roles_and_envs_limit_where_hooks_are_called() {
        let g = grant(&[Hook::Tags], Some(&["www"]), Some(&["staging"]));
        assert!(g.covers("www", "staging"));
        assert!(!g.covers("db", "staging"));
        assert!(!g.covers("www", "production"));
        assert!(!g.in_env("production"));
        let everywhere = grant(&[Hook::Tags], None, None);
        assert!(everywhere.covers("db", "production"));
    }

    #[test]
    fn hooks_are_named_as_their_interfaces() {
        assert_eq!(hook_named("user-data"), Some(Hook::UserData));
        assert_eq!(hook_named("user_data"), None);
        for h in Hook::ALL {
            assert_eq!(hook_named(h.interface()), Some(h));
        }
    }
}
