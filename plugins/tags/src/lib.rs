//! Reference plugin: tags for configuration management and cost reports. Every instance gets
//! an env+role group tag (`config-group = production--www`, the key puppet or ansible select
//! on), plus the cost tags of the project and of its role.
//!
//! Config (`[plugins.config.tags]`), all optional:
//! - `group_key = "config-group"`; `""` turns the group tag off
//! - `[plugins.config.tags.all]`: tags on every instance, e.g. `cost-center = "shop"`
//! - `[plugins.config.tags.roles.<role>]`: tags on that role's instances, e.g. `owner = "web"`;
//!   they win over `all`
//! - `[plugins.config.tags.outputs]`: tags from the project's CloudFormation stacks, each
//!   `key = "STACK.OUTPUT"` (e.g. `vpc = "net.VpcId"`), asked of the host (WIT 0.1.2); a stack
//!   not made yet gives none
//!
//! Tags already answered by an earlier plugin are kept unless this config sets the same key.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use heet_sdk::{Configure, InstanceContext, Tag, Tags};

heet_sdk::bindings!(
    world: "package heet-plugins:tags;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/tags@0.1.2;
        }",
    wit: "../../wit",
);

pub const DEFAULT_GROUP_KEY: &str = "config-group";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    #[serde(default = "default_group_key")]
    pub group_key: String,
    #[serde(default)]
    pub all: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

fn default_group_key() -> String {
    DEFAULT_GROUP_KEY.to_owned()
}

impl Default for TagConfig {
    fn default() -> TagConfig {
        TagConfig {
            group_key: default_group_key(),
            all: BTreeMap::new(),
            roles: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }
}

impl TagConfig {
    /// Keys heet or AWS would refuse, found at configure time rather than mid-plan.
    fn errors(&self) -> Vec<String> {
        let keys = std::iter::once(&self.group_key)
            .filter(|k| !k.is_empty())
            .chain(self.all.keys())
            .chain(self.roles.values().flat_map(|t| t.keys()))
            .chain(self.outputs.keys());
        let outputs = self.outputs.iter().filter_map(|(k, v)| {
            let ok = v
                .split_once('.')
                .is_some_and(|(s, o)| !s.is_empty() && !o.is_empty());
            (!ok).then(|| format!("outputs.{k}: {v:?} is not STACK.OUTPUT (e.g. \"net.VpcId\")"))
        });
        let mut errors: Vec<String> = outputs.collect();
        errors.extend(keys.filter_map(|k| {
            let lower = k.to_ascii_lowercase();
            ["aws:", "heet:"]
                .iter()
                .find(|p| lower.starts_with(*p))
                .map(|p| format!("tag key {k:?}: the {p} prefix is reserved"))
                .or_else(|| (k == "Name").then(|| "tag Name is the naming plugin's".to_owned()))
        }));
        errors
    }

    pub fn tags(&self, ctx: &InstanceContext, current: &[Tag]) -> Vec<Tag> {
        let mut tags: BTreeMap<String, String> = current
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        if !self.group_key.is_empty() {
            tags.insert(self.group_key.clone(), format!("{}--{}", ctx.env, ctx.role));
        }
        tags.extend(self.all.clone());
        if let Some(own) = self.roles.get(&ctx.role) {
            tags.extend(own.clone());
        }
        for (key, from) in &self.outputs {
            let (stack, output) = from.split_once('.').unwrap_or_default();
            if let Some(value) = heet_sdk::stack_output(stack, output) {
                tags.insert(key.clone(), value);
            }
        }
        tags.into_iter()
            .map(|(key, value)| Tag { key, value })
            .collect()
    }
}

static CONFIG: OnceLock<TagConfig> = OnceLock::new();

pub struct TagsPlugin;

impl Configure for TagsPlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let config: TagConfig = heet_sdk::parse_config(config_json)?;
        let errors = config.errors();
        if !errors.is_empty() {
            return Err(errors);
        }
        let _ = CONFIG.set(config);
        Ok(())
    }
}

impl Tags for TagsPlugin {
    fn tags(ctx: &InstanceContext, current: &[Tag]) -> Option<Vec<Tag>> {
        Some(CONFIG.get_or_init(TagConfig::default).tags(ctx, current))
    }
}

heet_sdk::export_plugin!(TagsPlugin, bindings, [configure, tags]);

#[cfg(test)]
mod tests {
    use super::*;
    use heet_sdk::testing;

    fn pairs(tags: &[Tag]) -> Vec<(&str, &str)> {
        tags.iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect()
    }

    #[test]
    fn group_tag_joins_env_and_role_with_two_dashes() {
        let ctx = testing::instance("shop", "production", "www");
        let tags = TagConfig::default().tags(&ctx, &[]);
        assert_eq!(pairs(&tags), [("config-group", "production--www")]);
    }

    #[test]
    fn role_tags_win_over_all_and_earlier_tags_stay() {
        let config: TagConfig = serde_json::from_str(
            r#"{"group_key": "", "all": {"cost-center": "shop", "owner": "ops"},
                "roles": {"db": {"owner": "data"}}}"#,
        )
        .unwrap();
        let earlier = [Tag {
            key: "backup".into(),
            value: "daily".into(),
        }];
        let db = config.tags(&testing::instance("shop", "staging", "db"), &earlier);
        assert_eq!(
            pairs(&db),
            [
                ("backup", "daily"),
                ("cost-center", "shop"),
                ("owner", "data")
            ]
        );
        let www = config.tags(&testing::instance("shop", "staging", "www"), &[]);
        assert_eq!(pairs(&www), [("cost-center", "shop"), ("owner", "ops")]);
    }

    #[test]
    fn outputs_tag_from_the_stacks_the_host_knows_and_wait_for_the_others() {
        let config: TagConfig = serde_json::from_str(
            r#"{"group_key": "", "outputs": {"vpc": "net.VpcId", "db": "data.Endpoint"}}"#,
        )
        .unwrap();
        testing::set_stack_output("net", "VpcId", "vpc-1");
        let tags = config.tags(&testing::instance("shop", "staging", "www"), &[]);
        assert_eq!(pairs(&tags), vec![("vpc", "vpc-1")]);
        let bad: TagConfig = serde_json::from_str(r#"{"outputs": {"vpc": "VpcId"}}"#).unwrap();
        assert_eq!(
            bad.errors(),
            ["outputs.vpc: \"VpcId\" is not STACK.OUTPUT (e.g. \"net.VpcId\")"]
        );
    }

    #[test]
    fn reserved_keys_are_refused_at_configure() {
        let errors = TagsPlugin::configure(
            r#"{"all": {"aws:cost": "x", "Name": "y"}, "roles": {"db": {"heet:env": "z"}}}"#,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("aws: prefix")));
        assert!(errors.iter().any(|e| e.contains("heet: prefix")));
    }
}
