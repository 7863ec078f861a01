//! Application load balancers, one per role that asks for one (`[roles.NAME.load_balancer]`):
//! the balancer in the environment's subnets, its target group and listener, and the role's
//! instances registered as its targets. Desired and observed forms, and the pure plan between
//! them (`BalancerChange`, a [`Change`]); `cloud::elb` holds the calls, `apply` makes them.
//!
//! A balancer and its target group are heet's when the ledger lists them (`balancer/ROLE`,
//! `target-group/ROLE`) with their ARNs and their tags say this project and environment: one
//! of heet's names that is not is a conflict, and a look-alike of another name is never read.
//! The balancer's security group and the rule that lets it reach the role's group are the
//! network kind's (`network::balancer_group`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::definition::DefinitionError;
use crate::kinds::instances::InstancePlan;
use crate::kinds::{Bookkeeping, Change, Family, Scope, Stage};
use crate::namespace::{TAG_ENV, TAG_PROJECT, TAG_RESOURCE};

/// The ledger's and the `heet:resource` tag's prefix of a balancer: `balancer/www`.
pub const BALANCER: &str = "balancer";
/// Of a target group: `target-group/www`.
pub const TARGET_GROUP: &str = "target-group";

/// `[roles.NAME.load_balancer]` as written.
#[derive(Deserialize, Default, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LoadBalancer")]
pub struct RawBalancer {
    /// The public port of the listener (HTTP).
    #[schemars(with = "Option<u16>")]
    listen: Option<Spanned<i64>>,
    /// The port the role's instances serve on.
    #[schemars(with = "Option<u16>")]
    port: Option<Spanned<i64>>,
    /// What the instances speak on `port`: `HTTP` or `HTTPS`.
    #[schemars(with = "Option<String>")]
    protocol: Option<Spanned<String>>,
    health_check: Option<RawHealthCheck>,
    /// How long a deregistered instance keeps its connections: seconds or `"30s"`.
    #[schemars(with = "Option<serde_json::Value>")]
    drain: Option<Spanned<toml::Value>>,
    /// The CNAME to the balancer, under the project's domain.
    #[schemars(with = "Option<String>")]
    name: Option<Spanned<String>>,
}

#[derive(Deserialize, Default, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HealthCheck")]
struct RawHealthCheck {
    #[schemars(with = "Option<String>")]
    path: Option<Spanned<String>>,
    #[schemars(with = "Option<serde_json::Value>")]
    interval: Option<Spanned<toml::Value>>,
}

impl RawBalancer {
    /// Where `name` is written, as a byte offset.
    pub fn name_at(&self) -> Option<usize> {
        self.name.as_ref().map(|n| n.span().start)
    }
}

/// A role's load balancer, as the definition asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    pub listen: u16,
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub protocol: String,
    pub path: String,
    /// Seconds between two health checks (5 to 300).
    pub interval: u32,
    /// Seconds a deregistered target drains (0 to 3600).
    pub drain: u32,
    /// A label under the domain (`www` → `www.example.com`); without it, the cnames hook's
    /// answers for the role (index 0).
    pub name: Option<String>,
}

/// Targets healthy after this many checks in a row: AWS's default is 5, which makes a new
/// instance wait five intervals before it takes traffic.
pub const HEALTHY_THRESHOLD: i32 = 2;

/// A role's `load_balancer` from its table; `error` makes a definition error at a byte offset.
pub fn build(
    role: &str,
    raw: &RawBalancer,
    error: &dyn Fn(usize, String) -> DefinitionError,
) -> Result<Balancer, DefinitionError> {
    let key = |k: &str| format!("roles.{role}.load_balancer.{k}");
    let port = |v: &Option<Spanned<i64>>, k: &str| -> Result<u16, DefinitionError> {
        match v {
            None => Ok(80),
            Some(p) => u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    error(
                        p.span().start,
                        format!("{} is a port, 1 to 65535, not {}", key(k), p.get_ref()),
                    )
                }),
        }
    };
    let protocol = match &raw.protocol {
        None => "HTTP".to_owned(),
        Some(p) => match p.get_ref().to_ascii_uppercase().as_str() {
            u @ ("HTTP" | "HTTPS") => u.to_owned(),
            _ => {
                return Err(error(
                    p.span().start,
                    format!(
                        "{} is \"HTTP\" or \"HTTPS\", not {:?}",
                        key("protocol"),
                        p.get_ref()
                    ),
                ));
            }
        },
    };
    let seconds = |v: &Spanned<toml::Value>, k: &str, range: std::ops::RangeInclusive<u64>| {
        crate::rolling::duration(v.get_ref())
            .map(|d| d.as_secs())
            .filter(|s| range.contains(s))
            .map(|s| s as u32)
            .ok_or_else(|| {
                error(
                    v.span().start,
                    format!(
                        "{} is seconds from {} to {}, e.g. 30 or \"30s\"",
                        key(k),
                        range.start(),
                        range.end()
                    ),
                )
            })
    };
    let health = raw.health_check.clone().unwrap_or_default();
    let path = match &health.path {
        None => "/".to_owned(),
        Some(p) if p.get_ref().starts_with('/') && p.get_ref().len() <= 1024 => p.get_ref().clone(),
        Some(p) => {
            return Err(error(
                p.span().start,
                format!(
                    "{} is a path starting with /, not {:?}",
                    key("health_check.path"),
                    p.get_ref()
                ),
            ));
        }
    };
    let interval = match &health.interval {
        None => 10,
        Some(v) => seconds(v, "health_check.interval", 5..=300)?,
    };
    let drain = match &raw.drain {
        None => 30,
        Some(v) => seconds(v, "drain", 0..=3600)?,
    };
    let name = match &raw.name {
        None => None,
        Some(n) => {
            let label = n.get_ref().trim_end_matches('.').to_ascii_lowercase();
            let ok = !label.is_empty()
                && label.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(error(
                    n.span().start,
                    format!(
                        "{} is a DNS label under the project's domain, e.g. \"www\", not {:?}",
                        key("name"),
                        n.get_ref()
                    ),
                ));
            }
            Some(label)
        }
    };
    Ok(Balancer {
        listen: port(&raw.listen, "listen")?,
        port: port(&raw.port, "port")?,
        protocol,
        path,
        interval,
        drain,
        name,
    })
}

/// The name of a role's balancer and of its target group in AWS: `<project>-<env>-<role>`,
/// which AWS limits to 32 letters, digits and hyphens, not starting with `internal-`; a
/// longer one is cut and given a hash of the whole, so two long names stay apart.
pub fn aws_name(project: &str, env: &str, role: &str) -> String {
    let full = format!("{project}-{env}-{role}");
    if full.len() <= 32 && !full.starts_with("internal-") {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    let cut: String = full.chars().take(23).collect();
    let cut = cut.trim_end_matches('-');
    let name = format!("{cut}-{hash}");
    if name.starts_with("internal-") {
        format!("heet-{hash}")
    } else {
        name
    }
}

pub fn balancer_resource(role: &str) -> String {
    format!("{BALANCER}/{role}")
}

pub fn group_resource(role: &str) -> String {
    format!("{TARGET_GROUP}/{role}")
}

/// Where a balancer and its target group go: the environment's VPC and its subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The account's default VPC, in its default subnets.
    Default,
    /// A VPC the definition names, in the subnets it lists.
    Given { vpc: String, subnets: Vec<String> },
    /// heet's VPC and subnets, by `heet:resource`, known once they are made.
    Heet { vpc: String, subnets: Vec<String> },
}

impl Placement {
    pub fn of(
        def: &crate::definition::Definition,
        network: &super::network::DesiredNetwork,
    ) -> Placement {
        match (&def.network.vpc, &network.vpc) {
            (crate::definition::Vpc::Existing { vpc_id, subnet_ids }, _) => Placement::Given {
                vpc: vpc_id.clone(),
                subnets: subnet_ids.clone(),
            },
            (_, Some(vpc)) => Placement::Heet {
                vpc: "vpc/main".to_owned(),
                subnets: vpc.subnets.iter().map(|s| s.resource.clone()).collect(),
            },
            _ => Placement::Default,
        }
    }
}

/// One role's balancer as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredBalancer {
    pub role: String,
    /// In AWS, of the balancer and its target group ([`aws_name`]).
    pub name: String,
    pub settings: Balancer,
    /// Its names under the domain (labels), CNAMEs to its DNS name.
    pub cnames: Vec<String>,
    /// A successor of the role counts as healthy once its target is (`rolling.health =
    /// "target-group"`), within the rollout's timeout.
    pub wait_healthy: Option<Duration>,
    pub placement: Placement,
}

/// A balancer as ELB reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedBalancer {
    pub arn: String,
    pub name: String,
    pub dns: String,
    /// `active`, `provisioning`, `failed`, ...
    pub state: String,
    pub tags: BTreeMap<String, String>,
    pub listeners: Vec<ObservedListener>,
    pub vpc: String,
    /// One per zone it is enabled in.
    pub subnets: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedListener {
    pub arn: String,
    pub port: u16,
    /// The target group it forwards to.
    pub forwards_to: Option<String>,
}

/// A target group as ELB reports it, with its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub path: String,
    pub interval: u32,
    pub drain: Option<u32>,
    pub tags: BTreeMap<String, String>,
    /// Each target by instance id: its port and state (`initial`, `healthy`, `draining`, ...).
    pub targets: BTreeMap<String, (u16, String)>,
}

/// What `cloud::elb` found of heet's names and the ledger's ARNs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedBalancers {
    pub balancers: Vec<ObservedBalancer>,
    pub groups: Vec<ObservedTargetGroup>,
}

fn tagged_for(tags: &BTreeMap<String, String>, project: &str, env: &str, resource: &str) -> bool {
    tags.get(TAG_PROJECT).is_some_and(|v| v == project)
        && tags.get(TAG_ENV).is_some_and(|v| v == env)
        && tags.get(TAG_RESOURCE).is_some_and(|v| v == resource)
}

/// The tags of a balancer or target group heet makes.
pub fn tags(project: &str, env: &str, resource: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_PROJECT.to_owned(), project.to_owned()),
        (TAG_ENV.to_owned(), env.to_owned()),
        (TAG_RESOURCE.to_owned(), resource.to_owned()),
    ])
}

/// The ledger's balancers and target groups, by `kind/role`, with their ARNs (none when
/// written ahead by a run that stopped before ELB answered).
pub fn owned(ledger: &crate::ledger::Ledger) -> BTreeMap<String, Option<String>> {
    ledger
        .entries
        .values()
        .filter_map(|e| match e {
            crate::ledger::Entry::Resource {
                resource, aws_id, ..
            } if resource.starts_with(&format!("{BALANCER}/"))
                || resource.starts_with(&format!("{TARGET_GROUP}/")) =>
            {
                Some((resource.clone(), aws_id.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The role a ledger resource of this family is of.
fn role_of(resource: &str) -> Option<&str> {
    resource.split_once('/').map(|(_, r)| r)
}

/// One change to a balancer, its target group, listener or targets.
#[derive(Debug, Clone, PartialEq)]
pub enum BalancerChange {
    CreateTargetGroup {
        role: String,
        name: String,
        settings: Balancer,
        placement: Placement,
    },
    /// In the environment's subnets, behind the balancer's group (`network`).
    CreateBalancer {
        role: String,
        name: String,
        placement: Placement,
    },
    /// Forwards `listen` to the target group; the ARNs are known once both exist.
    CreateListener {
        role: String,
        name: String,
        listen: u16,
        balancer: Option<String>,
        group: Option<String>,
    },
    /// The health check or the drain time changed: in place.
    UpdateTargetGroup {
        role: String,
        name: String,
        arn: String,
        settings: Balancer,
        was: String,
    },
    /// A listener on the port that forwards elsewhere, or heet's on another port: set to
    /// `listen`, forwarding to the target group (`group`, or the one made this run).
    UpdateListener {
        role: String,
        name: String,
        arn: String,
        listen: u16,
        group: Option<String>,
        /// What it did: `:80 → another target group`.
        was: String,
    },
    /// The environment's subnets changed (one more, one fewer): the balancer follows them
    /// before a subnet it leaves is deleted.
    SetSubnets {
        role: String,
        name: String,
        arn: String,
        placement: Placement,
        was: BTreeSet<String>,
    },
    /// The instance in `slot` registered (`instance_id`: one that stays, known now; none: the
    /// one launched this run), on `port`.
    Register {
        role: String,
        slot: String,
        instance: String,
        instance_id: Option<String>,
        /// Still booting: it is registered once it runs.
        booting: bool,
        port: u16,
        /// The target group, when it exists.
        group: Option<String>,
        /// A successor in a rollout: its old instance goes once it is healthy here, when
        /// the role's rolling health says so.
        wait_healthy: Option<Duration>,
    },
    /// Before the instances go (`down`): nothing sends them traffic any more.
    DeleteBalancer {
        role: String,
        name: String,
        arn: String,
    },
    DeleteTargetGroup {
        role: String,
        name: String,
        arn: String,
    },
}

impl BalancerChange {
    pub fn role(&self) -> &str {
        match self {
            BalancerChange::CreateTargetGroup { role, .. }
            | BalancerChange::CreateBalancer { role, .. }
            | BalancerChange::CreateListener { role, .. }
            | BalancerChange::UpdateTargetGroup { role, .. }
            | BalancerChange::UpdateListener { role, .. }
            | BalancerChange::SetSubnets { role, .. }
            | BalancerChange::Register { role, .. }
            | BalancerChange::DeleteBalancer { role, .. }
            | BalancerChange::DeleteTargetGroup { role, .. } => role,
        }
    }
}

impl fmt::Display for BalancerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BalancerChange::CreateTargetGroup { name, settings, .. } => write!(
                f,
                "+ targets  {name} ({} {}, health {} every {}s, drain {}s)",
                settings.protocol, settings.port, settings.path, settings.interval, settings.drain
            ),
            BalancerChange::CreateBalancer { name, role, .. } => {
                write!(f, "+ balancer {name} (role {role}, internet-facing)")
            }
            BalancerChange::CreateListener { name, listen, .. } => {
                write!(f, "+ listener {name} :{listen} (HTTP) → its targets")
            }
            BalancerChange::UpdateTargetGroup {
                name,
                settings,
                was,
                ..
            } => write!(
                f,
                "~ targets  {name}: health {} every {}s, drain {}s (was {was})",
                settings.path, settings.interval, settings.drain
            ),
            BalancerChange::UpdateListener {
                name, listen, was, ..
            } => write!(f, "~ listener {name} :{listen} → its targets (was {was})"),
            BalancerChange::SetSubnets { name, was, .. } => write!(
                f,
                "~ balancer {name}: the environment's subnets (was {})",
                was.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            BalancerChange::Register {
                instance,
                instance_id,
                role,
                port,
                ..
            } => {
                let id = instance_id.as_deref().unwrap_or("new");
                write!(
                    f,
                    "+ target   {instance} ({id}) :{port} in {role}'s balancer"
                )
            }
            BalancerChange::DeleteBalancer { name, arn, .. } => {
                write!(f, "- balancer {name} ({arn})")
            }
            BalancerChange::DeleteTargetGroup { name, arn, .. } => {
                write!(f, "- targets  {name} ({arn})")
            }
        }
    }
}

impl Change for BalancerChange {
    fn stage(&self) -> (Stage, u8) {
        match self {
            // After the network (its group, the subnets: band 0), beside IAM's keys.
            BalancerChange::CreateTargetGroup { .. } | BalancerChange::CreateBalancer { .. } => {
                (Stage::Before, 11)
            }
            BalancerChange::CreateListener { .. }
            | BalancerChange::UpdateTargetGroup { .. }
            | BalancerChange::UpdateListener { .. }
            | BalancerChange::SetSubnets { .. } => (Stage::Before, 12),
            // Once the round's instances run, before what points at them moves.
            BalancerChange::Register { .. } => (Stage::Running, 2),
            // With the record deletes, before the instances go: the balancer's listener goes
            // with it, and a target group in use cannot be deleted.
            BalancerChange::DeleteBalancer { .. } => (Stage::Before, 21),
            BalancerChange::DeleteTargetGroup { .. } => (Stage::Before, 22),
        }
    }

    fn bookkeeping(&self) -> Bookkeeping {
        match self {
            BalancerChange::CreateTargetGroup { role, .. } => {
                Bookkeeping::Create(group_resource(role))
            }
            BalancerChange::CreateBalancer { role, .. } => {
                Bookkeeping::Create(balancer_resource(role))
            }
            BalancerChange::DeleteBalancer { role, .. } => {
                Bookkeeping::Delete(balancer_resource(role))
            }
            BalancerChange::DeleteTargetGroup { role, .. } => {
                Bookkeeping::Delete(group_resource(role))
            }
            BalancerChange::CreateListener { .. }
            | BalancerChange::UpdateTargetGroup { .. }
            | BalancerChange::UpdateListener { .. }
            | BalancerChange::SetSubnets { .. }
            | BalancerChange::Register { .. } => Bookkeeping::None,
        }
    }

    fn creates(&self) -> bool {
        matches!(
            self,
            BalancerChange::CreateTargetGroup { .. }
                | BalancerChange::CreateBalancer { .. }
                | BalancerChange::CreateListener { .. }
        )
    }

    fn is_delete(&self) -> bool {
        matches!(
            self,
            BalancerChange::DeleteBalancer { .. } | BalancerChange::DeleteTargetGroup { .. }
        )
    }

    fn slot(&self) -> Option<&str> {
        match self {
            BalancerChange::Register { slot, .. } => Some(slot),
            _ => None,
        }
    }

    fn waits_for(&self) -> Option<(&str, &str)> {
        match self {
            BalancerChange::Register {
                slot,
                instance_id: Some(id),
                booting: true,
                ..
            } => Some((slot, id)),
            _ => None,
        }
    }

    fn scope(&self) -> Scope<'_> {
        match self {
            BalancerChange::Register { slot, .. } => Scope::Slot(slot),
            other => Scope::Role(other.role()),
        }
    }
}

/// The balancers' part of a plan. Registered in `Plan::families` as `balancer`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BalancerPlan {
    pub changes: Vec<BalancerChange>,
    /// heet's names held by what heet did not make.
    pub conflicts: Vec<String>,
    /// Changes ELB cannot make in place.
    pub refused: Vec<String>,
    /// What the ledger lists that proves not heet's (another environment's tags): left alone.
    pub foreign: Vec<String>,
    /// Made by a run killed before it confirmed them: (`kind/role`, ARN).
    pub adopted: Vec<(String, String)>,
    /// Listed by the ledger, gone: forgotten.
    pub forgotten: Vec<String>,
    /// heet's target groups by ARN: each one's drain time and the instances registered in
    /// it, which leave it (drained) before they are terminated.
    pub targets: BTreeMap<String, (u32, BTreeSet<String>)>,
    /// Each wanted role's balancer DNS name, where it exists.
    pub dns: BTreeMap<String, String>,
}

impl Family for BalancerPlan {
    fn label(&self) -> &'static str {
        "balancer"
    }

    fn deleted_noun(&self) -> &'static str {
        "balancer resource(s)"
    }

    fn changes(&self) -> Vec<&dyn Change> {
        self.changes.iter().map(|c| c as &dyn Change).collect()
    }

    fn notes(&self) -> Vec<String> {
        let forgotten = self
            .forgotten
            .iter()
            .map(|r| format!("{r}: gone since heet made it; forgotten"));
        let adopted = self
            .adopted
            .iter()
            .map(|(r, arn)| format!("{r}: made by a run that stopped ({arn}); kept"));
        forgotten.chain(adopted).collect()
    }

    fn conflicts(&self) -> &[String] {
        &self.conflicts
    }

    fn refused(&self) -> Vec<String> {
        self.refused.clone()
    }

    fn foreign(&self) -> &[String] {
        &self.foreign
    }

    fn retain(&mut self, keep: &dyn Fn(&dyn Change) -> bool) {
        self.changes.retain(|c| keep(c));
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.conflicts.is_empty()
            && self.refused.is_empty()
            && self.adopted.is_empty()
            && self.forgotten.is_empty()
    }

    fn settled(&self) -> Vec<(Bookkeeping, Option<&str>)> {
        super::settled(&self.forgotten, &self.adopted)
    }
}

/// Whether a balancer or target group is heet's: the ledger lists it with its ARN (or
/// written ahead, without one) and its tags say this environment's.
fn heets(
    project: &str,
    env: &str,
    owned: &BTreeMap<String, Option<String>>,
    resource: &str,
    arn: &str,
    tags: &BTreeMap<String, String>,
) -> bool {
    tagged_for(tags, project, env, resource)
        && owned
            .get(resource)
            .is_some_and(|id| id.as_deref().is_none_or(|id| id == arn))
}

/// The DNS name of each wanted role's balancer that exists and is heet's: what its names
/// point at.
pub fn dns(
    project: &str,
    env: &str,
    wanted: &[DesiredBalancer],
    observed: &ObservedBalancers,
    owned: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, String> {
    wanted
        .iter()
        .filter_map(|b| {
            let o = observed.balancers.iter().find(|o| o.name == b.name)?;
            heets(
                project,
                env,
                owned,
                &balancer_resource(&b.role),
                &o.arn,
                &o.tags,
            )
            .then(|| (b.role.clone(), o.dns.to_ascii_lowercase()))
        })
        .collect()
}

/// What else the balancers' plan depends on: the instances whose slots are registered (what
/// the instances' plan keeps or launches) and the network they are in.
#[derive(Clone, Copy)]
pub struct Around<'a> {
    pub plan: &'a InstancePlan,
    /// The instances found.
    pub found: &'a [crate::kinds::instances::ObservedInstance],
    /// Each wanted slot's role and instance name.
    pub slots: &'a BTreeMap<String, (String, String)>,
    /// heet's network resources as found, by `heet:resource`: the VPC and subnets a
    /// balancer in heet's network belongs in.
    pub network: &'a BTreeMap<String, String>,
}

/// Where a balancer of `placement` belongs, as far as the plan knows: its VPC (when known;
/// empty: heet's, not made yet) and its subnets (`None` while heet is still to make one of
/// them this run).
fn expected(
    placement: &Placement,
    network: &BTreeMap<String, String>,
) -> (Option<String>, Option<BTreeSet<String>>) {
    match placement {
        Placement::Default => (None, None),
        Placement::Given { vpc, subnets } => {
            (Some(vpc.clone()), Some(subnets.iter().cloned().collect()))
        }
        Placement::Heet { vpc, subnets } => (
            Some(network.get(vpc).cloned().unwrap_or_default()),
            subnets.iter().map(|s| network.get(s).cloned()).collect(),
        ),
    }
}

/// Plans `wanted` (empty for `down`) against what ELB holds, for the instances and network
/// `around` says: a balancer and its target group per role, the listener between them, and
/// each slot's instance registered.
pub fn plan(
    project: &str,
    env: &str,
    wanted: &[DesiredBalancer],
    observed: &ObservedBalancers,
    owned: &BTreeMap<String, Option<String>>,
    around: Around<'_>,
) -> BalancerPlan {
    let Around {
        plan: instances,
        found,
        slots,
        network,
    } = around;
    let mut p = BalancerPlan {
        dns: dns(project, env, wanted, observed, owned),
        ..BalancerPlan::default()
    };
    let heets = |resource: &str, arn: &str, tags: &BTreeMap<String, String>| {
        heets(project, env, owned, resource, arn, tags)
    };
    let adopt = |p: &mut BalancerPlan, resource: String, arn: &str| {
        if owned.get(&resource).is_some_and(Option::is_none) {
            p.adopted.push((resource, arn.to_owned()));
        }
    };
    let lb_by_name = |name: &str| observed.balancers.iter().find(|b| b.name == name);
    let tg_by_name = |name: &str| observed.groups.iter().find(|g| g.name == name);
    for g in &observed.groups {
        let resource = g.tags.get(TAG_RESOURCE).cloned().unwrap_or_default();
        if heets(&resource, &g.arn, &g.tags) {
            p.targets.insert(
                g.arn.clone(),
                (
                    g.drain.unwrap_or(300),
                    // Every target, in use or not: deregistering one that is not is harmless.
                    g.targets.keys().cloned().collect(),
                ),
            );
        }
    }
    // The instance each slot will hold, and whether it is launched or a successor.
    let launched: BTreeMap<&str, bool> = instances
        .changes
        .iter()
        .filter_map(|c| {
            c.launches()
                .map(|(d, _)| (d.id.as_str(), c.rollout().is_some()))
        })
        .collect();
    let successors: BTreeMap<&str, &str> = instances
        .changes
        .iter()
        .filter_map(|c| Some((c.rollout()?.0.id.as_str(), c.successor()?)))
        .collect();
    let terminated: BTreeSet<&str> = instances.terminated_ids().collect();
    for b in wanted {
        let (lb_res, tg_res) = (balancer_resource(&b.role), group_resource(&b.role));
        let lb = lb_by_name(&b.name);
        let tg = tg_by_name(&b.name);
        let mut ok = true;
        let lb_arn = match lb {
            None => {
                p.changes.push(BalancerChange::CreateBalancer {
                    role: b.role.clone(),
                    name: b.name.clone(),
                    placement: b.placement.clone(),
                });
                None
            }
            Some(o) if !heets(&lb_res, &o.arn, &o.tags) => {
                ok = false;
                p.conflicts.push(format!(
                    "balancer {} exists ({}) but heet did not create it for {project}/{env}",
                    o.name, o.arn
                ));
                None
            }
            Some(o) => {
                adopt(&mut p, lb_res.clone(), &o.arn);
                if o.state == "failed" {
                    p.refused.push(format!(
                        "balancer {} is failed in ELB: delete it ({}) and run up again",
                        o.name, o.arn
                    ));
                }
                // A balancer stays in its VPC; it follows the environment's subnets.
                match expected(&b.placement, network) {
                    (Some(vpc), _) if vpc != o.vpc => p.refused.push(format!(
                        "balancer {}: it is in {}, and the environment's network is now {}: a balancer cannot move; take the role's load_balancer out, run up, then put it back",
                        o.name,
                        o.vpc,
                        if vpc.is_empty() { "a VPC heet makes" } else { &vpc }
                    )),
                                        // The default VPC's subnets: not heet's to change, not compared.
                    (None, _) => {}
                    (Some(_), Some(subnets)) if subnets == o.subnets => {}
                    // Other subnets, or one heet makes this run.
                    (Some(_), _) => p.changes.push(BalancerChange::SetSubnets {
                        role: b.role.clone(),
                        name: b.name.clone(),
                        arn: o.arn.clone(),
                        placement: b.placement.clone(),
                        was: o.subnets.clone(),
                    }),
                }

                Some(o)
            }
        };
        let tg_arn = match tg {
            None => {
                p.changes.push(BalancerChange::CreateTargetGroup {
                    role: b.role.clone(),
                    name: b.name.clone(),
                    settings: b.settings.clone(),
                    placement: b.placement.clone(),
                });
                None
            }
            Some(o) if !heets(&tg_res, &o.arn, &o.tags) => {
                ok = false;
                p.conflicts.push(format!(
                    "target group {} exists ({}) but heet did not create it for {project}/{env}",
                    o.name, o.arn
                ));
                None
            }
            Some(o) => {
                adopt(&mut p, tg_res.clone(), &o.arn);
                let s = &b.settings;
                if o.port != s.port || !o.protocol.eq_ignore_ascii_case(&s.protocol) {
                    p.refused.push(format!(
                        "target group {}: its port and protocol cannot change ({} {} → {} {}): \
                         take the role's load_balancer out, run up, then put it back",
                        o.name, o.protocol, o.port, s.protocol, s.port
                    ));
                }
                if o.path != s.path || o.interval != s.interval || o.drain != Some(s.drain) {
                    p.changes.push(BalancerChange::UpdateTargetGroup {
                        role: b.role.clone(),
                        name: b.name.clone(),
                        arn: o.arn.clone(),
                        settings: s.clone(),
                        was: format!(
                            "health {} every {}s, drain {}",
                            o.path,
                            o.interval,
                            o.drain.map_or("?".to_owned(), |d| format!("{d}s"))
                        ),
                    });
                }
                Some(o)
            }
        };
        if !ok {
            continue;
        }
        // The listener on `listen` forwards to the target group. One there that forwards
        // elsewhere (changed by hand, or to a target group since made again) is set back;
        // heet's on another port moves; other listeners are left alone.
        let listeners = lb.map_or(&[][..], |l| l.listeners.as_slice());
        let forwards_here = |l: &ObservedListener| {
            tg_arn.is_some_and(|t| l.forwards_to.as_deref() == Some(t.arn.as_str()))
        };
        let on_port = listeners.iter().find(|l| l.port == b.settings.listen);
        let elsewhere = listeners.iter().find(|l| forwards_here(l));
        let update = |l: &ObservedListener, was: String| BalancerChange::UpdateListener {
            role: b.role.clone(),
            name: b.name.clone(),
            arn: l.arn.clone(),
            listen: b.settings.listen,
            group: tg_arn.map(|t| t.arn.clone()),
            was,
        };
        match (on_port, elsewhere) {
            (Some(l), _) if forwards_here(l) => {}
            (Some(l), _) => p.changes.push(update(
                l,
                format!(
                    ":{} → {}",
                    l.port,
                    l.forwards_to.as_deref().unwrap_or("no target group")
                ),
            )),
            (None, Some(l)) => p.changes.push(update(l, format!(":{}", l.port))),
            (None, None) => p.changes.push(BalancerChange::CreateListener {
                role: b.role.clone(),
                name: b.name.clone(),
                listen: b.settings.listen,
                balancer: lb_arn.map(|l| l.arn.clone()),
                group: tg_arn.map(|t| t.arn.clone()),
            }),
        }
        // Each slot's instance, registered on the port asked.
        for (slot, (role, instance)) in slots {
            if *role != b.role {
                continue;
            }
            let registered = |id: &str| {
                tg_arn.is_some_and(|t| {
                    t.targets.get(id).is_some_and(|(port, state)| {
                        *port == b.settings.port && state != "draining"
                    })
                })
            };
            let register =
                |id: Option<String>, booting: bool, rollout: bool| BalancerChange::Register {
                    role: b.role.clone(),
                    slot: slot.clone(),
                    instance: instance.clone(),
                    instance_id: id,
                    booting,
                    port: b.settings.port,
                    group: tg_arn.map(|t| t.arn.clone()),
                    wait_healthy: if rollout { b.wait_healthy } else { None },
                };
            if let Some(rollout) = launched.get(slot.as_str()) {
                p.changes.push(register(None, false, *rollout));
            } else if let Some(id) = successors.get(slot.as_str()) {
                // A rollout resumed: a successor whose health the target group decides is
                // registered again (ELB keeps its state) and waited for, whatever it is now.
                if b.wait_healthy.is_some() || !registered(id) {
                    p.changes
                        .push(register(Some((*id).to_owned()), false, true));
                }
            } else if let Some(o) = found.iter().find(|o| {
                o.slot_id(project, env) == Some(slot.as_str())
                    && o.is_live()
                    && !terminated.contains(o.instance_id.as_str())
            }) && !registered(&o.instance_id)
            {
                p.changes.push(register(
                    Some(o.instance_id.clone()),
                    o.state == "pending",
                    false,
                ));
            }
        }
    }
    // What the ledger lists that is not wanted: deleted, the balancer first.
    let wanted_roles: BTreeSet<&str> = wanted.iter().map(|b| b.role.as_str()).collect();
    let mut deletes = Vec::new();
    for resource in owned.keys() {
        let Some(role) = role_of(resource) else {
            continue;
        };
        let name = aws_name(project, env, role);
        let is_lb = resource.starts_with(&format!("{BALANCER}/"));
        let found = if is_lb {
            lb_by_name(&name).map(|o| (&o.arn, &o.tags))
        } else {
            tg_by_name(&name).map(|o| (&o.arn, &o.tags))
        };
        match found {
            None => p.forgotten.push(resource.clone()),
            Some(_) if wanted_roles.contains(role) => {}
            Some((arn, tags)) if heets(resource, arn, tags) => {
                let (role, name, arn) = (role.to_owned(), name.clone(), arn.clone());
                deletes.push(if is_lb {
                    BalancerChange::DeleteBalancer { role, name, arn }
                } else {
                    BalancerChange::DeleteTargetGroup { role, name, arn }
                });
            }
            Some((arn, _)) => p.foreign.push(format!(
                "{resource} {name} ({arn}): the ledger lists it, but it is not tagged as heet's for {project}/{env}"
            )),
        }
    }
    p.changes.extend(deletes);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::instances::ObservedInstance;
    use crate::namespace::{TAG_ID, TAG_INDEX, TAG_ROLE, slot_id};

    fn settings() -> Balancer {
        Balancer {
            listen: 80,
            port: 8080,
            protocol: "HTTP".into(),
            path: "/health".into(),
            interval: 10,
            drain: 30,
            name: None,
        }
    }

    fn parse(src: &str) -> Result<Balancer, String> {
        let raw: RawBalancer = toml::from_str(src).map_err(|e| e.to_string())?;
        let error = |at: usize, message: String| DefinitionError {
            file: "heet.toml".into(),
            at: Some((1, at + 1)),
            message,
        };
        build("www", &raw, &error).map_err(|e| e.message)
    }

    #[test]
    fn a_balancer_table_has_aws_defaults_except_a_quicker_health_and_drain() {
        let b = parse("").unwrap();
        assert_eq!(
            b,
            Balancer {
                listen: 80,
                port: 80,
                protocol: "HTTP".into(),
                path: "/".into(),
                interval: 10,
                drain: 30,
                name: None
            }
        );
        let b = parse(
            "listen = 8443\nport = 8080\nprotocol = \"https\"\ndrain = \"2m\"\nname = \"Shop.\"\nhealth_check = { path = \"/up\", interval = 30 }",
        )
        .unwrap();
        assert_eq!(
            (b.listen, b.port, b.protocol.as_str()),
            (8443, 8080, "HTTPS")
        );
        assert_eq!((b.path.as_str(), b.interval, b.drain), ("/up", 30, 120));
        assert_eq!(b.name.as_deref(), Some("shop"));
        for (src, said) in [
            (
                "port = 0",
                "roles.www.load_balancer.port is a port, 1 to 65535, not 0",
            ),
            ("listen = 70000", "roles.www.load_balancer.listen is a port"),
            (
                "protocol = \"TCP\"",
                "is \"HTTP\" or \"HTTPS\", not \"TCP\"",
            ),
            (
                "drain = 4000",
                "roles.www.load_balancer.drain is seconds from 0 to 3600",
            ),
            (
                "health_check = { interval = 2 }",
                "health_check.interval is seconds from 5 to 300",
            ),
            ("health_check = { path = \"up\" }", "a path starting with /"),
            (
                "name = \"a b\"",
                "is a DNS label under the project's domain",
            ),
        ] {
            let err = parse(src).unwrap_err();
            assert!(err.contains(said), "{src}: {err}");
        }
        assert!(
            parse("sticky = true")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn names_fit_elbs_32_characters_and_long_ones_stay_apart() {
        assert_eq!(aws_name("shop", "staging", "www"), "shop-staging-www");
        let long = aws_name("a-rather-long-project", "production", "frontend");
        let other = aws_name("a-rather-long-project", "production", "frontends");
        assert!(long.len() <= 32 && other.len() <= 32, "{long} {other}");
        assert!(long.starts_with("a-rather-long-project-p"), "{long}");
        assert_ne!(long, other);
        assert!(!aws_name("internal", "x", "y").starts_with("internal-"));
    }

    fn wanted() -> Vec<DesiredBalancer> {
        vec![DesiredBalancer {
            role: "www".into(),
            name: "shop-staging-www".into(),
            settings: settings(),
            cnames: vec![],
            wait_healthy: None,
            placement: Placement::Default,
        }]
    }

    fn instance(id: &str, index: u32) -> ObservedInstance {
        let tags = BTreeMap::from([
            (TAG_PROJECT.to_owned(), "shop".to_owned()),
            (TAG_ENV.to_owned(), "staging".to_owned()),
            (TAG_ROLE.to_owned(), "www".to_owned()),
            (TAG_INDEX.to_owned(), index.to_string()),
            (TAG_ID.to_owned(), slot_id("shop", "staging", "www", index)),
        ]);
        ObservedInstance {
            instance_id: id.into(),
            state: "running".into(),
            instance_type: "t3.micro".into(),
            ami: "ami-1".into(),
            launch_time: Some(1),
            public_dns: None,
            private_dns: None,
            public_ip: None,
            private_ip: None,
            launch_index: Some(0),
            data_volume: None,
            monitoring: false,
            source_dest_check: None,
            tags,
        }
    }

    fn slots() -> BTreeMap<String, (String, String)> {
        (1..=2)
            .map(|i| {
                (
                    slot_id("shop", "staging", "www", i),
                    ("www".to_owned(), format!("shop-staging-www-0{i}")),
                )
            })
            .collect()
    }

    /// heet's balancer and target group as ELB would hold them, with `targets` registered.
    fn found(targets: &[(&str, u16, &str)]) -> ObservedBalancers {
        ObservedBalancers {
            balancers: vec![ObservedBalancer {
                arn: "arn:lb".into(),
                name: "shop-staging-www".into(),
                dns: "Shop-1.elb.example".into(),
                state: "active".into(),
                tags: tags("shop", "staging", "balancer/www"),
                listeners: vec![ObservedListener {
                    arn: "arn:listener".into(),
                    port: 80,
                    forwards_to: Some("arn:tg".into()),
                }],
                vpc: "vpc-default".into(),
                subnets: BTreeSet::from(["subnet-a".to_owned(), "subnet-b".to_owned()]),
            }],
            groups: vec![ObservedTargetGroup {
                arn: "arn:tg".into(),
                name: "shop-staging-www".into(),
                port: 8080,
                protocol: "HTTP".into(),
                path: "/health".into(),
                interval: 10,
                drain: Some(30),
                tags: tags("shop", "staging", "target-group/www"),
                targets: targets
                    .iter()
                    .map(|(id, port, state)| ((*id).to_owned(), (*port, (*state).to_owned())))
                    .collect(),
            }],
        }
    }

    fn owned() -> BTreeMap<String, Option<String>> {
        BTreeMap::from([
            ("balancer/www".to_owned(), Some("arn:lb".to_owned())),
            ("target-group/www".to_owned(), Some("arn:tg".to_owned())),
        ])
    }

    fn lines(p: &BalancerPlan) -> Vec<String> {
        p.changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn from_nothing_a_balancer_its_targets_listener_and_every_slot_are_planned() {
        let p = plan(
            "shop",
            "staging",
            &wanted(),
            &ObservedBalancers::default(),
            &BTreeMap::new(),
            Around {
                network: &BTreeMap::new(),
                plan: &InstancePlan::default(),
                found: &[instance("i-1", 1), instance("i-2", 2)],
                slots: &slots(),
            },
        );
        assert_eq!(
            lines(&p),
            [
                "+ balancer shop-staging-www (role www, internet-facing)",
                "+ targets  shop-staging-www (HTTP 8080, health /health every 10s, drain 30s)",
                "+ listener shop-staging-www :80 (HTTP) → its targets",
                "+ target   shop-staging-www-01 (i-1) :8080 in www's balancer",
                "+ target   shop-staging-www-02 (i-2) :8080 in www's balancer",
            ]
        );
        let stages: Vec<(Stage, u8)> = p.changes.iter().map(Change::stage).collect();
        assert_eq!(
            stages,
            [
                (Stage::Before, 11),
                (Stage::Before, 11),
                (Stage::Before, 12),
                (Stage::Running, 2),
                (Stage::Running, 2)
            ]
        );
        assert_eq!(
            p.changes[0].bookkeeping(),
            Bookkeeping::Create("balancer/www".into())
        );
    }

    #[test]
    fn what_runs_as_asked_is_no_change_and_what_is_not_registered_or_drifted_is() {
        let all = found(&[("i-1", 8080, "healthy"), ("i-2", 8080, "healthy")]);
        let run = |observed: &ObservedBalancers, wanted: &[DesiredBalancer]| {
            plan(
                "shop",
                "staging",
                wanted,
                observed,
                &owned(),
                Around {
                    network: &BTreeMap::new(),
                    plan: &InstancePlan::default(),
                    found: &[instance("i-1", 1), instance("i-2", 2)],
                    slots: &slots(),
                },
            )
        };
        let p = run(&all, &wanted());
        assert!(p.is_empty(), "{:?}", p.changes);
        assert_eq!(p.dns["www"], "shop-1.elb.example");
        assert_eq!(
            p.targets["arn:tg"],
            (30, BTreeSet::from(["i-1".to_owned(), "i-2".to_owned()]))
        );

        // One draining, one on another port: both registered again.
        let p = run(
            &found(&[("i-1", 8080, "draining"), ("i-2", 80, "healthy")]),
            &wanted(),
        );
        assert_eq!(p.changes.len(), 2, "{:?}", lines(&p));

        // A new health check and listener port: in place. A new target port: refused.
        let mut w = wanted();
        w[0].settings.path = "/up".into();
        w[0].settings.listen = 8000;
        let p = run(&all, &w);
        assert_eq!(
            lines(&p),
            [
                "~ targets  shop-staging-www: health /up every 10s, drain 30s (was health /health every 10s, drain 30s)",
                "~ listener shop-staging-www :8000 → its targets (was :80)"
            ]
        );
        w[0].settings.port = 9000;
        let p = run(&all, &w);
        assert!(
            p.refused[0].contains("port and protocol cannot change"),
            "{:?}",
            p.refused
        );

        // No longer wanted: the balancer, then its target group.
        let p = run(&all, &[]);
        assert_eq!(
            lines(&p),
            [
                "- balancer shop-staging-www (arn:lb)",
                "- targets  shop-staging-www (arn:tg)"
            ]
        );
        assert!(p.changes.iter().all(Change::removes));
    }

    #[test]
    fn a_listener_set_elsewhere_is_set_back_and_the_balancer_follows_the_environments_subnets() {
        let mut all = found(&[]);
        all.balancers[0].listeners[0].forwards_to = Some("arn:by-hand".into());
        let mut w = wanted();
        w[0].placement = Placement::Heet {
            vpc: "vpc/main".into(),
            subnets: vec!["subnet/1".into(), "subnet/2".into()],
        };
        let run = |network: &BTreeMap<String, String>, w: &[DesiredBalancer]| {
            plan(
                "shop",
                "staging",
                w,
                &all,
                &owned(),
                Around {
                    network,
                    plan: &InstancePlan::default(),
                    found: &[],
                    slots: &BTreeMap::new(),
                },
            )
        };
        let net = |subnets: &[&str]| {
            let mut n = BTreeMap::from([("vpc/main".to_owned(), "vpc-default".to_owned())]);
            for (i, s) in subnets.iter().enumerate() {
                n.insert(format!("subnet/{}", i + 1), (*s).to_owned());
            }
            n
        };
        let p = run(&net(&["subnet-a", "subnet-b"]), &w);
        assert_eq!(
            lines(&p),
            ["~ listener shop-staging-www :80 → its targets (was :80 → arn:by-hand)"]
        );
        assert!(
            matches!(&p.changes[0], BalancerChange::UpdateListener { group: Some(g), .. } if g == "arn:tg")
        );

        // A third subnet, made this run: the balancer is set to all three.
        w[0].placement = Placement::Heet {
            vpc: "vpc/main".into(),
            subnets: vec!["subnet/1".into(), "subnet/2".into(), "subnet/3".into()],
        };
        let p = run(&net(&["subnet-a", "subnet-b"]), &w);
        assert!(
            p.changes
                .iter()
                .any(|c| matches!(c, BalancerChange::SetSubnets { .. })),
            "{:?}",
            lines(&p)
        );
        // Another VPC: refused, as a balancer cannot move.
        let mut other = net(&["subnet-a", "subnet-b", "subnet-c"]);
        other.insert("vpc/main".into(), "vpc-new".into());
        let p = run(&other, &w);
        assert!(
            p.refused[0].contains("a balancer cannot move"),
            "{:?}",
            p.refused
        );
    }

    #[test]
    fn a_name_heet_did_not_make_is_a_conflict_and_a_ledger_entry_of_another_id_is_not_deleted() {
        let (nothing, no_slots, no_network) =
            (InstancePlan::default(), BTreeMap::new(), BTreeMap::new());
        let none = Around {
            network: &no_network,
            plan: &nothing,
            found: &[],
            slots: &no_slots,
        };
        let all = found(&[]);
        let p = plan("shop", "staging", &wanted(), &all, &BTreeMap::new(), none);
        assert_eq!(p.conflicts.len(), 2, "{:?}", p.conflicts);
        assert!(p.changes.is_empty(), "{:?}", lines(&p));

        // The ledger lists another ARN: left alone, not deleted by down.
        let other = BTreeMap::from([
            ("balancer/www".to_owned(), Some("arn:other".to_owned())),
            ("target-group/www".to_owned(), Some("arn:tg".to_owned())),
        ]);
        let p = plan("shop", "staging", &[], &all, &other, none);
        assert_eq!(lines(&p), ["- targets  shop-staging-www (arn:tg)"]);
        assert_eq!(p.foreign.len(), 1, "{:?}", p.foreign);

        // Written ahead by a run that stopped: adopted with its ARN; gone: forgotten.
        let pending = BTreeMap::from([
            ("balancer/www".to_owned(), None),
            ("target-group/api".to_owned(), Some("arn:gone".to_owned())),
        ]);
        let p = plan(
            "shop",
            "staging",
            &wanted(),
            &ObservedBalancers {
                groups: Vec::new(),
                ..all
            },
            &pending,
            none,
        );
        assert_eq!(
            p.adopted,
            [("balancer/www".to_owned(), "arn:lb".to_owned())]
        );
        assert_eq!(p.forgotten, ["target-group/api"]);
    }
}
