//! EC2: find heet's instances by tag, launch a batch of them in one call, tag, terminate,
//! wait. Calls naming an instance, group or subnet heet just made are retried while EC2 does
//! not know it yet, and a launch while its instance profile propagates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, EbsBlockDevice, Filter,
    IamInstanceProfileSpecification, Instance, InstanceType, Placement, ResourceType,
    RunInstancesMonitoringEnabled, Tag, TagSpecification, Tenancy, VolumeType,
};

use super::{FRESH_ID_WAIT, PROFILE_WAIT, not_known_yet, retry_raw, retry_while, sdk_error};
use crate::desired::{DATA_DEVICE, DesiredInstance};
use crate::kinds::instances::{Attribute, ObservedInstance};
use crate::namespace::{TAG_ENV, TAG_PROJECT};
use crate::rolling::Health;

/// One RunInstances: `count` instances with `instance`'s launch settings (the batch's first
/// member), the batch's shared tags at launch.
pub struct Launch<'a> {
    pub instance: &'a DesiredInstance,
    pub count: u32,
    pub tags: &'a BTreeMap<String, String>,
    /// The tags its data volumes carry from launch.
    pub volume_tags: &'a BTreeMap<String, String>,
    pub client_token: &'a str,
    pub subnet_id: Option<&'a str>,
    pub group_ids: &'a [String],
}

/// What [`Ec2::health`] found of one instance.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub instance_id: String,
    pub healthy: bool,
    /// Healthy, failed, or out of time: nothing more to wait for.
    settled: bool,
    /// Its state as last seen.
    pub state: String,
    /// Its status checks as last seen (`system/instance`), when they were asked.
    pub checks: Option<String>,
    /// The instance as last seen.
    pub seen: Option<ObservedInstance>,
}

impl Verdict {
    /// An instance that runs but did not become healthy in its target group: `state` as the
    /// target group last said.
    pub fn unhealthy_target(instance_id: &str, state: String) -> Verdict {
        Verdict {
            instance_id: instance_id.to_owned(),
            healthy: false,
            settled: true,
            state: format!("running; target {state}"),
            checks: None,
            seen: None,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.instance_id, self.state)?;
        if let Some(c) = &self.checks {
            write!(f, ", status checks {c}")?;
        }
        write!(f, ")")
    }
}

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The token was used before with other parameters, or (`terminated`) for instances since
    /// terminated: a new token is needed (EC2's `IdempotentParameterMismatch`,
    /// `IdempotentInstanceTerminated`).
    #[error("{why}")]
    TokenSpent { why: String, terminated: bool },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn tags_of(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Whether RunInstances refused an instance profile that is still propagating.
fn profile_propagating<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("InvalidParameterValue")
        && e.message()
            .is_some_and(|m| m.contains("IAM Instance Profile"))
}

/// States of an instance that still exists for heet's purposes.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];
/// The filters of live instances tagged for `project`/`env`.
fn live_in(project: &str, env: &str) -> Vec<Filter> {
    vec![
        filter(&format!("tag:{TAG_PROJECT}"), [project]),
        filter(&format!("tag:{TAG_ENV}"), [env]),
        filter("instance-state-name", LIVE_STATES),
    ]
}

/// EC2 accepts at most 1,000 ids per TerminateInstances / filter value list.
const ID_BATCH: usize = 1000;

pub struct Ec2 {
    client: Client,
}

impl Ec2 {
    pub(super) fn new(client: Client) -> Ec2 {
        Ec2 { client }
    }

    /// Every live instance tagged for `project`/`env`, in one paginated, tag-filtered describe.
    pub async fn instances(
        &self,
        project: &str,
        env: &str,
    ) -> anyhow::Result<Vec<ObservedInstance>> {
        self.describe(live_in(project, env)).await
    }

    /// Whether any live instance is tagged for `project`/`env` (heet's or not): one describe
    /// of a handful, however large the estate.
    pub async fn any(&self, project: &str, env: &str) -> anyhow::Result<bool> {
        let out = self
            .client
            .describe_instances()
            .set_filters(Some(live_in(project, env)))
            .max_results(5)
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeInstances", e))?;
        Ok(out.reservations().iter().any(|r| !r.instances().is_empty()))
    }

    /// The instances with these ids, as they are now.
    pub async fn by_ids(&self, ids: &[String]) -> anyhow::Result<Vec<ObservedInstance>> {
        let mut found = Vec::new();
        for batch in ids.chunks(ID_BATCH) {
            found.extend(
                self.describe(vec![filter(
                    "instance-id",
                    batch.iter().map(String::as_str),
                )])
                .await?,
            );
        }
        Ok(found)
    }

    async fn describe(&self, filters: Vec<Filter>) -> anyhow::Result<Vec<ObservedInstance>> {
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ec2:DescribeInstances", e))?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().map(observed));
            }
        }
        Ok(found)
    }

    /// Launches a batch; returns its instance ids by AmiLaunchIndex.
    pub async fn launch(&self, l: &Launch<'_>) -> Result<Vec<String>, LaunchError> {
        let d = l.instance;
        let mut req = self
            .client
            .run_instances()
            .image_id(&d.ami)
            .instance_type(InstanceType::from(d.instance_type.as_str()))
            .min_count(l.count as i32)
            .max_count(l.count as i32)
            .client_token(l.client_token)
            .set_key_name(d.key_name.clone())
            .set_subnet_id(l.subnet_id.map(str::to_owned))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags_of(l.tags)))
                    .build(),
            );
        if !l.group_ids.is_empty() {
            req = req.set_security_group_ids(Some(l.group_ids.to_vec()));
        }
        let placement = &d.placement;
        if *placement != crate::definition::Placement::default() {
            req = req.placement(
                Placement::builder()
                    .set_availability_zone(placement.availability_zone.clone())
                    .set_group_name(placement.group.clone())
                    .set_tenancy(placement.tenancy.as_deref().map(Tenancy::from))
                    .build(),
            );
        }
        if let Some(on) = d.monitoring {
            req = req.monitoring(RunInstancesMonitoringEnabled::builder().enabled(on).build());
        }
        if d.ebs_optimized {
            req = req.ebs_optimized(true);
        }
        if d.disable_api_termination {
            req = req.disable_api_termination(true);
        }
        if let Some(profile) = &d.instance_profile {
            req = req.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        if let Some(v) = d.volume {
            req = req
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(DATA_DEVICE)
                        .ebs(
                            EbsBlockDevice::builder()
                                .volume_size(v.gb as i32)
                                .volume_type(VolumeType::Gp3)
                                .encrypted(true)
                                .delete_on_termination(!v.keep)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Volume)
                        .set_tags(Some(tags_of(l.volume_tags)))
                        .build(),
                );
        }
        if !d.user_data.is_empty() {
            req = req.user_data(aws_smithy_types::base64::encode(d.user_data.as_bytes()));
        }
        let label = format!("ec2:RunInstances for {} × {}", l.count, d.role);
        let out = retry_raw(
            &label,
            PROFILE_WAIT,
            |e| not_known_yet(e) || profile_propagating(e),
            || req.clone().send(),
        )
        .await
        .map_err(|e| match e.code() {
            Some(code @ ("IdempotentParameterMismatch" | "IdempotentInstanceTerminated")) => {
                LaunchError::TokenSpent {
                    terminated: code == "IdempotentInstanceTerminated",
                    why: format!("{}", sdk_error(&label, e)),
                }
            }
            _ => LaunchError::Other(sdk_error(&label, e)),
        })?;
        let mut launched: Vec<(i32, String)> = out
            .instances()
            .iter()
            .filter_map(|i| Some((i.ami_launch_index()?, i.instance_id()?.to_owned())))
            .collect();
        launched.sort();
        if launched.len() != l.count as usize {
            return Err(anyhow::anyhow!(
                "{label}: {} instance(s) in the answer, {} asked for",
                launched.len(),
                l.count
            )
            .into());
        }
        Ok(launched.into_iter().map(|(_, id)| id).collect())
    }

    /// Sets `tags` on `resources`, which may be so new that EC2 does not know them yet.
    pub async fn set_tags(
        &self,
        resources: &[String],
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        retry_while(
            &format!("ec2:CreateTags on {}", resources.join(",")),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .create_tags()
                    .set_resources(Some(resources.to_vec()))
                    .set_tags(Some(tags_of(tags)))
                    .send()
            },
        )
        .await?;
        Ok(())
    }

    /// Changes `attribute` on the running instance `id`.
    pub async fn modify(&self, id: &str, attribute: Attribute) -> anyhow::Result<()> {
        let flag = |on: bool| AttributeBooleanValue::builder().value(on).build();
        match attribute {
            Attribute::Monitoring(true) => {
                self.client
                    .monitor_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("ec2:MonitorInstances", e))?;
            }
            Attribute::Monitoring(false) => {
                self.client
                    .unmonitor_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("ec2:UnmonitorInstances", e))?;
            }
            Attribute::SourceDestCheck(on) => {
                self.client
                    .modify_instance_attribute()
                    .instance_id(id)
                    .source_dest_check(flag(on))
                    .send()
                    .await
                    .map_err(|e| sdk_error("ec2:ModifyInstanceAttribute", e))?;
            }
            Attribute::ApiTermination(on) => {
                self.client
                    .modify_instance_attribute()
                    .instance_id(id)
                    .disable_api_termination(flag(on))
                    .send()
                    .await
                    .map_err(|e| sdk_error("ec2:ModifyInstanceAttribute", e))?;
            }
        }
        Ok(())
    }

    pub async fn terminate(&self, ids: &[String]) -> anyhow::Result<()> {
        for batch in ids.chunks(ID_BATCH) {
            self.client
                .terminate_instances()
                .set_instance_ids(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("ec2:TerminateInstances", e))?;
        }
        Ok(())
    }

    /// Polls `wants` (an instance, what makes it healthy, how long it has) until each is
    /// healthy, has failed (stopping, stopped, terminated, or a status check `impaired`) or
    /// is out of time: one describe a second for all still waited on, and one
    /// DescribeInstanceStatus for those running that need their status checks.
    pub async fn health(
        &self,
        wants: &[(String, Health, Duration)],
        mut on_round: impl FnMut(usize, usize),
    ) -> anyhow::Result<Vec<Verdict>> {
        let start = Instant::now();
        let mut verdicts: BTreeMap<&str, Verdict> = BTreeMap::new();
        let mut delay = Duration::from_millis(500);
        loop {
            let open: Vec<&(String, Health, Duration)> = wants
                .iter()
                .filter(|(id, _, _)| !verdicts.get(id.as_str()).is_some_and(|v| v.settled))
                .collect();
            if open.is_empty() {
                break;
            }
            let ids: Vec<String> = open.iter().map(|(id, _, _)| id.clone()).collect();
            let seen: BTreeMap<String, ObservedInstance> = self
                .by_ids(&ids)
                .await?
                .into_iter()
                .map(|o| (o.instance_id.clone(), o))
                .collect();
            let checked: Vec<String> = open
                .iter()
                .filter(|(id, h, _)| {
                    *h == Health::StatusOk && seen.get(id).is_some_and(|o| o.state == "running")
                })
                .map(|(id, _, _)| id.clone())
                .collect();
            let checks = self.status_checks(&checked).await?;
            for (id, health, timeout) in open {
                let o = seen.get(id);
                let state = o.map_or("not visible yet", |o| o.state.as_str());
                let check = checks.get(id).cloned();
                let impaired = check.as_ref().is_some_and(|c| c.contains("impaired"));
                let healthy = state == "running"
                    && match health {
                        // The target group's health is the balancer's to wait for.
                        Health::Running | Health::TargetGroup => true,
                        Health::StatusOk => check.as_deref() == Some("ok/ok"),
                    };
                let failed = matches!(
                    state,
                    "stopping" | "stopped" | "shutting-down" | "terminated"
                ) || impaired;
                verdicts.insert(
                    id,
                    Verdict {
                        instance_id: id.clone(),
                        healthy,
                        settled: healthy || failed || start.elapsed() > *timeout,
                        state: state.to_owned(),
                        checks: check,
                        seen: o.cloned(),
                    },
                );
            }
            on_round(verdicts.values().filter(|v| v.healthy).count(), wants.len());
            if verdicts.values().all(|v| v.settled) && verdicts.len() == wants.len() {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = Duration::from_secs(1);
        }
        Ok(wants
            .iter()
            .filter_map(|(id, _, _)| verdicts.remove(id.as_str()))
            .collect())
    }

    /// The EC2 status checks of running instances, as `system/instance` (`ok/ok`,
    /// `initializing/ok`, `ok/impaired`, …).
    async fn status_checks(&self, ids: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
        let mut checks = BTreeMap::new();
        // DescribeInstanceStatus takes at most 100 ids a call.
        for batch in ids.chunks(100) {
            let out = self
                .client
                .describe_instance_status()
                .set_instance_ids(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("ec2:DescribeInstanceStatus", e))?;
            for s in out.instance_statuses() {
                let status = |x: Option<&aws_sdk_ec2::types::InstanceStatusSummary>| {
                    x.and_then(|x| x.status())
                        .map_or("insufficient-data", |s| s.as_str())
                        .to_owned()
                };
                checks.insert(
                    s.instance_id().unwrap_or_default().to_owned(),
                    format!(
                        "{}/{}",
                        status(s.system_status()),
                        status(s.instance_status())
                    ),
                );
            }
        }
        Ok(checks)
    }

    /// Polls (one describe per round for all of `ids`) until every instance is in a state
    /// `done` accepts; returns them as last seen.
    pub async fn wait_until(
        &self,
        ids: &[String],
        what: &str,
        done: impl Fn(&str) -> bool,
        timeout: Duration,
        mut on_round: impl FnMut(usize, usize),
    ) -> anyhow::Result<Vec<ObservedInstance>> {
        let start = Instant::now();
        // Instances take seconds to change state: a steady look each second sees a change
        // within a second, for one paced describe a second.
        let mut delay = Duration::from_millis(500);
        let mut last = Vec::new();
        for batch in ids.chunks(ID_BATCH) {
            loop {
                // A filter, not InstanceIds: right after a launch EC2 may not know an id yet,
                // and InstanceIds would fail the whole call where a filter just omits it.
                let seen = self
                    .describe(vec![filter(
                        "instance-id",
                        batch.iter().map(String::as_str),
                    )])
                    .await?;
                let ready = seen.iter().filter(|i| done(&i.state)).count();
                let missing = batch.len() - seen.len();
                on_round(ready + last.len(), ids.len());
                if ready == batch.len() && missing == 0 {
                    last.extend(seen);
                    break;
                }
                if start.elapsed() > timeout {
                    anyhow::bail!(
                        "{ready} of {} instance(s) {what} after {}s ({missing} not visible yet); still waiting on {}",
                        batch.len(),
                        timeout.as_secs(),
                        seen.iter()
                            .filter(|i| !done(&i.state))
                            .map(|i| format!("{} ({})", i.instance_id, i.state))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                tokio::time::sleep(delay).await;
                delay = Duration::from_secs(1);
            }
        }
        Ok(last)
    }
}

fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(str::to_owned).collect()))
        .build()
}

fn observed(i: &Instance) -> ObservedInstance {
    ObservedInstance {
        instance_id: i.instance_id().unwrap_or_default().to_owned(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or_else(|| "unknown".to_owned(), |n| n.as_str().to_owned()),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        ami: i.image_id().unwrap_or_default().to_owned(),
        launch_time: i.launch_time().map(|t| t.secs()),
        public_dns: i.public_dns_name().map(str::to_owned),
        private_dns: i.private_dns_name().map(str::to_owned),
        public_ip: i.public_ip_address().map(str::to_owned),
        private_ip: i.private_ip_address().map(str::to_owned),
        launch_index: i.ami_launch_index().and_then(|n| u32::try_from(n).ok()),
        data_volume: i
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(DATA_DEVICE))
            .and_then(|m| m.ebs()?.volume_id().map(str::to_owned)),
        monitoring: i
            .monitoring()
            .and_then(|m| m.state())
            .is_some_and(|s| matches!(s.as_str(), "enabled" | "pending")),
        source_dest_check: i.source_dest_check(),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
    }
}
