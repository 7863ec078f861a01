//! Reference plugin: user_data as a cloud-config document that tells the instance who it is
//! (project, environment, role, index), so cloud-init, puppet and ansible find their role
//! without asking AWS (AWSHeet put role and environment in user_data for the same reason).
//!
//! The facts go to three files, one per tool that reads them at boot:
//! `/etc/heet/facts.json`, `/etc/facter/facts.d/heet.json` (puppet external facts) and
//! `/etc/ansible/facts.d/heet.fact` (ansible local facts).
//!
//! Config (`[plugins.config.cloud-init]`), all optional: `packages = ["nginx"]`,
//! `runcmd = ["systemctl enable --now nginx"]`, `[plugins.config.cloud-init.facts]` extra
//! string facts, and `config_keys = ["DATABASE_URL"]`: keys set with `heet config set`, which
//! the instance fetches from SSM Parameter Store at boot (with the AWS CLI and its instance
//! profile) into `/etc/heet/env`, mode 0600, before any other command runs. The values are
//! never in user_data: only the keys are.
//!
//! A definition's own user_data is kept: it is written to `/var/lib/heet/user-data`, and when
//! it is a script (`#!`) it is made executable and run first in `runcmd`.
//!
//! The document is cloud-config in YAML's JSON form: every string is quoted and escaped by
//! serde_json, so no value can break the document's structure.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use heet_sdk::{Configure, InstanceContext, UserData};
use serde_json::{Value, json};

heet_sdk::bindings!(
    world: "package heet-plugins:cloud-init;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/user-data@0.1.2;
        }",
    wit: "../../wit",
);

pub const FACT_FILES: [&str; 3] = [
    "/etc/heet/facts.json",
    "/etc/facter/facts.d/heet.json",
    "/etc/ansible/facts.d/heet.fact",
];
pub const DEFINITION_USER_DATA: &str = "/var/lib/heet/user-data";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub runcmd: Vec<String>,
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    #[serde(default)]
    pub config_keys: Vec<String>,
}

/// Where the instance writes its config values.
pub const ENV_FILE: &str = "/etc/heet/env";

impl CloudConfig {
    fn errors(&self) -> Vec<String> {
        const OURS: [&str; 6] = ["project", "env", "role", "index", "count", "region"];
        let mut errors: Vec<String> = self
            .facts
            .keys()
            .filter(|k| OURS.contains(&k.as_str()))
            .map(|k| format!("facts.{k}: set by the plugin from the definition"))
            .collect();
        // The keys go into a shell command: only environment variable names, as heet's own
        // `config set` accepts.
        for key in &self.config_keys {
            let ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                errors.push(format!(
                    "config_keys: {key:?} is not an environment variable name"
                ));
            }
        }
        errors
    }

    /// The boot command that fetches the config keys into [`ENV_FILE`].
    fn fetch_config(&self, ctx: &InstanceContext) -> Option<String> {
        if self.config_keys.is_empty() {
            return None;
        }
        let path = format!("/heet/{}/{}/config/", ctx.project, ctx.env);
        Some(format!(
            "umask 077 && mkdir -p /etc/heet && : > {ENV_FILE} && for k in {keys}; do \
             v=$(aws ssm get-parameter --region '{region}' --with-decryption --name \"{path}$k\" \
             --query Parameter.Value --output text) && printf '%s=%s\\n' \"$k\" \"$v\" >> {ENV_FILE}; done",
            keys = self.config_keys.join(" "),
            region = ctx.region,
        ))
    }

    /// The cloud-config document for one instance; `current` is the user_data so far.
    pub fn render(&self, ctx: &InstanceContext, current: &str) -> String {
        let mut facts = serde_json::Map::new();
        for (k, v) in &self.facts {
            facts.insert(k.clone(), json!(v));
        }
        facts.insert("project".into(), json!(ctx.project));
        facts.insert("env".into(), json!(ctx.env));
        facts.insert("role".into(), json!(ctx.role));
        facts.insert("index".into(), json!(ctx.index));
        facts.insert("count".into(), json!(ctx.count));
        facts.insert("region".into(), json!(ctx.region));
        let facts = format!("{}\n", Value::Object(facts));

        let mut files: Vec<Value> = FACT_FILES
            .iter()
            .map(|path| json!({"path": path, "permissions": "0644", "content": facts}))
            .collect();
        let mut runcmd = Vec::new();
        if let Some(fetch) = self.fetch_config(ctx) {
            runcmd.push(json!(fetch));
        }
        if !current.is_empty() {
            let script = current.starts_with("#!");
            files.push(json!({
                "path": DEFINITION_USER_DATA,
                "permissions": if script { "0755" } else { "0644" },
                "content": current,
            }));
            if script {
                runcmd.push(json!(DEFINITION_USER_DATA));
            }
        }
        runcmd.extend(self.runcmd.iter().map(|c| json!(c)));

        let mut doc = serde_json::Map::new();
        doc.insert("write_files".into(), Value::Array(files));
        if !self.packages.is_empty() {
            doc.insert("packages".into(), json!(self.packages));
        }
        if !runcmd.is_empty() {
            doc.insert("runcmd".into(), Value::Array(runcmd));
        }
        let body = serde_json::to_string_pretty(&Value::Object(doc)).expect("json values");
        format!("#cloud-config\n{body}\n")
    }
}

static CONFIG: OnceLock<CloudConfig> = OnceLock::new();

pub struct CloudInitPlugin;

impl Configure for CloudInitPlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let config: CloudConfig = heet_sdk::parse_config(config_json)?;
        let errors = config.errors();
        if !errors.is_empty() {
            return Err(errors);
        }
        let _ = CONFIG.set(config);
        Ok(())
    }
}

impl UserData for CloudInitPlugin {
    fn user_data(ctx: &InstanceContext, current: &str) -> Option<String> {
        Some(
            CONFIG
                .get_or_init(CloudConfig::default)
                .render(ctx, current),
        )
    }
}

heet_sdk::export_plugin!(CloudInitPlugin, bindings, [configure, user_data]);

#[cfg(test)]
mod tests {
    use super::*;
    use heet_sdk::testing;

    fn doc(user_data: &str) -> Value {
        let body = user_data
            .strip_prefix("#cloud-config\n")
            .expect("cloud-config header");
        serde_json::from_str(body).expect("the body is JSON, hence YAML")
    }

    #[test]
    fn facts_name_the_instance_for_every_tool() {
        let mut ctx = testing::instance("shop", "production", "www");
        ctx.index = 3;
        ctx.count = 8;
        let d = doc(&CloudConfig::default().render(&ctx, ""));
        let files = d["write_files"].as_array().unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(paths, FACT_FILES);
        let facts: Value = serde_json::from_str(files[1]["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            facts,
            json!({"project": "shop", "env": "production", "role": "www", "index": 3,
                   "count": 8, "region": "us-east-1"})
        );
        assert!(d.get("runcmd").is_none() && d.get("packages").is_none());
    }

    #[test]
    fn a_definition_script_is_kept_and_run_before_the_configured_commands() {
        let config: CloudConfig = serde_json::from_str(
            r#"{"packages": ["nginx"], "runcmd": ["systemctl enable --now nginx"],
                "facts": {"tier": "web"}}"#,
        )
        .unwrap();
        let ctx = testing::instance("shop", "staging", "www");
        let d = doc(&config.render(&ctx, "#!/bin/sh\necho hi\n"));
        assert_eq!(d["packages"], json!(["nginx"]));
        assert_eq!(
            d["runcmd"],
            json!([DEFINITION_USER_DATA, "systemctl enable --now nginx"])
        );
        let kept = &d["write_files"][3];
        assert_eq!(kept["content"], "#!/bin/sh\necho hi\n");
        assert_eq!(kept["permissions"], "0755");
        let facts: Value =
            serde_json::from_str(d["write_files"][0]["content"].as_str().unwrap()).unwrap();
        assert_eq!(facts["tier"], "web");
    }

    #[test]
    fn config_keys_are_fetched_first_and_never_their_values() {
        let config: CloudConfig =
            serde_json::from_str(r#"{"config_keys": ["DATABASE_URL", "API_TOKEN"]}"#).unwrap();
        let ctx = testing::instance("shop", "production", "www");
        let d = doc(&config.render(&ctx, "#!/bin/sh\n. /etc/heet/env\n"));
        let runcmd = d["runcmd"].as_array().unwrap();
        assert_eq!(runcmd.len(), 2);
        let fetch = runcmd[0].as_str().unwrap();
        assert!(
            fetch.starts_with("umask 077 && ")
                && fetch.contains("for k in DATABASE_URL API_TOKEN; do")
                && fetch.contains("--name \"/heet/shop/production/config/$k\"")
                && fetch.contains("--region 'us-east-1' --with-decryption"),
            "{fetch}"
        );
        assert_eq!(runcmd[1], DEFINITION_USER_DATA);
        let errors =
            CloudInitPlugin::configure(r#"{"config_keys": ["OK", "x; rm -rf /"]}"#).unwrap_err();
        assert_eq!(
            errors,
            ["config_keys: \"x; rm -rf /\" is not an environment variable name"]
        );
    }

    #[test]
    fn hostile_values_stay_inside_their_strings() {
        let config: CloudConfig =
            serde_json::from_str(r#"{"facts": {"note": "x\"\n- evil: yes"}}"#).unwrap();
        let d = doc(&config.render(&testing::instance("shop", "staging", "www"), ""));
        assert_eq!(d.as_object().unwrap().len(), 1, "only write_files: {d}");
    }

    #[test]
    fn the_plugins_own_facts_cannot_be_overridden() {
        let errors = CloudInitPlugin::configure(r#"{"facts": {"role": "db"}}"#).unwrap_err();
        assert_eq!(
            errors,
            ["facts.role: set by the plugin from the definition"]
        );
    }
}
