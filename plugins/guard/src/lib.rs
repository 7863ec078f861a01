//! Reference plugin: policy over the final desired state. Returns every violation at once;
//! heet prints them all and exits 3 with nothing created.
//!
//! Config (`[plugins.config.guard]`), every rule optional:
//! - `max_count_per_role = 10`
//! - `max_size = "large"` with `max_size_except = ["production"]`: no instance bigger than
//!   `large` (nano < micro < small < medium < large < xlarge < 2xlarge < …) outside those envs
//! - `require_tags = ["owner"]`: every instance carries these tags
//! - `closed_ports = [22, 5432]` with `open_roles = ["bastion"]`: no security group opens
//!   these ports to the whole internet (`0.0.0.0/0`), except the groups of those roles

use std::collections::BTreeMap;
use std::sync::OnceLock;

use heet_sdk::{Configure, DesiredState, Guard, Violation};

heet_sdk::bindings!(
    world: "package heet-plugins:guard;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/guard@0.1.2;
        }",
    wit: "../../wit",
);

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub max_count_per_role: Option<u32>,
    pub max_size: Option<String>,
    #[serde(default)]
    pub max_size_except: Vec<String>,
    #[serde(default)]
    pub require_tags: Vec<String>,
    #[serde(default)]
    pub closed_ports: Vec<u16>,
    #[serde(default)]
    pub open_roles: Vec<String>,
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Rank of an instance size (`t3.<size>`); `None` for sizes this plugin does not know.
pub fn size_rank(size: &str) -> Option<u32> {
    const SMALL: [&str; 6] = ["nano", "micro", "small", "medium", "large", "xlarge"];
    if let Some(i) = SMALL.iter().position(|s| *s == size) {
        return Some(i as u32);
    }
    if size == "metal" {
        return Some(10_000);
    }
    // `2xlarge`, `24xlarge`, ...: bigger than xlarge, ordered by the multiplier.
    let n: u32 = size.strip_suffix("xlarge")?.parse().ok()?;
    Some(5 + n)
}

impl Policy {
    pub fn check(&self, state: &DesiredState) -> Vec<Violation> {
        let mut violations = Vec::new();
        let violation = |rule: &str, message: String, role: &str| Violation {
            rule: rule.to_owned(),
            message,
            role: Some(role.to_owned()),
        };

        if let Some(max) = self.max_count_per_role {
            let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
            for i in &state.instances {
                *counts.entry(&i.role).or_default() += 1;
            }
            for (role, n) in counts.into_iter().filter(|(_, n)| *n > max) {
                violations.push(violation(
                    "max-count-per-role",
                    format!("{n} instances, more than the {max} allowed"),
                    role,
                ));
            }
        }

        if let Some(max) = &self.max_size
            && !self.max_size_except.contains(&state.env)
        {
            let max_rank = size_rank(max).unwrap_or(u32::MAX);
            let mut seen = Vec::new();
            for i in &state.instances {
                let size = i.instance_type.split_once('.').map_or("", |(_, s)| s);
                let too_big = size_rank(size).is_none_or(|r| r > max_rank);
                if too_big && !seen.contains(&(&i.role, &i.instance_type)) {
                    seen.push((&i.role, &i.instance_type));
                    violations.push(violation(
                        "max-size",
                        if self.max_size_except.is_empty() {
                            format!("{} is bigger than {max}", i.instance_type)
                        } else {
                            format!(
                                "{} is bigger than {max}, allowed only in {}",
                                i.instance_type,
                                self.max_size_except.join(", ")
                            )
                        },
                        &i.role,
                    ));
                }
            }
        }

        for key in &self.require_tags {
            let mut roles: Vec<&str> = state
                .instances
                .iter()
                .filter(|i| !i.tags.iter().any(|t| &t.key == key))
                .map(|i| i.role.as_str())
                .collect();
            roles.dedup();
            for role in roles {
                violations.push(violation(
                    "require-tags",
                    format!("instances lack the tag {key:?}"),
                    role,
                ));
            }
        }

        for rule in &state.firewall {
            if rule.cidr.as_deref() == Some("0.0.0.0/0")
                && self.closed_ports.contains(&rule.port)
                && !self.open_roles.contains(&rule.role)
            {
                violations.push(violation(
                    "closed-ports",
                    format!(
                        "port {} is open to 0.0.0.0/0; only {} may open it to the internet",
                        rule.port,
                        if self.open_roles.is_empty() {
                            "no role".to_owned()
                        } else {
                            self.open_roles.join(", ")
                        }
                    ),
                    &rule.role,
                ));
            }
        }
        violations
    }
}

pub struct GuardPlugin;

impl Configure for GuardPlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let policy: Policy = heet_sdk::parse_config(config_json)?;
        if let Some(max) = &policy.max_size
            && size_rank(max).is_none()
        {
            return Err(vec![format!(
                "max_size {max:?} is not an instance size such as \"large\""
            )]);
        }
        let _ = POLICY.set(policy);
        Ok(())
    }
}

impl Guard for GuardPlugin {
    fn validate(state: &DesiredState) -> Vec<Violation> {
        POLICY.get_or_init(Policy::default).check(state)
    }
}

heet_sdk::export_plugin!(GuardPlugin, bindings, [configure, guard]);

#[cfg(test)]
mod tests {
    use super::*;
    use heet_sdk::testing::{self, tag};
    use heet_sdk::{DesiredInstance, IngressRule};

    fn instance(
        role: &str,
        index: u32,
        instance_type: &str,
        tags: &[(&str, &str)],
    ) -> DesiredInstance {
        let mut i = testing::desired_instance(role, index, instance_type);
        i.tags = tags.iter().map(|(k, v)| tag(k, v)).collect();
        i
    }

    fn state(env: &str, instances: Vec<DesiredInstance>) -> DesiredState {
        testing::state("shop", env, instances)
    }

    #[test]
    fn sizes_are_ordered() {
        let ranks: Vec<_> = [
            "nano", "micro", "small", "medium", "large", "xlarge", "2xlarge", "24xlarge", "metal",
        ]
        .iter()
        .map(|s| size_rank(s).unwrap())
        .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(size_rank("huge"), None);
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let policy = Policy {
            max_count_per_role: Some(1),
            max_size: Some("large".into()),
            max_size_except: vec!["production".into()],
            require_tags: vec!["owner".into()],
            ..Policy::default()
        };
        let staging = state(
            "staging",
            vec![
                instance("www", 1, "m5.xlarge", &[("owner", "web")]),
                instance("www", 2, "m5.xlarge", &[("owner", "web")]),
                instance("db", 1, "t3.small", &[]),
            ],
        );
        let found = policy.check(&staging);
        let rules: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|v| (v.rule.as_str(), v.role.as_deref()))
            .collect();
        assert_eq!(
            rules,
            [
                ("max-count-per-role", Some("www")),
                ("max-size", Some("www")),
                ("require-tags", Some("db"))
            ]
        );
        assert_eq!(
            found[1].message,
            "m5.xlarge is bigger than large, allowed only in production"
        );

        let mut production = staging.clone();
        production.env = "production".into();
        assert!(
            !policy
                .check(&production)
                .iter()
                .any(|v| v.rule == "max-size")
        );
    }

    fn rule(role: &str, port: u16, cidr: Option<&str>, from_role: Option<&str>) -> IngressRule {
        IngressRule {
            role: role.into(),
            port,
            cidr: cidr.map(Into::into),
            from_role: from_role.map(Into::into),
        }
    }

    #[test]
    fn closed_ports_are_refused_to_the_world_outside_open_roles() {
        let policy = Policy {
            closed_ports: vec![22, 5432],
            open_roles: vec!["bastion".into()],
            ..Policy::default()
        };
        let mut s = state("production", Vec::new());
        s.firewall = vec![
            rule("bastion", 22, Some("0.0.0.0/0"), None),
            rule("db", 5432, None, Some("www")),
            rule("db", 5432, Some("10.0.0.0/8"), None),
            rule("www", 22, Some("0.0.0.0/0"), None),
            rule("www", 443, Some("0.0.0.0/0"), None),
        ];
        let found = policy.check(&s);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "closed-ports");
        assert_eq!(found[0].role.as_deref(), Some("www"));
        assert_eq!(
            found[0].message,
            "port 22 is open to 0.0.0.0/0; only bastion may open it to the internet"
        );
    }

    #[test]
    fn no_policy_allows_everything() {
        assert!(
            Policy::default()
                .check(&state(
                    "staging",
                    vec![instance("www", 1, "x1e.32xlarge", &[])]
                ))
                .is_empty()
        );
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(
            GuardPlugin::configure(r#"{"max_size": "enormous"}"#).unwrap_err()[0]
                .contains("not an instance size")
        );
        assert!(
            GuardPlugin::configure(r#"{"max_cuont": 1}"#).unwrap_err()[0].contains("unknown field")
        );
    }
}
