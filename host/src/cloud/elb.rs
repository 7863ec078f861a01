//! Elastic Load Balancing (v2): heet's application load balancers and target groups read by
//! name, made, changed and deleted; targets registered and waited for until healthy, and
//! deregistered and waited for until drained.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum, Tag,
    TargetDescription, TargetGroupAttribute, TargetTypeEnum,
};

use super::sdk_error;
use crate::kinds::balancers::{
    Balancer, HEALTHY_THRESHOLD, ObservedBalancer, ObservedBalancers, ObservedListener,
    ObservedTargetGroup,
};

/// The attribute that holds a target group's drain time.
const DRAIN: &str = "deregistration_delay.timeout_seconds";
/// The first and the longest pause between two looks at targets.
const POLL_FIRST: Duration = Duration::from_millis(500);
const POLL_MAX: Duration = Duration::from_secs(5);
/// How long a target group still in use by a balancer being deleted is retried.
const IN_USE_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Elb {
    client: Client,
    ec2: aws_sdk_ec2::Client,
}

fn tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn protocol(p: &str) -> ProtocolEnum {
    ProtocolEnum::from(p)
}

fn target(id: &str, port: Option<u16>) -> TargetDescription {
    TargetDescription::builder()
        .id(id)
        .set_port(port.map(i32::from))
        .build()
}

/// How long a health check waits for its answer: less than the interval between two, as ELB
/// asks (its own default, 6 s for HTTP and 10 s for HTTPS, would refuse short intervals).
fn health_timeout(interval: u32) -> i32 {
    interval.saturating_sub(1).clamp(2, 5) as i32
}

/// Waits a little longer each time, up to [`POLL_MAX`].
async fn pause(wait: &mut Duration) {
    tokio::time::sleep(*wait).await;
    *wait = (*wait * 2).min(POLL_MAX);
}

impl Elb {
    pub fn new(client: Client, ec2: aws_sdk_ec2::Client) -> Elb {
        Elb { client, ec2 }
    }

    /// The balancers and target groups of `names` (heet's names, wanted or in the ledger),
    /// with their tags, listeners, drain times and targets.
    pub async fn observe(&self, names: &BTreeSet<String>) -> anyhow::Result<ObservedBalancers> {
        let mut out = ObservedBalancers::default();
        if names.is_empty() {
            return Ok(out);
        }
        // Every page, not by name: ELB refuses a list of names one of which does not exist.
        let mut pages = self
            .client
            .describe_load_balancers()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| sdk_error("elasticloadbalancing:DescribeLoadBalancers", e))?;
            for lb in page.load_balancers() {
                let name = lb.load_balancer_name().unwrap_or_default();
                if !names.contains(name) {
                    continue;
                }
                out.balancers.push(ObservedBalancer {
                    arn: lb.load_balancer_arn().unwrap_or_default().to_owned(),
                    name: name.to_owned(),
                    dns: lb.dns_name().unwrap_or_default().to_owned(),
                    state: lb
                        .state()
                        .and_then(|s| s.code())
                        .map_or("active".to_owned(), |c| c.as_str().to_owned()),
                    tags: BTreeMap::new(),
                    listeners: Vec::new(),
                    vpc: lb.vpc_id().unwrap_or_default().to_owned(),
                    subnets: lb
                        .availability_zones()
                        .iter()
                        .filter_map(|z| z.subnet_id().map(str::to_owned))
                        .collect(),
                });
            }
        }
        let mut pages = self.client.describe_target_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| sdk_error("elasticloadbalancing:DescribeTargetGroups", e))?;
            for tg in page.target_groups() {
                let name = tg.target_group_name().unwrap_or_default();
                if !names.contains(name) {
                    continue;
                }
                out.groups.push(ObservedTargetGroup {
                    arn: tg.target_group_arn().unwrap_or_default().to_owned(),
                    name: name.to_owned(),
                    port: tg.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                    protocol: tg
                        .protocol()
                        .map_or(String::new(), |p| p.as_str().to_owned()),
                    path: tg.health_check_path().unwrap_or("/").to_owned(),
                    interval: tg
                        .health_check_interval_seconds()
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(30),
                    drain: None,
                    tags: BTreeMap::new(),
                    targets: BTreeMap::new(),
                });
            }
        }
        let arns: Vec<String> = out
            .balancers
            .iter()
            .map(|b| b.arn.clone())
            .chain(out.groups.iter().map(|g| g.arn.clone()))
            .collect();
        let mut found_tags: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for chunk in arns.chunks(20) {
            let answer = self
                .client
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("elasticloadbalancing:DescribeTags", e))?;
            for d in answer.tag_descriptions() {
                let pairs = d.tags().iter().filter_map(|t| {
                    Some((
                        t.key()?.to_owned(),
                        t.value().unwrap_or_default().to_owned(),
                    ))
                });
                found_tags
                    .entry(d.resource_arn().unwrap_or_default().to_owned())
                    .or_default()
                    .extend(pairs);
            }
        }
        for b in &mut out.balancers {
            b.tags = found_tags.remove(&b.arn).unwrap_or_default();
            let answer = self
                .client
                .describe_listeners()
                .load_balancer_arn(&b.arn)
                .send()
                .await
                .map_err(|e| sdk_error("elasticloadbalancing:DescribeListeners", e))?;
            b.listeners = answer
                .listeners()
                .iter()
                .map(|l| ObservedListener {
                    arn: l.listener_arn().unwrap_or_default().to_owned(),
                    port: l.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                    // A forward action names its group, or lists it in its config.
                    forwards_to: l.default_actions().iter().find_map(|a| {
                        a.target_group_arn()
                            .or_else(|| {
                                a.forward_config()?
                                    .target_groups()
                                    .first()?
                                    .target_group_arn()
                            })
                            .map(str::to_owned)
                    }),
                })
                .collect();
        }
        for g in &mut out.groups {
            g.tags = found_tags.remove(&g.arn).unwrap_or_default();
            let attributes = self
                .client
                .describe_target_group_attributes()
                .target_group_arn(&g.arn)
                .send()
                .await
                .map_err(|e| sdk_error("elasticloadbalancing:DescribeTargetGroupAttributes", e))?;
            g.drain = attributes
                .attributes()
                .iter()
                .find(|a| a.key() == Some(DRAIN))
                .and_then(|a| a.value()?.parse().ok());
            g.targets = self.targets(&g.arn, &[]).await?;
        }
        Ok(out)
    }

    /// The targets of a group (or of `ids` in it): port and state, by instance id.
    async fn targets(
        &self,
        group: &str,
        ids: &[String],
    ) -> anyhow::Result<BTreeMap<String, (u16, String)>> {
        let answer = self
            .client
            .describe_target_health()
            .target_group_arn(group)
            .set_targets((!ids.is_empty()).then(|| ids.iter().map(|i| target(i, None)).collect()))
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:DescribeTargetHealth", e))?;
        Ok(answer
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                let state = d
                    .target_health()
                    .and_then(|h| h.state())
                    .map_or("unknown".to_owned(), |s| s.as_str().to_owned());
                let port = t.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
                Some((t.id()?.to_owned(), (port, state)))
            })
            .collect())
    }

    /// The account's default VPC and its default subnets (one per zone).
    pub async fn default_network(&self) -> anyhow::Result<(String, Vec<String>)> {
        let answer = self
            .ec2
            .describe_subnets()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeSubnets", e))?;
        let subnets = answer.subnets();
        let vpc = subnets.iter().find_map(|s| s.vpc_id()).ok_or_else(|| {
            anyhow::anyhow!("the account has no default VPC with default subnets")
        })?;
        Ok((
            vpc.to_owned(),
            subnets
                .iter()
                .filter(|s| s.vpc_id() == Some(vpc))
                .filter_map(|s| s.subnet_id().map(str::to_owned))
                .collect(),
        ))
    }

    /// Makes a target group in `vpc`; its ARN.
    pub async fn create_group(
        &self,
        name: &str,
        s: &Balancer,
        vpc: &str,
        tag_set: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let answer = self
            .client
            .create_target_group()
            .name(name)
            .protocol(protocol(&s.protocol))
            .port(i32::from(s.port))
            .vpc_id(vpc)
            .target_type(TargetTypeEnum::Instance)
            .health_check_path(&s.path)
            .health_check_interval_seconds(s.interval as i32)
            .health_check_timeout_seconds(health_timeout(s.interval))
            .healthy_threshold_count(HEALTHY_THRESHOLD)
            .set_tags(Some(tags(tag_set)))
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:CreateTargetGroup", e))?;
        let arn = answer
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .ok_or_else(|| anyhow::anyhow!("CreateTargetGroup answered no ARN"))?
            .to_owned();
        self.set_drain(&arn, s.drain).await?;
        Ok(arn)
    }

    async fn set_drain(&self, group: &str, seconds: u32) -> anyhow::Result<()> {
        self.client
            .modify_target_group_attributes()
            .target_group_arn(group)
            .attributes(
                TargetGroupAttribute::builder()
                    .key(DRAIN)
                    .value(seconds.to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:ModifyTargetGroupAttributes", e))?;
        Ok(())
    }

    /// Changes a target group's health check and drain time.
    pub async fn update_group(&self, group: &str, s: &Balancer) -> anyhow::Result<()> {
        self.client
            .modify_target_group()
            .target_group_arn(group)
            .health_check_path(&s.path)
            .health_check_interval_seconds(s.interval as i32)
            .health_check_timeout_seconds(health_timeout(s.interval))
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:ModifyTargetGroup", e))?;
        self.set_drain(group, s.drain).await
    }

    /// Makes an internet-facing application load balancer; its ARN and DNS name.
    pub async fn create_balancer(
        &self,
        name: &str,
        subnets: Vec<String>,
        group: &str,
        tag_set: &BTreeMap<String, String>,
    ) -> anyhow::Result<(String, String)> {
        let answer = self
            .client
            .create_load_balancer()
            .name(name)
            .r#type(LoadBalancerTypeEnum::Application)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .set_subnets(Some(subnets))
            .security_groups(group)
            .set_tags(Some(tags(tag_set)))
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:CreateLoadBalancer", e))?;
        let lb = answer
            .load_balancers()
            .first()
            .ok_or_else(|| anyhow::anyhow!("CreateLoadBalancer answered no balancer"))?;
        Ok((
            lb.load_balancer_arn().unwrap_or_default().to_owned(),
            lb.dns_name().unwrap_or_default().to_ascii_lowercase(),
        ))
    }

    /// An HTTP listener on `port` forwarding to `group`.
    pub async fn create_listener(
        &self,
        balancer: &str,
        group: &str,
        port: u16,
    ) -> anyhow::Result<()> {
        self.client
            .create_listener()
            .load_balancer_arn(balancer)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(port))
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(group)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:CreateListener", e))?;
        Ok(())
    }

    /// Sets a listener to HTTP on `port`, forwarding to `group`.
    pub async fn update_listener(
        &self,
        listener: &str,
        port: u16,
        group: &str,
    ) -> anyhow::Result<()> {
        self.client
            .modify_listener()
            .listener_arn(listener)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(port))
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(group)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:ModifyListener", e))?;
        Ok(())
    }

    /// Sets the subnets a balancer is in (one per zone).
    pub async fn set_subnets(&self, balancer: &str, subnets: Vec<String>) -> anyhow::Result<()> {
        self.client
            .set_subnets()
            .load_balancer_arn(balancer)
            .set_subnets(Some(subnets))
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:SetSubnets", e))?;
        Ok(())
    }

    pub async fn register(&self, group: &str, id: &str, port: u16) -> anyhow::Result<()> {
        self.client
            .register_targets()
            .target_group_arn(group)
            .targets(target(id, Some(port)))
            .send()
            .await
            .map_err(|e| sdk_error("elasticloadbalancing:RegisterTargets", e))?;
        Ok(())
    }

    /// Waits until `id` is healthy in `group`, for up to `timeout`: `None` when it is, else
    /// its state as last seen.
    pub async fn wait_healthy(
        &self,
        group: &str,
        id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<String>> {
        let start = Instant::now();
        let mut wait = POLL_FIRST;
        loop {
            let state = self
                .targets(group, &[id.to_owned()])
                .await?
                .remove(id)
                .map_or("unknown".to_owned(), |(_, s)| s);
            if state == "healthy" {
                return Ok(None);
            }
            if start.elapsed() >= timeout {
                return Ok(Some(state));
            }
            pause(&mut wait).await;
        }
    }

    /// Deregisters `ids` from `group`: together, or, when ELB refuses one of them (not a
    /// target, an instance gone), one by one. Those ELB took, by id.
    async fn deregister(&self, group: &str, ids: &[String]) -> anyhow::Result<Vec<String>> {
        let call = |ids: &[String]| {
            self.client
                .deregister_targets()
                .target_group_arn(group)
                .set_targets(Some(ids.iter().map(|i| target(i, None)).collect()))
                .send()
        };
        // Gone already (or never registered): nothing to drain.
        let gone =
            |code: Option<&str>| matches!(code, Some("InvalidTarget" | "TargetGroupNotFound"));
        match call(ids).await {
            Ok(_) => return Ok(ids.to_vec()),
            Err(e) if e.code() == Some("InvalidTarget") && ids.len() > 1 => {}
            Err(e) if gone(e.code()) => return Ok(Vec::new()),
            Err(e) => return Err(sdk_error("elasticloadbalancing:DeregisterTargets", e)),
        }
        let mut taken = Vec::new();
        for id in ids {
            match call(std::slice::from_ref(id)).await {
                Ok(_) => taken.push(id.clone()),
                Err(e) if gone(e.code()) => {}
                Err(e) => return Err(sdk_error("elasticloadbalancing:DeregisterTargets", e)),
            }
        }
        Ok(taken)
    }

    /// Deregisters `ids` from `group` and waits until they are drained (no longer
    /// `draining`), for up to the drain time and a minute.
    pub async fn drain(&self, group: &str, ids: &[String], drain: u32) -> anyhow::Result<()> {
        let ids = self.deregister(group, ids).await?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids = &ids[..];
        let limit = Duration::from_secs(u64::from(drain) + 60);
        let start = Instant::now();
        let mut wait = POLL_FIRST;
        loop {
            let draining: Vec<String> = self
                .targets(group, ids)
                .await?
                .into_iter()
                .filter(|(_, (_, s))| s == "draining")
                .map(|(id, _)| id)
                .collect();
            if draining.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= limit {
                tracing::warn!(
                    "{} still draining after {}s; terminated anyway",
                    draining.join(", "),
                    limit.as_secs()
                );
                return Ok(());
            }
            pause(&mut wait).await;
        }
    }

    pub async fn delete_balancer(&self, balancer: &str) -> anyhow::Result<()> {
        match self
            .client
            .delete_load_balancer()
            .load_balancer_arn(balancer)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("LoadBalancerNotFound") => Ok(()),
            Err(e) => Err(sdk_error("elasticloadbalancing:DeleteLoadBalancer", e)),
        }
    }

    /// Deletes a target group, retried while the balancer deleted before it still holds it.
    pub async fn delete_group(&self, group: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut wait = POLL_FIRST;
        loop {
            match self
                .client
                .delete_target_group()
                .target_group_arn(group)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("TargetGroupNotFound") => return Ok(()),
                Err(e) if e.code() == Some("ResourceInUse") && start.elapsed() < IN_USE_WAIT => {
                    pause(&mut wait).await;
                }
                Err(e) => return Err(sdk_error("elasticloadbalancing:DeleteTargetGroup", e)),
            }
        }
    }
}
