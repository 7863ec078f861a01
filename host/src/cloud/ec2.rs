//! EC2: find heet's instances by tag, launch, retag, terminate, wait.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification, Instance,
    InstanceType, ResourceType, Tag, TagSpecification, VolumeType,
};

use super::sdk_error;
use crate::desired::{DATA_DEVICE, DesiredInstance};
use crate::namespace::{TAG_ENV, TAG_PROJECT};
use crate::plan::ObservedInstance;

/// States of an instance that still exists for heet's purposes.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];
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
        self.describe(vec![
            filter(&format!("tag:{TAG_PROJECT}"), [project]),
            filter(&format!("tag:{TAG_ENV}"), [env]),
            filter("instance-state-name", LIVE_STATES),
        ])
        .await
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

    /// Launches one instance, tagged atomically with the launch so a crash right after it
    /// still leaves an instance the next run recognises. `subnet_id` and `group_ids` are the
    /// instance's subnet and groups, resolved to AWS ids.
    pub async fn launch(
        &self,
        d: &DesiredInstance,
        client_token: &str,
        subnet_id: Option<&str>,
        group_ids: &[String],
    ) -> anyhow::Result<String> {
        let tags: Vec<Tag> = d
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        // The data volume carries the instance's slot tags, so a kept one is found again.
        let volume_tags: Vec<Tag> = d
            .tags
            .iter()
            .filter(|(k, _)| k.starts_with(crate::namespace::RESERVED_PREFIX) || *k == "Name")
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let mut req = self
            .client
            .run_instances()
            .image_id(&d.ami)
            .instance_type(InstanceType::from(d.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(client_token)
            .set_key_name(d.key_name.clone())
            .set_subnet_id(subnet_id.map(str::to_owned))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            );
        if !group_ids.is_empty() {
            req = req.set_security_group_ids(Some(group_ids.to_vec()));
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
                        .set_tags(Some(volume_tags))
                        .build(),
                );
        }
        if !d.user_data.is_empty() {
            req = req.user_data(aws_smithy_types::base64::encode(d.user_data.as_bytes()));
        }
        let out = req
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:RunInstances for {}[{}]", d.role, d.index), e))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "ec2:RunInstances for {}[{}]: no instance in the answer",
                    d.role,
                    d.index
                )
            })
    }

    pub async fn set_tags(
        &self,
        instance_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        self.client
            .create_tags()
            .resources(instance_id)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:CreateTags on {instance_id}"), e))?;
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
        let mut delay = Duration::from_millis(200);
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
                delay = (delay * 2).min(Duration::from_secs(5));
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
