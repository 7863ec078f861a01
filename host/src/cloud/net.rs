//! EC2 network resources: VPC, internet gateway, subnets, security groups, Elastic IPs.
//! Each is created tagged (TagSpecifications), so a crash right after a create still leaves
//! a resource the next run recognises.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, IpPermission, IpRange, ResourceType, Tag,
    TagSpecification, UserIdGroupPair,
};

use super::{FRESH_ID_WAIT, not_known_yet, retry_while, sdk_error};
use crate::kinds::network::{Detail, Kind, ObservedResource, ObservedRule};
use crate::namespace::{TAG_ENV, TAG_PROJECT, TAG_RESOURCE};

/// How long a delete that EC2 refuses with DependencyViolation is retried: a terminated
/// instance's network interface takes a while to go.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(180);

pub struct Net {
    pub(super) client: Client,
    /// Where the private keys of key pairs go (`cloud::keys`).
    pub(super) ssm: super::Ssm,
}

pub(super) fn filters(project: &str, env: &str) -> Vec<Filter> {
    let f = |name: String, value: &str| Filter::builder().name(name).values(value).build();
    vec![
        f(format!("tag:{TAG_PROJECT}"), project),
        f(format!("tag:{TAG_ENV}"), env),
    ]
}

pub(super) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

pub(super) fn spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// An Elastic IP as heet observes it, heet's or not (its tags say).
fn address(a: &aws_sdk_ec2::types::Address) -> ObservedResource {
    resource(
        tag_map(a.tags()),
        a.allocation_id().unwrap_or_default(),
        Detail::Address {
            public_ip: a.public_ip().unwrap_or_default().to_owned(),
            association_id: a.association_id().map(str::to_owned),
            instance_id: a.instance_id().map(str::to_owned),
        },
    )
}

pub(super) fn resource(
    tags: BTreeMap<String, String>,
    aws_id: &str,
    detail: Detail,
) -> ObservedResource {
    ObservedResource {
        resource: tags.get(TAG_RESOURCE).cloned().unwrap_or_default(),
        aws_id: aws_id.to_owned(),
        tags,
        detail,
    }
}

fn yes() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

impl Net {
    pub(super) fn new(client: Client, ssm: super::Ssm) -> Net {
        Net { client, ssm }
    }

    /// heet's network resources of `project`/`env` of the given kinds, one describe per kind,
    /// all at once.
    pub async fn observe(
        &self,
        project: &str,
        env: &str,
        kinds: &std::collections::BTreeSet<Kind>,
    ) -> anyhow::Result<Vec<ObservedResource>> {
        let found = futures::future::try_join_all(
            kinds
                .iter()
                .map(|&kind| self.observe_kind(project, env, kind)),
        )
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn observe_kind(
        &self,
        project: &str,
        env: &str,
        kind: Kind,
    ) -> anyhow::Result<Vec<ObservedResource>> {
        let mut found = Vec::new();
        match kind {
            Kind::Vpc => {
                let mut pages = self
                    .client
                    .describe_vpcs()
                    .set_filters(Some(filters(project, env)))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| sdk_error("ec2:DescribeVpcs", e))?;
                    for v in page.vpcs() {
                        found.push(resource(
                            tag_map(v.tags()),
                            v.vpc_id().unwrap_or_default(),
                            Detail::Vpc {
                                cidr: v.cidr_block().unwrap_or_default().to_owned(),
                            },
                        ));
                    }
                }
            }
            Kind::Gateway => {
                let mut pages = self
                    .client
                    .describe_internet_gateways()
                    .set_filters(Some(filters(project, env)))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| sdk_error("ec2:DescribeInternetGateways", e))?;
                    for g in page.internet_gateways() {
                        found.push(resource(
                            tag_map(g.tags()),
                            g.internet_gateway_id().unwrap_or_default(),
                            Detail::Gateway {
                                attached: g
                                    .attachments()
                                    .iter()
                                    .filter_map(|a| a.vpc_id().map(str::to_owned))
                                    .collect(),
                            },
                        ));
                    }
                }
            }
            Kind::Subnet => {
                let mut pages = self
                    .client
                    .describe_subnets()
                    .set_filters(Some(filters(project, env)))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| sdk_error("ec2:DescribeSubnets", e))?;
                    for s in page.subnets() {
                        found.push(resource(
                            tag_map(s.tags()),
                            s.subnet_id().unwrap_or_default(),
                            Detail::Subnet {
                                cidr: s.cidr_block().unwrap_or_default().to_owned(),
                                vpc_id: s.vpc_id().unwrap_or_default().to_owned(),
                            },
                        ));
                    }
                }
            }
            Kind::Group => {
                let mut pages = self
                    .client
                    .describe_security_groups()
                    .set_filters(Some(filters(project, env)))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| sdk_error("ec2:DescribeSecurityGroups", e))?;
                    for g in page.security_groups() {
                        found.push(resource(
                            tag_map(g.tags()),
                            g.group_id().unwrap_or_default(),
                            Detail::Group {
                                vpc_id: g.vpc_id().unwrap_or_default().to_owned(),
                                rules: observed_rules(g.ip_permissions()),
                            },
                        ));
                    }
                }
            }
            Kind::Address => {
                let out = self
                    .client
                    .describe_addresses()
                    .set_filters(Some(filters(project, env)))
                    .send()
                    .await
                    .map_err(|e| sdk_error("ec2:DescribeAddresses", e))?;
                found.extend(out.addresses().iter().map(address));
            }
            Kind::KeyPair => found = self.observe_keys(project, env).await?,
        }
        Ok(found)
    }

    /// Creates the VPC with DNS hostnames on, so instances get public DNS names for CNAMEs.
    pub async fn create_vpc(
        &self,
        cidr: &str,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let out = self
            .client
            .create_vpc()
            .cidr_block(cidr)
            .tag_specifications(spec(ResourceType::Vpc, tags))
            .send()
            .await
            .map_err(|e| sdk_error("ec2:CreateVpc", e))?;
        let id = out
            .vpc()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| anyhow::anyhow!("ec2:CreateVpc: no VPC in the answer"))?
            .to_owned();
        retry_while(
            &format!("ec2:ModifyVpcAttribute on {id}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .modify_vpc_attribute()
                    .vpc_id(&id)
                    .enable_dns_hostnames(yes())
                    .send()
            },
        )
        .await?;
        Ok(id)
    }

    /// Creates (unless `gateway_id`) and attaches the internet gateway, and routes the VPC's
    /// main route table to it.
    pub async fn attach_gateway(
        &self,
        gateway_id: Option<&str>,
        vpc_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let id = match gateway_id {
            Some(id) => id.to_owned(),
            None => self
                .client
                .create_internet_gateway()
                .tag_specifications(spec(ResourceType::InternetGateway, tags))
                .send()
                .await
                .map_err(|e| sdk_error("ec2:CreateInternetGateway", e))?
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .ok_or_else(|| anyhow::anyhow!("ec2:CreateInternetGateway: no gateway"))?
                .to_owned(),
        };
        let attached = retry_while(
            &format!("ec2:AttachInternetGateway {id}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .attach_internet_gateway()
                    .internet_gateway_id(&id)
                    .vpc_id(vpc_id)
                    .send()
            },
        )
        .await;
        match attached {
            Ok(_) => {}
            // A run that died after this call left it attached: it is what we want.
            Err(e) if format!("{e}").contains("Resource.AlreadyAssociated") => {}
            Err(e) => return Err(e),
        }
        let tables = self
            .client
            .describe_route_tables()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .filters(
                Filter::builder()
                    .name("association.main")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeRouteTables", e))?;
        let table = tables
            .route_tables()
            .first()
            .and_then(|t| t.route_table_id())
            .ok_or_else(|| anyhow::anyhow!("{vpc_id} has no main route table"))?;
        let routed = retry_while(
            &format!("ec2:CreateRoute in {table}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .create_route()
                    .route_table_id(table)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(&id)
                    .send()
            },
        )
        .await;
        match routed {
            Ok(_) => {}
            // A run that died after this call left the route: it is what we want.
            Err(e) if format!("{e}").contains("RouteAlreadyExists") => {}
            Err(e) => return Err(e),
        }
        Ok(id)
    }

    /// The region's available zones, sorted: subnet `n` goes to zone `n mod len`.
    pub async fn zones(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .client
            .describe_availability_zones()
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeAvailabilityZones", e))?;
        let mut zones: Vec<String> = out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        zones.sort();
        Ok(zones)
    }

    /// A public subnet: instances launched in it get a public address.
    pub async fn create_subnet(
        &self,
        vpc_id: &str,
        cidr: &str,
        zone: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let out = retry_while(
            &format!("ec2:CreateSubnet {cidr}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .create_subnet()
                    .vpc_id(vpc_id)
                    .cidr_block(cidr)
                    .set_availability_zone(zone.map(str::to_owned))
                    .tag_specifications(spec(ResourceType::Subnet, tags))
                    .send()
            },
        )
        .await?;
        let id = out
            .subnet()
            .and_then(|s| s.subnet_id())
            .ok_or_else(|| anyhow::anyhow!("ec2:CreateSubnet: no subnet in the answer"))?
            .to_owned();
        retry_while(
            &format!("ec2:ModifySubnetAttribute on {id}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(yes())
                    .send()
            },
        )
        .await?;
        Ok(id)
    }

    pub async fn create_group(
        &self,
        name: &str,
        vpc_id: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let out = retry_while(
            &format!("ec2:CreateSecurityGroup {name}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .create_security_group()
                    .group_name(name)
                    // No space: moto's signature check re-encodes a form body with `+` for
                    // a space where the SDK sent `%20`, and the bootstrap test runs under it.
                    .description(format!("heet:{name}"))
                    .set_vpc_id(vpc_id.map(str::to_owned))
                    .tag_specifications(spec(ResourceType::SecurityGroup, tags))
                    .send()
            },
        )
        .await?;
        out.group_id()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("ec2:CreateSecurityGroup: no group id"))
    }

    /// Opens `rules` (port, CIDR or source group id) in `group_id`.
    pub async fn authorize(
        &self,
        group_id: &str,
        rules: &[(u16, Result<String, String>)],
    ) -> anyhow::Result<()> {
        let permissions: Vec<IpPermission> = rules
            .iter()
            .map(|(port, source)| {
                let p = IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(i32::from(*port))
                    .to_port(i32::from(*port));
                match source {
                    Ok(cidr) => p.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
                    Err(group) => {
                        p.user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build())
                    }
                }
                .build()
            })
            .collect();
        let authorized = retry_while(
            &format!("ec2:AuthorizeSecurityGroupIngress {group_id}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .authorize_security_group_ingress()
                    .group_id(group_id)
                    .set_ip_permissions(Some(permissions.clone()))
                    .send()
            },
        )
        .await;
        match authorized {
            // A retry of a call whose answer was lost: the rules are there.
            Err(e) if format!("{e}").contains("InvalidPermission.Duplicate") => Ok(()),
            other => other.map(drop),
        }
    }

    pub async fn revoke(&self, group_id: &str, rules: &[ObservedRule]) -> anyhow::Result<()> {
        let permissions = rules
            .iter()
            .map(|r| {
                let p = IpPermission::builder()
                    .ip_protocol(&r.protocol)
                    .from_port(r.from_port)
                    .to_port(r.to_port);
                match (&r.cidr, &r.group_id) {
                    (Some(cidr), _) => p.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
                    (None, group) => p.user_id_group_pairs(
                        UserIdGroupPair::builder()
                            .set_group_id(group.clone())
                            .build(),
                    ),
                }
                .build()
            })
            .collect();
        self.client
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:RevokeSecurityGroupIngress {group_id}"), e))?;
        Ok(())
    }

    pub async fn allocate(&self, tags: &BTreeMap<String, String>) -> anyhow::Result<String> {
        let out = self
            .client
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(spec(ResourceType::ElasticIp, tags))
            .send()
            .await
            .map_err(|e| sdk_error("ec2:AllocateAddress", e))?;
        out.allocation_id()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("ec2:AllocateAddress: no allocation id"))
    }

    /// The addresses a definition names by allocation id (`elastic_ip`), which are not
    /// heet's: where each is associated. One that does not exist is an error naming it.
    pub async fn given_addresses(&self, ids: &[String]) -> anyhow::Result<Vec<ObservedResource>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .describe_addresses()
            .set_allocation_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| {
                sdk_error("ec2:DescribeAddresses", e).context(format!(
                    "elastic_ip {}: an address that exists in this account and region",
                    ids.join(", ")
                ))
            })?;
        Ok(out.addresses().iter().map(address).collect())
    }

    pub async fn associate(&self, allocation_id: &str, instance_id: &str) -> anyhow::Result<()> {
        retry_while(
            &format!("ec2:AssociateAddress {allocation_id} with {instance_id}"),
            FRESH_ID_WAIT,
            not_known_yet,
            || {
                self.client
                    .associate_address()
                    .allocation_id(allocation_id)
                    .instance_id(instance_id)
                    .allow_reassociation(true)
                    .send()
            },
        )
        .await?;
        Ok(())
    }

    pub async fn release(
        &self,
        allocation_id: &str,
        association_id: Option<&str>,
    ) -> anyhow::Result<()> {
        if let Some(assoc) = association_id {
            match self
                .client
                .disassociate_address()
                .association_id(assoc)
                .send()
                .await
            {
                Ok(_) => {}
                // Gone with its instance already.
                Err(e) if e.code() == Some("InvalidAssociationID.NotFound") => {}
                Err(e) => return Err(sdk_error("ec2:DisassociateAddress", e)),
            }
        }
        self.client
            .release_address()
            .allocation_id(allocation_id)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:ReleaseAddress {allocation_id}"), e))?;
        Ok(())
    }

    pub async fn delete_group(&self, group_id: &str) -> anyhow::Result<()> {
        let label = format!("ec2:DeleteSecurityGroup {group_id}");
        retry_dependency(&label, || async {
            self.client
                .delete_security_group()
                .group_id(group_id)
                .send()
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn delete_subnet(&self, subnet_id: &str) -> anyhow::Result<()> {
        let label = format!("ec2:DeleteSubnet {subnet_id}");
        retry_dependency(&label, || async {
            self.client
                .delete_subnet()
                .subnet_id(subnet_id)
                .send()
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn delete_gateway(
        &self,
        gateway_id: &str,
        attached: &[String],
    ) -> anyhow::Result<()> {
        for vpc_id in attached {
            self.client
                .detach_internet_gateway()
                .internet_gateway_id(gateway_id)
                .vpc_id(vpc_id)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("ec2:DetachInternetGateway {gateway_id}"), e))?;
        }
        self.client
            .delete_internet_gateway()
            .internet_gateway_id(gateway_id)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:DeleteInternetGateway {gateway_id}"), e))?;
        Ok(())
    }

    pub async fn delete_vpc(&self, vpc_id: &str) -> anyhow::Result<()> {
        let label = format!("ec2:DeleteVpc {vpc_id}");
        retry_dependency(&label, || async {
            self.client
                .delete_vpc()
                .vpc_id(vpc_id)
                .send()
                .await
                .map(|_| ())
        })
        .await
    }
}

/// Retries `call` while EC2 answers DependencyViolation, for up to [`DEPENDENCY_WAIT`].
async fn retry_dependency<F, Fut, E>(label: &str, call: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: super::AwsError,
{
    retry_while(
        label,
        DEPENDENCY_WAIT,
        |e: &E| e.code() == Some("DependencyViolation"),
        call,
    )
    .await
}

fn observed_rules(permissions: &[IpPermission]) -> Vec<ObservedRule> {
    let mut rules = Vec::new();
    for p in permissions {
        let rule = |cidr: Option<&str>, group_id: Option<&str>| ObservedRule {
            protocol: p.ip_protocol().unwrap_or_default().to_owned(),
            from_port: p.from_port().unwrap_or(-1),
            to_port: p.to_port().unwrap_or(-1),
            cidr: cidr.map(str::to_owned),
            group_id: group_id.map(str::to_owned),
        };
        for r in p.ip_ranges() {
            rules.push(rule(r.cidr_ip(), None));
        }
        for g in p.user_id_group_pairs() {
            rules.push(rule(None, g.group_id()));
        }
    }
    rules.sort();
    rules
}
