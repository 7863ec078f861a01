//! Executes a [`Plan`]: the only code that changes anything in AWS.
//!
//! Order: releases and network creates, record deletes, terminate (deletes and the old half
//! of replacements), retag, launch, wait for the new instances to run, associate addresses,
//! record upserts, network deletes. Launches run a few at a time; each is tagged atomically with
//! its slot, so whatever a crash interrupts, the next run's plan finishes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::cloud::Aws;
use crate::desired::DesiredInstance;
use crate::ledger::{self, Ledger};
use crate::namespace;
use crate::network::{self, NetChange, ObservedResource, Source, SubnetRef, VpcRef};
use crate::plan::{Change, ObservedInstance, Plan, RECORD_TTL, RecordChange, RecordOp, Zone};
use crate::progress::Progress;

/// Launches in flight at once: enough to hide latency, few enough not to trip throttling.
const LAUNCH_CONCURRENCY: usize = 8;
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One instance as a command reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSummary {
    pub role: String,
    pub index: u32,
    pub name: String,
    pub instance_id: String,
    pub instance_type: String,
    pub state: String,
    pub dns_name: Option<String>,
}

impl InstanceSummary {
    pub fn of(o: &ObservedInstance) -> InstanceSummary {
        InstanceSummary {
            role: o.tags.get(namespace::TAG_ROLE).cloned().unwrap_or_default(),
            index: o
                .tags
                .get(namespace::TAG_INDEX)
                .and_then(|i| i.parse().ok())
                .unwrap_or(0),
            name: o.name().to_owned(),
            instance_id: o.instance_id.clone(),
            instance_type: o.instance_type.clone(),
            state: o.state.clone(),
            dns_name: o.dns_name().map(str::to_owned),
        }
    }
}

/// Orders instances as the definition does: by role, then index.
pub fn sort_by_slot(instances: &mut [InstanceSummary]) {
    instances.sort_by(|a, b| (&a.role, a.index).cmp(&(&b.role, b.index)));
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Applied {
    pub terminated: Vec<String>,
    pub retagged: Vec<String>,
    pub launched: Vec<InstanceSummary>,
    /// Network changes made, as the plan shows them.
    pub network: Vec<String>,
}

/// What apply needs beyond the plan.
pub struct Context<'a> {
    /// Read under the lock; kept current as apply writes it.
    pub ledger: &'a mut Ledger,
    /// The network resources observed when planning: the ids the plan refers to.
    pub resources: &'a [ObservedResource],
    /// The project's zone, when it exists.
    pub zone: Option<Zone>,
    pub run_id: &'a str,
}

pub async fn apply(
    aws: &Aws,
    plan: &Plan,
    cx: Context<'_>,
    progress: &Progress,
) -> anyhow::Result<Applied> {
    let Context {
        ledger,
        resources,
        zone,
        run_id,
    } = cx;
    let mut applied = Applied::default();
    if !plan.conflicts.is_empty() {
        anyhow::bail!(
            "nothing applied: {} DNS name(s) are held by records heet did not create: {}",
            plan.conflicts.len(),
            plan.conflicts.join("; ")
        );
    }

    // Network resources heet owns, by `heet:resource`, as they are and as they are created.
    let mut ids: BTreeMap<String, String> = resources
        .iter()
        .filter(|r| r.is_heets(&plan.project, &plan.env))
        .map(|r| (r.resource.clone(), r.aws_id.clone()))
        .collect();
    network_before(aws, plan, ledger, &mut ids, &mut applied).await?;
    // Records go before their instances: a run killed in between leaves instances that the
    // next plan sees without the ledger, where the other order would leave records that only
    // the ledger knows of, and a no-op `up` does not read it.
    apply_records(aws, plan, ledger, &zone, &BTreeMap::new(), Records::Deletes).await?;

    let doomed: Vec<String> = plan.terminated_ids().map(str::to_owned).collect();
    if !doomed.is_empty() {
        // Groups and subnets can only go once their instances are fully gone.
        let full = plan.network.iter().any(NetChange::is_delete);
        terminate(aws, &doomed, full, progress).await?;
        applied.terminated = doomed;
        // Slots no longer in the definition leave the ledger with their instance; a twin's or
        // a replaced instance's slot stays, and its entry is rewritten by the launch.
        let gone: Vec<_> = plan
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete {
                    role,
                    index,
                    twin: false,
                    ..
                } => Some((
                    ledger::instance_key(&namespace::slot_id(
                        &plan.project,
                        &plan.env,
                        role,
                        *index,
                    )),
                    None,
                )),
                _ => None,
            })
            .collect();
        book(aws, ledger, gone).await?;
    }

    for change in &plan.changes {
        if let Change::UpdateTags {
            instance_id,
            name,
            set,
            ..
        } = change
        {
            tracing::info!("retagging {instance_id} ({name})");
            aws.ec2.set_tags(instance_id, set).await?;
            applied.retagged.push(instance_id.clone());
        }
    }

    let launches: Vec<&DesiredInstance> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Create { instance } | Change::Replace { instance, .. } => Some(instance),
            _ => None,
        })
        .collect();
    if !launches.is_empty() {
        applied.launched = launch(aws, plan, &launches, ledger, run_id, &ids, progress).await?;
    }
    let mut new_dns: BTreeMap<String, String> = applied
        .launched
        .iter()
        .filter_map(|i| {
            let slot = namespace::slot_id(&plan.project, &plan.env, &i.role, i.index);
            Some((slot, i.dns_name.clone()?.to_ascii_lowercase()))
        })
        .collect();
    let associated =
        associate(aws, plan, ledger, &mut ids, &applied.launched, &mut new_dns).await?;
    applied.network.extend(associated);
    apply_records(aws, plan, ledger, &zone, &new_dns, Records::Upserts).await?;
    let forgotten: Vec<_> = plan
        .foreign_records
        .iter()
        .map(|name| (ledger::record_key(name), None))
        .collect();
    book(aws, ledger, forgotten).await?;
    network_after(aws, plan, ledger, &mut applied).await?;
    Ok(applied)
}

/// Stores `changes` in the ledger: the pages entries move to before the pages they leave.
async fn book(
    aws: &Aws,
    ledger: &mut Ledger,
    changes: Vec<(String, Option<ledger::Entry>)>,
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let write = ledger.stage(changes);
    for step in [&write.first, &write.then] {
        let results: Vec<anyhow::Result<()>> = stream::iter(step)
            .map(|(name, value)| aws.ssm.put(name, value))
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
    }
    aws.ssm.delete_all(&write.delete).await
}

/// A network resource's ledger entry.
fn resource_entry(
    resource: &str,
    aws_id: Option<&str>,
    state: ledger::State,
) -> Vec<(String, Option<ledger::Entry>)> {
    let entry = ledger::Entry::Resource {
        resource: resource.to_owned(),
        aws_id: aws_id.map(str::to_owned),
        state,
    };
    vec![(ledger::resource_key(resource), Some(entry))]
}

/// Creates `resource` with `create`, written ahead in the ledger and confirmed after.
async fn created<F>(
    aws: &Aws,
    ledger: &mut Ledger,
    resource: &str,
    ids: &mut BTreeMap<String, String>,
    create: F,
) -> anyhow::Result<String>
where
    F: std::future::Future<Output = anyhow::Result<String>>,
{
    book(
        aws,
        ledger,
        resource_entry(resource, None, ledger::State::Pending),
    )
    .await?;
    let id = create.await?;
    book(
        aws,
        ledger,
        resource_entry(resource, Some(&id), ledger::State::Done),
    )
    .await?;
    ids.insert(resource.to_owned(), id.clone());
    Ok(id)
}

fn resolve<'a>(ids: &'a BTreeMap<String, String>, resource: &str) -> anyhow::Result<&'a str> {
    ids.get(resource)
        .map(String::as_str)
        .ok_or_else(|| anyhow::anyhow!("internal: {resource} is neither observed nor created"))
}

/// The network changes that come before the instances: releases, creates, rule changes.
async fn network_before(
    aws: &Aws,
    plan: &Plan,
    ledger: &mut Ledger,
    ids: &mut BTreeMap<String, String>,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let (project, env) = (plan.project.as_str(), plan.env.as_str());
    let tags = |resource: &str, name: &str| network::tags(project, env, resource, name);
    let phase = |c: &NetChange| match c {
        NetChange::Release { .. } => 0,
        NetChange::CreateVpc { .. } => 1,
        NetChange::AttachGateway { .. } => 2,
        NetChange::CreateSubnet { .. } => 3,
        NetChange::CreateGroup { .. } => 4,
        NetChange::Revoke { .. } => 5,
        NetChange::Authorize { .. } => 6,
        _ => 99,
    };
    let mut changes: Vec<&NetChange> = plan.network.iter().filter(|c| phase(c) < 99).collect();
    changes.sort_by_key(|c| phase(c));
    let mut zones = None;
    for c in changes {
        tracing::info!("network: {c}");
        match c {
            NetChange::Release {
                resource,
                allocation_id,
                association_id,
            } => {
                aws.net
                    .release(allocation_id, association_id.as_deref())
                    .await?;
                book(aws, ledger, vec![(ledger::resource_key(resource), None)]).await?;
            }
            NetChange::CreateVpc {
                resource,
                name,
                cidr,
            } => {
                created(
                    aws,
                    ledger,
                    resource,
                    ids,
                    aws.net.create_vpc(cidr, &tags(resource, name)),
                )
                .await?;
            }
            NetChange::AttachGateway {
                resource,
                gateway_id,
            } => {
                let vpc = resolve(ids, "vpc/main")?.to_owned();
                let name = format!("{project}-{env}");
                match gateway_id {
                    Some(id) => {
                        aws.net
                            .attach_gateway(Some(id), &vpc, &tags(resource, &name))
                            .await?;
                    }
                    None => {
                        let t = tags(resource, &name);
                        created(
                            aws,
                            ledger,
                            resource,
                            ids,
                            aws.net.attach_gateway(None, &vpc, &t),
                        )
                        .await?;
                    }
                }
            }
            NetChange::CreateSubnet {
                resource,
                cidr,
                index,
            } => {
                if zones.is_none() {
                    zones = Some(aws.net.zones().await?);
                }
                let zone = zones
                    .as_ref()
                    .filter(|z| !z.is_empty())
                    .map(|z| z[index % z.len()].clone());
                let vpc = resolve(ids, "vpc/main")?.to_owned();
                let name = format!("{project}-{env}-{}", resource.replace('/', "-"));
                let t = tags(resource, &name);
                created(
                    aws,
                    ledger,
                    resource,
                    ids,
                    aws.net.create_subnet(&vpc, cidr, zone.as_deref(), &t),
                )
                .await?;
            }
            NetChange::CreateGroup {
                resource,
                name,
                vpc,
                ..
            } => {
                let vpc_id = match vpc {
                    VpcRef::Default => None,
                    VpcRef::Id(id) => Some(id.clone()),
                    VpcRef::New => Some(resolve(ids, "vpc/main")?.to_owned()),
                };
                let t = tags(resource, name);
                created(
                    aws,
                    ledger,
                    resource,
                    ids,
                    aws.net.create_group(name, vpc_id.as_deref(), &t),
                )
                .await?;
            }
            NetChange::Revoke {
                group_id, rules, ..
            } => aws.net.revoke(group_id, rules).await?,
            NetChange::Authorize {
                resource, rules, ..
            } => {
                let group = resolve(ids, resource)?.to_owned();
                let mut resolved = Vec::new();
                for r in rules {
                    resolved.push((
                        r.port,
                        match &r.source {
                            Source::Cidr(c) => Ok(c.clone()),
                            Source::Role(role) => {
                                Err(resolve(ids, &network::group_resource(role))?.to_owned())
                            }
                        },
                    ));
                }
                aws.net.authorize(&group, &resolved).await?;
            }
            _ => unreachable!("filtered by phase"),
        }
        applied.network.push(c.to_string());
    }
    Ok(())
}

/// Allocates and associates Elastic IPs, once the instances run; the DNS names of the
/// instances that got one are read again for their records.
async fn associate(
    aws: &Aws,
    plan: &Plan,
    ledger: &mut Ledger,
    ids: &mut BTreeMap<String, String>,
    launched: &[InstanceSummary],
    new_dns: &mut BTreeMap<String, String>,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let (project, env) = (plan.project.as_str(), plan.env.as_str());
    let launched_ids: BTreeMap<String, &str> = launched
        .iter()
        .map(|i| {
            (
                namespace::slot_id(project, env, &i.role, i.index),
                i.instance_id.as_str(),
            )
        })
        .collect();
    let mut moved: BTreeMap<String, String> = BTreeMap::new();
    for c in &plan.network {
        match c {
            NetChange::Allocate {
                resource, instance, ..
            } => {
                tracing::info!("network: {c}");
                let t = network::tags(project, env, resource, instance);
                created(aws, ledger, resource, ids, aws.net.allocate(&t)).await?;
                done.push(c.to_string());
            }
            NetChange::Associate {
                resource,
                slot,
                instance,
                instance_id,
                ..
            } => {
                let target = instance_id
                    .as_deref()
                    .or_else(|| launched_ids.get(slot).copied())
                    .ok_or_else(|| {
                        anyhow::anyhow!("{instance} did not launch: no instance for {resource}")
                    })?;
                tracing::info!("network: {c}");
                aws.net.associate(resolve(ids, resource)?, target).await?;
                moved.insert(target.to_owned(), slot.clone());
                done.push(c.to_string());
            }
            _ => {}
        }
    }
    if !moved.is_empty() {
        let ids: Vec<String> = moved.keys().cloned().collect();
        for o in aws.ec2.by_ids(&ids).await? {
            if let (Some(slot), Some(dns)) = (moved.get(&o.instance_id), o.dns_name()) {
                new_dns.insert(slot.clone(), dns.to_ascii_lowercase());
            }
        }
    }
    Ok(done)
}

/// The network deletes, once the instances are gone: groups, subnets, gateway, VPC.
async fn network_after(
    aws: &Aws,
    plan: &Plan,
    ledger: &mut Ledger,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    for c in &plan.network {
        let done = match c {
            NetChange::DeleteGroup { group_id, .. } => aws.net.delete_group(group_id).await,
            NetChange::DeleteSubnet { subnet_id, .. } => aws.net.delete_subnet(subnet_id).await,
            NetChange::DeleteGateway {
                gateway_id,
                attached,
                ..
            } => aws.net.delete_gateway(gateway_id, attached).await,
            NetChange::DeleteVpc { vpc_id, .. } => aws.net.delete_vpc(vpc_id).await,
            _ => continue,
        };
        tracing::info!("network: {c}");
        done?;
        book(
            aws,
            ledger,
            vec![(ledger::resource_key(c.resource()), None)],
        )
        .await?;
        applied.network.push(c.to_string());
    }
    Ok(())
}

/// Writes the plan's record changes as one batch per zone, each written ahead in the ledger
/// and confirmed after.
/// Which of the plan's record changes to apply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Records {
    Deletes,
    Upserts,
}

async fn apply_records(
    aws: &Aws,
    plan: &Plan,
    ledger: &mut Ledger,
    zone: &Option<Zone>,
    new_dns: &BTreeMap<String, String>,
    which: Records,
) -> anyhow::Result<()> {
    let changes: Vec<&RecordChange> = plan
        .records
        .iter()
        .filter(|r| matches!(r, RecordChange::Delete { .. }) == (which == Records::Deletes))
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    let mut ops = Vec::new();
    let mut dropped = Vec::new();
    for r in changes {
        match r {
            RecordChange::Upsert {
                name,
                slot,
                target,
                instance,
                ..
            } => {
                let target = target
                    .clone()
                    .or_else(|| new_dns.get(slot).cloned())
                    .ok_or_else(|| {
                        anyhow::anyhow!("{instance} has no DNS name for the CNAME {name}")
                    })?;
                ops.push(RecordOp::Upsert {
                    name: name.clone(),
                    target,
                    ttl: RECORD_TTL,
                });
            }
            RecordChange::Delete {
                name,
                target,
                ttl,
                present,
            } => {
                if *present {
                    ops.push(RecordOp::Delete {
                        name: name.clone(),
                        target: target.clone(),
                        ttl: *ttl,
                    });
                }
                dropped.push((ledger::record_key(name), None));
            }
        }
    }
    let entries = |state| {
        ops.iter()
            .filter_map(move |op| match op {
                RecordOp::Upsert { name, target, ttl } => Some((
                    ledger::record_key(name),
                    Some(ledger::Entry::Record {
                        name: name.clone(),
                        target: target.clone(),
                        ttl: *ttl,
                        state,
                    }),
                )),
                RecordOp::Delete { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    // Only ledger entries to drop (their records, or the whole zone, gone): no Route53 call.
    if !ops.is_empty() {
        let zone = match (zone, &plan.create_zone) {
            (Some(zone), _) => zone.clone(),
            (None, Some(domain)) => {
                tracing::info!("creating the hosted zone {domain}");
                aws.route53.create_zone(domain, &plan.project).await?
            }
            (None, None) => anyhow::bail!("internal: record changes without a zone"),
        };
        book(aws, ledger, entries(ledger::State::Pending)).await?;
        tracing::info!(
            "writing {} DNS record change(s) to {}",
            ops.len(),
            zone.name
        );
        aws.route53.change(&zone, &ops).await?;
        book(aws, ledger, entries(ledger::State::Done)).await?;
    }
    book(aws, ledger, dropped).await
}

/// Terminates `ids` and waits until none of them runs any more (`fully`: until they are
/// gone, network interfaces included).
pub async fn terminate(
    aws: &Aws,
    ids: &[String],
    fully: bool,
    progress: &Progress,
) -> anyhow::Result<()> {
    tracing::info!("terminating {} instance(s): {}", ids.len(), ids.join(", "));
    aws.ec2.terminate(ids).await?;
    let bar = progress.bar(ids.len(), "terminating");
    aws.ec2
        .wait_until(
            ids,
            "terminated",
            |s| s == "terminated" || (!fully && s == "shutting-down"),
            WAIT_TIMEOUT,
            |done, _| bar.set_position(done as u64),
        )
        .await?;
    bar.finish_and_clear();
    Ok(())
}

async fn launch(
    aws: &Aws,
    plan: &Plan,
    launches: &[&DesiredInstance],
    ledger: &mut Ledger,
    run_id: &str,
    ids: &BTreeMap<String, String>,
    progress: &Progress,
) -> anyhow::Result<Vec<InstanceSummary>> {
    // Subnets and groups, resolved to AWS ids before anything is launched.
    let mut placement = Vec::new();
    for d in launches {
        let subnet = match &d.subnet {
            None => None,
            Some(SubnetRef::Id(id)) => Some(id.clone()),
            Some(SubnetRef::Heet { resource, .. }) => Some(resolve(ids, resource)?.to_owned()),
        };
        let mut groups = Vec::new();
        for role in &d.groups {
            groups.push(resolve(ids, &network::group_resource(role))?.to_owned());
        }
        groups.extend(d.security_group_ids.iter().cloned());
        placement.push((subnet, groups));
    }
    let env = &plan.env;
    let mut groups: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for d in launches {
        *groups.entry((&d.role, &d.instance_type)).or_default() += 1;
    }
    for ((role, instance_type), n) in groups {
        tracing::info!("provisioning {n} × {instance_type} for role={role} env={env}");
    }

    // Write-ahead: each launch's token is in the ledger before RunInstances is called, so a
    // run that dies in between retries with the same token.
    let entry = |d: &DesiredInstance, token: &str, instance_id: Option<String>, state| {
        (
            ledger::instance_key(&d.id),
            Some(ledger::Entry::Instance {
                slot: d.id.clone(),
                role: d.role.clone(),
                index: d.index,
                spec: d.spec.clone(),
                client_token: token.to_owned(),
                instance_id,
                state,
            }),
        )
    };
    let tokens: Vec<String> = launches
        .iter()
        .map(|d| {
            ledger.pending_token(&d.id, &d.spec).map_or_else(
                || namespace::client_token(&d.id, &d.spec, run_id),
                str::to_owned,
            )
        })
        .collect();
    let pending: Vec<_> = launches
        .iter()
        .zip(&tokens)
        .map(|(d, t)| entry(d, t, None, ledger::State::Pending))
        .collect();
    book(aws, ledger, pending).await?;

    let results: Vec<(usize, anyhow::Result<String>)> = stream::iter(launches.iter().enumerate())
        .map(|(i, d)| {
            let token = &tokens[i];
            let (subnet, groups) = &placement[i];
            async move { (i, aws.ec2.launch(d, token, subnet.as_deref(), groups).await) }
        })
        .buffer_unordered(LAUNCH_CONCURRENCY)
        .collect()
        .await;
    let done: Vec<_> = results
        .iter()
        .filter_map(|(i, r)| {
            let id = r.as_ref().ok()?;
            Some(entry(
                launches[*i],
                &tokens[*i],
                Some(id.clone()),
                ledger::State::Done,
            ))
        })
        .collect();
    book(aws, ledger, done).await?;

    let mut ids = vec![String::new(); launches.len()];
    let mut failures = Vec::new();
    for (i, result) in results {
        match result {
            Ok(id) => ids[i] = id,
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let launched: Vec<String> = ids.into_iter().filter(|id| !id.is_empty()).collect();
    if !failures.is_empty() {
        // The launched ones carry their slot tags: the next `up` keeps them and retries the rest.
        anyhow::bail!(
            "{} of {} launch(es) failed; {} launched and kept for the next run: {}",
            failures.len(),
            launches.len(),
            launched.len(),
            failures.join("; ")
        );
    }

    let bar = progress.bar(launched.len(), "booting");
    let running = aws
        .ec2
        .wait_until(
            &launched,
            "running",
            |s| s == "running",
            WAIT_TIMEOUT,
            |done, _| bar.set_position(done as u64),
        )
        .await?;
    bar.finish_and_clear();
    let mut summaries: Vec<InstanceSummary> = running.iter().map(InstanceSummary::of).collect();
    sort_by_slot(&mut summaries);
    for s in &summaries {
        tracing::info!(
            "instance ready: {} ({} {})",
            s.dns_name.as_deref().unwrap_or("no DNS name"),
            s.name,
            s.instance_id
        );
    }
    Ok(summaries)
}
