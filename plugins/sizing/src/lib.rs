//! Reference plugin: instance type, count and volume per environment and role, so one
//! definition runs "8 × m5.xlarge in production, 1 × t3.medium in staging" (AWSHeet).
//!
//! Config (`[plugins.config.sizing]`): a table per environment, holding a table per role;
//! `"*"` applies to every role, and a role's own table wins field by field. Fields are
//! optional: `instance_type`, `count`, `volume_gb`. An environment or role the config does
//! not name keeps the definition's size.
//!
//! ```toml
//! [plugins.config.sizing.production."*"]
//! instance_type = "m5.xlarge"
//! count = 8
//! [plugins.config.sizing.production.db]
//! instance_type = "r5.large"
//! count = 2
//! [plugins.config.sizing.staging."*"]
//! instance_type = "t3.medium"
//! count = 1
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use heet_sdk::{Configure, RoleContext, RoleSize, Sizing};

heet_sdk::bindings!(
    world: "package heet-plugins:sizing;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/sizing@0.1.2;
        }",
    wit: "../../wit",
);

/// What the config says about one role (or every role, under `"*"`).
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub instance_type: Option<String>,
    pub count: Option<u32>,
    pub volume_gb: Option<u32>,
}

/// Environment → role (or `"*"`) → size.
pub type Table = BTreeMap<String, BTreeMap<String, Size>>;

static TABLE: OnceLock<Table> = OnceLock::new();

/// The size of `role` in `env` under `table`, or `None` when the table says nothing of it.
pub fn size_of(table: &Table, env: &str, role: &str, current: &RoleSize) -> Option<RoleSize> {
    let roles = table.get(env)?;
    let all = roles.get("*");
    let own = roles.get(role);
    if all.is_none() && own.is_none() {
        return None;
    }
    let pick = |f: fn(&Size) -> Option<u32>| own.and_then(f).or_else(|| all.and_then(f));
    Some(RoleSize {
        instance_type: own
            .and_then(|s| s.instance_type.clone())
            .or_else(|| all.and_then(|s| s.instance_type.clone()))
            .unwrap_or_else(|| current.instance_type.clone()),
        count: pick(|s| s.count).unwrap_or(current.count),
        volume_gb: pick(|s| s.volume_gb).or(current.volume_gb),
    })
}

pub struct SizingPlugin;

impl Configure for SizingPlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let table: Table = heet_sdk::parse_config(config_json)?;
        let errors: Vec<String> = table
            .iter()
            .flat_map(|(env, roles)| roles.iter().map(move |(role, size)| (env, role, size)))
            .filter_map(|(env, role, size)| {
                let t = size.instance_type.as_deref()?;
                (!t.contains('.')).then(|| {
                    format!(
                        "{env}.{role}: instance_type {t:?} is not family.size, e.g. \"m5.large\""
                    )
                })
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let _ = TABLE.set(table);
        Ok(())
    }
}

impl Sizing for SizingPlugin {
    fn size(ctx: &RoleContext, current: &RoleSize) -> Option<RoleSize> {
        size_of(TABLE.get()?, &ctx.env, &ctx.role, current)
    }
}

heet_sdk::export_plugin!(SizingPlugin, bindings, [configure, sizing]);

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        serde_json::from_str(
            r#"{
                "production": {
                    "*": {"instance_type": "m5.xlarge", "count": 8},
                    "db": {"instance_type": "r5.large", "volume_gb": 500}
                },
                "staging": {"*": {"instance_type": "t3.medium", "count": 1}}
            }"#,
        )
        .unwrap()
    }

    fn definition_size() -> RoleSize {
        RoleSize {
            instance_type: "t3.micro".into(),
            count: 2,
            volume_gb: None,
        }
    }

    #[test]
    fn production_and_staging_differ_as_configured() {
        let www = size_of(&table(), "production", "www", &definition_size()).unwrap();
        assert_eq!((www.instance_type.as_str(), www.count), ("m5.xlarge", 8));
        let staging = size_of(&table(), "staging", "www", &definition_size()).unwrap();
        assert_eq!(
            (staging.instance_type.as_str(), staging.count),
            ("t3.medium", 1)
        );
    }

    #[test]
    fn a_role_table_wins_field_by_field_over_the_star() {
        let db = size_of(&table(), "production", "db", &definition_size()).unwrap();
        assert_eq!(db.instance_type, "r5.large");
        assert_eq!(db.count, 8, "count comes from \"*\"");
        assert_eq!(db.volume_gb, Some(500));
    }

    #[test]
    fn unnamed_environments_keep_the_definition() {
        assert_eq!(size_of(&table(), "qa", "www", &definition_size()), None);
        let only_db: Table =
            serde_json::from_str(r#"{"production": {"db": {"count": 3}}}"#).unwrap();
        assert_eq!(
            size_of(&only_db, "production", "www", &definition_size()),
            None
        );
        let db = size_of(&only_db, "production", "db", &definition_size()).unwrap();
        assert_eq!((db.instance_type.as_str(), db.count), ("t3.micro", 3));
    }

    #[test]
    fn bad_config_is_refused_with_the_place() {
        let errors =
            SizingPlugin::configure(r#"{"production": {"www": {"instance_type": "huge"}}}"#)
                .unwrap_err();
        assert_eq!(
            errors,
            ["production.www: instance_type \"huge\" is not family.size, e.g. \"m5.large\""]
        );
        let errors =
            SizingPlugin::configure(r#"{"production": {"www": {"cuont": 1}}}"#).unwrap_err();
        assert!(errors[0].contains("unknown field"), "{errors:?}");
    }
}
