//! Executes a [`Plan`]: the only code that changes anything in AWS.
//!
//! Order: terminate (deletes and the old half of replacements), retag, launch, then wait for
//! the new instances to run. Launches run a few at a time; each is tagged atomically with
//! its slot, so whatever a crash interrupts, the next run's plan finishes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::cloud::Aws;
use crate::desired::DesiredInstance;
use crate::ledger::{self, Ledger};
use crate::namespace;
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
}

/// What apply needs beyond the plan.
pub struct Context<'a> {
    pub ledger: &'a Ledger,
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
    let mut applied = Applied::default();
    if !plan.conflicts.is_empty() {
        anyhow::bail!(
            "nothing applied: {} DNS name(s) are held by records heet did not create: {}",
            plan.conflicts.len(),
            plan.conflicts.join("; ")
        );
    }

    let doomed: Vec<String> = plan.terminated_ids().map(str::to_owned).collect();
    if !doomed.is_empty() {
        terminate(aws, &doomed, progress).await?;
        applied.terminated = doomed;
        // Slots no longer in the definition leave the ledger with their instance; a twin's or
        // a replaced instance's slot stays, and its entry is rewritten by the launch.
        let gone: Vec<String> = plan
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete {
                    role,
                    index,
                    reason,
                    ..
                } if !reason.starts_with("twin") => Some(ledger::instance_key(
                    &plan.project,
                    &plan.env,
                    &namespace::slot_id(&plan.project, &plan.env, role, *index),
                )),
                _ => None,
            })
            .collect();
        aws.ssm.delete_all(&gone).await?;
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
        applied.launched = launch(aws, plan, &launches, &cx, progress).await?;
    }
    apply_records(aws, plan, &cx, &applied.launched).await?;
    let forgotten: Vec<String> = plan
        .foreign_records
        .iter()
        .map(|name| ledger::record_key(&plan.project, &plan.env, name))
        .collect();
    aws.ssm.delete_all(&forgotten).await?;
    Ok(applied)
}

/// Writes the plan's record changes as one batch per zone, each written ahead in the ledger
/// and confirmed after.
async fn apply_records(
    aws: &Aws,
    plan: &Plan,
    cx: &Context<'_>,
    launched: &[InstanceSummary],
) -> anyhow::Result<()> {
    if plan.records.is_empty() {
        return Ok(());
    }
    let new_dns: BTreeMap<String, &str> = launched
        .iter()
        .filter_map(|i| {
            let slot = namespace::slot_id(&plan.project, &plan.env, &i.role, i.index);
            Some((slot, i.dns_name.as_deref()?))
        })
        .collect();
    let mut ops = Vec::new();
    let mut dropped = Vec::new();
    for r in &plan.records {
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
                    .or_else(|| new_dns.get(slot).map(|d| d.to_ascii_lowercase()))
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
                dropped.push(ledger::record_key(&plan.project, &plan.env, name));
            }
        }
    }
    let entries = |state| {
        ops.iter()
            .filter_map(move |op| match op {
                RecordOp::Upsert { name, target, ttl } => Some((
                    ledger::record_key(&plan.project, &plan.env, name),
                    ledger::Entry::Record {
                        name: name.clone(),
                        target: target.clone(),
                        ttl: *ttl,
                        state,
                    },
                )),
                RecordOp::Delete { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    // Only ledger entries to drop (their records, or the whole zone, gone): no Route53 call.
    if !ops.is_empty() {
        let zone = match (&cx.zone, &plan.create_zone) {
            (Some(zone), _) => zone.clone(),
            (None, Some(domain)) => {
                tracing::info!("creating the hosted zone {domain}");
                aws.route53.create_zone(domain, &plan.project).await?
            }
            (None, None) => anyhow::bail!("internal: record changes without a zone"),
        };
        put_entries(aws, &entries(ledger::State::Pending)).await?;
        tracing::info!(
            "writing {} DNS record change(s) to {}",
            ops.len(),
            zone.name
        );
        aws.route53.change(&zone, &ops).await?;
        put_entries(aws, &entries(ledger::State::Done)).await?;
    }
    aws.ssm.delete_all(&dropped).await
}

/// Writes ledger entries, a few at a time.
async fn put_entries(aws: &Aws, entries: &[(String, ledger::Entry)]) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(entries)
        .map(|(key, entry)| async move { aws.ssm.put(key, &serde_json::to_string(entry)?).await })
        .buffer_unordered(LAUNCH_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Terminates `ids` and waits until none of them runs any more.
pub async fn terminate(aws: &Aws, ids: &[String], progress: &Progress) -> anyhow::Result<()> {
    tracing::info!("terminating {} instance(s): {}", ids.len(), ids.join(", "));
    aws.ec2.terminate(ids).await?;
    let bar = progress.bar(ids.len(), "terminating");
    aws.ec2
        .wait_until(
            ids,
            "terminated",
            |s| matches!(s, "shutting-down" | "terminated"),
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
    cx: &Context<'_>,
    progress: &Progress,
) -> anyhow::Result<Vec<InstanceSummary>> {
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
            ledger::instance_key(&plan.project, env, &d.id),
            ledger::Entry::Instance {
                slot: d.id.clone(),
                role: d.role.clone(),
                index: d.index,
                spec: d.spec.clone(),
                client_token: token.to_owned(),
                instance_id,
                state,
            },
        )
    };
    let tokens: Vec<String> = launches
        .iter()
        .map(|d| {
            cx.ledger.pending_token(&d.id, &d.spec).map_or_else(
                || namespace::client_token(&d.id, &d.spec, cx.run_id),
                str::to_owned,
            )
        })
        .collect();
    let pending: Vec<_> = launches
        .iter()
        .zip(&tokens)
        .map(|(d, t)| entry(d, t, None, ledger::State::Pending))
        .collect();
    put_entries(aws, &pending).await?;

    let results: Vec<(usize, anyhow::Result<String>)> = stream::iter(launches.iter().enumerate())
        .map(|(i, d)| {
            let token = &tokens[i];
            async move { (i, aws.ec2.launch(d, token).await) }
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
    put_entries(aws, &done).await?;

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
