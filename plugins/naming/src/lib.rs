//! Reference plugin: the `Name` tag of each instance, from a pattern set per project.
//!
//! Config (`[plugins.config.naming]`): `pattern`, default `{env}-{role}-{index:02}`, in the
//! SDK's pattern language ([`heet_sdk::pattern`]): `{env}-{role}-{index}-{count}` gives
//! AWSHeet's `production-www-8-25`.

use std::sync::OnceLock;

use heet_sdk::pattern::Pattern;
use heet_sdk::{Configure, InstanceContext, Naming};

heet_sdk::bindings!(
    world: "package heet-plugins:naming;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/naming@0.1.2;
        }",
    wit: "../../wit",
);

pub const DEFAULT_PATTERN: &str = "{env}-{role}-{index:02}";

static PATTERN: OnceLock<Pattern> = OnceLock::new();

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    pattern: Option<String>,
}

pub struct NamingPlugin;

impl Configure for NamingPlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let config: Config = heet_sdk::parse_config(config_json)?;
        let pattern = Pattern::parse(config.pattern.as_deref().unwrap_or(DEFAULT_PATTERN))
            .map_err(|e| vec![e])?;
        // A second configure (the host never sends one) keeps the first pattern.
        let _ = PATTERN.set(pattern);
        Ok(())
    }
}

impl Naming for NamingPlugin {
    fn name(ctx: &InstanceContext, _current: &str) -> Option<String> {
        let pattern =
            PATTERN.get_or_init(|| Pattern::parse(DEFAULT_PATTERN).expect("valid default"));
        Some(pattern.render(ctx))
    }
}

heet_sdk::export_plugin!(NamingPlugin, bindings, [configure, naming]);

#[cfg(test)]
mod tests {
    use super::*;
    use heet_sdk::testing;

    #[test]
    fn the_configured_pattern_names_the_instance() {
        NamingPlugin::configure(r#"{"pattern": "{env}-{role}-{index}-{count}"}"#).unwrap();
        let mut ctx = testing::instance("shop", "production", "www");
        ctx.index = 8;
        ctx.count = 25;
        assert_eq!(
            NamingPlugin::name(&ctx, "ignored").as_deref(),
            Some("production-www-8-25")
        );
    }

    #[test]
    fn a_bad_pattern_is_a_config_error() {
        let errors = NamingPlugin::configure(r#"{"pattern": "{nope}"}"#).unwrap_err();
        assert!(
            errors[0].contains("unknown placeholder {nope}"),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let errors = NamingPlugin::configure(r#"{"patern": "x"}"#).unwrap_err();
        assert!(errors[0].contains("unknown field"), "{errors:?}");
    }
}
