//! Desired state: what should run for one project and environment, computed purely from the
//! definition and the plugins' answers (through [`Hooks`]), before AWS is asked anything.

use std::collections::BTreeMap;
use std::fmt;

use crate::definition::Definition;
use crate::kinds::network::{self, DesiredNetwork, SubnetRef};
use crate::launch::{self, Setting};
use crate::namespace::{
    self, TAG_DNS, TAG_ENV, TAG_ID, TAG_INDEX, TAG_NAME, TAG_PROJECT, TAG_ROLE, TAG_SETTINGS,
    TAG_SPEC,
};
use crate::plugins::{Hooks, PluginError, api};
use crate::text;

#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub project: String,
    pub env: String,
    pub region: String,
    pub instances: Vec<DesiredInstance>,
    pub network: DesiredNetwork,
    pub iam: crate::kinds::iam::DesiredIam,
    /// The stacks wanted (`kinds::stacks`).
    pub stacks: crate::kinds::stacks::Stacks,
    /// The references to stack outputs not known yet: they are once the stacks are made.
    pub unknown_outputs: std::collections::BTreeSet<String>,
    /// The wanted stacks as they were read when their outputs were resolved (those that
    /// exist): what the plan compares them with, not read again.
    pub stacks_read: Vec<crate::kinds::stacks::ObservedStack>,
    /// A load balancer per role that asks for one (`kinds::balancers`).
    pub balancers: Vec<crate::kinds::balancers::DesiredBalancer>,
}

impl Desired {
    /// Nothing at all: what `down` plans towards.
    pub fn nothing(project: &str, env: &str, region: &str) -> Desired {
        Desired {
            project: project.to_owned(),
            env: env.to_owned(),
            region: region.to_owned(),
            instances: Vec::new(),
            network: DesiredNetwork::default(),
            iam: crate::kinds::iam::DesiredIam::of(project, env, &Default::default()),
            stacks: Default::default(),
            unknown_outputs: Default::default(),
            stacks_read: Vec::new(),
            balancers: Vec::new(),
        }
    }
}

/// An instance's data volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume {
    pub gb: u32,
    /// Not deleted with the instance.
    pub keep: bool,
}

/// The device name of the data volume.
pub const DATA_DEVICE: &str = "/dev/sdf";

/// One instance slot as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredInstance {
    pub role: String,
    pub index: u32,
    /// The slot's stable id (`heet:id`).
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub ami: String,
    /// Never printed: it may carry configuration. Plans show its size and hash.
    pub user_data: String,
    pub key_name: Option<String>,
    pub instance_profile: Option<String>,
    pub subnet: Option<SubnetRef>,
    /// Roles whose heet security group the instance is in (its own, when it has one).
    pub groups: Vec<String>,
    /// Groups named in the definition by id.
    pub security_group_ids: Vec<String>,
    pub volume: Option<Volume>,
    /// Whether the instance has an Elastic IP.
    pub eip: bool,
    /// Its names are A records to its address (`record = "a"`), not CNAMEs.
    pub record_a: bool,
    pub placement: crate::definition::Placement,
    /// Detailed monitoring, when the role says; observed on the instance and changed in place.
    pub monitoring: Option<bool>,
    pub ebs_optimized: bool,
    /// EC2's source/destination check, when the role says; observed on the instance and
    /// changed in place.
    pub source_dest_check: Option<bool>,
    /// Termination protection; its launch setting says what the instance has (EC2's
    /// describe does not), changed in place.
    pub disable_api_termination: bool,
    /// Every tag: heet's own, `Name`, and the plugins'.
    pub tags: BTreeMap<String, String>,
    pub cnames: Vec<String>,
    /// Hash of the launch settings (`heet:spec`).
    pub spec: String,
    /// Each launch setting's own hash (`heet:settings`).
    pub settings: launch::Settings,
    /// The settings whose change replaces the running instance.
    pub replace_on: launch::ReplaceOn,
    /// How the role's instances are replaced.
    pub rolling: crate::rolling::Rolling,
}

/// Two instances answered the same CNAME: a CNAME points at exactly one instance.
#[derive(Debug, thiserror::Error)]
#[error(
    "CNAME {cname:?} is answered for both {first} and {second}: a CNAME points at one instance"
)]
pub struct CnameConflict {
    pub cname: String,
    pub first: String,
    pub second: String,
}

/// The guard hook found violations: nothing may be created. Exit code 3.
#[derive(Debug, thiserror::Error)]
pub struct PolicyDenied {
    pub violations: Vec<(String, api::Violation)>,
}

impl fmt::Display for PolicyDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy denied the plan ({} violation(s))",
            self.violations.len()
        )?;
        for (plugin, v) in self.violations.iter().take(text::MAX_VIOLATIONS) {
            write!(
                f,
                "\n  plugin {plugin}: {}: {}",
                text::shown(&v.rule),
                text::shown(&v.message)
            )?;
            if let Some(role) = &v.role {
                write!(f, " (role {})", text::shown(role))?;
            }
        }
        if self.violations.len() > text::MAX_VIOLATIONS {
            let more = self.violations.len() - text::MAX_VIOLATIONS;
            write!(f, "\n  and {more} more")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Policy(#[from] PolicyDenied),
    #[error(transparent)]
    Conflict(#[from] CnameConflict),
}

/// Asks the hooks, role by role and instance by instance, then the guard over the result.
pub fn compute(
    def: &Definition,
    env: &str,
    region: &str,
    hooks: &mut impl Hooks,
) -> Result<Desired, DesiredError> {
    let project = def.project.as_str();
    let mut network = network::desired(def, env);
    let mut instances = Vec::new();
    let mut balancers = Vec::new();
    for role in &def.roles {
        let role_ctx = api::RoleContext {
            project: project.to_owned(),
            env: env.to_owned(),
            role: role.name.clone(),
            region: region.to_owned(),
            domain: def.domain.clone(),
        };
        let size = hooks.size(
            &role_ctx,
            api::RoleSize {
                instance_type: role.instance_type.clone(),
                count: role.count,
                volume_gb: role.volume_gb,
            },
        )?;
        let volume = size.volume_gb.map(|gb| Volume {
            gb,
            keep: role.volume_keep,
        });
        let groups: Vec<String> = if role.has_group(def) {
            vec![role.name.clone()]
        } else {
            Vec::new()
        };
        let key_name = role.launch_key(project, env);
        let profile = role.launch_profile(project, env);
        if let Some(b) = &role.load_balancer {
            // Its names: the one given, else the cnames hook's for the role as a whole
            // (index 0; instances count from 1).
            let cnames = match &b.name {
                Some(n) => vec![n.clone()],
                None if def.domain.is_some() => hooks.cnames(
                    &api::InstanceContext {
                        project: project.to_owned(),
                        env: env.to_owned(),
                        role: role.name.clone(),
                        index: 0,
                        count: size.count,
                        region: region.to_owned(),
                        domain: def.domain.clone(),
                    },
                    Vec::new(),
                )?,
                None => Vec::new(),
            };
            balancers.push(crate::kinds::balancers::DesiredBalancer {
                role: role.name.clone(),
                name: crate::kinds::balancers::aws_name(project, env, &role.name),
                settings: b.clone(),
                cnames,
                wait_healthy: (role.rolling.health == crate::rolling::Health::TargetGroup)
                    .then_some(role.rolling.timeout),
                placement: crate::kinds::balancers::Placement::of(def, &network),
            });
        }
        for index in 1..=size.count {
            let ctx = api::InstanceContext {
                project: project.to_owned(),
                env: env.to_owned(),
                role: role.name.clone(),
                index,
                count: size.count,
                region: region.to_owned(),
                domain: def.domain.clone(),
            };
            let name = hooks.name(
                &ctx,
                namespace::default_name(project, env, &role.name, index),
            )?;
            let plugin_tags = hooks.tags(&ctx, Vec::new())?;
            let cnames = hooks.cnames(&ctx, Vec::new())?;
            let user_data = hooks.user_data(&ctx, role.user_data.clone())?;

            let id = namespace::slot_id(project, env, &role.name, index);
            let subnet = role
                .subnet_id
                .clone()
                .map(SubnetRef::Id)
                .or_else(|| network::subnet_for(def, &network, index));
            let mut spec_parts = vec![
                role.ami.clone(),
                size.instance_type.clone(),
                user_data.clone(),
                key_name.clone().unwrap_or_default(),
                role.subnet_id.clone().unwrap_or_default(),
                role.security_group_ids.join(","),
            ];
            // Settings added since the first release count only when set, so the spec of an
            // instance that uses none of them, and so the instance, stays as it was.
            if let (None, Some(s)) = (&role.subnet_id, &subnet) {
                spec_parts.push(s.spec_part());
            }
            if !groups.is_empty() {
                spec_parts.push(format!("groups={}", groups.join(",")));
            }
            if let Some(v) = volume {
                spec_parts.push(format!("volume={}:{}", v.gb, v.keep));
            }
            if let Some(p) = &profile {
                spec_parts.push(format!("profile={p}"));
            }
            let placement = role.placement.setting();
            if !placement.is_empty() {
                spec_parts.push(format!("placement={placement}"));
            }
            let flag = |on: bool| if on { "true" } else { "" };
            if role.ebs_optimized {
                spec_parts.push("ebs_optimized".into());
            }
            let protect = role.disable_api_termination.unwrap_or(false);
            if protect {
                spec_parts.push("disable_api_termination".into());
            }
            let spec =
                namespace::spec_hash(&spec_parts.iter().map(String::as_str).collect::<Vec<_>>());
            let subnet_part = match (&role.subnet_id, &subnet) {
                (Some(id), _) => id.clone(),
                (None, Some(s)) => s.spec_part(),
                (None, None) => String::new(),
            };
            let group_part = match (role.security_group_ids.is_empty(), groups.is_empty()) {
                (true, true) => String::new(),
                _ => format!(
                    "{} groups={}",
                    role.security_group_ids.join(","),
                    groups.join(",")
                ),
            };
            let volume_part = volume
                .map(|v| format!("{}:{}", v.gb, v.keep))
                .unwrap_or_default();
            let settings = launch::Settings::new([
                (Setting::Ami, role.ami.as_str()),
                (Setting::InstanceType, size.instance_type.as_str()),
                (Setting::UserData, user_data.as_str()),
                (Setting::KeyName, key_name.as_deref().unwrap_or_default()),
                (Setting::Subnet, subnet_part.as_str()),
                (Setting::SecurityGroups, group_part.as_str()),
                (Setting::Volume, volume_part.as_str()),
                (
                    Setting::InstanceProfile,
                    profile.as_deref().unwrap_or_default(),
                ),
                (Setting::Placement, placement.as_str()),
                (Setting::EbsOptimized, flag(role.ebs_optimized)),
                (Setting::ApiTermination, flag(protect)),
            ]);
            // An address that exists is the first instance's (a sizing hook may answer more).
            let given = role.elastic_ip.clone().filter(|_| index == 1);
            if role.eip || given.is_some() {
                network.addresses.push(network::DesiredAddress {
                    resource: network::address_resource(&role.name, index),
                    slot: id.clone(),
                    instance: name.clone(),
                    given,
                });
            }
            let mut tags: BTreeMap<String, String> =
                plugin_tags.into_iter().map(|t| (t.key, t.value)).collect();
            tags.insert(TAG_PROJECT.into(), project.into());
            tags.insert(TAG_ENV.into(), env.into());
            tags.insert(TAG_ROLE.into(), role.name.clone());
            tags.insert(TAG_INDEX.into(), index.to_string());
            tags.insert(TAG_ID.into(), id.clone());
            tags.insert(TAG_SPEC.into(), spec.clone());
            tags.insert(TAG_SETTINGS.into(), settings.tag());
            tags.insert(TAG_DNS.into(), namespace::dns_hash(&cnames));
            tags.insert(TAG_NAME.into(), name.clone());

            instances.push(DesiredInstance {
                role: role.name.clone(),
                index,
                id,
                name,
                instance_type: size.instance_type.clone(),
                ami: role.ami.clone(),
                user_data,
                key_name: key_name.clone(),
                instance_profile: profile.clone(),
                subnet,
                groups: groups.clone(),
                security_group_ids: role.security_group_ids.clone(),
                volume,
                eip: role.eip || (role.elastic_ip.is_some() && index == 1),
                record_a: role.record_a,
                placement: role.placement.clone(),
                monitoring: role.monitoring,
                ebs_optimized: role.ebs_optimized,
                source_dest_check: role.source_dest_check,
                disable_api_termination: protect,
                tags,
                cnames,
                spec,
                settings,
                replace_on: role.replace_on.clone(),
                rolling: role.rolling,
            });
        }
    }
    check_cnames_unique(&instances)?;
    for b in &balancers {
        for cname in &b.cnames {
            let name = cname.to_ascii_lowercase();
            let held = instances
                .iter()
                .find(|i| i.cnames.iter().any(|c| c.eq_ignore_ascii_case(&name)));
            let other = balancers.iter().find(|o| {
                o.role != b.role && o.cnames.iter().any(|c| c.eq_ignore_ascii_case(&name))
            });
            let first = match (held, other) {
                (Some(i), _) => format!("{}[{}]", i.role, i.index),
                (None, Some(o)) => format!("{}'s balancer", o.role),
                (None, None) => continue,
            };
            return Err(CnameConflict {
                cname: name,
                first,
                second: format!("{}'s balancer", b.role),
            }
            .into());
        }
    }
    let desired = Desired {
        project: project.to_owned(),
        env: env.to_owned(),
        region: region.to_owned(),
        instances,
        network,
        iam: crate::kinds::iam::DesiredIam::of(project, env, &def.iam),
        stacks: def.stacks.clone(),
        unknown_outputs: Default::default(),
        stacks_read: Vec::new(),
        balancers,
    };
    let violations = hooks.guard(&desired.to_wit(def.domain.clone()))?;
    if !violations.is_empty() {
        return Err(PolicyDenied { violations }.into());
    }
    Ok(desired)
}

fn check_cnames_unique(instances: &[DesiredInstance]) -> Result<(), CnameConflict> {
    let mut owner: BTreeMap<String, &DesiredInstance> = BTreeMap::new();
    for i in instances {
        for cname in &i.cnames {
            if let Some(first) = owner.insert(cname.to_ascii_lowercase(), i) {
                return Err(CnameConflict {
                    cname: cname.clone(),
                    first: format!("{}[{}]", first.role, first.index),
                    second: format!("{}[{}]", i.role, i.index),
                });
            }
        }
    }
    Ok(())
}

impl Desired {
    /// The desired state as the guard hook sees it.
    fn to_wit(&self, domain: Option<String>) -> api::DesiredState {
        api::DesiredState {
            project: self.project.clone(),
            env: self.env.clone(),
            region: self.region.clone(),
            domain,
            instances: self
                .instances
                .iter()
                .map(|i| api::DesiredInstance {
                    role: i.role.clone(),
                    index: i.index,
                    name: i.name.clone(),
                    instance_type: i.instance_type.clone(),
                    ami: i.ami.clone(),
                    tags: i
                        .tags
                        .iter()
                        .map(|(k, v)| api::Tag {
                            key: k.clone(),
                            value: v.clone(),
                        })
                        .collect(),
                    cnames: i.cnames.clone(),
                    user_data: i.user_data.clone(),
                })
                .collect(),
            firewall: self
                .network
                .firewall()
                .into_iter()
                .map(|(role, rule)| api::IngressRule {
                    role: role.to_owned(),
                    port: rule.port,
                    cidr: match &rule.source {
                        network::Source::Cidr(c) => Some(c.clone()),
                        network::Source::Role(_) => None,
                    },
                    from_role: match &rule.source {
                        network::Source::Role(r) => Some(r.clone()),
                        network::Source::Cidr(_) => None,
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    /// Hooks with no plugins at all: every answer is the current value.
    pub struct NoPlugins;

    impl Hooks for NoPlugins {
        fn size(
            &mut self,
            _: &api::RoleContext,
            c: api::RoleSize,
        ) -> Result<api::RoleSize, PluginError> {
            Ok(c)
        }
        fn name(&mut self, _: &api::InstanceContext, c: String) -> Result<String, PluginError> {
            Ok(c)
        }
        fn tags(
            &mut self,
            _: &api::InstanceContext,
            c: Vec<api::Tag>,
        ) -> Result<Vec<api::Tag>, PluginError> {
            Ok(c)
        }
        fn cnames(
            &mut self,
            _: &api::InstanceContext,
            c: Vec<String>,
        ) -> Result<Vec<String>, PluginError> {
            Ok(c)
        }
        fn user_data(
            &mut self,
            _: &api::InstanceContext,
            c: String,
        ) -> Result<String, PluginError> {
            Ok(c)
        }
        fn guard(
            &mut self,
            _: &api::DesiredState,
        ) -> Result<Vec<(String, api::Violation)>, PluginError> {
            Ok(Vec::new())
        }
    }

    /// Sizes every role to 3 × m5.large, and forbids more than 4 instances in all.
    struct Opinionated;

    impl Hooks for Opinionated {
        fn size(
            &mut self,
            _: &api::RoleContext,
            _: api::RoleSize,
        ) -> Result<api::RoleSize, PluginError> {
            Ok(api::RoleSize {
                instance_type: "m5.large".into(),
                count: 3,
                volume_gb: None,
            })
        }
        fn name(&mut self, ctx: &api::InstanceContext, _: String) -> Result<String, PluginError> {
            Ok(format!(
                "{}-{}-{:02}-of-{}",
                ctx.env, ctx.role, ctx.index, ctx.count
            ))
        }
        fn tags(
            &mut self,
            ctx: &api::InstanceContext,
            _: Vec<api::Tag>,
        ) -> Result<Vec<api::Tag>, PluginError> {
            Ok(vec![api::Tag {
                key: "team".into(),
                value: ctx.role.clone(),
            }])
        }
        fn cnames(
            &mut self,
            _: &api::InstanceContext,
            c: Vec<String>,
        ) -> Result<Vec<String>, PluginError> {
            Ok(c)
        }
        fn user_data(
            &mut self,
            ctx: &api::InstanceContext,
            c: String,
        ) -> Result<String, PluginError> {
            Ok(format!("{c}\nenv={}", ctx.env))
        }
        fn guard(
            &mut self,
            s: &api::DesiredState,
        ) -> Result<Vec<(String, api::Violation)>, PluginError> {
            Ok(if s.instances.len() > 4 {
                vec![(
                    "guard".into(),
                    api::Violation {
                        rule: "max-count".into(),
                        message: format!("{} instances", s.instances.len()),
                        role: None,
                    },
                )]
            } else {
                Vec::new()
            })
        }
    }

    pub fn definition(src: &str) -> Definition {
        Definition::parse(Path::new("heet.toml"), src).unwrap()
    }

    const DEF: &str = r#"
[project]
name = "shop"
[defaults]
ami = "ami-12c6146b"
[roles.www]
count = 2
user_data = "role=www"
[environments.staging]
"#;

    #[test]
    fn without_plugins_the_definition_decides() {
        let d = compute(&definition(DEF), "staging", "us-east-1", &mut NoPlugins).unwrap();
        assert_eq!(d.instances.len(), 2);
        let first = &d.instances[0];
        assert_eq!(first.name, "shop-staging-www-01");
        assert_eq!(first.instance_type, "t3.micro");
        assert_eq!(first.user_data, "role=www");
        assert_eq!(first.tags["Name"], "shop-staging-www-01");
        assert_eq!(first.tags["heet:project"], "shop");
        assert_eq!(first.tags["heet:env"], "staging");
        assert_eq!(first.tags["heet:role"], "www");
        assert_eq!(first.tags["heet:index"], "1");
        assert_eq!(
            first.tags["heet:id"],
            namespace::slot_id("shop", "staging", "www", 1)
        );
        assert_ne!(d.instances[0].id, d.instances[1].id);
        // Same role and settings, same spec: only identity differs between slots.
        assert_eq!(d.instances[0].spec, d.instances[1].spec);
    }

    #[test]
    fn plugins_answers_flow_into_every_field_and_the_spec() {
        let def = definition(DEF);
        let plain = compute(&def, "staging", "us-east-1", &mut NoPlugins).unwrap();
        let mut more = def.clone();
        more.roles[0].count = 1;
        let d = compute(&more, "staging", "us-east-1", &mut Opinionated).unwrap();
        assert_eq!(
            d.instances.len(),
            3,
            "sizing overrides the definition's count"
        );
        let first = &d.instances[0];
        assert_eq!(first.name, "staging-www-01-of-3");
        assert_eq!(first.instance_type, "m5.large");
        assert_eq!(first.tags["team"], "www");
        assert_eq!(first.user_data, "role=www\nenv=staging");
        assert_ne!(first.spec, plain.instances[0].spec);
    }

    /// Answers the same CNAME for every instance.
    struct SameCname;

    impl Hooks for SameCname {
        fn size(
            &mut self,
            c: &api::RoleContext,
            s: api::RoleSize,
        ) -> Result<api::RoleSize, PluginError> {
            NoPlugins.size(c, s)
        }
        fn name(&mut self, c: &api::InstanceContext, s: String) -> Result<String, PluginError> {
            NoPlugins.name(c, s)
        }
        fn tags(
            &mut self,
            c: &api::InstanceContext,
            s: Vec<api::Tag>,
        ) -> Result<Vec<api::Tag>, PluginError> {
            NoPlugins.tags(c, s)
        }
        fn cnames(
            &mut self,
            _: &api::InstanceContext,
            _: Vec<String>,
        ) -> Result<Vec<String>, PluginError> {
            Ok(vec!["WWW".into()])
        }
        fn user_data(
            &mut self,
            c: &api::InstanceContext,
            s: String,
        ) -> Result<String, PluginError> {
            NoPlugins.user_data(c, s)
        }
        fn guard(
            &mut self,
            s: &api::DesiredState,
        ) -> Result<Vec<(String, api::Violation)>, PluginError> {
            NoPlugins.guard(s)
        }
    }

    #[test]
    fn one_cname_for_two_instances_is_refused() {
        let err = compute(&definition(DEF), "staging", "us-east-1", &mut SameCname).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNAME \"WWW\" is answered for both www[1] and www[2]: a CNAME points at one instance"
        );
    }

    #[test]
    fn guard_violations_stop_everything() {
        let mut def = definition(DEF);
        def.roles.push(def.roles[0].clone());
        def.roles[1].name = "db".into();
        let err = compute(&def, "staging", "us-east-1", &mut Opinionated).unwrap_err();
        let DesiredError::Policy(denied) = err else {
            panic!("{err}")
        };
        assert_eq!(denied.violations.len(), 1);
        assert_eq!(
            denied.to_string(),
            "policy denied the plan (1 violation(s))\n  plugin guard: max-count: 6 instances"
        );
    }
}
