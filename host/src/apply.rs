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
use crate::namespace;
use crate::plan::{Change, ObservedInstance, Plan};
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

pub async fn apply(
    aws: &Aws,
    plan: &Plan,
    run_id: &str,
    progress: &Progress,
) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();

    let doomed: Vec<String> = plan.terminated_ids().map(str::to_owned).collect();
    if !doomed.is_empty() {
        terminate(aws, &doomed, progress).await?;
        applied.terminated = doomed;
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
        applied.launched = launch(aws, &plan.env, &launches, run_id, progress).await?;
    }
    Ok(applied)
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
    env: &str,
    launches: &[&DesiredInstance],
    run_id: &str,
    progress: &Progress,
) -> anyhow::Result<Vec<InstanceSummary>> {
    let mut groups: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for d in launches {
        *groups.entry((&d.role, &d.instance_type)).or_default() += 1;
    }
    for ((role, instance_type), n) in groups {
        tracing::info!("provisioning {n} × {instance_type} for role={role} env={env}");
    }

    let results: Vec<(usize, anyhow::Result<String>)> = stream::iter(launches.iter().enumerate())
        .map(|(i, d)| async move {
            let token = namespace::client_token(&d.id, &d.spec, run_id);
            (i, aws.ec2.launch(d, &token).await)
        })
        .buffer_unordered(LAUNCH_CONCURRENCY)
        .collect()
        .await;

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
