//! Reference plugin: the DNS names of each instance, relative to the project's domain. The
//! default is AWSHeet's indexed CNAME, `production-www-01.<domain>`, whose value is always
//! that slot's instance: a predictable name for "the first web server" whatever its id.
//!
//! Config (`[plugins.config.cname]`), all optional:
//! - `patterns = ["{env}-{role}-{index:02}"]`: one CNAME per pattern per instance, in the
//!   SDK's pattern language ([`heet_sdk::pattern`]); e.g. add `"{env}-{role}-{index}-{count}"`
//!   for a name that also says how many there are
//! - `roles = ["frontend"]`: only these roles get names (default: every role)
//! - `balancer_patterns = ["{env}-{role}"]`: the names of a role's load balancer (the host
//!   asks for them with index 0: instances count from 1); the default is `{env}-{role}`,
//!   `production-www.<domain>`
//!
//! A project without `domain` has no zone, so the plugin has no opinion there.

use std::sync::OnceLock;

use heet_sdk::pattern::Pattern;
use heet_sdk::{Cnames, Configure, InstanceContext};

heet_sdk::bindings!(
    world: "package heet-plugins:cname;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/cnames@0.1.2;
        }",
    wit: "../../wit",
);

pub const DEFAULT_PATTERN: &str = "{env}-{role}-{index:02}";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    patterns: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    balancer_patterns: Option<Vec<String>>,
}

/// The parsed config.
#[derive(Debug)]
pub struct Records {
    pub patterns: Vec<Pattern>,
    pub roles: Option<Vec<String>>,
    /// For index 0: the role's load balancer.
    pub balancer_patterns: Vec<Pattern>,
}

pub const DEFAULT_BALANCER_PATTERN: &str = "{env}-{role}";

impl Records {
    fn from_config(config: Config) -> Result<Records, Vec<String>> {
        let mut errors = Vec::new();
        let mut parse = |sources: Option<Vec<String>>, default: &str| {
            let sources = sources.unwrap_or_else(|| vec![default.to_owned()]);
            let mut patterns = Vec::new();
            for source in &sources {
                match Pattern::parse(source) {
                    Ok(p) => patterns.push(p),
                    Err(e) => errors.push(e),
                }
            }
            patterns
        };
        let patterns = parse(config.patterns, DEFAULT_PATTERN);
        let balancer_patterns = parse(config.balancer_patterns, DEFAULT_BALANCER_PATTERN);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Records {
            patterns,
            roles: config.roles,
            balancer_patterns,
        })
    }

    /// `current` plus this config's names for the instance, without repeats.
    pub fn names(&self, ctx: &InstanceContext, current: &[String]) -> Option<Vec<String>> {
        ctx.domain.as_ref()?;
        if let Some(roles) = &self.roles
            && !roles.contains(&ctx.role)
        {
            return None;
        }
        let mut names = current.to_vec();
        let patterns = if ctx.index == 0 {
            &self.balancer_patterns
        } else {
            &self.patterns
        };
        for p in patterns {
            let name = p.render(ctx).to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Some(names)
    }
}

static RECORDS: OnceLock<Records> = OnceLock::new();

pub struct CnamePlugin;

impl Configure for CnamePlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let records = Records::from_config(heet_sdk::parse_config(config_json)?)?;
        let _ = RECORDS.set(records);
        Ok(())
    }
}

impl Cnames for CnamePlugin {
    fn cnames(ctx: &InstanceContext, current: &[String]) -> Option<Vec<String>> {
        RECORDS
            .get_or_init(|| Records::from_config(Config::default()).expect("valid default"))
            .names(ctx, current)
    }
}

heet_sdk::export_plugin!(CnamePlugin, bindings, [configure, cnames]);

#[cfg(test)]
mod tests {
    use super::*;
    use heet_sdk::testing;

    fn records(json: &str) -> Records {
        Records::from_config(serde_json::from_str(json).unwrap()).unwrap()
    }

    fn www(index: u32, count: u32) -> InstanceContext {
        let mut ctx = testing::instance("shop", "production", "www");
        ctx.index = index;
        ctx.count = count;
        ctx.domain = Some("shop.example.com".into());
        ctx
    }

    #[test]
    fn default_is_the_indexed_cname() {
        let r = records("{}");
        assert_eq!(r.names(&www(1, 8), &[]).unwrap(), ["production-www-01"]);
        assert_eq!(r.names(&www(8, 8), &[]).unwrap(), ["production-www-08"]);
    }

    #[test]
    fn index_0_is_the_roles_balancer_with_its_own_patterns() {
        let r = records("{}");
        assert_eq!(r.names(&www(0, 8), &[]).unwrap(), ["production-www"]);
        let r = records(r#"{"balancer_patterns": ["{role}", "{role}-{env}"]}"#);
        assert_eq!(r.names(&www(0, 2), &[]).unwrap(), ["www", "www-production"]);
        assert_eq!(r.names(&www(1, 2), &[]).unwrap(), ["production-www-01"]);
    }

    #[test]
    fn earlier_answers_are_kept_and_not_repeated() {
        let r =
            records(r#"{"patterns": ["{env}-{role}-{index:02}", "{env}-{role}-{index}-{count}"]}"#);
        let names = r
            .names(&www(8, 25), &["production-www-08".into(), "legacy".into()])
            .unwrap();
        assert_eq!(
            names,
            ["production-www-08", "legacy", "production-www-8-25"]
        );
    }

    #[test]
    fn no_domain_or_another_role_means_no_opinion() {
        let r = records(r#"{"roles": ["frontend"]}"#);
        assert_eq!(r.names(&www(1, 1), &[]), None);
        let mut ctx = www(1, 1);
        ctx.role = "frontend".into();
        assert_eq!(r.names(&ctx, &[]).unwrap(), ["production-frontend-01"]);
        ctx.domain = None;
        assert_eq!(r.names(&ctx, &[]), None);
    }

    #[test]
    fn every_bad_pattern_is_reported() {
        let errors = Records::from_config(
            serde_json::from_str(r#"{"patterns": ["{nope}", "{role:2}", "ok"]}"#).unwrap(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
