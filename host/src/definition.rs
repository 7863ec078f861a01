//! The `heet.toml` model: parsing, defaults, and validation whose errors point at
//! `file:line:col`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::namespace::check_name;
use crate::plugins::grants::{self, Grant};
use crate::plugins::signing;
use crate::plugins::{Hook, Limits};
use crate::validate;

/// A definition error. Always exit code 2.
#[derive(Debug, thiserror::Error)]
pub struct DefinitionError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A place in the definition file, kept so later checks (e.g. of plugin config against the
/// plugins actually found) can still point at the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The line and column of byte `offset` in `source`.
    pub fn of(source: &str, offset: usize) -> Location {
        let before = &source[..offset.min(source.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line,
            col: before[line_start..].chars().count() + 1,
        }
    }
}

impl DefinitionError {
    /// A TOML syntax or shape error in `file`, at the place toml reports.
    pub fn from_toml(file: &Path, source: &str, err: &toml::de::Error) -> DefinitionError {
        // toml's message repeats the source line and a caret; keep its first line only.
        let message = err.message().lines().next().unwrap_or("invalid TOML");
        let at = Location::of(source, err.span().map_or(0, |s| s.start));
        DefinitionError {
            file: file.to_owned(),
            at: Some((at.line, at.col)),
            message: message.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Definition {
    pub file: PathBuf,
    pub project: String,
    pub region: Option<String>,
    /// What the definition deploys (fabcloudkit's build): kept with each scenario run in the
    /// instances' tags.
    pub version: Option<String>,
    pub domain: Option<String>,
    /// Where `domain` is written, for errors about the zone found (or not) in AWS.
    pub domain_at: Option<Location>,
    /// Create the hosted zone for `domain` when it does not exist.
    pub create_zone: bool,
    pub plugins: PluginSettings,
    pub network: Network,
    /// `[aws]`: how heet uses the account.
    pub aws: AwsSettings,
    /// Sorted by name.
    pub roles: Vec<Role>,
    pub environments: BTreeMap<String, Environment>,
    /// `[iam]`: policies, groups, users and roles heet makes per environment.
    pub iam: crate::kinds::iam::Iam,
    /// `[tasks]` and `[scenarios]`: what `heet run` runs on the instances.
    pub tasks: crate::tasks::Tasks,
    /// `[stacks.*]`, by name.
    pub stacks: crate::kinds::stacks::Stacks,
}

#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Folder scanned for `*.wasm`, resolved against the definition's folder.
    pub dir: PathBuf,
    /// Whether `dir` was written in the file: a missing default folder just means no plugins.
    pub dir_explicit: bool,
    pub order: Vec<(String, Location)>,
    pub limits: Limits,
    /// Per-plugin config as JSON, with where it was written.
    pub config: BTreeMap<String, (String, Location)>,
    /// Per-plugin grants (`[plugins.grants.NAME]`).
    pub grants: BTreeMap<String, Grant>,
    /// Where `require_grants = true` is written, when it is: every plugin needs a grant.
    pub require_grants: Option<Location>,
    /// `[plugins.trust]`: when set, every plugin needs a signature from one of its keys.
    pub trust: Option<signing::Policy>,
}

/// `[aws]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// heet paces its calls to AWS's default request rates times this (see `cloud::pace`).
    pub pace: f64,
}

/// The range `aws.pace` may take: a twentieth of AWS's default rates to a hundred times them.
pub const PACE_RANGE: std::ops::RangeInclusive<f64> = 0.05..=100.0;

/// Where instances run: `[network]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    pub vpc: Vpc,
    /// The VPC's CIDR when heet creates it, unless the environment sets its own.
    pub cidr: ipnet::Ipv4Net,
    /// How many subnets heet creates in its VPC, one per availability zone.
    pub subnets: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Vpc {
    /// The account's default VPC: security groups go there, instances in its default subnets.
    #[default]
    Default,
    /// A VPC heet creates per environment, with an internet gateway and public subnets.
    Create,
    /// A VPC that exists, and the subnets of it instances are spread over.
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
}

pub const DEFAULT_CIDR: &str = "10.0.0.0/16";

/// A key pair heet makes per project, env and role, named `<project>-<env>-<role>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPair {
    /// `key_pair = "create"`: EC2 makes an ed25519 key; its private key goes to a
    /// SecureString, `/heet/<project>/<env>/keys/<role>`.
    Create,
    /// `key_pair = { public_key = "ssh-ed25519 …" }`: the operator's own key, imported.
    Import { public_key: String },
}

/// `instance_profile = "iam:NAME"`: the instance profile of heet's IAM role NAME.
pub const IAM_PROFILE_PREFIX: &str = "iam:";

impl Role {
    /// The instance profile the role's instances launch with: heet's (`iam:NAME`, named
    /// `<project>-<env>-NAME`) or one that exists.
    pub fn launch_profile(&self, project: &str, env: &str) -> Option<String> {
        let p = self.instance_profile.as_deref()?;
        Some(match p.strip_prefix(IAM_PROFILE_PREFIX) {
            Some(name) => crate::kinds::iam::full_name(project, env, name),
            None => p.to_owned(),
        })
    }

    /// The key pair the role's instances launch with: the one heet makes for it, or the
    /// one `key_name` names.
    pub fn launch_key(&self, project: &str, env: &str) -> Option<String> {
        match &self.key_pair {
            Some(_) => Some(format!("{project}-{env}-{}", self.name)),
            None => self.key_name.clone(),
        }
    }
}

/// Where a role's instances are placed (RunInstances' `Placement`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// `availability_zone`: only where no subnet decides the zone (the default VPC).
    pub availability_zone: Option<String>,
    /// `placement_group`: a placement group that exists.
    pub group: Option<String>,
    /// `tenancy`: `default`, `dedicated` or `host`.
    pub tenancy: Option<String>,
}

impl Placement {
    /// Its part of the launch settings: empty when nothing is set.
    pub fn setting(&self) -> String {
        if *self == Placement::default() {
            return String::new();
        }
        let part = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "zone={} group={} tenancy={}",
            part(&self.availability_zone),
            part(&self.group),
            part(&self.tenancy)
        )
    }
}

/// The tenancies EC2 knows.
pub const TENANCIES: [&str; 3] = ["default", "dedicated", "host"];

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub name: String,
    pub count: u32,
    pub instance_type: String,
    pub ami: String,
    pub user_data: String,
    /// A key pair that exists, by name.
    pub key_name: Option<String>,
    /// A key pair heet makes for the role (`key_pair`); the role then launches with it.
    pub key_pair: Option<KeyPair>,
    /// Passed through to RunInstances (an instance profile that exists).
    pub instance_profile: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// TCP ports the role's security group opens, to `allow_from` and `allow_cidr`.
    pub ports: Vec<u16>,
    /// Roles whose groups may reach `ports`.
    pub allow_from: Vec<String>,
    pub allow_cidr: Vec<ipnet::Ipv4Net>,
    /// A data volume per instance, in GiB (the sizing hook may change it).
    pub volume_gb: Option<u32>,
    /// Keep the data volume when its instance is terminated.
    pub volume_keep: bool,
    /// An Elastic IP per instance.
    pub eip: bool,
    /// `elastic_ip = "eipalloc-…"`: an address that exists, for the role's one instance;
    /// associated by heet, never released by it.
    pub elastic_ip: Option<String>,
    /// `record = "a"`: the role's names are A records to its instances' addresses, not
    /// CNAMEs to their public DNS names.
    pub record_a: bool,
    /// Where and how its instances are placed; a change replaces them.
    pub placement: Placement,
    /// Detailed (1-minute) CloudWatch monitoring, changed in place; unset, heet leaves it as
    /// EC2 has it.
    pub monitoring: Option<bool>,
    /// EBS-optimized instances; a change replaces them (EC2 changes it only when stopped).
    pub ebs_optimized: bool,
    /// EC2's source/destination check (off for a NAT or a router), changed in place; unset,
    /// heet leaves it as EC2 has it.
    pub source_dest_check: Option<bool>,
    /// Termination protection: while on, heet (and anyone) cannot terminate the instances;
    /// changed in place. Unset is off (`Some(false)`: said so, which keeps the permission to
    /// turn it off in `heet iam-policy`).
    pub disable_api_termination: Option<bool>,
    /// How replaced instances are rolled.
    pub rolling: crate::rolling::Rolling,
    /// The launch settings whose change replaces a running instance.
    pub replace_on: crate::launch::ReplaceOn,
    /// An application load balancer in front of the role (`kinds::balancers`).
    pub load_balancer: Option<crate::kinds::balancers::Balancer>,
}

impl Role {
    /// Whether the role has a security group of its own: it opens ports, or another role's
    /// group admits it.
    pub fn has_group(&self, def: &Definition) -> bool {
        !self.ports.is_empty()
            || self.load_balancer.is_some()
            || def.roles.iter().any(|r| r.allow_from.contains(&self.name))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// `down` on a protected environment asks for its name to be typed back.
    pub protected: bool,
    /// The CIDR of the VPC heet creates for this environment (else `network.cidr`).
    pub cidr: Option<ipnet::Ipv4Net>,
    /// The AWS account the environment lives in: heet refuses credentials of another.
    pub account_id: Option<String>,
    /// The AWS profile its credentials come from (after `--profile`, before the config
    /// chain's `AWS_PROFILE`).
    pub profile: Option<String>,
    /// Its region (after `--region`, before the config chain and `project.region`).
    pub region: Option<String>,
    /// The role heet assumes in it, from the profile's credentials.
    pub assume_role: Option<AssumeRole>,
}

/// `assume_role` and its companions in `[environments.NAME]`: the role heet works as in that
/// environment's account (through aws-config's assume-role provider, which refreshes the
/// credentials during long runs).
#[derive(Debug, Clone, PartialEq)]
pub struct AssumeRole {
    pub arn: String,
    pub external_id: Option<String>,
    /// `session_name`, else `heet-<user>`.
    pub session_name: Option<String>,
    /// `duration` in seconds (STS's default, one hour, when unset).
    pub duration: Option<u32>,
}

/// STS's bounds on an assumed role's session, in seconds (the role's own maximum may be
/// lower: STS says so when asked for more).
pub const SESSION_SECONDS: std::ops::RangeInclusive<u32> = 900..=43_200;

impl Definition {
    /// The CIDR of the VPC heet creates for `env`.
    pub fn cidr(&self, env: &str) -> ipnet::Ipv4Net {
        self.environments
            .get(env)
            .and_then(|e| e.cidr)
            .unwrap_or(self.network.cidr)
    }
}

/// Every string in a TOML value, nested ones too.
fn toml_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(items) => items.iter().for_each(|i| toml_strings(i, out)),
        toml::Value::Table(t) => t.values().for_each(|i| toml_strings(i, out)),
        _ => {}
    }
}

impl Definition {
    /// The definition with each `${stacks.NAME.OUTPUT}` replaced by the output `outputs`
    /// holds; the references whose output is not known yet (a stack not made) by a
    /// placeholder, each named in the set returned (`kinds::stacks::resolve`).
    pub fn resolved(
        &self,
        outputs: &crate::kinds::stacks::Outputs,
    ) -> (Definition, BTreeSet<String>) {
        use crate::kinds::stacks::{resolve, resolve_json};
        let mut unknown = BTreeSet::new();
        let mut def = self.clone();
        if def.stacks.is_empty() {
            return (def, unknown);
        }
        for r in &mut def.roles {
            r.user_data = resolve(&r.user_data, outputs, &mut unknown);
            for v in [&mut r.subnet_id, &mut r.instance_profile]
                .into_iter()
                .flatten()
            {
                *v = resolve(v, outputs, &mut unknown);
            }
            for g in &mut r.security_group_ids {
                *g = resolve(g, outputs, &mut unknown);
            }
        }
        for (json, _) in def.plugins.config.values_mut() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                *json = resolve_json(&v, outputs, &mut unknown).to_string();
            }
        }
        (def, unknown)
    }
}

/// Most subnets heet creates in its VPC.
pub const MAX_SUBNETS: u32 = 6;
/// Largest data volume (gp3), GiB.
pub const MAX_VOLUME_GB: u32 = 16_384;

/// Most instances one role may ask for; a guard against typos like `count = 1000`.
pub const MAX_COUNT: u32 = 500;
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Definition")]
struct RawDefinition {
    /// `[project]`: its name, and the region and DNS zone it uses.
    project: RawProject,
    /// `[plugins]`: the sandboxed WebAssembly plugins heet asks for names, sizes, tags,
    /// user_data and verdicts (docs/plugins.md).
    #[serde(default)]
    plugins: RawPlugins,
    /// `[network]`: the VPC and subnets (without it: the account's default VPC).
    network: Option<RawNetwork>,
    /// `[aws]`: how heet paces its calls to AWS.
    aws: Option<RawAws>,
    /// `[defaults]`: any role key, for every role; a role's own value wins.
    #[serde(default)]
    defaults: RawRole,
    /// `[roles.NAME]`: the roles, each a set of like instances.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawRole>")]
    roles: BTreeMap<Spanned<String>, Spanned<RawRole>>,
    /// `[environments.NAME]`: the environments `--env` names, each with resources (and
    /// optionally an account) of its own.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawEnvironment>")]
    environments: BTreeMap<Spanned<String>, RawEnvironment>,
    /// `[iam]`: the IAM policies, groups, users and roles heet makes in each environment.
    #[serde(default)]
    iam: crate::kinds::iam::RawIam,
    /// `[tasks.ROLE.NAME]`: shell scripts `heet run` sends to a role's instances.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, BTreeMap<String, crate::tasks::RawTask>>")]
    tasks: crate::tasks::RawTasks,
    /// `[scenarios.NAME]`: the tasks `heet run NAME` runs, step by step.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, crate::tasks::RawScenario>")]
    scenarios: crate::tasks::RawScenarios,
    /// `[stacks.NAME]`: CloudFormation stacks heet makes in each environment before the
    /// instances; `${stacks.NAME.OUTPUT}` reads an output where the definition takes an id
    /// or a string.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, crate::kinds::stacks::RawStack>")]
    stacks: crate::kinds::stacks::RawStacks,
}

/// The JSON Schema of heet.toml, from the structs it is read with: draft 7, the one every
/// TOML editor's validator (Taplo's among them) reads.
pub(crate) fn raw_schema() -> schemars::Schema {
    schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawDefinition>()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Project")]
struct RawProject {
    #[schemars(with = "String")]
    name: Spanned<String>,
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    domain: Option<Spanned<String>>,
    #[serde(default)]
    create_zone: bool,
    #[schemars(with = "Option<String>")]
    version: Option<Spanned<String>>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Plugins")]
struct RawPlugins {
    #[schemars(with = "Option<String>")]
    dir: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    order: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    limits: RawLimits,
    /// `[plugins.config.NAME]`: each plugin's settings, handed to it as JSON.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Map<String, serde_json::Value>>")]
    config: BTreeMap<Spanned<String>, Spanned<toml::Table>>,
    /// `[plugins.grants.NAME]`: what each plugin may answer.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawGrant>")]
    grants: BTreeMap<Spanned<String>, Spanned<RawGrant>>,
    #[schemars(with = "Option<bool>")]
    require_grants: Option<Spanned<bool>>,
    /// `[plugins.trust]`: the keys plugins must be signed with.
    #[schemars(with = "Option<RawTrust>")]
    trust: Option<Spanned<RawTrust>>,
}

/// `[plugins.trust]`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Trust")]
struct RawTrust {
    #[schemars(with = "Vec<RawTrustKey>")]
    keys: Vec<Spanned<RawTrustKey>>,
}

/// One `[[plugins.trust.keys]]`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TrustKey")]
struct RawTrustKey {
    #[schemars(with = "Option<String>")]
    public_key: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    public_key_file: Option<Spanned<String>>,
    #[schemars(with = "String")]
    scope: Spanned<String>,
}

/// `[plugins.grants.NAME]`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Grant")]
struct RawGrant {
    #[schemars(with = "Vec<String>")]
    hooks: Vec<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    roles: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<Vec<String>>")]
    envs: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Network")]
struct RawNetwork {
    #[schemars(with = "Option<String>")]
    vpc: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    cidr: Option<Spanned<String>>,
    #[schemars(with = "Option<u32>")]
    subnets: Option<Spanned<u32>>,
    #[schemars(with = "Option<Vec<String>>")]
    subnet_ids: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Aws")]
struct RawAws {
    #[schemars(with = "Option<f64>")]
    pace: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
struct RawLimits {
    #[schemars(with = "Option<u64>")]
    fuel: Option<Spanned<u64>>,
    #[schemars(with = "Option<u64>")]
    memory_mb: Option<Spanned<u64>>,
    #[schemars(with = "Option<u64>")]
    timeout_ms: Option<Spanned<u64>>,
}

/// `[defaults]` and `[roles.*]` share this shape; a role's value wins over the default.
#[derive(Deserialize, Default, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Role")]
struct RawRole {
    #[schemars(with = "Option<u32>")]
    count: Option<Spanned<u32>>,
    #[schemars(with = "Option<String>")]
    instance_type: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    ami: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    user_data: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    key_name: Option<Spanned<String>>,
    #[schemars(with = "Option<serde_json::Value>")]
    key_pair: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<String>")]
    instance_profile: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    subnet_id: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    security_group_ids: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<Vec<i64>>")]
    ports: Option<Vec<Spanned<i64>>>,
    #[schemars(with = "Option<Vec<String>>")]
    allow_from: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<Vec<String>>")]
    allow_cidr: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<u32>")]
    volume_gb: Option<Spanned<u32>>,
    volume_keep: Option<bool>,
    eip: Option<bool>,
    #[schemars(with = "Option<String>")]
    elastic_ip: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    record: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    availability_zone: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    placement_group: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    tenancy: Option<Spanned<String>>,
    monitoring: Option<bool>,
    ebs_optimized: Option<bool>,
    source_dest_check: Option<bool>,
    disable_api_termination: Option<bool>,
    rolling: Option<crate::rolling::RawRolling>,
    #[schemars(with = "Option<Vec<String>>")]
    replace_on: Option<Spanned<Vec<Spanned<String>>>>,
    #[schemars(with = "Option<crate::kinds::balancers::RawBalancer>")]
    load_balancer: Option<Spanned<crate::kinds::balancers::RawBalancer>>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Environment")]
struct RawEnvironment {
    #[serde(default)]
    protected: bool,
    #[schemars(with = "Option<String>")]
    cidr: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    account_id: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    profile: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    region: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    assume_role: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    external_id: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    session_name: Option<Spanned<String>>,
    #[schemars(with = "Option<u32>")]
    duration: Option<Spanned<u32>>,
}

impl Definition {
    /// Reads and validates the definition at `file`.
    pub fn load(file: &Path) -> Result<Definition, DefinitionError> {
        let source = std::fs::read_to_string(file).map_err(|e| DefinitionError {
            file: file.to_owned(),
            at: None,
            message: format!("cannot read the definition: {e}"),
        })?;
        Definition::parse(file, &source)
    }

    /// Parses `source` as if read from `file` (which only names the file in errors and anchors
    /// relative paths).
    pub fn parse(file: &Path, source: &str) -> Result<Definition, DefinitionError> {
        let cx = Cx { file, source };
        let raw: RawDefinition =
            toml::from_str(source).map_err(|e| DefinitionError::from_toml(file, source, &e))?;
        cx.build(raw)
    }

    /// The environment named on the command line, checked against the definition.
    pub fn environment(&self, env: &str) -> Result<&Environment, DefinitionError> {
        check_name("env", env).map_err(|message| DefinitionError {
            file: self.file.clone(),
            at: None,
            message,
        })?;
        self.environments.get(env).ok_or_else(|| {
            let defined: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            DefinitionError {
                file: self.file.clone(),
                at: None,
                message: if defined.is_empty() {
                    format!("environment {env:?} is not defined: add an [environments.{env}] table")
                } else {
                    format!(
                        "environment {env:?} is not defined (defined: {})",
                        defined.join(", ")
                    )
                },
            }
        })
    }

    /// An error about this definition at `at`.
    pub fn error_at(&self, at: Location, message: impl Into<String>) -> DefinitionError {
        DefinitionError {
            file: self.file.clone(),
            at: Some((at.line, at.col)),
            message: message.into(),
        }
    }

    /// The folder relative paths in the definition are resolved from.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

struct Cx<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Cx<'_> {
    fn location(&self, offset: usize) -> Location {
        Location::of(self.source, offset)
    }

    fn error(&self, offset: Option<usize>, message: impl Into<String>) -> DefinitionError {
        DefinitionError {
            file: self.file.to_owned(),
            at: Some(offset.map_or((1, 1), |o| {
                let l = self.location(o);
                (l.line, l.col)
            })),
            message: message.into(),
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> DefinitionError {
        self.error(Some(spanned.span().start), message)
    }

    /// How an environment reaches its account: `profile`, `region`, and `assume_role` with
    /// its companions, each checked where it is written; a role in another account than
    /// `account_id` is refused here, not by AWS.
    fn access(&self, env: &str, raw: &RawEnvironment) -> Result<Environment, DefinitionError> {
        let key = |k: &str| format!("environments.{env}.{k}");
        if let Some(p) = &raw.profile
            && p.get_ref().trim().is_empty()
        {
            return Err(self.at(
                p,
                format!("{}: a profile name may not be empty", key("profile")),
            ));
        }
        if let Some(r) = &raw.region {
            validate::check_region(r.get_ref())
                .map_err(|m| self.at(r, format!("{}: {m}", key("region"))))?;
        }
        let companion = [
            raw.external_id
                .as_ref()
                .map(|s| (s.span().start, "external_id")),
            raw.session_name
                .as_ref()
                .map(|s| (s.span().start, "session_name")),
            raw.duration.as_ref().map(|s| (s.span().start, "duration")),
        ];
        let assume_role = match &raw.assume_role {
            None => {
                if let Some((at, k)) = companion.into_iter().flatten().next() {
                    return Err(self.error(
                        Some(at),
                        format!("{} is for assume_role, which is not set", key(k)),
                    ));
                }
                None
            }
            Some(arn) => {
                let account = validate::role_arn_account(arn.get_ref())
                    .map_err(|m| self.at(arn, format!("{}: {m}", key("assume_role"))))?;
                if let Some(pinned) = &raw.account_id
                    && pinned.get_ref() != account
                {
                    return Err(self.at(
                        arn,
                        format!(
                            "{}: the role is in account {account}, but the environment is pinned to {} (account_id)",
                            key("assume_role"),
                            pinned.get_ref()
                        ),
                    ));
                }
                if let Some(id) = &raw.external_id {
                    validate::check_sts_word(&key("external_id"), id.get_ref(), 1224, ":/")
                        .map_err(|m| self.at(id, m))?;
                }
                if let Some(name) = &raw.session_name {
                    validate::check_sts_word(&key("session_name"), name.get_ref(), 64, "")
                        .map_err(|m| self.at(name, m))?;
                }
                if let Some(d) = &raw.duration
                    && !SESSION_SECONDS.contains(d.get_ref())
                {
                    return Err(self.at(
                        d,
                        format!(
                            "{}: {} seconds is outside STS's {} to {} (e.g. duration = 3600)",
                            key("duration"),
                            d.get_ref(),
                            SESSION_SECONDS.start(),
                            SESSION_SECONDS.end()
                        ),
                    ));
                }
                Some(AssumeRole {
                    arn: arn.get_ref().clone(),
                    external_id: raw.external_id.as_ref().map(|s| s.get_ref().clone()),
                    session_name: raw.session_name.as_ref().map(|s| s.get_ref().clone()),
                    duration: raw.duration.as_ref().map(|d| *d.get_ref()),
                })
            }
        };
        Ok(Environment {
            profile: raw.profile.as_ref().map(|p| p.get_ref().clone()),
            region: raw.region.as_ref().map(|r| r.get_ref().clone()),
            assume_role,
            ..Environment::default()
        })
    }

    fn build(&self, mut raw: RawDefinition) -> Result<Definition, DefinitionError> {
        let raw_grants = std::mem::take(&mut raw.plugins.grants);
        let name = &raw.project.name;
        check_name("project", name.get_ref()).map_err(|m| self.at(name, m))?;
        if let Some(domain) = &raw.project.domain {
            validate::check_dns_name(domain.get_ref()).map_err(|m| self.at(domain, m))?;
        }
        if let Some(version) = &raw.project.version {
            let v = version.get_ref();
            // It goes into a tag value after a 20-character time.
            let ok = (1..=64).contains(&v.len())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:/=+-@".contains(c));
            if !ok {
                return Err(self.at(
                    version,
                    format!(
                        "project.version {v:?}: 1 to 64 characters, letters, digits and ._:/=+-@ (it goes into a tag)"
                    ),
                ));
            }
        }

        let base = self.file.parent().unwrap_or(Path::new("."));
        let stacks = self.stacks(&mut raw, base)?;
        let mut plugins = self.plugins(raw.plugins, base)?;

        let mut roles = Vec::new();
        for (role_name, role) in &raw.roles {
            check_name("role", role_name.get_ref()).map_err(|m| self.at(role_name, m))?;
            roles.push(self.role(role_name.get_ref(), role, &raw.defaults)?);
        }
        // allow_from names roles: check them once every role is known.
        for (role_name, role) in &raw.roles {
            let from = role
                .get_ref()
                .allow_from
                .as_ref()
                .or(raw.defaults.allow_from.as_ref());
            for from in from.into_iter().flatten() {
                if !raw.roles.keys().any(|r| r.get_ref() == from.get_ref()) {
                    return Err(self.at(
                        from,
                        format!(
                            "roles.{}.allow_from: there is no role {:?}",
                            role_name.get_ref(),
                            from.get_ref()
                        ),
                    ));
                }
            }
        }

        let network = self.network(raw.network)?;
        // An application load balancer spans two zones at least; its name needs the zone.
        for (role_name, role) in &raw.roles {
            let Some(table) = &role.get_ref().load_balancer else {
                continue;
            };
            let zones = match &network.vpc {
                Vpc::Default => 2,
                Vpc::Create => network.subnets,
                Vpc::Existing { subnet_ids, .. } => subnet_ids.len() as u32,
            };
            if zones < 2 {
                return Err(self.at(
                    table,
                    format!(
                        "roles.{}.load_balancer: a load balancer needs subnets in two zones at least; the network has {zones} (network.subnets or network.subnet_ids)",
                        role_name.get_ref()
                    ),
                ));
            }
            if let (Some(at), None) = (table.get_ref().name_at(), &raw.project.domain) {
                return Err(self.error(
                    Some(at),
                    format!(
                        "roles.{}.load_balancer.name: a name is under the project's domain; set project.domain",
                        role_name.get_ref()
                    ),
                ));
            }
        }
        // A subnet is in one zone: a role launched into one is placed by it.
        for (role_name, role) in &raw.roles {
            let r = role.get_ref();
            let Some(zone) = r
                .availability_zone
                .as_ref()
                .or(raw.defaults.availability_zone.as_ref())
            else {
                continue;
            };
            let subnet = r.subnet_id.is_some() || raw.defaults.subnet_id.is_some();
            if subnet || network.vpc != Vpc::Default {
                return Err(self.at(
                    zone,
                    format!(
                        "roles.{}.availability_zone: the role launches into a subnet, which is in one zone; pin the zone by the subnet (subnet_id) instead",
                        role_name.get_ref()
                    ),
                ));
            }
        }
        let pace = match raw.aws.as_ref().and_then(|a| a.pace.as_ref()) {
            Some(p) if PACE_RANGE.contains(p.get_ref()) => *p.get_ref(),
            Some(p) => {
                return Err(self.at(
                    p,
                    format!(
                        "aws.pace must be between {} and {} (a scale of AWS's default request rates)",
                        PACE_RANGE.start(),
                        PACE_RANGE.end()
                    ),
                ));
            }
            None => 1.0,
        };
        let mut environments = BTreeMap::new();
        for (env_name, env) in raw.environments {
            check_name("env", env_name.get_ref()).map_err(|m| self.at(&env_name, m))?;
            let cidr = env.cidr.as_ref().map(|c| self.vpc_cidr(c)).transpose()?;
            if cidr.is_some() && network.vpc != Vpc::Create {
                return Err(self.at(
                    env.cidr.as_ref().expect("checked"),
                    format!(
                        "environments.{}.cidr needs network.vpc = \"create\"",
                        env_name.get_ref()
                    ),
                ));
            }
            if let Some(id) = &env.account_id
                && !validate::is_account_id(id.get_ref())
            {
                return Err(self.at(
                    id,
                    format!(
                        "environments.{}.account_id: {:?} is not an AWS account id (12 digits, e.g. \"111111111111\")",
                        env_name.get_ref(),
                        id.get_ref()
                    ),
                ));
            }
            let access = self.access(env_name.get_ref(), &env)?;
            environments.insert(
                env_name.into_inner(),
                Environment {
                    protected: env.protected,
                    cidr,
                    account_id: env.account_id.map(Spanned::into_inner),
                    ..access
                },
            );
        }

        let error = |offset: usize, message: String| self.error(Some(offset), message);
        let iam = crate::kinds::iam::build(
            &crate::kinds::iam::Context {
                project: raw.project.name.get_ref(),
                envs: environments.keys().map(String::as_str).collect(),
                base,
                error: &error,
            },
            raw.iam,
        )?;
        // A role's `instance_profile = "iam:NAME"` is the profile of heet's IAM role NAME.
        for (role_name, role) in &raw.roles {
            let profile = role
                .get_ref()
                .instance_profile
                .as_ref()
                .or(raw.defaults.instance_profile.as_ref());
            if let Some(p) = profile
                && let Some(name) = p.get_ref().strip_prefix(IAM_PROFILE_PREFIX)
                && !iam.roles.contains_key(name)
            {
                return Err(self.at(
                    p,
                    format!(
                        "roles.{}.instance_profile: there is no role {name:?} in [iam.roles]",
                        role_name.get_ref()
                    ),
                ));
            }
        }

        let tasks = crate::tasks::build(
            &crate::tasks::Context {
                roles: roles.iter().map(|r| r.name.as_str()).collect(),
                base,
                error: &error,
            },
            raw.tasks,
            raw.scenarios,
        )?;
        plugins.grants = self.grants(raw_grants, &roles, &environments)?;
        Ok(Definition {
            file: self.file.to_owned(),
            project: raw.project.name.into_inner(),
            region: raw.project.region.map(Spanned::into_inner),
            version: raw.project.version.map(Spanned::into_inner),
            domain_at: raw
                .project
                .domain
                .as_ref()
                .map(|d| self.location(d.span().start)),
            domain: raw.project.domain.map(Spanned::into_inner),
            create_zone: raw.project.create_zone,
            plugins,
            network,
            aws: AwsSettings { pace },
            roles,
            environments,
            iam,
            tasks,
            stacks,
        })
    }

    /// `[stacks.*]`, and every `${stacks.NAME.OUTPUT}` where the definition takes one
    /// checked against them: the roles' ids and strings, and the plugins' config.
    fn stacks(
        &self,
        raw: &mut RawDefinition,
        base: &Path,
    ) -> Result<crate::kinds::stacks::Stacks, DefinitionError> {
        use crate::kinds::stacks;
        let error = |offset: usize, message: String| self.error(Some(offset), message);
        let cx = stacks::Context {
            project: raw.project.name.get_ref(),
            envs: raw
                .environments
                .keys()
                .map(|k| k.get_ref().as_str())
                .collect(),
            base,
            source: self.source,
            error: &error,
        };
        let built = stacks::build(&cx, std::mem::take(&mut raw.stacks))?;
        let check = |field: String, value: &Spanned<String>| {
            stacks::check_references(&cx, &built, &field, value.get_ref(), value.span())
        };
        let roles = raw
            .roles
            .iter()
            .map(|(n, r)| (format!("roles.{}", n.get_ref()), r.get_ref()))
            .chain([("defaults".to_owned(), &raw.defaults)]);
        for (at, role) in roles {
            let strings = [
                ("subnet_id", &role.subnet_id),
                ("instance_profile", &role.instance_profile),
                ("user_data", &role.user_data),
            ];
            for (key, value) in strings {
                if let Some(v) = value {
                    check(format!("{at}.{key}"), v)?;
                }
            }
            for g in role.security_group_ids.iter().flatten() {
                check(format!("{at}.security_group_ids"), g)?;
            }
        }
        for (name, table) in &raw.plugins.config {
            let field = format!("plugins.config.{}", name.get_ref());
            let mut texts = Vec::new();
            toml_strings(&toml::Value::Table(table.get_ref().clone()), &mut texts);
            for t in texts {
                stacks::check_references(&cx, &built, &field, &t, table.span())?;
            }
        }
        Ok(built)
    }

    fn cidr(&self, raw: &Spanned<String>) -> Result<ipnet::Ipv4Net, DefinitionError> {
        let net: ipnet::Ipv4Net = raw.get_ref().parse().map_err(|_| {
            self.at(
                raw,
                format!(
                    "invalid IPv4 CIDR {:?}: write it as 10.0.0.0/16",
                    raw.get_ref()
                ),
            )
        })?;
        if net.trunc() != net {
            return Err(self.at(
                raw,
                format!("{net} has host bits set: the network is {}", net.trunc()),
            ));
        }
        Ok(net)
    }

    /// A VPC's CIDR: room for subnets of at least 16 addresses each.
    fn vpc_cidr(&self, raw: &Spanned<String>) -> Result<ipnet::Ipv4Net, DefinitionError> {
        let cidr = self.cidr(raw)?;
        if !(16..=24).contains(&cidr.prefix_len()) {
            return Err(self.at(
                raw,
                format!("a VPC's CIDR is /16 to /24, not /{}", cidr.prefix_len()),
            ));
        }
        Ok(cidr)
    }

    fn network(&self, raw: Option<RawNetwork>) -> Result<Network, DefinitionError> {
        let default_cidr: ipnet::Ipv4Net = DEFAULT_CIDR.parse().expect("a valid CIDR");
        let Some(raw) = raw else {
            return Ok(Network {
                vpc: Vpc::Default,
                cidr: default_cidr,
                subnets: 2,
            });
        };
        let subnet_ids = raw.subnet_ids.as_ref();
        let vpc = match raw.vpc.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "default")) => Vpc::Default,
            Some((_, "create")) => Vpc::Create,
            Some((v, id)) if id.starts_with("vpc-") => {
                let ids = subnet_ids.map(|s| s.get_ref().clone()).unwrap_or_default();
                if ids.is_empty() {
                    return Err(self.at(
                        v,
                        "network.vpc names an existing VPC: list the subnets to use in network.subnet_ids",
                    ));
                }
                Vpc::Existing {
                    vpc_id: id.to_owned(),
                    subnet_ids: ids,
                }
            }
            Some((v, other)) => {
                return Err(self.at(
                    v,
                    format!(
                        "network.vpc must be \"default\", \"create\" or a VPC id (vpc-…), not {other:?}"
                    ),
                ));
            }
        };
        if let Some(ids) = subnet_ids
            && !matches!(vpc, Vpc::Existing { .. })
        {
            return Err(self.at(
                ids,
                "network.subnet_ids goes with an existing network.vpc id",
            ));
        }
        let only_create = |what: &str, at: &dyn Fn() -> DefinitionError| {
            if vpc == Vpc::Create {
                Ok(())
            } else {
                Err(DefinitionError {
                    message: format!("network.{what} needs network.vpc = \"create\""),
                    ..at()
                })
            }
        };
        let cidr = match &raw.cidr {
            Some(c) => {
                only_create("cidr", &|| self.at(c, ""))?;
                self.vpc_cidr(c)?
            }
            None => default_cidr,
        };
        let subnets = match &raw.subnets {
            Some(n) => {
                only_create("subnets", &|| self.at(n, ""))?;
                if !(1..=MAX_SUBNETS).contains(n.get_ref()) {
                    return Err(self.at(
                        n,
                        format!("network.subnets must be between 1 and {MAX_SUBNETS}"),
                    ));
                }
                *n.get_ref()
            }
            None => 2,
        };
        Ok(Network { vpc, cidr, subnets })
    }

    fn plugins(&self, raw: RawPlugins, base: &Path) -> Result<PluginSettings, DefinitionError> {
        let defaults = Limits::default();
        let limit = |v: &Option<Spanned<u64>>, min: u64, max: u64, what: &str| match v {
            None => Ok(None),
            Some(v) if (min..=max).contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(self.at(v, format!("{what} must be between {min} and {max}"))),
        };
        let limits = Limits {
            fuel: limit(
                &raw.limits.fuel,
                1_000,
                100_000_000_000,
                "plugins.limits.fuel",
            )?
            .unwrap_or(defaults.fuel),
            memory_bytes: limit(&raw.limits.memory_mb, 1, 4096, "plugins.limits.memory_mb")?
                .map_or(defaults.memory_bytes, |mb| mb << 20),
            timeout_ms: limit(
                &raw.limits.timeout_ms,
                10,
                600_000,
                "plugins.limits.timeout_ms",
            )?
            .unwrap_or(defaults.timeout_ms),
        };
        let order = raw
            .order
            .unwrap_or_default()
            .iter()
            .map(|n| (n.get_ref().clone(), self.location(n.span().start)))
            .collect();
        let mut config = BTreeMap::new();
        for (name, table) in raw.config {
            let json = serde_json::to_string(table.get_ref())
                .map_err(|e| self.at(&table, format!("plugins.config.{}: {e}", name.get_ref())))?;
            config.insert(
                name.get_ref().clone(),
                (json, self.location(name.span().start)),
            );
        }
        Ok(PluginSettings {
            dir: base.join(raw.dir.as_ref().map_or("plugins", |d| d.get_ref().as_str())),
            dir_explicit: raw.dir.is_some(),
            order,
            limits,
            config,
            grants: BTreeMap::new(),
            require_grants: raw
                .require_grants
                .filter(|r| *r.get_ref())
                .map(|r| self.location(r.span().start)),
            trust: raw.trust.map(|t| self.trust(t, base)).transpose()?,
        })
    }

    /// `[plugins.trust]`: each key read and checked where it is written.
    fn trust(
        &self,
        raw: Spanned<RawTrust>,
        base: &Path,
    ) -> Result<signing::Policy, DefinitionError> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        if raw.keys.is_empty() {
            return Err(self.error(
                Some(at),
                "plugins.trust.keys is empty: a trust policy without keys would refuse every plugin; name a key or drop [plugins.trust]",
            ));
        }
        let mut keys = Vec::new();
        for k in raw.keys {
            let k_at = self.location(k.span().start);
            let k = k.into_inner();
            let key = match (&k.public_key, &k.public_key_file) {
                (Some(line), None) => signing::public_key(line.get_ref())
                    .map_err(|e| self.at(line, format!("plugins.trust.keys.public_key: {e}")))?,
                (None, Some(file)) => {
                    let path = base.join(file.get_ref());
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        self.at(
                            file,
                            format!(
                                "plugins.trust.keys.public_key_file: cannot read {}: {e}",
                                path.display()
                            ),
                        )
                    })?;
                    signing::public_key(&text).map_err(|e| {
                        self.at(
                            file,
                            format!(
                                "plugins.trust.keys.public_key_file: {}: {e}",
                                path.display()
                            ),
                        )
                    })?
                }
                _ => {
                    return Err(self.error(
                        Some(k.scope.span().start),
                        "plugins.trust.keys: give a key either as public_key (the line minisign prints) or as public_key_file, not both or neither",
                    ));
                }
            };
            let scope = signing::Scope::parse(k.scope.get_ref())
                .map_err(|e| self.at(&k.scope, format!("plugins.trust.keys.scope: {e}")))?;
            keys.push(signing::TrustedKey {
                id: signing::key_id(key.keynum()),
                key,
                scope,
                at: k_at,
            });
        }
        Ok(signing::Policy { keys })
    }

    /// `[plugins.grants.*]`, checked against the hooks there are and the definition's roles
    /// and environments. Whether each names a plugin in the folder is `plugins::discover`'s.
    fn grants(
        &self,
        raw: BTreeMap<Spanned<String>, Spanned<RawGrant>>,
        roles: &[Role],
        environments: &BTreeMap<String, Environment>,
    ) -> Result<BTreeMap<String, Grant>, DefinitionError> {
        let mut grants = BTreeMap::new();
        for (name, grant) in raw {
            let (name, at) = (name.get_ref().clone(), self.location(name.span().start));
            let grant = grant.into_inner();
            let mut hooks = BTreeSet::new();
            for h in &grant.hooks {
                let hook = grants::hook_named(h.get_ref()).ok_or_else(|| {
                    let known: Vec<&str> = Hook::ALL.iter().map(|h| h.interface()).collect();
                    self.at(
                        h,
                        format!(
                            "plugins.grants.{name}.hooks: {:?} is not a hook; they are {}",
                            h.get_ref(),
                            known.join(", ")
                        ),
                    )
                })?;
                hooks.insert(hook);
            }
            let names = |list: Option<Vec<Spanned<String>>>,
                         what: &str,
                         known: &dyn Fn(&str) -> bool|
             -> Result<Option<BTreeSet<String>>, DefinitionError> {
                let Some(list) = list else { return Ok(None) };
                let mut set = BTreeSet::new();
                for item in list {
                    if !known(item.get_ref()) {
                        return Err(self.at(
                            &item,
                            format!(
                                "plugins.grants.{name}.{what}s: there is no {what} {:?}",
                                item.get_ref()
                            ),
                        ));
                    }
                    set.insert(item.into_inner());
                }
                Ok(Some(set))
            };
            let roles = names(grant.roles, "role", &|r| roles.iter().any(|x| x.name == r))?;
            let envs = names(grant.envs, "env", &|e| environments.contains_key(e))?;
            grants.insert(
                name,
                Grant {
                    hooks,
                    roles,
                    envs,
                    at,
                },
            );
        }
        Ok(grants)
    }

    fn key_pair(&self, k: &Spanned<toml::Value>) -> Result<KeyPair, DefinitionError> {
        const EXPECTED: &str = "key_pair is \"create\" or { public_key = \"ssh-ed25519 AAAA…\" }";
        match k.get_ref() {
            toml::Value::String(s) if s == "create" => Ok(KeyPair::Create),
            toml::Value::Table(t) => {
                if let Some(other) = t.keys().find(|k| *k != "public_key") {
                    return Err(
                        self.at(k, format!("unknown key {other:?} in key_pair: {EXPECTED}"))
                    );
                }
                let Some(toml::Value::String(public_key)) = t.get("public_key") else {
                    return Err(self.at(k, EXPECTED));
                };
                let public_key =
                    validate::check_public_key(public_key).map_err(|m| self.at(k, m))?;
                Ok(KeyPair::Import { public_key })
            }
            _ => Err(self.at(k, EXPECTED)),
        }
    }

    fn role(
        &self,
        name: &str,
        role: &Spanned<RawRole>,
        defaults: &RawRole,
    ) -> Result<Role, DefinitionError> {
        let r = role.get_ref();
        let pick = |own: &Option<Spanned<String>>, default: &Option<Spanned<String>>| {
            own.clone().or_else(|| default.clone())
        };

        let count = r.count.clone().or_else(|| defaults.count.clone());
        if let Some(c) = &count
            && *c.get_ref() > MAX_COUNT
        {
            return Err(self.at(c, format!("count must be at most {MAX_COUNT}")));
        }

        let instance_type = pick(&r.instance_type, &defaults.instance_type);
        if let Some(t) = &instance_type {
            validate::check_instance_type(t.get_ref()).map_err(|m| self.at(t, m))?;
        }

        let ami = pick(&r.ami, &defaults.ami).ok_or_else(|| {
            self.at(
                role,
                format!("role {name:?} has no ami: set roles.{name}.ami or defaults.ami"),
            )
        })?;
        validate::check_ami(ami.get_ref()).map_err(|m| self.at(&ami, m))?;

        let user_data = pick(&r.user_data, &defaults.user_data);
        if let Some(u) = &user_data {
            validate::check_user_data(u.get_ref()).map_err(|m| self.at(u, m))?;
        }

        let mut ports = Vec::new();
        for p in r
            .ports
            .as_ref()
            .or(defaults.ports.as_ref())
            .into_iter()
            .flatten()
        {
            let port = u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| self.at(p, "a port is between 1 and 65535"))?;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports.sort_unstable();
        let allow_from: Vec<String> = r
            .allow_from
            .as_ref()
            .or(defaults.allow_from.as_ref())
            .into_iter()
            .flatten()
            .map(|f| f.get_ref().clone())
            .collect();
        let mut allow_cidr = Vec::new();
        for c in r
            .allow_cidr
            .as_ref()
            .or(defaults.allow_cidr.as_ref())
            .into_iter()
            .flatten()
        {
            allow_cidr.push(self.cidr(c)?);
        }
        if ports.is_empty() && !(allow_from.is_empty() && allow_cidr.is_empty()) {
            return Err(self.at(
                role,
                format!("roles.{name}: allow_from and allow_cidr open the role's ports: set roles.{name}.ports"),
            ));
        }
        // A role's own key setting, either one, wins over the defaults' (a role may name a
        // key that exists where the defaults make one, and the other way round).
        let (key_name, key_pair) = if r.key_name.is_some() || r.key_pair.is_some() {
            (&r.key_name, &r.key_pair)
        } else {
            (&defaults.key_name, &defaults.key_pair)
        };
        if let (Some(_), Some(k)) = (key_name, key_pair) {
            return Err(self.at(
                k,
                "key_name names a key pair that exists and key_pair makes one: set only one",
            ));
        }
        let key_name = key_name.clone().map(Spanned::into_inner);
        let key_pair = key_pair.as_ref().map(|k| self.key_pair(k)).transpose()?;
        let volume_gb = r.volume_gb.as_ref().or(defaults.volume_gb.as_ref());
        if let Some(v) = volume_gb
            && !(1..=MAX_VOLUME_GB).contains(v.get_ref())
        {
            return Err(self.at(
                v,
                format!("volume_gb must be between 1 and {MAX_VOLUME_GB}"),
            ));
        }

        let record_a = match pick(&r.record, &defaults.record) {
            None => false,
            Some(kind) => match kind.get_ref().as_str() {
                "cname" => false,
                "a" => true,
                other => {
                    return Err(self.at(
                        &kind,
                        format!(
                            "roles.{name}.record: {other:?} is not a record type heet writes; \
                             \"cname\" (to the public DNS name, the default) or \"a\" (to the address)"
                        ),
                    ));
                }
            },
        };

        // An existing address is one instance's: not in [defaults], not beside eip.
        if let Some(a) = &defaults.elastic_ip {
            return Err(self.at(
                a,
                "defaults.elastic_ip: an address is one instance's; set it on the role",
            ));
        }
        let elastic_ip = r.elastic_ip.clone();
        if let Some(a) = &elastic_ip {
            let ok = a.get_ref().strip_prefix("eipalloc-").is_some_and(|id| {
                matches!(id.len(), 8 | 17) && id.chars().all(|c| c.is_ascii_hexdigit())
            });
            if !ok {
                return Err(self.at(
                    a,
                    format!(
                        "roles.{name}.elastic_ip: {:?} is not an allocation id (eipalloc- and 8 or 17 hex digits)",
                        a.get_ref()
                    ),
                ));
            }
            if r.eip.or(defaults.eip).unwrap_or(false) {
                return Err(self.at(
                    a,
                    format!("roles.{name}: elastic_ip names an address that exists; eip = true allocates one: choose one"),
                ));
            }
            if count.as_ref().is_some_and(|c| *c.get_ref() != 1) {
                return Err(self.at(
                    a,
                    format!("roles.{name}.elastic_ip: one address is for one instance; the role's count must be 1"),
                ));
            }
        }

        let availability_zone = pick(&r.availability_zone, &defaults.availability_zone);
        if let Some(z) = &availability_zone {
            validate::check_availability_zone(z.get_ref()).map_err(|m| self.at(z, m))?;
        }
        let group = pick(&r.placement_group, &defaults.placement_group);
        if let Some(g) = &group {
            validate::check_placement_group(g.get_ref()).map_err(|m| self.at(g, m))?;
        }
        let tenancy = pick(&r.tenancy, &defaults.tenancy);
        if let Some(t) = &tenancy
            && !TENANCIES.contains(&t.get_ref().as_str())
        {
            return Err(self.at(
                t,
                format!(
                    "roles.{name}.tenancy: {:?} is not a tenancy; they are {}",
                    t.get_ref(),
                    TENANCIES.join(", ")
                ),
            ));
        }
        let placement = Placement {
            availability_zone: availability_zone.map(Spanned::into_inner),
            group: group.map(Spanned::into_inner),
            tenancy: tenancy.map(Spanned::into_inner),
        };
        let flag = |own: Option<bool>, default: Option<bool>, unset: bool| {
            own.or(default).unwrap_or(unset)
        };

        let error = |offset: usize, message: String| self.error(Some(offset), message);
        let rolling =
            crate::rolling::build(name, r.rolling.as_ref(), defaults.rolling.as_ref(), &error)?;
        // A balancer is one role's: not in [defaults].
        if let Some(b) = &defaults.load_balancer {
            return Err(self.at(
                b,
                "defaults.load_balancer: a load balancer is one role's; set it on the role",
            ));
        }
        let load_balancer = r
            .load_balancer
            .as_ref()
            .map(|b| crate::kinds::balancers::build(name, b.get_ref(), &error))
            .transpose()?;
        if rolling.health == crate::rolling::Health::TargetGroup && load_balancer.is_none() {
            let at = r
                .rolling
                .as_ref()
                .and_then(|x| x.health_at())
                .or_else(|| defaults.rolling.as_ref().and_then(|x| x.health_at()))
                .unwrap_or(role.span().start);
            return Err(self.error(
                Some(at),
                format!(
                    "roles.{name}.rolling.health = \"target-group\" needs a target group: give the role a load_balancer"
                ),
            ));
        }
        let replace_on = crate::launch::ReplaceOn::build(
            name,
            r.replace_on.as_ref(),
            defaults.replace_on.as_ref(),
            &error,
        )?;

        Ok(Role {
            name: name.to_owned(),
            count: count.map_or(1, Spanned::into_inner),
            instance_type: instance_type
                .map_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned(), Spanned::into_inner),
            ami: ami.into_inner(),
            user_data: user_data.map(Spanned::into_inner).unwrap_or_default(),
            key_name,
            key_pair,
            instance_profile: pick(&r.instance_profile, &defaults.instance_profile)
                .map(Spanned::into_inner),
            subnet_id: pick(&r.subnet_id, &defaults.subnet_id).map(Spanned::into_inner),
            security_group_ids: r
                .security_group_ids
                .clone()
                .or_else(|| defaults.security_group_ids.clone())
                .unwrap_or_default()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            ports,
            allow_from,
            allow_cidr,
            volume_gb: volume_gb.map(|v| *v.get_ref()),
            volume_keep: r.volume_keep.or(defaults.volume_keep).unwrap_or(false),
            eip: r.eip.or(defaults.eip).unwrap_or(false),
            elastic_ip: elastic_ip.map(Spanned::into_inner),
            record_a,
            placement,
            monitoring: r.monitoring.or(defaults.monitoring),
            ebs_optimized: flag(r.ebs_optimized, defaults.ebs_optimized, false),
            source_dest_check: r.source_dest_check.or(defaults.source_dest_check),
            disable_api_termination: r
                .disable_api_termination
                .or(defaults.disable_api_termination),
            rolling,
            replace_on,
            load_balancer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Definition, String> {
        Definition::parse(Path::new("examples/heet.toml"), src).map_err(|e| e.to_string())
    }

    #[test]
    fn stacks_are_read_with_their_templates_and_outputs_resolve_where_the_definition_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("net.yaml"),
            "Parameters:\n  Zones:\n    Type: CommaDelimitedList\n  Size:\n    Type: Number\nResources:\n  Vpc:\n    Type: AWS::EC2::VPC\nOutputs:\n  SubnetId:\n    Value: !Ref Vpc\n  GroupId:\n    Value: x\n",
        )
        .unwrap();
        let toml = r#"
[project]
name = "shop"
[plugins.config.naming]
pattern = "{env}-${stacks.net.GroupId}"
[stacks.net]
template = "net.yaml"
parameters = { Zones = ["a", "b"], Size = 3 }
capabilities = ["CAPABILITY_IAM"]
[defaults]
ami = "ami-12c6146b"
[roles.www]
subnet_id = "${stacks.net.SubnetId}"
security_group_ids = ["${stacks.net.GroupId}", "sg-1"]
user_data = "S=${stacks.net.SubnetId} HOME=${HOME}"
[environments.staging]
"#;
        let file = dir.path().join("heet.toml");
        let def = Definition::parse(&file, toml).unwrap();
        let net = &def.stacks["net"];
        assert_eq!(
            net.parameters,
            BTreeMap::from([
                ("Size".to_owned(), "3".to_owned()),
                ("Zones".to_owned(), "a,b".to_owned())
            ])
        );
        assert_eq!(
            net.resources,
            [("Vpc".to_owned(), "AWS::EC2::VPC".to_owned())]
        );

        // Nothing made yet: placeholders, each reference named once.
        let (plan, unknown) = def.resolved(&BTreeMap::new());
        assert_eq!(
            plan.roles[0].subnet_id.as_deref(),
            Some("stacks.net.SubnetId")
        );
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        let outputs = BTreeMap::from([(
            "net".to_owned(),
            BTreeMap::from([
                ("SubnetId".to_owned(), "subnet-9".to_owned()),
                ("GroupId".to_owned(), "sg-9".to_owned()),
            ]),
        )]);
        let (made, unknown) = def.resolved(&outputs);
        assert!(unknown.is_empty());
        let www = &made.roles[0];
        assert_eq!(www.subnet_id.as_deref(), Some("subnet-9"));
        assert_eq!(www.security_group_ids, ["sg-9", "sg-1"]);
        assert_eq!(www.user_data, "S=subnet-9 HOME=${HOME}");
        assert_eq!(
            made.plugins.config["naming"].0,
            r#"{"pattern":"{env}-sg-9"}"#
        );

        // A parameter without a default must be given.
        let err = Definition::parse(&file, &toml.replace(", Size = 3", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the template's parameter \"Size\" has no default"),
            "{err}"
        );
    }

    const GOOD: &str = r#"
[project]
name = "simple-demo"
region = "us-east-1"

[plugins]
dir = "wasm"
[plugins.config.naming]
pattern = "{env}-{role}-{index:02}"

[defaults]
ami = "ami-12c6146b"
instance_type = "t3.micro"

[roles.demo]
count = 2
user_data = "role=demo"

[roles.db]
instance_type = "m5.large"

[environments.staging]
[environments.production]
protected = true
"#;

    #[test]
    fn a_good_definition_resolves_defaults() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.project, "simple-demo");
        assert_eq!(d.plugins.dir, Path::new("examples/wasm"));
        assert_eq!(
            d.plugins.config["naming"].0,
            r#"{"pattern":"{env}-{role}-{index:02}"}"#
        );
        let names: Vec<_> = d.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db", "demo"]);
        let db = &d.roles[0];
        assert_eq!((db.count, db.instance_type.as_str()), (1, "m5.large"));
        assert_eq!(db.ami, "ami-12c6146b");
        let demo = &d.roles[1];
        assert_eq!((demo.count, demo.user_data.as_str()), (2, "role=demo"));
        assert!(d.environments["production"].protected);
        assert!(!d.environments["staging"].protected);
    }

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let err = parse("[project]\nname = \"x\"\nregion = \n").unwrap_err();
        assert!(err.starts_with("examples/heet.toml:3:10: "), "{err}");
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        let err = parse("[project]\nname = \"x\"\n\n[roles.www]\ncont = 2\n").unwrap_err();
        assert!(
            err.starts_with("examples/heet.toml:5:1: unknown field `cont`"),
            "{err}"
        );
    }

    #[test]
    fn negative_count_is_a_type_error_at_the_value() {
        let err = parse(
            "[project]\nname = \"x\"\n[defaults]\nami = \"ami-1\"\n[roles.www]\ncount = -1\n",
        )
        .unwrap_err();
        assert!(err.starts_with("examples/heet.toml:6:9: "), "{err}");
    }

    #[test]
    fn bad_role_name_points_at_the_table_header() {
        let err = parse("[project]\nname = \"x\"\n[defaults]\nami = \"ami-1\"\n[roles.Web_1]\n")
            .unwrap_err();
        assert!(
            err.starts_with("examples/heet.toml:5:8: invalid role name \"Web_1\""),
            "{err}"
        );
    }

    #[test]
    fn role_without_ami_is_an_error() {
        let err = parse("[project]\nname = \"x\"\n[roles.www]\ncount = 1\n").unwrap_err();
        assert!(err.contains("role \"www\" has no ami"), "{err}");
        assert!(err.starts_with("examples/heet.toml:3:"), "{err}");
    }

    #[test]
    fn key_pairs_come_from_the_role_or_else_the_defaults_and_bad_ones_point_at_the_value() {
        let head = "[project]\nname = \"x\"\n[defaults]\nami = \"ami-1\"\nkey_pair = \"create\"\n";
        let d = parse(&format!(
            "{head}[roles.www]\n[roles.db]\nkey_name = \"ops\"\n[environments.e]\n"
        ))
        .unwrap();
        assert_eq!(d.roles[1].name, "www");
        assert_eq!(d.roles[1].key_pair, Some(KeyPair::Create));
        assert_eq!(d.roles[1].launch_key("x", "e").as_deref(), Some("x-e-www"));
        // A role's own key_name wins over the defaults' key_pair.
        assert_eq!(d.roles[0].key_pair, None);
        assert_eq!(d.roles[0].launch_key("x", "e").as_deref(), Some("ops"));

        for (role, at, says) in [
            (
                "key_name = \"ops\"\nkey_pair = \"create\"",
                "8:12",
                "set only one",
            ),
            ("key_pair = \"make\"", "7:12", "key_pair is \"create\" or"),
            (
                "key_pair = { public = \"ssh-ed25519 AAAA\" }",
                "7:12",
                "unknown key \"public\" in key_pair",
            ),
            (
                "key_pair = { public_key = \"ssh-dss AAAA\" }",
                "7:12",
                "EC2 imports ssh-ed25519 and ssh-rsa keys",
            ),
        ] {
            let err = parse(&format!("{head}[roles.www]\n{role}\n")).unwrap_err();
            assert!(
                err.starts_with(&format!("examples/heet.toml:{at}: ")) && err.contains(says),
                "{role}: {err}"
            );
        }
    }

    #[test]
    fn count_above_the_bound_is_an_error() {
        let err = parse(
            "[project]\nname = \"x\"\n[defaults]\nami = \"ami-1\"\n[roles.www]\ncount = 100000\n",
        )
        .unwrap_err();
        assert_eq!(err, "examples/heet.toml:6:9: count must be at most 500");
    }

    #[test]
    fn bad_instance_type_and_limits_are_errors() {
        let err = parse("[project]\nname = \"x\"\n[defaults]\nami = \"ami-1\"\ninstance_type = \"huge\"\n[roles.www]\n")
            .unwrap_err();
        assert!(
            err.starts_with("examples/heet.toml:5:17: invalid instance type"),
            "{err}"
        );
        let err = parse("[project]\nname = \"x\"\n[plugins.limits]\nmemory_mb = 0\n").unwrap_err();
        assert!(
            err.contains("4:13: plugins.limits.memory_mb must be between"),
            "{err}"
        );
    }

    #[test]
    fn network_and_firewall_errors_point_at_the_value() {
        let base = "[project]\nname = \"x\"\n[defaults]\nami = \"ami-1\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err();
        assert_eq!(
            err("[roles.db]\nports = [5432]\nallow_from = [\"wwww\"]\n"),
            "examples/heet.toml:7:15: roles.db.allow_from: there is no role \"wwww\""
        );
        assert_eq!(
            err("[roles.db]\nports = [70000]\n"),
            "examples/heet.toml:6:10: a port is between 1 and 65535"
        );
        assert!(
            err("[roles.db]\nallow_cidr = [\"10.0.0.0/8\"]\n")
                .contains("allow_from and allow_cidr open the role's ports: set roles.db.ports")
        );
        assert_eq!(
            err("[roles.db]\nports = [1]\nallow_cidr = [\"10.0.0.1/8\"]\n"),
            "examples/heet.toml:7:15: 10.0.0.1/8 has host bits set: the network is 10.0.0.0/8"
        );
        assert_eq!(
            err("[network]\nvpc = \"mine\"\n"),
            "examples/heet.toml:6:7: network.vpc must be \"default\", \"create\" or a VPC id (vpc-…), not \"mine\""
        );
        assert_eq!(
            err("[network]\ncidr = \"10.0.0.0/16\"\n"),
            "examples/heet.toml:6:8: network.cidr needs network.vpc = \"create\""
        );
        assert_eq!(
            err("[network]\nvpc = \"create\"\ncidr = \"10.0.0.0/28\"\n"),
            "examples/heet.toml:7:8: a VPC's CIDR is /16 to /24, not /28"
        );
        assert!(
            err("[network]\nvpc = \"vpc-123\"\n")
                .contains("list the subnets to use in network.subnet_ids")
        );
        assert_eq!(
            err("[environments.prod]\ncidr = \"10.1.0.0/16\"\n"),
            "examples/heet.toml:6:8: environments.prod.cidr needs network.vpc = \"create\""
        );
    }

    #[test]
    fn network_settings_resolve_per_environment() {
        let d = parse(
            "[project]\nname = \"x\"\n[network]\nvpc = \"create\"\nsubnets = 3\n[defaults]\nami = \"ami-1\"\n[roles.db]\nports = [5432, 5432, 22]\nvolume_gb = 30\nvolume_keep = true\neip = true\n[environments.dev]\n[environments.prod]\ncidr = \"10.9.0.0/16\"\n",
        )
        .unwrap();
        assert_eq!(d.network.subnets, 3);
        assert_eq!(d.cidr("dev").to_string(), DEFAULT_CIDR);
        assert_eq!(d.cidr("prod").to_string(), "10.9.0.0/16");
        let db = &d.roles[0];
        assert_eq!(db.ports, [22, 5432], "sorted, once each");
        assert_eq!(
            (db.volume_gb, db.volume_keep, db.eip),
            (Some(30), true, true)
        );
    }

    #[test]
    fn missing_project_table_is_reported() {
        let err = parse("[roles.www]\n").unwrap_err();
        assert!(err.contains("missing field `project`"), "{err}");
    }

    #[test]
    fn env_must_be_valid_and_defined() {
        let d = parse(GOOD).unwrap();
        assert!(d.environment("staging").is_ok());
        let err = d.environment("qa").unwrap_err().to_string();
        assert_eq!(
            err,
            "examples/heet.toml: environment \"qa\" is not defined (defined: production, staging)"
        );
        let err = d.environment("st/aging").unwrap_err().to_string();
        assert!(err.contains("character '/' is not allowed"), "{err}");
    }

    // Fuzzing by property: no input makes the parser panic, and every error it returns points
    // inside the file. Longer campaigns: `PROPTEST_CASES=100000 cargo test -p heet
    // definition::tests::prop`.
    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// TOML-ish text built from the definition's own vocabulary, so generated files reach
        /// past the syntax checks into the semantic ones.
        fn definitionish() -> impl Strategy<Value = String> {
            let key = prop_oneof![
                Just("name"),
                Just("count"),
                Just("ami"),
                Just("instance_type"),
                Just("ports"),
                Just("allow_from"),
                Just("allow_cidr"),
                Just("domain"),
                Just("vpc"),
                Just("cidr"),
                Just("subnets"),
                Just("volume_gb"),
                Just("eip"),
                Just("protected"),
                Just("memory_mb"),
                Just("order"),
            ];
            let value = prop_oneof![
                Just("\"shop\"".to_owned()),
                Just("-1".to_owned()),
                Just("70000".to_owned()),
                Just("[\"www\", \"db\"]".to_owned()),
                Just("[443]".to_owned()),
                Just("\"10.0.0.0/33\"".to_owned()),
                Just("\"create\"".to_owned()),
                Just("true".to_owned()),
                Just("\"ami-12c6146b\"".to_owned()),
                "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
                any::<i64>().prop_map(|n| n.to_string()),
            ];
            let table = prop_oneof![
                Just("[project]"),
                Just("[defaults]"),
                Just("[roles.www]"),
                Just("[roles.db]"),
                Just("[network]"),
                Just("[environments.staging]"),
                Just("[plugins.limits]"),
                Just("[roles.Bad_Name]"),
            ];
            let line = prop_oneof![
                table.prop_map(str::to_owned),
                (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
            ];
            proptest::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
        }

        fn points_inside(src: &str) -> Result<(), TestCaseError> {
            if let Err(e) = Definition::parse(Path::new("heet.toml"), src)
                && let Some((line, col)) = e.at
            {
                let lines = src.split('\n').count();
                prop_assert!(line >= 1 && line <= lines, "line {line} of {lines}: {e}");
                prop_assert!(col >= 1, "{e}");
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(src in "\\PC{0,400}") {
                points_inside(&src)?;
            }

            #[test]
            fn definition_like_text_never_panics(src in definitionish()) {
                points_inside(&src)?;
            }
        }
    }
}
