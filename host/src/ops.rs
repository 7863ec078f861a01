//! Everyday operations around a running environment (Paaws' friendly CLI): the app's config
//! and secrets in Parameter Store, Ansible inventory, host lists, the IAM policy heet needs.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use serde::Serialize;

use crate::cli::Global;
use crate::cloud::{Aws, ConfigValue};
use crate::commands::{Outcome, UsageError, connection, emit, emit_in, emit_stats};
use crate::definition::Definition;
use crate::kinds::instances::ObservedInstance;
use crate::namespace;

/// Where an environment's config lives: `/heet/<project>/<env>/config/`.
pub fn config_path(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/config/")
}

/// A config key is an environment variable name, so instances can export it as is.
pub fn check_key(key: &str) -> Result<(), UsageError> {
    let ok = key.len() <= 128
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(UsageError(format!(
            "invalid config key {key:?}: use letters, digits and '_', not starting with a digit (an environment variable name)"
        )))
    }
}

/// The role `name` of `def`, or a usage error naming the roles there are.
fn role_named<'a>(
    def: &'a Definition,
    name: &str,
) -> Result<&'a crate::definition::Role, UsageError> {
    def.roles.iter().find(|r| r.name == name).ok_or_else(|| {
        let roles: Vec<&str> = def.roles.iter().map(|r| r.name.as_str()).collect();
        UsageError(format!(
            "there is no role {name:?} in {}: the roles are {}",
            def.file.display(),
            roles.join(", ")
        ))
    })
}

async fn connect(global: &Global, env: &str) -> anyhow::Result<(Definition, Aws)> {
    let def = Definition::load(&global.file)?;
    def.environment(env)?;
    let aws = Aws::connect(&connection(global, &def, env)).await?;
    Ok((def, aws))
}

/// One key as printed: a secret's value only when revealed.
#[derive(Debug, Serialize)]
pub struct ConfigEntry {
    pub key: String,
    pub secret: bool,
    pub value: Option<String>,
    pub version: i64,
}

impl ConfigEntry {
    fn of(path: &str, v: ConfigValue) -> ConfigEntry {
        ConfigEntry {
            key: v.name.strip_prefix(path).unwrap_or(&v.name).to_owned(),
            secret: v.secret,
            value: v.value,
            version: v.version,
        }
    }
}

impl fmt::Display for ConfigEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => write!(f, "{} (secret, version {})", self.key, self.version),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConfigList {
    pub path: String,
    pub keys: Vec<ConfigEntry>,
}

impl fmt::Display for ConfigList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.keys.is_empty() {
            return write!(f, "no config under {}", self.path);
        }
        let lines: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

pub async fn config_list(global: &Global, env: &str, reveal: bool) -> anyhow::Result<Outcome> {
    let (def, aws) = connect(global, env).await?;
    let path = config_path(&def.project, env);
    let keys = aws
        .ssm
        .config_list(&path, reveal)
        .await?
        .into_iter()
        .map(|v| ConfigEntry::of(&path, v))
        .collect();
    emit_in(global, &aws, &ConfigList { path, keys })?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

/// `config get`: the value alone in text, so `$(heet config get K)` works; a secret without
/// `--reveal` prints only that it is one.
#[derive(Debug, Serialize)]
pub struct ConfigGot(ConfigEntry);

impl fmt::Display for ConfigGot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.value {
            Some(v) => write!(f, "{v}"),
            None => write!(
                f,
                "{} is a secret (version {}): add --reveal to print it",
                self.0.key, self.0.version
            ),
        }
    }
}

pub async fn config_get(
    global: &Global,
    env: &str,
    key: &str,
    reveal: bool,
) -> anyhow::Result<Outcome> {
    check_key(key)?;
    let (def, aws) = connect(global, env).await?;
    let path = config_path(&def.project, env);
    let Some(v) = aws.ssm.config_get(&format!("{path}{key}"), reveal).await? else {
        return Err(UsageError(format!("{key} is not set in {}/{env}", def.project)).into());
    };
    emit_in(global, &aws, &ConfigGot(ConfigEntry::of(&path, v)))?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

/// `keys get`: the private key alone when revealed, so `heet keys get www -e prod --reveal >
/// key` gives a file for `ssh -i`; otherwise where it is.
#[derive(Debug, Serialize)]
pub struct KeyGot {
    pub role: String,
    pub key_name: String,
    pub parameter: String,
    pub version: i64,
    pub private_key: Option<String>,
}

impl fmt::Display for KeyGot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.private_key {
            Some(k) => write!(f, "{}", k.trim_end()),
            None => write!(
                f,
                "{}: key pair {}, private key kept at {} (version {}): add --reveal to print it",
                self.role, self.key_name, self.parameter, self.version
            ),
        }
    }
}

pub async fn key_get(
    global: &Global,
    env: &str,
    role: &str,
    reveal: bool,
) -> anyhow::Result<Outcome> {
    let (def, aws) = connect(global, env).await?;
    let r = role_named(&def, role)?;
    if r.key_pair != Some(crate::definition::KeyPair::Create) {
        return Err(UsageError(format!(
            "heet keeps no private key for role {role}: only a key pair it makes has one (roles.{role}.key_pair = \"create\")"
        ))
        .into());
    }
    let parameter = crate::kinds::network::key_parameter(&def.project, env, role);
    let Some(v) = aws.ssm.config_get(&parameter, reveal).await? else {
        return Err(UsageError(format!(
            "no private key for role {role} in {}/{env} yet: `heet up --env {env}` makes it",
            def.project
        ))
        .into());
    };
    let got = KeyGot {
        role: role.to_owned(),
        key_name: r.launch_key(&def.project, env).unwrap_or_default(),
        parameter,
        version: v.version,
        private_key: v.value,
    };
    emit_in(global, &aws, &got)?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

#[derive(Debug, Serialize)]
pub struct ConfigSet {
    pub key: String,
    pub secret: bool,
    pub version: i64,
}

impl fmt::Display for ConfigSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.secret { "secret" } else { "value" };
        write!(f, "set {} ({kind}, version {})", self.key, self.version)
    }
}

pub async fn config_set(
    global: &Global,
    env: &str,
    key: &str,
    value: Option<&str>,
    secret: bool,
) -> anyhow::Result<Outcome> {
    check_key(key)?;
    let value = match value {
        Some(v) => v.to_owned(),
        None => {
            let mut v = String::new();
            std::io::stdin().read_to_string(&mut v)?;
            v.strip_suffix('\n').unwrap_or(&v).to_owned()
        }
    };
    if value.is_empty() {
        return Err(UsageError(format!("{key}: an empty value (use `config unset`)")).into());
    }
    let (def, aws) = connect(global, env).await?;
    let name = format!("{}{key}", config_path(&def.project, env));
    // A secret is never turned into plain text by a forgotten flag.
    if !secret
        && let Some(old) = aws.ssm.config_get(&name, false).await?
        && old.secret
    {
        return Err(UsageError(format!(
            "{key} is a secret: pass --secret to replace it (or unset it first)"
        ))
        .into());
    }
    let version = aws.ssm.config_put(&name, &value, secret).await?;
    emit_in(
        global,
        &aws,
        &ConfigSet {
            key: key.to_owned(),
            secret,
            version,
        },
    )?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

#[derive(Debug, Serialize)]
pub struct ConfigUnset {
    pub key: String,
    pub was_set: bool,
}

impl fmt::Display for ConfigUnset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.was_set {
            write!(f, "unset {}", self.key)
        } else {
            write!(f, "{} was not set", self.key)
        }
    }
}

pub async fn config_unset(global: &Global, env: &str, key: &str) -> anyhow::Result<Outcome> {
    check_key(key)?;
    let (def, aws) = connect(global, env).await?;
    let name = format!("{}{key}", config_path(&def.project, env));
    let was_set = aws.ssm.config_get(&name, false).await?.is_some();
    if was_set {
        aws.ssm.delete(&name).await?;
    }
    emit_in(
        global,
        &aws,
        &ConfigUnset {
            key: key.to_owned(),
            was_set,
        },
    )?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

/// An instance as the inventory and host list show it.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: String,
    pub role: String,
    pub index: u32,
    pub instance_id: String,
    pub instance_type: String,
    pub state: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub public_dns: Option<String>,
    pub private_dns: Option<String>,
}

impl Host {
    /// Where to reach it: the public address, else the private one.
    pub fn address(&self) -> &str {
        [
            &self.public_dns,
            &self.public_ip,
            &self.private_dns,
            &self.private_ip,
        ]
        .into_iter()
        .flatten()
        .find(|a| !a.is_empty())
        .map_or("", String::as_str)
    }
}

/// heet's instances of an environment, by role and index (look-alikes left out).
async fn hosts_of(global: &Global, env: &str) -> anyhow::Result<(Definition, Aws, Vec<Host>)> {
    let (def, aws) = connect(global, env).await?;
    let observed = aws.ec2.instances(&def.project, env).await?;
    let hosts = heets_hosts(&def.project, env, &observed);
    Ok((def, aws, hosts))
}

/// The instances heet made for `project`/`env`, sorted by role and index.
pub fn heets_hosts(project: &str, env: &str, observed: &[ObservedInstance]) -> Vec<Host> {
    let mut hosts: Vec<Host> = observed
        .iter()
        .filter(|o| o.slot_id(project, env).is_some())
        .map(|o| Host {
            name: o.name().to_owned(),
            role: o.tags[namespace::TAG_ROLE].clone(),
            index: o.tags[namespace::TAG_INDEX].parse().unwrap_or(0),
            instance_id: o.instance_id.clone(),
            instance_type: o.instance_type.clone(),
            state: o.state.clone(),
            public_ip: o.public_ip.clone().filter(|s| !s.is_empty()),
            private_ip: o.private_ip.clone().filter(|s| !s.is_empty()),
            public_dns: o.public_dns.clone().filter(|s| !s.is_empty()),
            private_dns: o.private_dns.clone().filter(|s| !s.is_empty()),
        })
        .collect();
    hosts.sort_by(|a, b| (&a.role, a.index).cmp(&(&b.role, b.index)));
    hosts
}

/// Ansible's dynamic inventory: `{"_meta": {"hostvars": …}, "all": {"children": …},
/// "<role>": {"hosts": …}, "<env>--<role>": {"hosts": …}}`. As text, the same in INI form.
#[derive(Debug)]
pub struct Inventory {
    pub project: String,
    pub env: String,
    pub hosts: Vec<Host>,
}

impl Inventory {
    /// Group name → host names, roles first, then `env--role`.
    pub fn groups(&self) -> BTreeMap<String, Vec<&str>> {
        let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for h in &self.hosts {
            groups.entry(h.role.clone()).or_default().push(&h.name);
            groups
                .entry(format!("{}--{}", self.env, h.role))
                .or_default()
                .push(&h.name);
        }
        groups
    }

    fn hostvars(&self, h: &Host) -> serde_json::Value {
        serde_json::json!({
            "ansible_host": h.address(),
            "heet_project": self.project,
            "heet_env": self.env,
            "heet_role": h.role,
            "heet_index": h.index,
            "instance_id": h.instance_id,
            "instance_type": h.instance_type,
            "public_ip": h.public_ip,
            "private_ip": h.private_ip,
            "public_dns": h.public_dns,
            "private_dns": h.private_dns,
        })
    }
}

impl Serialize for Inventory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let groups = self.groups();
        let mut map = s.serialize_map(Some(groups.len() + 2))?;
        let hostvars: BTreeMap<&str, serde_json::Value> = self
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), self.hostvars(h)))
            .collect();
        map.serialize_entry("_meta", &serde_json::json!({ "hostvars": hostvars }))?;
        map.serialize_entry(
            "all",
            &serde_json::json!({ "children": groups.keys().collect::<Vec<_>>() }),
        )?;
        for (group, hosts) in &groups {
            map.serialize_entry(group, &serde_json::json!({ "hosts": hosts }))?;
        }
        map.end()
    }
}

impl fmt::Display for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = self.groups();
        if groups.is_empty() {
            return write!(f, "# heet runs nothing for {}/{}", self.project, self.env);
        }
        let by_name: BTreeMap<&str, &Host> =
            self.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
        for (i, (group, hosts)) in groups.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "[{group}]")?;
            for name in hosts {
                let h = by_name[name];
                write!(
                    f,
                    "\n{name} ansible_host={} instance_id={}",
                    h.address(),
                    h.instance_id
                )?;
            }
        }
        Ok(())
    }
}

pub async fn inventory(global: &Global, env: &str, host: Option<&str>) -> anyhow::Result<Outcome> {
    if host.is_some() {
        // Every host's vars are in `_meta`, so Ansible asks nothing per host; answer its
        // protocol without calling AWS.
        println!("{{}}");
        return Ok(Outcome::Done);
    }
    let (def, aws, hosts) = hosts_of(global, env).await?;
    emit(
        global,
        &Inventory {
            project: def.project.clone(),
            env: env.to_owned(),
            hosts,
        },
    )?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

#[derive(Debug, Serialize)]
pub struct HostList {
    pub hosts: Vec<Host>,
}

impl fmt::Display for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.hosts.iter().map(Host::address).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

pub async fn hosts(global: &Global, env: &str, role: Option<&str>) -> anyhow::Result<Outcome> {
    let (def, aws, mut hosts) = hosts_of(global, env).await?;
    if let Some(role) = role {
        role_named(&def, role)?;
        hosts.retain(|h| h.role == role);
    }
    emit_in(global, &aws, &HostList { hosts })?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, role: &str, index: u32) -> Host {
        Host {
            name: name.into(),
            role: role.into(),
            index,
            instance_id: format!("i-{name}"),
            instance_type: "t3.micro".into(),
            state: "running".into(),
            public_ip: None,
            private_ip: Some("10.0.0.9".into()),
            public_dns: Some(format!("{name}.compute.example")),
            private_dns: None,
        }
    }

    #[test]
    fn the_inventory_groups_hosts_by_role_and_env_role() {
        let inv = Inventory {
            project: "shop".into(),
            env: "prod".into(),
            hosts: vec![
                host("db1", "db", 1),
                host("w1", "www", 1),
                host("w2", "www", 2),
            ],
        };
        let json = serde_json::to_value(&inv).unwrap();
        assert_eq!(json["www"]["hosts"], serde_json::json!(["w1", "w2"]));
        assert_eq!(json["prod--db"]["hosts"], serde_json::json!(["db1"]));
        assert_eq!(
            json["all"]["children"],
            serde_json::json!(["db", "prod--db", "prod--www", "www"])
        );
        let vars = &json["_meta"]["hostvars"]["w2"];
        assert_eq!(vars["ansible_host"], "w2.compute.example");
        assert_eq!(vars["heet_index"], 2);
        assert_eq!(
            inv.to_string().lines().take(2).collect::<Vec<_>>(),
            [
                "[db]",
                "db1 ansible_host=db1.compute.example instance_id=i-db1"
            ]
        );
    }

    #[test]
    fn config_keys_are_environment_variable_names() {
        assert!(check_key("DATABASE_URL").is_ok());
        assert!(check_key("_x1").is_ok());
        for bad in ["", "1X", "A-B", "A/B", "A B", &"K".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
