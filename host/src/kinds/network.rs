//! Network resources: the VPC, subnets and internet gateway heet may create per environment,
//! a security group per role (the firewall between roles), and Elastic IPs. Desired and
//! observed forms, and the pure plan between them (`NetChange`, a [`Change`]: its stage and
//! its ledger bookkeeping); `apply` makes the changes and `cloud::net` holds the calls.
//!
//! Every resource carries `heet:resource` (`kind/name`, e.g. `group/www`) and a `heet:id`
//! derived from project, env and that name, so, as with instances, a look-alike made by hand
//! is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::definition::{Definition, KeyPair, Vpc};
use crate::kinds::{Bookkeeping, Change, Family, Stage};
use crate::namespace::{self, TAG_ENV, TAG_ID, TAG_PROJECT, TAG_RESOURCE};

/// The kinds of network resource, in creation order (deletes go in reverse). Every match
/// over a kind is exhaustive: a new kind does not compile until each of them says what it
/// does with it (how it is observed, created, deleted, and which IAM actions it needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Vpc,
    Gateway,
    Subnet,
    Group,
    Address,
    KeyPair,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Vpc,
        Kind::Gateway,
        Kind::Subnet,
        Kind::Group,
        Kind::Address,
        Kind::KeyPair,
    ];

    /// The first part of a `heet:resource` tag (`group/www`) and of a ledger key.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Vpc => "vpc",
            Kind::Gateway => "igw",
            Kind::Subnet => "subnet",
            Kind::Group => "group",
            Kind::Address => "eip",
            Kind::KeyPair => "key",
        }
    }

    /// The kind of a `heet:resource` value, if it names one.
    pub fn of_resource(resource: &str) -> Option<Kind> {
        let prefix = resource.split('/').next()?;
        Kind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }

    /// The IAM actions heet needs for resources of this kind, by the policy statement that
    /// grants them: describes (which EC2 cannot limit to resources), creates (tagged in the
    /// same call, with the create action named for `ec2:CreateAction`), and changes to
    /// resources that exist (limited to the project's by tag). `iam.rs` assembles them;
    /// `tests/tests/operations.rs` proves them equal to the calls made.
    pub fn actions(self) -> KindActions {
        match self {
            Kind::Vpc => KindActions {
                observe: &["ec2:DescribeVpcs"],
                create: &["ec2:CreateVpc"],
                tag_on_create: &["CreateVpc"],
                own: &["ec2:ModifyVpcAttribute", "ec2:DeleteVpc"],
            },
            // The route goes into the VPC's main route table, which EC2 creates untagged.
            Kind::Gateway => KindActions {
                observe: &["ec2:DescribeInternetGateways", "ec2:DescribeRouteTables"],
                create: &["ec2:CreateInternetGateway", "ec2:CreateRoute"],
                tag_on_create: &["CreateInternetGateway"],
                own: &[
                    "ec2:AttachInternetGateway",
                    "ec2:DetachInternetGateway",
                    "ec2:DeleteInternetGateway",
                ],
            },
            Kind::Subnet => KindActions {
                observe: &["ec2:DescribeSubnets", "ec2:DescribeAvailabilityZones"],
                create: &["ec2:CreateSubnet"],
                tag_on_create: &["CreateSubnet"],
                own: &["ec2:ModifySubnetAttribute", "ec2:DeleteSubnet"],
            },
            Kind::Group => KindActions {
                observe: &["ec2:DescribeSecurityGroups"],
                create: &["ec2:CreateSecurityGroup"],
                tag_on_create: &["CreateSecurityGroup"],
                own: &[
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:DeleteSecurityGroup",
                ],
            },
            Kind::Address => KindActions {
                observe: &["ec2:DescribeAddresses"],
                create: &["ec2:AllocateAddress"],
                tag_on_create: &["AllocateAddress"],
                own: &[
                    "ec2:AssociateAddress",
                    "ec2:DisassociateAddress",
                    "ec2:ReleaseAddress",
                ],
            },
            // The private key of a key pair EC2 makes goes to the project's parameters, which
            // the SSM statement already grants.
            Kind::KeyPair => KindActions {
                observe: &["ec2:DescribeKeyPairs"],
                create: &["ec2:CreateKeyPair", "ec2:ImportKeyPair"],
                tag_on_create: &["CreateKeyPair", "ImportKeyPair"],
                own: &["ec2:DeleteKeyPair"],
            },
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// What [`Kind::actions`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindActions {
    pub observe: &'static [&'static str],
    pub create: &'static [&'static str],
    /// The create actions, as the `ec2:CreateAction` condition key names them.
    pub tag_on_create: &'static [&'static str],
    pub own: &'static [&'static str],
}

/// The kinds of network resource `def` uses in any environment.
pub fn kinds_of(def: &Definition) -> BTreeSet<Kind> {
    let mut kinds = BTreeSet::new();
    if def.network.vpc == Vpc::Create {
        kinds.extend([Kind::Vpc, Kind::Gateway, Kind::Subnet]);
    }
    if def.roles.iter().any(|r| r.has_group(def)) {
        kinds.insert(Kind::Group);
    }
    if def.roles.iter().any(|r| r.eip) {
        kinds.insert(Kind::Address);
    }
    if def.roles.iter().any(|r| r.key_pair.is_some()) {
        kinds.insert(Kind::KeyPair);
    }
    kinds
}

/// What the network of one environment should be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredNetwork {
    /// The VPC heet creates, when `network.vpc = "create"`.
    pub vpc: Option<DesiredVpc>,
    /// The VPC the definition names, when it names one.
    pub existing_vpc: Option<String>,
    pub groups: Vec<DesiredGroup>,
    pub addresses: Vec<DesiredAddress>,
    pub keys: Vec<DesiredKey>,
}

/// A key pair heet makes for a role.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredKey {
    pub role: String,
    /// `key/<role>`.
    pub resource: String,
    /// The KeyName: `<project>-<env>-<role>`.
    pub name: String,
    /// The key to import (`type base64`); `None` when EC2 makes one.
    pub public_key: Option<String>,
}

/// Where the private key of a key pair EC2 made for `role` is kept, a SecureString.
pub fn key_parameter(project: &str, env: &str, role: &str) -> String {
    format!("{}{role}", key_path(project, env))
}

/// The folder of an environment's private keys.
pub fn key_path(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/keys/")
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredVpc {
    pub name: String,
    pub cidr: String,
    pub subnets: Vec<DesiredSubnet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSubnet {
    /// `subnet/<n>`, 1-based.
    pub resource: String,
    pub cidr: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredGroup {
    pub role: String,
    /// `group/<role>`.
    pub resource: String,
    /// The GroupName: `<project>-<env>-<role>`.
    pub name: String,
    pub rules: BTreeSet<Rule>,
}

/// One opening of a group: a TCP port, from a CIDR or from a role's group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub port: u16,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Cidr(String),
    Role(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Cidr(c) => write!(f, "{}/tcp from {c}", self.port),
            Source::Role(r) => write!(f, "{}/tcp from group {r}", self.port),
        }
    }
}

/// An Elastic IP for one instance slot.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredAddress {
    /// `eip/<role>-<index>`.
    pub resource: String,
    /// The instance slot it is associated with.
    pub slot: String,
    pub instance: String,
    /// An address that exists (`elastic_ip`), by its allocation id: associated, never
    /// allocated or released by heet. `None`: heet's own (`eip = true`).
    pub given: Option<String>,
}

/// Where an instance is launched, as the plan knows it before anything is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetRef {
    /// A subnet given in the definition.
    Id(String),
    /// A subnet heet creates.
    Heet { resource: String, cidr: String },
}

impl SubnetRef {
    /// Part of the instance's spec: a subnet heet re-creates elsewhere (a new CIDR) moves
    /// the instance too.
    pub fn spec_part(&self) -> String {
        match self {
            SubnetRef::Id(id) => format!("subnet={id}"),
            SubnetRef::Heet { resource, cidr } => format!("subnet={resource}@{cidr}"),
        }
    }
}

pub fn group_resource(role: &str) -> String {
    format!("group/{role}")
}

/// The security group of a role's load balancer goes by this name where a role's goes by the
/// role's: `www.lb` (a role name has no dot, so it is no role's).
pub fn balancer_group(role: &str) -> String {
    format!("{role}.lb")
}

pub fn key_resource(role: &str) -> String {
    format!("key/{role}")
}

pub fn address_resource(role: &str, index: u32) -> String {
    format!("eip/{role}-{index}")
}

/// The network of `env` as the definition asks for it (no plugin has a say in it).
pub fn desired(def: &Definition, env: &str) -> DesiredNetwork {
    let project = &def.project;
    let vpc = (def.network.vpc == Vpc::Create).then(|| {
        let cidr = def.cidr(env);
        // /24s out of a /16; a smaller VPC splits into 16 parts at least (the config
        // allows /16 to /24, so a subnet is never smaller than /28, EC2's minimum).
        let prefix = (cidr.prefix_len() + 8).min(28).max(cidr.prefix_len() + 4);
        let subnets = cidr
            .subnets(prefix)
            .expect("a prefix longer than the VPC's")
            .take(def.network.subnets as usize)
            .enumerate()
            .map(|(i, net)| DesiredSubnet {
                resource: format!("subnet/{}", i + 1),
                cidr: net.to_string(),
            })
            .collect();
        DesiredVpc {
            name: format!("{project}-{env}"),
            cidr: cidr.to_string(),
            subnets,
        }
    });
    let existing_vpc = match &def.network.vpc {
        Vpc::Existing { vpc_id, .. } => Some(vpc_id.clone()),
        _ => None,
    };
    let mut groups: Vec<DesiredGroup> = def
        .roles
        .iter()
        .filter(|r| r.has_group(def))
        .map(|r| {
            let mut rules = BTreeSet::new();
            // A balanced role's port is reached from its balancer's group, and only so.
            if let Some(b) = &r.load_balancer {
                rules.insert(Rule {
                    port: b.port,
                    source: Source::Role(balancer_group(&r.name)),
                });
            }
            for &port in &r.ports {
                for from in &r.allow_from {
                    rules.insert(Rule {
                        port,
                        source: Source::Role(from.clone()),
                    });
                }
                for cidr in &r.allow_cidr {
                    rules.insert(Rule {
                        port,
                        source: Source::Cidr(cidr.to_string()),
                    });
                }
            }
            DesiredGroup {
                role: r.name.clone(),
                resource: group_resource(&r.name),
                name: format!("{project}-{env}-{}", r.name),
                rules,
            }
        })
        .collect();
    // Each balancer's own group admits its listener's port from anywhere.
    for r in &def.roles {
        if let Some(b) = &r.load_balancer {
            let role = balancer_group(&r.name);
            groups.push(DesiredGroup {
                resource: group_resource(&role),
                name: format!("{project}-{env}-{role}"),
                rules: BTreeSet::from([Rule {
                    port: b.listen,
                    source: Source::Cidr("0.0.0.0/0".to_owned()),
                }]),
                role,
            });
        }
    }
    let keys = def
        .roles
        .iter()
        .filter_map(|r| {
            let k = r.key_pair.as_ref()?;
            Some(DesiredKey {
                role: r.name.clone(),
                resource: key_resource(&r.name),
                name: r.launch_key(project, env)?,
                public_key: match k {
                    KeyPair::Create => None,
                    KeyPair::Import { public_key } => Some(public_key.clone()),
                },
            })
        })
        .collect();
    DesiredNetwork {
        vpc,
        existing_vpc,
        groups,
        addresses: Vec::new(),
        keys,
    }
}

/// The subnet instance `index` (1-based) of a role goes to: spread over the subnets.
pub fn subnet_for(def: &Definition, network: &DesiredNetwork, index: u32) -> Option<SubnetRef> {
    let pick = |n: usize| (index as usize - 1) % n;
    match (&def.network.vpc, &network.vpc) {
        (Vpc::Existing { subnet_ids, .. }, _) => {
            Some(SubnetRef::Id(subnet_ids[pick(subnet_ids.len())].clone()))
        }
        (_, Some(vpc)) => {
            let s = &vpc.subnets[pick(vpc.subnets.len())];
            Some(SubnetRef::Heet {
                resource: s.resource.clone(),
                cidr: s.cidr.clone(),
            })
        }
        _ => None,
    }
}

impl DesiredNetwork {
    /// The kinds of resource this network has.
    pub fn kinds(&self) -> BTreeSet<Kind> {
        let mut kinds = BTreeSet::new();
        if self.vpc.is_some() {
            kinds.extend([Kind::Vpc, Kind::Gateway, Kind::Subnet]);
        }
        if !self.groups.is_empty() {
            kinds.insert(Kind::Group);
        }
        if !self.addresses.is_empty() {
            kinds.insert(Kind::Address);
        }
        if !self.keys.is_empty() {
            kinds.insert(Kind::KeyPair);
        }
        kinds
    }

    /// Every ingress rule, as the guard hook sees them.
    pub fn firewall(&self) -> Vec<(&str, &Rule)> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.iter().map(move |r| (g.role.as_str(), r)))
            .collect()
    }
}

/// A network resource as AWS reports it, in heet's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedResource {
    /// The `heet:resource` tag.
    pub resource: String,
    pub aws_id: String,
    pub tags: BTreeMap<String, String>,
    pub detail: Detail,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Vpc {
        cidr: String,
    },
    Gateway {
        attached: Vec<String>,
    },
    Subnet {
        cidr: String,
        vpc_id: String,
    },
    Group {
        vpc_id: String,
        rules: Vec<ObservedRule>,
    },
    Address {
        public_ip: String,
        association_id: Option<String>,
        instance_id: Option<String>,
    },
    /// A key pair, or only the private key heet stored for it (a key pair deleted by hand):
    /// `aws_id` is the KeyName, empty when there is no key pair.
    KeyPair {
        /// `type base64`, as EC2 shows it.
        public_key: Option<String>,
        /// Whether its private key is in the environment's keys folder.
        stored: bool,
    },
}

impl Detail {
    pub fn kind(&self) -> Kind {
        match self {
            Detail::Vpc { .. } => Kind::Vpc,
            Detail::Gateway { .. } => Kind::Gateway,
            Detail::Subnet { .. } => Kind::Subnet,
            Detail::Group { .. } => Kind::Group,
            Detail::Address { .. } => Kind::Address,
            Detail::KeyPair { .. } => Kind::KeyPair,
        }
    }
}

/// One ingress permission of a group, as EC2 lists it: one source, one port range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObservedRule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub cidr: Option<String>,
    pub group_id: Option<String>,
}

impl fmt::Display for ObservedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = if self.from_port == self.to_port {
            self.from_port.to_string()
        } else {
            format!("{}-{}", self.from_port, self.to_port)
        };
        let from = self
            .cidr
            .as_deref()
            .or(self.group_id.as_deref())
            .unwrap_or("?");
        write!(f, "{ports}/{} from {from}", self.protocol)
    }
}

impl ObservedResource {
    /// Whether heet created this resource for `project`/`env` (see the module doc).
    pub fn is_heets(&self, project: &str, env: &str) -> bool {
        let tag = |k: &str| self.tags.get(k).map(String::as_str);
        tag(TAG_PROJECT) == Some(project)
            && tag(TAG_ENV) == Some(env)
            && tag(TAG_ID) == Some(&namespace::resource_id(project, env, &self.resource))
    }

    pub fn kind(&self) -> Kind {
        self.detail.kind()
    }

    /// The change that deletes this key pair (and what is kept of it).
    fn delete_key(&self, replaced: bool) -> NetChange {
        NetChange::DeleteKey {
            resource: self.resource.clone(),
            role: self.resource.trim_start_matches("key/").to_owned(),
            name: (!self.aws_id.is_empty()).then(|| self.aws_id.clone()),
            stored: matches!(self.detail, Detail::KeyPair { stored: true, .. }),
            replaced,
        }
    }

    fn vpc_id(&self) -> Option<&str> {
        match &self.detail {
            Detail::Subnet { vpc_id, .. } | Detail::Group { vpc_id, .. } => Some(vpc_id),
            _ => None,
        }
    }
}

/// The tags of a network resource heet creates.
pub fn tags(project: &str, env: &str, resource: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_PROJECT.to_owned(), project.to_owned()),
        (TAG_ENV.to_owned(), env.to_owned()),
        (TAG_RESOURCE.to_owned(), resource.to_owned()),
        (
            TAG_ID.to_owned(),
            namespace::resource_id(project, env, resource),
        ),
        (namespace::TAG_NAME.to_owned(), name.to_owned()),
    ])
}

/// The VPC a group, subnet or gateway lives in, as the plan knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpcRef {
    /// The account's default VPC.
    Default,
    Id(String),
    /// heet's VPC, created by this plan.
    New,
}

/// One network change. Applied in this order: creates, rule changes and releases before the
/// instances; associations after them; deletes last.
#[derive(Debug, Clone, PartialEq)]
pub enum NetChange {
    CreateVpc {
        resource: String,
        name: String,
        cidr: String,
    },
    /// Create the internet gateway (unless `gateway_id` is known) and attach it to the VPC.
    AttachGateway {
        resource: String,
        gateway_id: Option<String>,
    },
    CreateSubnet {
        resource: String,
        cidr: String,
        /// 0-based, picks the availability zone.
        index: usize,
    },
    CreateGroup {
        resource: String,
        role: String,
        name: String,
        vpc: VpcRef,
    },
    Authorize {
        resource: String,
        role: String,
        rules: Vec<Rule>,
    },
    /// Rules heet's group holds that the definition does not: heet owns its groups' rules.
    Revoke {
        resource: String,
        role: String,
        group_id: String,
        rules: Vec<ObservedRule>,
    },
    Allocate {
        resource: String,
        slot: String,
        instance: String,
    },
    /// Associate an address with its slot's instance (known now, or launched by this plan).
    Associate {
        resource: String,
        allocation_id: String,
        slot: String,
        instance: String,
        instance_id: Option<String>,
    },
    Release {
        resource: String,
        allocation_id: String,
        association_id: Option<String>,
    },
    DeleteGroup {
        resource: String,
        group_id: String,
    },
    DeleteSubnet {
        resource: String,
        subnet_id: String,
    },
    DeleteGateway {
        resource: String,
        gateway_id: String,
        attached: Vec<String>,
    },
    DeleteVpc {
        resource: String,
        vpc_id: String,
    },
    /// Make a key pair: EC2 makes the key (its private key goes to the role's parameter) or
    /// imports `public_key`.
    CreateKey {
        resource: String,
        role: String,
        name: String,
        public_key: Option<String>,
    },
    /// Delete the role's stored private key and its key pair (`name`, none when only the
    /// stored key is left). `replaced`: a key pair of the same name is made next, so this goes
    /// first.
    DeleteKey {
        resource: String,
        role: String,
        name: Option<String>,
        /// Whether a private key is kept for it.
        stored: bool,
        replaced: bool,
    },
}

impl NetChange {
    pub fn resource(&self) -> &str {
        match self {
            NetChange::CreateVpc { resource, .. }
            | NetChange::AttachGateway { resource, .. }
            | NetChange::CreateSubnet { resource, .. }
            | NetChange::CreateGroup { resource, .. }
            | NetChange::Authorize { resource, .. }
            | NetChange::Revoke { resource, .. }
            | NetChange::Allocate { resource, .. }
            | NetChange::Associate { resource, .. }
            | NetChange::Release { resource, .. }
            | NetChange::DeleteGroup { resource, .. }
            | NetChange::DeleteSubnet { resource, .. }
            | NetChange::DeleteGateway { resource, .. }
            | NetChange::DeleteVpc { resource, .. }
            | NetChange::CreateKey { resource, .. }
            | NetChange::DeleteKey { resource, .. } => resource,
        }
    }
}

impl Change for NetChange {
    /// The one table of the network apply order.
    fn stage(&self) -> (Stage, u8) {
        match self {
            NetChange::Release { .. } => (Stage::Before, 0),
            NetChange::CreateVpc { .. } => (Stage::Before, 1),
            NetChange::AttachGateway { .. } => (Stage::Before, 2),
            NetChange::CreateSubnet { .. } => (Stage::Before, 3),
            NetChange::CreateGroup { .. } => (Stage::Before, 4),
            // Rules that admit a group about to go come off before it goes; a rule naming a
            // group comes after that group is made.
            NetChange::Revoke { .. } => (Stage::Before, 5),
            NetChange::Authorize { .. } => (Stage::Before, 6),
            // A key pair is replaced under its name: the old one goes right before.
            NetChange::DeleteKey { replaced: true, .. } => (Stage::Before, 7),
            NetChange::CreateKey { .. } => (Stage::Before, 8),
            NetChange::Allocate { .. } => (Stage::Running, 2),
            NetChange::Associate { .. } => (Stage::Running, 3),
            NetChange::DeleteGroup { .. } => (Stage::After, 0),
            NetChange::DeleteSubnet { .. } => (Stage::After, 1),
            NetChange::DeleteGateway { .. } => (Stage::After, 2),
            NetChange::DeleteVpc { .. } => (Stage::After, 3),
            NetChange::DeleteKey {
                replaced: false, ..
            } => (Stage::After, 4),
        }
    }

    fn bookkeeping(&self) -> Bookkeeping {
        let resource = self.resource().to_owned();
        match self {
            NetChange::CreateVpc { .. }
            | NetChange::AttachGateway {
                gateway_id: None, ..
            }
            | NetChange::CreateSubnet { .. }
            | NetChange::CreateGroup { .. }
            | NetChange::Allocate { .. }
            | NetChange::CreateKey { .. } => Bookkeeping::Create(resource),
            NetChange::Release { .. }
            | NetChange::DeleteGroup { .. }
            | NetChange::DeleteSubnet { .. }
            | NetChange::DeleteGateway { .. }
            | NetChange::DeleteVpc { .. }
            | NetChange::DeleteKey { .. } => Bookkeeping::Delete(resource),
            // A gateway that exists is only attached; rules and associations live on
            // resources the ledger already has.
            NetChange::AttachGateway {
                gateway_id: Some(_),
                ..
            }
            | NetChange::Authorize { .. }
            | NetChange::Revoke { .. }
            | NetChange::Associate { .. } => Bookkeeping::None,
        }
    }

    fn creates(&self) -> bool {
        matches!(self.bookkeeping(), Bookkeeping::Create(_))
    }

    fn is_delete(&self) -> bool {
        matches!(self.bookkeeping(), Bookkeeping::Delete(_))
    }

    /// A group, a subnet, the gateway and the VPC go only once no network interface of a
    /// terminated instance is left in them.
    fn needs_instances_gone(&self) -> bool {
        match self {
            NetChange::DeleteGroup { .. }
            | NetChange::DeleteSubnet { .. }
            | NetChange::DeleteGateway { .. }
            | NetChange::DeleteVpc { .. } => true,
            NetChange::CreateVpc { .. }
            | NetChange::AttachGateway { .. }
            | NetChange::CreateSubnet { .. }
            | NetChange::CreateGroup { .. }
            | NetChange::Authorize { .. }
            | NetChange::Revoke { .. }
            | NetChange::Allocate { .. }
            | NetChange::Associate { .. }
            | NetChange::Release { .. }
            | NetChange::CreateKey { .. }
            | NetChange::DeleteKey { .. } => false,
        }
    }

    fn narrows(&self) -> bool {
        self.is_delete() || matches!(self, NetChange::Revoke { .. })
    }

    /// An instance's Elastic IP is its role's (`eip/<role>-<index>`), its association its
    /// slot's; the rest is what roles share.
    fn scope(&self) -> super::Scope<'_> {
        match self {
            NetChange::Associate { slot, .. } => super::Scope::Slot(slot),
            NetChange::Allocate { resource, .. } | NetChange::Release { resource, .. } => resource
                .strip_prefix("eip/")
                .and_then(|r| r.rsplit_once('-'))
                .map_or(super::Scope::Shared, |(role, _)| super::Scope::Role(role)),
            NetChange::CreateVpc { .. }
            | NetChange::AttachGateway { .. }
            | NetChange::CreateSubnet { .. }
            | NetChange::CreateGroup { .. }
            | NetChange::Authorize { .. }
            | NetChange::Revoke { .. }
            | NetChange::DeleteGroup { .. }
            | NetChange::DeleteSubnet { .. }
            | NetChange::DeleteGateway { .. }
            | NetChange::DeleteVpc { .. }
            | NetChange::CreateKey { .. }
            | NetChange::DeleteKey { .. } => super::Scope::Shared,
        }
    }

    /// The instance slot this change moves something to: an address's association, made in
    /// the slot's rollout round.
    fn slot(&self) -> Option<&str> {
        match self {
            NetChange::Associate { slot, .. } => Some(slot),
            NetChange::CreateVpc { .. }
            | NetChange::AttachGateway { .. }
            | NetChange::CreateSubnet { .. }
            | NetChange::CreateGroup { .. }
            | NetChange::Authorize { .. }
            | NetChange::Revoke { .. }
            | NetChange::Allocate { .. }
            | NetChange::Release { .. }
            | NetChange::DeleteGroup { .. }
            | NetChange::DeleteSubnet { .. }
            | NetChange::DeleteGateway { .. }
            | NetChange::DeleteVpc { .. }
            | NetChange::CreateKey { .. }
            | NetChange::DeleteKey { .. } => None,
        }
    }
}

impl Family for Vec<NetChange> {
    fn label(&self) -> &'static str {
        "network"
    }
    fn deleted_noun(&self) -> &'static str {
        "network resource(s)"
    }
    fn changes(&self) -> Vec<&dyn Change> {
        self.iter().map(|c| c as &dyn Change).collect()
    }
    fn retain(&mut self, keep: &dyn Fn(&dyn Change) -> bool) {
        Vec::retain(self, |c| keep(c));
    }

    fn is_empty(&self) -> bool {
        <[NetChange]>::is_empty(self)
    }
}

impl fmt::Display for NetChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetChange::CreateVpc { name, cidr, .. } => write!(f, "+ vpc {name} {cidr}"),
            NetChange::AttachGateway {
                gateway_id: None, ..
            } => write!(f, "+ internet gateway"),
            NetChange::AttachGateway {
                gateway_id: Some(id),
                ..
            } => write!(f, "~ internet gateway {id}: attach"),
            NetChange::CreateSubnet { resource, cidr, .. } => write!(f, "+ {resource} {cidr}"),
            NetChange::CreateGroup { name, .. } => write!(f, "+ security group {name}"),
            NetChange::Authorize { role, rules, .. } => {
                let rules: Vec<String> = rules.iter().map(ToString::to_string).collect();
                write!(f, "~ group {role}: allow {}", rules.join(", "))
            }
            NetChange::Revoke {
                role,
                group_id,
                rules,
                ..
            } => {
                let rules: Vec<String> = rules.iter().map(ToString::to_string).collect();
                write!(f, "~ group {role} {group_id}: revoke {}", rules.join(", "))
            }
            NetChange::Allocate { instance, .. } => write!(f, "+ elastic ip for {instance}"),
            NetChange::Associate {
                resource, instance, ..
            } => write!(f, "~ {resource}: associate with {instance}"),
            NetChange::Release {
                resource,
                allocation_id,
                ..
            } => write!(f, "- {resource} {allocation_id}"),
            NetChange::DeleteGroup { resource, group_id } => {
                write!(f, "- {resource} {group_id}")
            }
            NetChange::DeleteSubnet {
                resource,
                subnet_id,
            } => write!(f, "- {resource} {subnet_id}"),
            NetChange::DeleteGateway {
                resource,
                gateway_id,
                ..
            } => write!(f, "- {resource} {gateway_id}"),
            NetChange::DeleteVpc { resource, vpc_id } => write!(f, "- {resource} {vpc_id}"),
            NetChange::CreateKey {
                name,
                public_key: None,
                ..
            } => write!(
                f,
                "+ key pair {name} (ed25519, private key kept as a secret)"
            ),
            NetChange::CreateKey {
                name,
                public_key: Some(key),
                ..
            } => {
                let kind = key.split(' ').next().unwrap_or_default();
                write!(f, "+ key pair {name} (imports the {kind} key given)")
            }
            NetChange::DeleteKey {
                resource,
                name,
                replaced,
                ..
            } => {
                match name {
                    Some(name) => write!(f, "- {resource} {name}")?,
                    None => write!(f, "- {resource}: the private key kept for a key pair gone")?,
                }
                if *replaced {
                    write!(f, " (to be replaced)")?;
                }
                Ok(())
            }
        }
    }
}

/// The network changes from `observed` to `desired`. `instances` maps each desired slot to
/// the instance that keeps running in it (none when the plan launches it).
pub fn plan(
    project: &str,
    env: &str,
    desired: &DesiredNetwork,
    observed: &[ObservedResource],
    instances: &BTreeMap<String, Option<String>>,
) -> Vec<NetChange> {
    let mut by_resource: BTreeMap<&str, Vec<&ObservedResource>> = BTreeMap::new();
    for o in observed.iter().filter(|o| o.is_heets(project, env)) {
        by_resource.entry(&o.resource).or_default().push(o);
    }
    let mut changes = Vec::new();
    let mut deletes = Vec::new();
    let mut take = |resource: &str, fits: &dyn Fn(&ObservedResource) -> bool| {
        let found = by_resource.remove(resource).unwrap_or_default();
        let (keep, extra): (Vec<_>, Vec<_>) = found.into_iter().partition(|o| fits(o));
        // Twins (a create retried after a crash) and resources in another VPC go.
        let mut keep = keep.into_iter();
        let kept = keep.next();
        (kept, keep.chain(extra).collect::<Vec<_>>())
    };
    let mut doomed: Vec<&ObservedResource> = Vec::new();

    let vpc_id = match &desired.vpc {
        Some(vpc) => {
            let (kept, extra) = take(
                "vpc/main",
                &|o| matches!(&o.detail, Detail::Vpc { cidr } if *cidr == vpc.cidr),
            );
            doomed.extend(extra);
            match kept {
                Some(o) => Some(VpcRef::Id(o.aws_id.clone())),
                None => {
                    changes.push(NetChange::CreateVpc {
                        resource: "vpc/main".into(),
                        name: vpc.name.clone(),
                        cidr: vpc.cidr.clone(),
                    });
                    Some(VpcRef::New)
                }
            }
        }
        None => None,
    };
    let in_vpc = |o: &ObservedResource| match &vpc_id {
        Some(VpcRef::Id(id)) => o.vpc_id() == Some(id),
        Some(VpcRef::New) => false,
        _ => true,
    };

    if let Some(vpc) = &desired.vpc {
        let (kept, extra) = take("igw/main", &|_| true);
        doomed.extend(extra);
        match kept {
            Some(o) => {
                let attached = matches!(&o.detail, Detail::Gateway { attached }
                    if matches!(&vpc_id, Some(VpcRef::Id(id)) if attached.contains(id)));
                if !attached {
                    changes.push(NetChange::AttachGateway {
                        resource: "igw/main".into(),
                        gateway_id: Some(o.aws_id.clone()),
                    });
                }
            }
            None => changes.push(NetChange::AttachGateway {
                resource: "igw/main".into(),
                gateway_id: None,
            }),
        }
        for (index, s) in vpc.subnets.iter().enumerate() {
            let (kept, extra) = take(&s.resource, &|o| {
                in_vpc(o) && matches!(&o.detail, Detail::Subnet { cidr, .. } if *cidr == s.cidr)
            });
            doomed.extend(extra);
            if kept.is_none() {
                changes.push(NetChange::CreateSubnet {
                    resource: s.resource.clone(),
                    cidr: s.cidr.clone(),
                    index,
                });
            }
        }
    }

    let group_vpc = match (&vpc_id, &desired.existing_vpc) {
        (Some(v), _) => v.clone(),
        (None, Some(id)) => VpcRef::Id(id.clone()),
        (None, None) => VpcRef::Default,
    };
    let group_fits = |o: &ObservedResource| match &group_vpc {
        VpcRef::Id(id) => o.vpc_id() == Some(id),
        VpcRef::New => false,
        VpcRef::Default => true,
    };
    let mut group_ids: BTreeMap<&str, &str> = BTreeMap::new();
    let mut existing_groups = Vec::new();
    for g in &desired.groups {
        let (kept, extra) = take(&g.resource, &group_fits);
        doomed.extend(extra);
        match kept {
            Some(o) => {
                group_ids.insert(&g.role, &o.aws_id);
                existing_groups.push((g, o));
            }
            None => {
                changes.push(NetChange::CreateGroup {
                    resource: g.resource.clone(),
                    role: g.role.clone(),
                    name: g.name.clone(),
                    vpc: group_vpc.clone(),
                });
                if !g.rules.is_empty() {
                    changes.push(NetChange::Authorize {
                        resource: g.resource.clone(),
                        role: g.role.clone(),
                        rules: g.rules.iter().cloned().collect(),
                    });
                }
            }
        }
    }
    for (g, o) in existing_groups {
        let Detail::Group { rules: have, .. } = &o.detail else {
            continue;
        };
        // A desired rule is met by the observed rule with its port and source; a source
        // group that does not exist yet cannot be met.
        let meets = |want: &Rule, have: &ObservedRule| {
            have.protocol == "tcp"
                && have.from_port == i32::from(want.port)
                && have.to_port == i32::from(want.port)
                && match &want.source {
                    Source::Cidr(c) => have.cidr.as_deref() == Some(c) && have.group_id.is_none(),
                    Source::Role(r) => {
                        have.cidr.is_none()
                            && have.group_id.is_some()
                            && have.group_id.as_deref() == group_ids.get(r.as_str()).copied()
                    }
                }
        };
        let missing: Vec<Rule> = g
            .rules
            .iter()
            .filter(|w| !have.iter().any(|h| meets(w, h)))
            .cloned()
            .collect();
        let extra: Vec<ObservedRule> = have
            .iter()
            .filter(|h| !g.rules.iter().any(|w| meets(w, h)))
            .cloned()
            .collect();
        if !extra.is_empty() {
            changes.push(NetChange::Revoke {
                resource: g.resource.clone(),
                role: g.role.clone(),
                group_id: o.aws_id.clone(),
                rules: extra,
            });
        }
        if !missing.is_empty() {
            changes.push(NetChange::Authorize {
                resource: g.resource.clone(),
                role: g.role.clone(),
                rules: missing,
            });
        }
    }

    for a in &desired.addresses {
        if let Some(given) = &a.given {
            // Not heet's: found by its id, associated with the slot's instance, nothing else.
            let instance_id = instances.get(&a.slot).cloned().flatten();
            let current = observed.iter().find_map(|o| match &o.detail {
                Detail::Address { instance_id, .. } if o.aws_id == *given => Some(instance_id),
                _ => None,
            });
            if instance_id.is_none() || current != Some(&instance_id) {
                changes.push(NetChange::Associate {
                    resource: a.resource.clone(),
                    allocation_id: given.clone(),
                    slot: a.slot.clone(),
                    instance: a.instance.clone(),
                    instance_id,
                });
            }
            continue;
        }
        let (kept, extra) = take(&a.resource, &|_| true);
        doomed.extend(extra);
        let instance_id = instances.get(&a.slot).cloned().flatten();
        match kept {
            None => {
                changes.push(NetChange::Allocate {
                    resource: a.resource.clone(),
                    slot: a.slot.clone(),
                    instance: a.instance.clone(),
                });
                changes.push(NetChange::Associate {
                    resource: a.resource.clone(),
                    allocation_id: String::new(),
                    slot: a.slot.clone(),
                    instance: a.instance.clone(),
                    instance_id,
                });
            }
            Some(o) => {
                let current = match &o.detail {
                    Detail::Address { instance_id, .. } => instance_id.as_ref(),
                    _ => None,
                };
                if instance_id.is_none() || current != instance_id.as_ref() {
                    changes.push(NetChange::Associate {
                        resource: a.resource.clone(),
                        allocation_id: o.aws_id.clone(),
                        slot: a.slot.clone(),
                        instance: a.instance.clone(),
                        instance_id,
                    });
                }
            }
        }
    }

    for k in &desired.keys {
        // A made key is only of use with its private key; an imported one is the one given.
        let (kept, extra) = take(&k.resource, &|o| {
            matches!(&o.detail, Detail::KeyPair { public_key, stored }
            if !o.aws_id.is_empty()
                && match &k.public_key {
                    None => *stored,
                    Some(want) => public_key.as_ref() == Some(want),
                })
        });
        // The key pair's name is taken until the one that does not fit is gone.
        for o in extra {
            changes.push(o.delete_key(true));
        }
        if kept.is_none() {
            changes.push(NetChange::CreateKey {
                resource: k.resource.clone(),
                role: k.role.clone(),
                name: k.name.clone(),
                public_key: k.public_key.clone(),
            });
        }
    }

    // Whatever is left is heet's and no longer wanted.
    doomed.extend(by_resource.into_values().flatten());
    // Groups heet keeps may still admit groups about to go: revoke those rules first, or
    // EC2 refuses to delete the referenced group.
    let doomed_groups: BTreeSet<&str> = doomed
        .iter()
        .filter(|o| o.kind() == Kind::Group)
        .map(|o| o.aws_id.as_str())
        .collect();
    for o in &doomed {
        if let Detail::Group { rules, .. } = &o.detail {
            let referencing: Vec<ObservedRule> = rules
                .iter()
                .filter(|r| {
                    r.group_id
                        .as_deref()
                        .is_some_and(|g| doomed_groups.contains(g))
                })
                .cloned()
                .collect();
            if !referencing.is_empty() {
                changes.push(NetChange::Revoke {
                    resource: o.resource.clone(),
                    role: o.resource.trim_start_matches("group/").to_owned(),
                    group_id: o.aws_id.clone(),
                    rules: referencing,
                });
            }
        }
    }
    doomed.sort_by_key(|o| (std::cmp::Reverse(o.kind()), o.resource.clone()));
    for o in doomed {
        let resource = o.resource.clone();
        deletes.push(match &o.detail {
            Detail::Vpc { .. } => NetChange::DeleteVpc {
                resource,
                vpc_id: o.aws_id.clone(),
            },
            Detail::Gateway { attached } => NetChange::DeleteGateway {
                resource,
                gateway_id: o.aws_id.clone(),
                attached: attached.clone(),
            },
            Detail::Subnet { .. } => NetChange::DeleteSubnet {
                resource,
                subnet_id: o.aws_id.clone(),
            },
            Detail::Group { .. } => NetChange::DeleteGroup {
                resource,
                group_id: o.aws_id.clone(),
            },
            Detail::Address { association_id, .. } => NetChange::Release {
                resource,
                allocation_id: o.aws_id.clone(),
                association_id: association_id.clone(),
            },
            Detail::KeyPair { .. } => o.delete_key(false),
        });
    }
    changes.extend(deletes);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_kind_is_found_again_from_its_resource_names_and_nothing_else_is() {
        for k in Kind::ALL {
            assert_eq!(Kind::of_resource(&format!("{}/x", k.prefix())), Some(k));
        }
        assert_eq!(Kind::of_resource("stack/x"), None);
        assert_eq!(Kind::of_resource(""), None);
    }

    #[test]
    fn each_kind_tags_on_create_exactly_what_it_creates_with_tags() {
        for k in Kind::ALL {
            let a = k.actions();
            for t in a.tag_on_create {
                assert!(a.create.contains(&format!("ec2:{t}").as_str()), "{k}: {t}");
            }
            assert!(
                a.observe.iter().all(|o| o.starts_with("ec2:Describe")),
                "{k}"
            );
        }
    }

    #[test]
    fn creates_are_written_ahead_deletes_booked_after_and_an_existing_gateway_is_not_booked() {
        let d = def(
            "[network]\nvpc = \"create\"",
            "[roles.www]\nports = [80]\nallow_cidr = [\"0.0.0.0/0\"]\n",
        );
        let changes = plan("shop", "prod", &desired(&d, "prod"), &[], &BTreeMap::new());
        for c in &changes {
            match c.bookkeeping() {
                Bookkeeping::Create(r) => assert_eq!(r, c.resource(), "{c}"),
                Bookkeeping::None => assert!(
                    matches!(c, NetChange::Authorize { .. }),
                    "{c}: only a rule change books nothing here"
                ),
                Bookkeeping::Delete(_) => panic!("{c}: nothing to delete in a first plan"),
                Bookkeeping::Record(_) | Bookkeeping::Unrecord(_) => {
                    panic!("{c}: a network change books no record")
                }
            }
        }
        assert!(
            changes
                .iter()
                .any(|c| c.bookkeeping() == Bookkeeping::Create("vpc/main".into()))
        );
        let attach = NetChange::AttachGateway {
            resource: "igw/main".into(),
            gateway_id: Some("igw-1".into()),
        };
        assert_eq!(attach.bookkeeping(), Bookkeeping::None);
        assert!(!attach.creates() && !attach.is_delete());
        let gone = NetChange::DeleteVpc {
            resource: "vpc/main".into(),
            vpc_id: "vpc-1".into(),
        };
        assert_eq!(gone.bookkeeping(), Bookkeeping::Delete("vpc/main".into()));
        assert!(gone.is_delete() && !gone.creates());
    }

    #[test]
    fn apply_stages_put_rule_changes_after_creates_and_deletes_in_reverse_kind_order() {
        let d = def(
            "[network]\nvpc = \"create\"",
            "[roles.www]\nports = [80]\nallow_cidr = [\"0.0.0.0/0\"]\n",
        );
        let mut changes = plan("shop", "prod", &desired(&d, "prod"), &[], &BTreeMap::new());
        changes.sort_by_key(NetChange::stage);
        let order: Vec<&str> = changes.iter().map(|c| c.resource()).collect();
        assert_eq!(
            order,
            [
                "vpc/main",
                "igw/main",
                "subnet/1",
                "subnet/2",
                "group/www",
                "group/www"
            ]
        );
        assert!(matches!(changes.last(), Some(NetChange::Authorize { .. })));

        let observed = [
            observed(
                "vpc/main",
                "vpc-1",
                Detail::Vpc {
                    cidr: "10.0.0.0/16".into(),
                },
            ),
            observed(
                "subnet/1",
                "subnet-1",
                Detail::Subnet {
                    cidr: "10.0.0.0/24".into(),
                    vpc_id: "vpc-1".into(),
                },
            ),
            group("www", "sg-1", "vpc-1", vec![]),
            observed(
                "igw/main",
                "igw-1",
                Detail::Gateway {
                    attached: vec!["vpc-1".into()],
                },
            ),
        ];
        let gone = def("", "[roles.www]\n");
        let mut deletes = plan(
            "shop",
            "prod",
            &desired(&gone, "prod"),
            &observed,
            &BTreeMap::new(),
        );
        deletes.sort_by_key(NetChange::stage);
        let order: Vec<&str> = deletes.iter().map(|c| c.resource()).collect();
        assert_eq!(order, ["group/www", "subnet/1", "igw/main", "vpc/main"]);
        assert!(deletes.iter().all(|c| c.stage().0 == Stage::After));
    }

    fn def(network: &str, roles: &str) -> Definition {
        let src = format!(
            "[project]\nname = \"shop\"\n{network}\n[defaults]\nami = \"ami-1\"\n{roles}\n[environments.prod]\n"
        );
        Definition::parse(Path::new("heet.toml"), &src).unwrap()
    }

    const ROLES: &str = "[roles.www]\ncount = 2\nports = [80, 443]\nallow_cidr = [\"0.0.0.0/0\"]\n[roles.db]\nports = [5432]\nallow_from = [\"www\"]\n[roles.worker]\n";

    fn observed(resource: &str, aws_id: &str, detail: Detail) -> ObservedResource {
        ObservedResource {
            resource: resource.into(),
            aws_id: aws_id.into(),
            tags: tags("shop", "prod", resource, "x"),
            detail,
        }
    }

    fn group(role: &str, id: &str, vpc: &str, rules: Vec<ObservedRule>) -> ObservedResource {
        observed(
            &group_resource(role),
            id,
            Detail::Group {
                vpc_id: vpc.into(),
                rules,
            },
        )
    }

    fn tcp(port: i32, cidr: Option<&str>, group: Option<&str>) -> ObservedRule {
        ObservedRule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            cidr: cidr.map(Into::into),
            group_id: group.map(Into::into),
        }
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHe21njEm5jyACCSs2x886LlE5CtVJDr3kiT8Yx3kmbo";

    fn key(role: &str, name: &str, public_key: Option<&str>, stored: bool) -> ObservedResource {
        observed(
            &key_resource(role),
            name,
            Detail::KeyPair {
                public_key: public_key.map(Into::into),
                stored,
            },
        )
    }

    #[test]
    fn key_pairs_are_made_kept_replaced_under_their_name_and_deleted_last() {
        let d = def(
            "",
            &format!(
                "[roles.www]\nkey_pair = \"create\"\n[roles.db]\nkey_pair = {{ public_key = \"{KEY} me@laptop\" }}\n[roles.worker]\nkey_name = \"mine\"\n"
            ),
        );
        let want = desired(&d, "prod");
        assert_eq!(
            want.keys
                .iter()
                .map(|k| (k.name.as_str(), k.public_key.as_deref()))
                .collect::<Vec<_>>(),
            [("shop-prod-db", Some(KEY)), ("shop-prod-www", None)]
        );
        let none = BTreeMap::new();
        let made = plan("shop", "prod", &want, &[], &none);
        assert_eq!(
            made.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "+ key pair shop-prod-db (imports the ssh-ed25519 key given)",
                "+ key pair shop-prod-www (ed25519, private key kept as a secret)",
            ]
        );

        // Both as wanted: nothing to do, whatever EC2 adds after the key (a comment).
        let fine = [
            key("www", "shop-prod-www", Some("ssh-ed25519 AAAAother"), true),
            key("db", "shop-prod-db", Some(KEY), false),
        ];
        assert_eq!(plan("shop", "prod", &want, &fine, &none), []);

        // A made key whose private key is gone, an imported key that is not the one given:
        // each is deleted before the new one of the same name is made.
        let drifted = [
            key("www", "shop-prod-www", Some("ssh-ed25519 AAAAother"), false),
            key("db", "shop-prod-db", Some("ssh-ed25519 AAAAold"), false),
        ];
        let mut changes = plan("shop", "prod", &want, &drifted, &none);
        changes.sort_by_key(NetChange::stage);
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "- key/db shop-prod-db (to be replaced)",
                "- key/www shop-prod-www (to be replaced)",
                "+ key pair shop-prod-db (imports the ssh-ed25519 key given)",
                "+ key pair shop-prod-www (ed25519, private key kept as a secret)",
            ]
        );
        assert!(changes.iter().all(|c| c.stage().0 == Stage::Before));

        // Nothing wanted: the key pairs go, and a private key kept for a key pair deleted by
        // hand goes too, after the instances; a look-alike is not heet's.
        let mut foreign = key("web", "shop-prod-web", None, false);
        foreign.tags.insert(TAG_ID.into(), "someone-else".into());
        let left = [
            key("www", "shop-prod-www", Some(KEY), true),
            key("db", "", None, true),
            foreign,
        ];
        let gone = plan("shop", "prod", &DesiredNetwork::default(), &left, &none);
        assert_eq!(
            gone,
            [
                NetChange::DeleteKey {
                    resource: "key/db".into(),
                    role: "db".into(),
                    name: None,
                    stored: true,
                    replaced: false,
                },
                NetChange::DeleteKey {
                    resource: "key/www".into(),
                    role: "www".into(),
                    name: Some("shop-prod-www".into()),
                    stored: true,
                    replaced: false,
                },
            ]
        );
        assert!(gone.iter().all(|c| c.stage() == (Stage::After, 4)));
    }

    #[test]
    fn groups_admit_roles_and_cidrs_and_an_admitted_role_gets_a_group() {
        let d = def("", ROLES);
        let net = desired(&d, "prod");
        let roles: Vec<&str> = net.groups.iter().map(|g| g.role.as_str()).collect();
        assert_eq!(
            roles,
            ["db", "www"],
            "worker opens nothing and nobody admits it"
        );
        let db: Vec<String> = net.groups[0]
            .rules
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(db, ["5432/tcp from group www"]);
        assert_eq!(net.groups[1].rules.len(), 2);
        assert_eq!(net.groups[0].name, "shop-prod-db");
        assert!(net.vpc.is_none());
    }

    #[test]
    fn a_created_vpc_is_carved_into_subnets_and_instances_spread_over_them() {
        let d = def(
            "[network]\nvpc = \"create\"\ncidr = \"10.20.0.0/16\"\nsubnets = 3\n",
            ROLES,
        );
        let net = desired(&d, "prod");
        let vpc = net.vpc.as_ref().unwrap();
        assert_eq!(vpc.cidr, "10.20.0.0/16");
        let cidrs: Vec<&str> = vpc.subnets.iter().map(|s| s.cidr.as_str()).collect();
        assert_eq!(cidrs, ["10.20.0.0/24", "10.20.1.0/24", "10.20.2.0/24"]);
        let placed: Vec<String> = (1..=4)
            .map(|i| subnet_for(&d, &net, i).unwrap().spec_part())
            .collect();
        assert_eq!(
            placed,
            [
                "subnet=subnet/1@10.20.0.0/24",
                "subnet=subnet/2@10.20.1.0/24",
                "subnet=subnet/3@10.20.2.0/24",
                "subnet=subnet/1@10.20.0.0/24"
            ]
        );
    }

    #[test]
    fn an_empty_account_gets_everything_in_dependency_order() {
        let d = def("[network]\nvpc = \"create\"\n", ROLES);
        let changes = plan("shop", "prod", &desired(&d, "prod"), &[], &BTreeMap::new());
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "+ vpc shop-prod 10.0.0.0/16",
                "+ internet gateway",
                "+ subnet/1 10.0.0.0/24",
                "+ subnet/2 10.0.1.0/24",
                "+ security group shop-prod-db",
                "~ group db: allow 5432/tcp from group www",
                "+ security group shop-prod-www",
                "~ group www: allow 80/tcp from 0.0.0.0/0, 443/tcp from 0.0.0.0/0",
            ]
        );
        assert!(matches!(
            &changes[4],
            NetChange::CreateGroup {
                vpc: VpcRef::New,
                ..
            }
        ));
    }

    #[test]
    fn rules_are_diffed_and_foreign_rules_in_heets_groups_are_revoked() {
        let d = def("", ROLES);
        let observed = [
            group(
                "www",
                "sg-w",
                "vpc-d",
                vec![tcp(80, Some("0.0.0.0/0"), None)],
            ),
            group(
                "db",
                "sg-d",
                "vpc-d",
                vec![
                    tcp(5432, None, Some("sg-w")),
                    tcp(22, Some("0.0.0.0/0"), None),
                ],
            ),
        ];
        let changes = plan(
            "shop",
            "prod",
            &desired(&d, "prod"),
            &observed,
            &BTreeMap::new(),
        );
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ group db sg-d: revoke 22/tcp from 0.0.0.0/0",
                "~ group www: allow 443/tcp from 0.0.0.0/0",
            ]
        );
    }

    #[test]
    fn nothing_changes_when_everything_is_in_place() {
        let d = def("[network]\nvpc = \"create\"\nsubnets = 1\n", ROLES);
        let observed = [
            observed(
                "vpc/main",
                "vpc-1",
                Detail::Vpc {
                    cidr: "10.0.0.0/16".into(),
                },
            ),
            observed(
                "igw/main",
                "igw-1",
                Detail::Gateway {
                    attached: vec!["vpc-1".into()],
                },
            ),
            observed(
                "subnet/1",
                "subnet-1",
                Detail::Subnet {
                    cidr: "10.0.0.0/24".into(),
                    vpc_id: "vpc-1".into(),
                },
            ),
            group(
                "www",
                "sg-w",
                "vpc-1",
                vec![
                    tcp(80, Some("0.0.0.0/0"), None),
                    tcp(443, Some("0.0.0.0/0"), None),
                ],
            ),
            group("db", "sg-d", "vpc-1", vec![tcp(5432, None, Some("sg-w"))]),
        ];
        let changes = plan(
            "shop",
            "prod",
            &desired(&d, "prod"),
            &observed,
            &BTreeMap::new(),
        );
        assert_eq!(changes, []);

        // Torn down: groups first (after revoking the rule that references one), VPC last;
        // a look-alike without heet's id is not touched.
        let mut all = observed.to_vec();
        let mut fake = group("cache", "sg-fake", "vpc-1", vec![]);
        fake.tags.insert(TAG_ID.into(), "0000".into());
        all.push(fake);
        let down = plan(
            "shop",
            "prod",
            &DesiredNetwork::default(),
            &all,
            &BTreeMap::new(),
        );
        let lines: Vec<String> = down.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ group db sg-d: revoke 5432/tcp from sg-w",
                "- group/db sg-d",
                "- group/www sg-w",
                "- subnet/1 subnet-1",
                "- igw/main igw-1",
                "- vpc/main vpc-1",
            ]
        );
    }

    #[test]
    fn addresses_follow_their_slot_instance() {
        let net = DesiredNetwork {
            addresses: vec![DesiredAddress {
                resource: address_resource("www", 1),
                slot: "s1".into(),
                instance: "shop-prod-www-01".into(),
                given: None,
            }],
            ..DesiredNetwork::default()
        };
        let eip = |instance: Option<&str>| {
            observed(
                "eip/www-1",
                "eipalloc-1",
                Detail::Address {
                    public_ip: "198.51.100.7".into(),
                    association_id: instance.map(|_| "eipassoc-1".into()),
                    instance_id: instance.map(Into::into),
                },
            )
        };
        let running = BTreeMap::from([("s1".to_owned(), Some("i-1".to_owned()))]);
        assert_eq!(
            plan("shop", "prod", &net, &[eip(Some("i-1"))], &running),
            []
        );
        let moved = plan("shop", "prod", &net, &[eip(Some("i-0"))], &running);
        assert_eq!(moved.len(), 1);
        assert_eq!(
            moved[0].to_string(),
            "~ eip/www-1: associate with shop-prod-www-01"
        );
        let fresh = plan("shop", "prod", &net, &[], &BTreeMap::new());
        assert!(matches!(&fresh[0], NetChange::Allocate { .. }));
        assert!(matches!(
            &fresh[1],
            NetChange::Associate {
                instance_id: None,
                ..
            }
        ));
    }
}
