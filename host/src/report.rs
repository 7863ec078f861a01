//! The JSON of `--output json` for plans: report types at the command boundary, so that
//! renaming or reshaping an internal type never changes what scripts read. docs/cli.md
//! documents the shape; the snapshot tests below pin it.
//!
//! The internal plan types (`Plan`, `Change`, `NetChange`, `RecordChange`, `DesiredInstance`)
//! do not implement `Serialize`: the only way to JSON is through here.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::desired::DesiredInstance;
use crate::kinds::balancers::BalancerChange;
use crate::kinds::iam::{Attachable, Holder, IamChange, Kind};
use crate::kinds::instances::{Attribute, InstanceChange as Change};
use crate::kinds::network::{NetChange, ObservedRule, Rule, Source, SubnetRef, VpcRef};
use crate::kinds::records::{RecordChange, record_type};
use crate::kinds::stacks::{Preview, StackChange};
use crate::plan::Plan;

/// `serialize_with` for a report's `plan` field.
pub fn plan<S: Serializer>(plan: &Plan, s: S) -> Result<S::Ok, S::Error> {
    PlanJson::of(plan).serialize(s)
}

#[derive(Debug, Serialize)]
struct PlanJson<'a> {
    project: &'a str,
    env: &'a str,
    changes: Vec<ChangeJson<'a>>,
    network: Vec<NetJson<'a>>,
    iam: IamJson<'a>,
    records: Vec<RecordJson<'a>>,
    stacks: StacksJson<'a>,
    balancers: BalancersJson<'a>,
    create_zone: Option<&'a str>,
    conflicts: &'a [String],
    foreign_records: &'a [String],
    unchanged: usize,
    as_launched: Vec<AsLaunchedJson<'a>>,
    foreign: &'a [String],
    unadopted: &'a [String],
    unresolved: &'a [String],
    teardown: bool,
    settled: &'a [String],
}

impl<'a> PlanJson<'a> {
    fn of(p: &'a Plan) -> PlanJson<'a> {
        PlanJson {
            project: &p.project,
            env: &p.env,
            changes: p.instances.changes.iter().map(ChangeJson::of).collect(),
            network: p.network.iter().map(NetJson::of).collect(),
            iam: IamJson {
                changes: p.iam.changes.iter().map(IamChangeJson::of).collect(),
                conflicts: &p.iam.conflicts,
                foreign: &p.iam.foreign,
                forgotten: &p.iam.forgotten,
            },
            records: p.dns.changes.iter().map(RecordJson::of).collect(),
            stacks: StacksJson {
                changes: p.stacks.changes.iter().map(StackJson::of).collect(),
                conflicts: &p.stacks.conflicts,
                busy: &p.stacks.busy,
                forgotten: &p.stacks.forgotten,
                unknown_outputs: p.stacks.unknown.iter().map(String::as_str).collect(),
            },
            balancers: BalancersJson {
                changes: p.balancers.changes.iter().map(BalancerJson::of).collect(),
                conflicts: &p.balancers.conflicts,
                refused: &p.balancers.refused,
                foreign: &p.balancers.foreign,
                forgotten: &p.balancers.forgotten,
            },
            create_zone: p.dns.create_zone.as_deref(),
            conflicts: &p.dns.conflicts,
            foreign_records: &p.dns.forgotten,
            unchanged: p.instances.unchanged,
            as_launched: p
                .instances
                .as_launched
                .iter()
                .map(|a| AsLaunchedJson {
                    instance_id: &a.instance_id,
                    role: &a.role,
                    index: a.index,
                    name: &a.name,
                    settings: a.settings.iter().map(|s| s.name()).collect(),
                })
                .collect(),
            foreign: &p.instances.foreign,
            unadopted: &p.instances.unadopted,
            unresolved: &p.instances.unresolved,
            teardown: p.teardown,
            settled: &p.instances.settled,
        }
    }
}

/// An instance that keeps settings its role's `replace_on` leaves out.
#[derive(Debug, Serialize)]
struct AsLaunchedJson<'a> {
    instance_id: &'a str,
    role: &'a str,
    index: u32,
    name: &'a str,
    /// Settings it runs with other than the definition's: `user_data`, `key_name`, ….
    settings: Vec<&'static str>,
}

/// Where a replacement is in its role's rollout.
#[derive(Debug, Serialize)]
struct RolloutJson<'a> {
    /// Its batch, from 1.
    batch: u32,
    batches: u32,
    /// `new-first` (the old instance goes once its successor is healthy) or `old-first`.
    order: &'static str,
    /// `running` or `status-ok`.
    health: &'static str,
    /// The successor a rollout under way launched already.
    successor: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum ChangeJson<'a> {
    Create {
        #[serde(flatten)]
        instance: InstanceJson<'a>,
    },
    Replace {
        instance_id: &'a str,
        reasons: &'a [String],
        rollout: RolloutJson<'a>,
        #[serde(flatten)]
        instance: InstanceJson<'a>,
    },
    UpdateTags {
        instance_id: &'a str,
        role: &'a str,
        index: u32,
        name: &'a str,
        set: &'a BTreeMap<String, String>,
    },
    Delete {
        instance_id: &'a str,
        role: &'a str,
        index: u32,
        name: &'a str,
        reason: &'a str,
        twin: bool,
    },
    Modify {
        instance_id: &'a str,
        role: &'a str,
        index: u32,
        name: &'a str,
        attributes: Vec<AttributeJson>,
        set: &'a BTreeMap<String, String>,
    },
}

/// An attribute changed in place: `monitoring`, `source_dest_check`,
/// `disable_api_termination`, and what it becomes.
#[derive(Debug, Serialize)]
struct AttributeJson {
    name: &'static str,
    on: bool,
}

impl AttributeJson {
    fn of(a: &Attribute) -> AttributeJson {
        let (name, on) = match *a {
            Attribute::Monitoring(on) => ("monitoring", on),
            Attribute::SourceDestCheck(on) => ("source_dest_check", on),
            Attribute::ApiTermination(on) => ("disable_api_termination", on),
        };
        AttributeJson { name, on }
    }
}

impl<'a> ChangeJson<'a> {
    fn of(c: &'a Change) -> ChangeJson<'a> {
        match c {
            Change::Create { instance } => ChangeJson::Create {
                instance: InstanceJson::of(instance),
            },
            Change::Replace {
                instance_id,
                reasons,
                instance,
                step,
                successor,
            } => ChangeJson::Replace {
                instance_id,
                reasons,
                rollout: RolloutJson {
                    batch: step.round + 1,
                    batches: step.rounds,
                    order: if step.overlap {
                        "new-first"
                    } else {
                        "old-first"
                    },
                    health: instance.rolling.health.name(),
                    successor: successor.as_deref(),
                },
                instance: InstanceJson::of(instance),
            },
            Change::UpdateTags {
                instance_id,
                role,
                index,
                name,
                set,
            } => ChangeJson::UpdateTags {
                instance_id,
                role,
                index: *index,
                name,
                set,
            },
            Change::Delete {
                instance_id,
                role,
                index,
                name,
                reason,
                twin,
            } => ChangeJson::Delete {
                instance_id,
                role,
                index: *index,
                name,
                reason,
                twin: *twin,
            },
            Change::Modify {
                instance_id,
                role,
                index,
                name,
                attributes,
                set,
            } => ChangeJson::Modify {
                instance_id,
                role,
                index: *index,
                name,
                attributes: attributes.iter().map(AttributeJson::of).collect(),
                set,
            },
        }
    }
}

/// An instance as a plan shows it: user_data only as its size and hash, since it may carry
/// configuration.
#[derive(Debug, Serialize)]
struct InstanceJson<'a> {
    role: &'a str,
    index: u32,
    id: &'a str,
    name: &'a str,
    instance_type: &'a str,
    ami: &'a str,
    user_data: UserDataJson,
    key_name: Option<&'a str>,
    instance_profile: Option<&'a str>,
    subnet: Option<SubnetJson<'a>>,
    groups: &'a [String],
    security_group_ids: &'a [String],
    volume: Option<VolumeJson>,
    eip: bool,
    /// `cname` or `a`: what its names are.
    record: &'static str,
    placement: PlacementJson<'a>,
    /// Null when the role leaves it as EC2 has it.
    monitoring: Option<bool>,
    ebs_optimized: bool,
    /// Null when the role leaves it as EC2 has it.
    source_dest_check: Option<bool>,
    disable_api_termination: bool,
    tags: &'a BTreeMap<String, String>,
    cnames: &'a [String],
    spec: &'a str,
}

#[derive(Debug, Serialize)]
struct PlacementJson<'a> {
    availability_zone: Option<&'a str>,
    group: Option<&'a str>,
    tenancy: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct UserDataJson {
    bytes: usize,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct VolumeJson {
    gb: u32,
    keep: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum SubnetJson<'a> {
    Id(&'a str),
    Heet { resource: &'a str, cidr: &'a str },
}

impl<'a> InstanceJson<'a> {
    fn of(d: &'a DesiredInstance) -> InstanceJson<'a> {
        InstanceJson {
            role: &d.role,
            index: d.index,
            id: &d.id,
            name: &d.name,
            instance_type: &d.instance_type,
            ami: &d.ami,
            user_data: UserDataJson {
                bytes: d.user_data.len(),
                sha256: crate::plugins::sha256_hex(d.user_data.as_bytes()),
            },
            key_name: d.key_name.as_deref(),
            instance_profile: d.instance_profile.as_deref(),
            subnet: d.subnet.as_ref().map(|s| match s {
                SubnetRef::Id(id) => SubnetJson::Id(id),
                SubnetRef::Heet { resource, cidr } => SubnetJson::Heet { resource, cidr },
            }),
            groups: &d.groups,
            security_group_ids: &d.security_group_ids,
            volume: d.volume.as_ref().map(|v| VolumeJson {
                gb: v.gb,
                keep: v.keep,
            }),
            eip: d.eip,
            record: if d.record_a { "a" } else { "cname" },
            placement: PlacementJson {
                availability_zone: d.placement.availability_zone.as_deref(),
                group: d.placement.group.as_deref(),
                tenancy: d.placement.tenancy.as_deref(),
            },
            monitoring: d.monitoring,
            ebs_optimized: d.ebs_optimized,
            source_dest_check: d.source_dest_check,
            disable_api_termination: d.disable_api_termination,
            tags: &d.tags,
            cnames: &d.cnames,
            spec: &d.spec,
        }
    }
}

/// A rule heet wants: a TCP port from a CIDR or from a role's group.
#[derive(Debug, Serialize)]
struct RuleJson<'a> {
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    cidr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
}

impl<'a> RuleJson<'a> {
    fn of(r: &'a Rule) -> RuleJson<'a> {
        let (cidr, role) = match &r.source {
            Source::Cidr(c) => (Some(c.as_str()), None),
            Source::Role(role) => (None, Some(role.as_str())),
        };
        RuleJson {
            port: r.port,
            cidr,
            role,
        }
    }
}

/// A rule as EC2 lists it.
#[derive(Debug, Serialize)]
struct ObservedRuleJson<'a> {
    protocol: &'a str,
    from_port: i32,
    to_port: i32,
    cidr: Option<&'a str>,
    group_id: Option<&'a str>,
}

impl<'a> ObservedRuleJson<'a> {
    fn of(r: &'a ObservedRule) -> ObservedRuleJson<'a> {
        ObservedRuleJson {
            protocol: &r.protocol,
            from_port: r.from_port,
            to_port: r.to_port,
            cidr: r.cidr.as_deref(),
            group_id: r.group_id.as_deref(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum VpcJson<'a> {
    Default,
    Id(&'a str),
    New,
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum NetJson<'a> {
    CreateVpc {
        resource: &'a str,
        name: &'a str,
        cidr: &'a str,
    },
    AttachGateway {
        resource: &'a str,
        gateway_id: Option<&'a str>,
    },
    CreateSubnet {
        resource: &'a str,
        cidr: &'a str,
        index: usize,
    },
    CreateGroup {
        resource: &'a str,
        role: &'a str,
        name: &'a str,
        vpc: VpcJson<'a>,
    },
    Authorize {
        resource: &'a str,
        role: &'a str,
        rules: Vec<RuleJson<'a>>,
    },
    Revoke {
        resource: &'a str,
        role: &'a str,
        group_id: &'a str,
        rules: Vec<ObservedRuleJson<'a>>,
    },
    Allocate {
        resource: &'a str,
        slot: &'a str,
        instance: &'a str,
    },
    Associate {
        resource: &'a str,
        allocation_id: &'a str,
        slot: &'a str,
        instance: &'a str,
        instance_id: Option<&'a str>,
    },
    Release {
        resource: &'a str,
        allocation_id: &'a str,
        association_id: Option<&'a str>,
    },
    DeleteGroup {
        resource: &'a str,
        group_id: &'a str,
    },
    DeleteSubnet {
        resource: &'a str,
        subnet_id: &'a str,
    },
    DeleteGateway {
        resource: &'a str,
        gateway_id: &'a str,
        attached: &'a [String],
    },
    DeleteVpc {
        resource: &'a str,
        vpc_id: &'a str,
    },
    /// `public_key` is the key imported (a public key); none when EC2 makes the key.
    CreateKey {
        resource: &'a str,
        role: &'a str,
        name: &'a str,
        public_key: Option<&'a str>,
    },
    DeleteKey {
        resource: &'a str,
        role: &'a str,
        name: Option<&'a str>,
        stored: bool,
        replaced: bool,
    },
}

impl<'a> NetJson<'a> {
    fn of(c: &'a NetChange) -> NetJson<'a> {
        match c {
            NetChange::CreateVpc {
                resource,
                name,
                cidr,
            } => NetJson::CreateVpc {
                resource,
                name,
                cidr,
            },
            NetChange::AttachGateway {
                resource,
                gateway_id,
            } => NetJson::AttachGateway {
                resource,
                gateway_id: gateway_id.as_deref(),
            },
            NetChange::CreateSubnet {
                resource,
                cidr,
                index,
            } => NetJson::CreateSubnet {
                resource,
                cidr,
                index: *index,
            },
            NetChange::CreateGroup {
                resource,
                role,
                name,
                vpc,
            } => NetJson::CreateGroup {
                resource,
                role,
                name,
                vpc: match vpc {
                    VpcRef::Default => VpcJson::Default,
                    VpcRef::Id(id) => VpcJson::Id(id),
                    VpcRef::New => VpcJson::New,
                },
            },
            NetChange::Authorize {
                resource,
                role,
                rules,
            } => NetJson::Authorize {
                resource,
                role,
                rules: rules.iter().map(RuleJson::of).collect(),
            },
            NetChange::Revoke {
                resource,
                role,
                group_id,
                rules,
            } => NetJson::Revoke {
                resource,
                role,
                group_id,
                rules: rules.iter().map(ObservedRuleJson::of).collect(),
            },
            NetChange::Allocate {
                resource,
                slot,
                instance,
            } => NetJson::Allocate {
                resource,
                slot,
                instance,
            },
            NetChange::Associate {
                resource,
                allocation_id,
                slot,
                instance,
                instance_id,
            } => NetJson::Associate {
                resource,
                allocation_id,
                slot,
                instance,
                instance_id: instance_id.as_deref(),
            },
            NetChange::Release {
                resource,
                allocation_id,
                association_id,
            } => NetJson::Release {
                resource,
                allocation_id,
                association_id: association_id.as_deref(),
            },
            NetChange::DeleteGroup { resource, group_id } => {
                NetJson::DeleteGroup { resource, group_id }
            }
            NetChange::DeleteSubnet {
                resource,
                subnet_id,
            } => NetJson::DeleteSubnet {
                resource,
                subnet_id,
            },
            NetChange::DeleteGateway {
                resource,
                gateway_id,
                attached,
            } => NetJson::DeleteGateway {
                resource,
                gateway_id,
                attached,
            },
            NetChange::DeleteVpc { resource, vpc_id } => NetJson::DeleteVpc { resource, vpc_id },
            NetChange::CreateKey {
                resource,
                role,
                name,
                public_key,
            } => NetJson::CreateKey {
                resource,
                role,
                name,
                public_key: public_key.as_deref(),
            },
            NetChange::DeleteKey {
                resource,
                role,
                name,
                stored,
                replaced,
            } => NetJson::DeleteKey {
                resource,
                role,
                name: name.as_deref(),
                stored: *stored,
                replaced: *replaced,
            },
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum RecordJson<'a> {
    Upsert {
        name: &'a str,
        slot: &'a str,
        instance: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        instance_id: Option<&'a str>,
        /// `A` or `CNAME`, once the target is known.
        #[serde(rename = "type")]
        kind: Option<&'static str>,
        target: Option<&'a str>,
        was: Option<String>,
    },
    /// A CNAME to a role's load balancer (`target` once it exists).
    Balancer {
        name: &'a str,
        role: &'a str,
        target: Option<&'a str>,
        was: Option<String>,
    },
    Delete {
        name: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        target: &'a str,
        ttl: i64,
        present: bool,
    },
}

/// The load balancers' part of a plan.
#[derive(Debug, Serialize)]
struct BalancersJson<'a> {
    changes: Vec<BalancerJson<'a>>,
    /// Balancers or target groups of heet's names that heet did not create.
    conflicts: &'a [String],
    /// Changes ELB cannot make in place.
    refused: &'a [String],
    /// Listed by the ledger, not tagged as heet's: left alone.
    foreign: &'a [String],
    /// Listed by the ledger, gone.
    forgotten: &'a [String],
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum BalancerJson<'a> {
    CreateTargetGroup {
        role: &'a str,
        name: &'a str,
        protocol: &'a str,
        port: u16,
        health_check_path: &'a str,
        health_check_interval: u32,
        drain: u32,
    },
    CreateBalancer {
        role: &'a str,
        name: &'a str,
    },
    CreateListener {
        role: &'a str,
        name: &'a str,
        listen: u16,
    },
    UpdateTargetGroup {
        role: &'a str,
        name: &'a str,
        arn: &'a str,
        health_check_path: &'a str,
        health_check_interval: u32,
        drain: u32,
        was: &'a str,
    },
    UpdateListener {
        role: &'a str,
        name: &'a str,
        arn: &'a str,
        listen: u16,
        was: &'a str,
    },
    SetSubnets {
        role: &'a str,
        name: &'a str,
        arn: &'a str,
        was: Vec<&'a str>,
    },
    Register {
        role: &'a str,
        slot: &'a str,
        instance: &'a str,
        /// None: the instance launched in the slot.
        instance_id: Option<&'a str>,
        port: u16,
        wait_healthy: bool,
    },
    DeleteBalancer {
        role: &'a str,
        name: &'a str,
        arn: &'a str,
    },
    DeleteTargetGroup {
        role: &'a str,
        name: &'a str,
        arn: &'a str,
    },
}

impl<'a> BalancerJson<'a> {
    fn of(c: &'a BalancerChange) -> BalancerJson<'a> {
        match c {
            BalancerChange::CreateTargetGroup {
                role,
                name,
                settings: s,
                ..
            } => BalancerJson::CreateTargetGroup {
                role,
                name,
                protocol: &s.protocol,
                port: s.port,
                health_check_path: &s.path,
                health_check_interval: s.interval,
                drain: s.drain,
            },
            BalancerChange::CreateBalancer { role, name, .. } => {
                BalancerJson::CreateBalancer { role, name }
            }
            BalancerChange::CreateListener {
                role, name, listen, ..
            } => BalancerJson::CreateListener {
                role,
                name,
                listen: *listen,
            },
            BalancerChange::UpdateTargetGroup {
                role,
                name,
                arn,
                settings: s,
                was,
            } => BalancerJson::UpdateTargetGroup {
                role,
                name,
                arn,
                health_check_path: &s.path,
                health_check_interval: s.interval,
                drain: s.drain,
                was,
            },
            BalancerChange::UpdateListener {
                role,
                name,
                arn,
                listen,
                was,
                ..
            } => BalancerJson::UpdateListener {
                role,
                name,
                arn,
                listen: *listen,
                was,
            },
            BalancerChange::SetSubnets {
                role,
                name,
                arn,
                was,
                ..
            } => BalancerJson::SetSubnets {
                role,
                name,
                arn,
                was: was.iter().map(String::as_str).collect(),
            },
            BalancerChange::Register {
                role,
                slot,
                instance,
                instance_id,
                port,
                wait_healthy,
                ..
            } => BalancerJson::Register {
                role,
                slot,
                instance,
                instance_id: instance_id.as_deref(),
                port: *port,
                wait_healthy: wait_healthy.is_some(),
            },
            BalancerChange::DeleteBalancer { role, name, arn } => {
                BalancerJson::DeleteBalancer { role, name, arn }
            }
            BalancerChange::DeleteTargetGroup { role, name, arn } => {
                BalancerJson::DeleteTargetGroup { role, name, arn }
            }
        }
    }
}

impl<'a> RecordJson<'a> {
    fn of(r: &'a RecordChange) -> RecordJson<'a> {
        match r {
            RecordChange::Upsert {
                name,
                slot,
                instance,
                instance_id,
                target,
                was,
                a: _,
            } => RecordJson::Upsert {
                name,
                slot,
                instance,
                instance_id: instance_id.as_deref(),
                kind: target.as_deref().map(record_type),
                target: target.as_deref(),
                was: was.as_ref().map(|r| r.values.join(",")),
            },
            RecordChange::Balancer {
                name,
                role,
                target,
                was,
            } => RecordJson::Balancer {
                name,
                role,
                target: target.as_deref(),
                was: was.as_ref().map(|r| r.values.join(",")),
            },
            RecordChange::Delete {
                name,
                target,
                ttl,
                present,
                ..
            } => RecordJson::Delete {
                name,
                kind: record_type(target),
                target,
                ttl: *ttl,
                present: *present,
            },
        }
    }
}

/// The stacks' part of a plan.
#[derive(Debug, Serialize)]
struct StacksJson<'a> {
    changes: Vec<StackJson<'a>>,
    /// Stacks of heet's names that heet did not create.
    conflicts: &'a [String],
    /// Stacks CloudFormation is busy with.
    busy: &'a [String],
    /// Stacks the ledger lists that are gone.
    forgotten: &'a [String],
    /// References to outputs known once the stacks are made.
    unknown_outputs: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum StackJson<'a> {
    Create {
        stack: &'a str,
        name: &'a str,
        /// The id of a stack whose create failed, deleted first.
        replaces: Option<&'a str>,
        resources: Vec<StackResourceJson<'a>>,
    },
    Update {
        stack: &'a str,
        name: &'a str,
        stack_id: &'a str,
        reasons: &'a [String],
        change_set: ChangeSetJson<'a>,
    },
    Delete {
        stack: &'a str,
        name: &'a str,
        stack_id: &'a str,
    },
}

/// A resource a stack change adds, modifies or removes.
#[derive(Debug, Serialize)]
struct StackResourceJson<'a> {
    /// `Add`, `Modify`, `Remove` (CloudFormation's words).
    action: &'a str,
    logical_id: &'a str,
    #[serde(rename = "type")]
    resource_type: &'a str,
    /// `True`, `False`, `Conditional`, or null.
    replacement: Option<&'a str>,
}

/// What a change set said of an update.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
enum ChangeSetJson<'a> {
    /// Not asked, or not answered (`reason`).
    Unknown {
        reason: Option<&'a str>,
    },
    NoChanges,
    Changes {
        resources: Vec<StackResourceJson<'a>>,
    },
}

impl<'a> StackJson<'a> {
    fn of(c: &'a StackChange) -> StackJson<'a> {
        match c {
            StackChange::Create {
                stack,
                name,
                resources,
                replaces,
                ..
            } => StackJson::Create {
                stack,
                name,
                replaces: replaces.as_deref(),
                resources: resources
                    .iter()
                    .map(|(id, ty)| StackResourceJson {
                        action: "Add",
                        logical_id: id,
                        resource_type: ty,
                        replacement: None,
                    })
                    .collect(),
            },
            StackChange::Update {
                stack,
                name,
                id,
                reasons,
                preview,
                ..
            } => StackJson::Update {
                stack,
                name,
                stack_id: id,
                reasons,
                change_set: match preview {
                    Preview::Unknown(reason) => ChangeSetJson::Unknown {
                        reason: reason.as_deref(),
                    },
                    Preview::Nothing => ChangeSetJson::NoChanges,
                    Preview::Changes(changes) => ChangeSetJson::Changes {
                        resources: changes
                            .iter()
                            .map(|r| StackResourceJson {
                                action: &r.action,
                                logical_id: &r.logical_id,
                                resource_type: &r.resource_type,
                                replacement: r.replacement.as_deref(),
                            })
                            .collect(),
                    },
                },
            },
            StackChange::Delete { stack, name, id } => StackJson::Delete {
                stack,
                name,
                stack_id: id,
            },
        }
    }
}

/// The IAM part of a plan. Access key ids and secrets are never in it.
#[derive(Debug, Serialize)]
struct IamJson<'a> {
    changes: Vec<IamChangeJson<'a>>,
    conflicts: &'a [String],
    foreign: &'a [String],
    forgotten: &'a [String],
}

/// An entity a policy is attached to.
#[derive(Debug, Serialize)]
struct HolderJson<'a> {
    kind: &'static str,
    name: &'a str,
}

impl<'a> HolderJson<'a> {
    fn of(h: &'a Holder) -> HolderJson<'a> {
        let (kind, name) = h.parts();
        HolderJson { kind, name }
    }
}

fn kind_json(k: Kind) -> &'static str {
    match k {
        Kind::Policy => "policy",
        Kind::Group => "group",
        Kind::User => "user",
        Kind::Role => "role",
        Kind::Profile => "instance-profile",
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum IamChangeJson<'a> {
    CreatePolicy {
        name: &'a str,
        document: &'a serde_json::Value,
    },
    NewPolicyVersion {
        name: &'a str,
        document: &'a serde_json::Value,
        deletes_version: Option<&'a str>,
    },
    CreateGroup {
        name: &'a str,
    },
    CreateUser {
        name: &'a str,
    },
    CreateRole {
        name: &'a str,
        trust: &'a serde_json::Value,
    },
    UpdateTrust {
        name: &'a str,
        trust: &'a serde_json::Value,
    },
    CreateInstanceProfile {
        name: &'a str,
        role: &'a str,
        exists: bool,
    },
    Attach {
        to: HolderJson<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        arn: Option<&'a str>,
    },
    Detach {
        from: HolderJson<'a>,
        arn: &'a str,
    },
    Join {
        user: &'a str,
        group: &'a str,
    },
    Leave {
        user: &'a str,
        group: &'a str,
    },
    CreateAccessKey {
        user: &'a str,
        config_key_id: &'a str,
        config_secret: &'a str,
    },
    DeleteAccessKey {
        user: &'a str,
        /// Whether it is the key heet keeps (else one it did not make).
        kept: bool,
    },
    Delete {
        kind: &'static str,
        name: &'a str,
    },
}

impl<'a> IamChangeJson<'a> {
    fn of(c: &'a IamChange) -> IamChangeJson<'a> {
        match c {
            IamChange::CreatePolicy { name, document } => {
                IamChangeJson::CreatePolicy { name, document }
            }
            IamChange::NewPolicyVersion {
                name,
                document,
                drop,
                ..
            } => IamChangeJson::NewPolicyVersion {
                name,
                document,
                deletes_version: drop.as_deref(),
            },
            IamChange::CreateGroup { name } => IamChangeJson::CreateGroup { name },
            IamChange::CreateUser { name } => IamChangeJson::CreateUser { name },
            IamChange::CreateRole { name, trust } => IamChangeJson::CreateRole { name, trust },
            IamChange::UpdateTrust { name, trust } => IamChangeJson::UpdateTrust { name, trust },
            IamChange::CreateProfile { name, role, exists } => {
                IamChangeJson::CreateInstanceProfile {
                    name,
                    role,
                    exists: *exists,
                }
            }
            IamChange::Attach { holder, policy } => {
                let (policy, arn) = match policy {
                    Attachable::Heet(n) => (Some(n.as_str()), None),
                    Attachable::Arn(a) => (None, Some(a.as_str())),
                };
                IamChangeJson::Attach {
                    to: HolderJson::of(holder),
                    policy,
                    arn,
                }
            }
            IamChange::Detach { holder, arn } => IamChangeJson::Detach {
                from: HolderJson::of(holder),
                arn,
            },
            IamChange::Join { user, group } => IamChangeJson::Join { user, group },
            IamChange::Leave { user, group } => IamChangeJson::Leave { user, group },
            IamChange::CreateAccessKey {
                user,
                id_key,
                secret_key,
            } => IamChangeJson::CreateAccessKey {
                user,
                config_key_id: id_key,
                config_secret: secret_key,
            },
            IamChange::DeleteAccessKey { user, stored, .. } => IamChangeJson::DeleteAccessKey {
                user,
                kept: stored.is_some(),
            },
            IamChange::Delete { kind, name, .. } => IamChangeJson::Delete {
                kind: kind_json(*kind),
                name,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Definition;
    use crate::kinds::records::DnsState;
    use std::path::Path;

    /// A plan with every kind of change there is, made by the real planner.
    fn every_change() -> Plan {
        let def = Definition::parse(
            Path::new("heet.toml"),
            "[project]\nname = \"shop\"\ndomain = \"shop.example\"\n[network]\nvpc = \"create\"\n[defaults]\nami = \"ami-1\"\n[roles.www]\ncount = 1\nports = [80]\nallow_cidr = [\"0.0.0.0/0\"]\neip = true\nvolume_gb = 20\nkey_pair = \"create\"\ninstance_profile = \"iam:app\"\n[roles.db]\nports = [5432]\nallow_from = [\"www\"]\nkey_pair = { public_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHe21njEm5jyACCSs2x886LlE5CtVJDr3kiT8Yx3kmbo\" }\n[environments.prod]\n[iam.policies.deploy]\nstatements = [{ actions = [\"s3:GetObject\"], resources = [\"*\"] }]\n[iam.groups.ops]\npolicies = [\"deploy\", \"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n[iam.users.ci]\ngroups = [\"ops\"]\naccess_key = true\n[iam.roles.app]\nassume = \"ec2\"\npolicies = [\"deploy\"]\n",
        )
        .unwrap();
        let desired = crate::desired::compute(
            &def,
            "prod",
            "eu-west-1",
            &mut crate::desired::tests::NoPlugins,
        )
        .unwrap();
        let dns = DnsState {
            domain: Some("shop.example".into()),
            ..DnsState::default()
        };
        let mut p = crate::plan::plan(&desired, &[], &[], &dns, Some(&BTreeMap::new()), 0);
        p.iam = crate::kinds::iam::plan(&desired.iam, &Default::default(), &BTreeMap::new());
        let send = crate::kinds::stacks::Send {
            body: "Resources: {}".into(),
            parameters: BTreeMap::new(),
            capabilities: Default::default(),
        };
        p.stacks.changes = vec![
            StackChange::Create {
                stack: "net".into(),
                name: "shop-prod-net".into(),
                send: send.clone(),
                resources: vec![("Vpc".into(), "AWS::EC2::VPC".into())],
                replaces: None,
                replaces_resources: false,
            },
            StackChange::Update {
                stack: "app".into(),
                name: "shop-prod-app".into(),
                id: "arn:aws:cloudformation:eu-west-1:123456789012:stack/shop-prod-app/1".into(),
                send,
                reasons: vec!["template app.yaml".into()],
                preview: Preview::Changes(vec![crate::kinds::stacks::ResourceChange {
                    action: "Modify".into(),
                    logical_id: "Group".into(),
                    resource_type: "AWS::EC2::SecurityGroup".into(),
                    replacement: Some("True".into()),
                }]),
            },
            StackChange::Delete {
                stack: "old".into(),
                name: "shop-prod-old".into(),
                id: "arn:aws:cloudformation:eu-west-1:123456789012:stack/shop-prod-old/2".into(),
            },
        ];
        p.stacks.unknown.insert("${stacks.net.SubnetId}".into());
        let lb = crate::kinds::balancers::Balancer {
            listen: 80,
            port: 8080,
            protocol: "HTTP".into(),
            path: "/health".into(),
            interval: 10,
            drain: 30,
            name: Some("shop".into()),
        };
        p.balancers.changes = vec![
            BalancerChange::CreateTargetGroup {
                role: "www".into(),
                name: "shop-prod-www".into(),
                settings: lb.clone(),
                placement: crate::kinds::balancers::Placement::Default,
            },
            BalancerChange::CreateListener {
                role: "www".into(),
                name: "shop-prod-www".into(),
                listen: 80,
                balancer: None,
                group: None,
            },
            BalancerChange::Register {
                role: "www".into(),
                slot: "slot-www-1".into(),
                instance: "shop-prod-www-01".into(),
                instance_id: None,
                booting: false,
                port: 8080,
                group: None,
                wait_healthy: Some(std::time::Duration::from_secs(300)),
            },
            BalancerChange::DeleteBalancer {
                role: "api".into(),
                name: "shop-prod-api".into(),
                arn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/shop-prod-api/1".into(),
            },
        ];
        p
    }

    fn json(p: &Plan) -> serde_json::Value {
        let mut out = Vec::new();
        plan(p, &mut serde_json::Serializer::new(&mut out)).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn the_plan_json_is_pinned() {
        insta::assert_snapshot!(serde_json::to_string_pretty(&json(&every_change())).unwrap());
    }

    #[test]
    fn plans_show_user_data_only_as_size_and_hash() {
        let mut p = every_change();
        let Change::Create { instance } = &mut p.instances.changes[0] else {
            panic!("a create first")
        };
        instance.user_data = "secret=hunter2".into();
        let json = json(&p);
        assert_eq!(json["changes"][0]["user_data"]["bytes"], 14);
        assert_eq!(
            json["changes"][0]["user_data"]["sha256"],
            crate::plugins::sha256_hex(b"secret=hunter2")
        );
        assert!(!json.to_string().contains("hunter2"));
    }
}
