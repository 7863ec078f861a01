//! Client-side pacing: heet keeps a token bucket for each AWS throttling bucket it draws on and
//! waits for a token before each HTTP attempt, so a large run spends the account's budget
//! evenly instead of being throttled, backing off and retrying; the account keeps the room
//! heet does not use for other tools. The rates are AWS's documented defaults (EC2's request
//! and resource buckets, SSM's and Route53's quotas, ELB's buckets) times `[aws] pace` from heet.toml, for
//! accounts whose limits were raised (or to leave more room).
//!
//! The wait happens in an HTTP connector wrapped around the SDK's own, so the SDK's retries
//! are paced too; an interceptor tells it what each attempt costs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector,
    http_client_fn,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// A bucket's size and refill (tokens per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub capacity: f64,
    pub refill: f64,
}

/// AWS's default buckets, by category. EC2 has one bucket per action, sized by its category
/// (request tokens), plus resource buckets counted in instances for RunInstances and
/// TerminateInstances; SSM's reads share one bucket, its writes another; Route53 has one
/// per account; ELB (v2) has an account bucket every action draws on beside its category's.
const RATES: [(Category, Rate); 17] = [
    (Category::Launch, Rate::new(5.0, 2.0)),
    (Category::LaunchedInstances, Rate::new(1000.0, 2.0)),
    (Category::Terminate, Rate::new(100.0, 5.0)),
    (Category::TerminatedInstances, Rate::new(1000.0, 20.0)),
    (Category::Tags, Rate::new(100.0, 10.0)),
    (Category::Volumes, Rate::new(100.0, 5.0)),
    (Category::ResourceIntensive, Rate::new(50.0, 5.0)),
    (Category::Mutating, Rate::new(50.0, 5.0)),
    (Category::Describe, Rate::new(100.0, 20.0)),
    (Category::SsmRead, Rate::new(40.0, 40.0)),
    (Category::SsmWrite, Rate::new(3.0, 3.0)),
    (Category::Route53, Rate::new(50.0, 10.0)),
    (Category::ElbAccount, Rate::new(40.0, 10.0)),
    (Category::ElbResourceIntensive, Rate::new(10.0, 0.2)),
    (Category::ElbRegistration, Rate::new(20.0, 4.0)),
    (Category::ElbDescribe, Rate::new(40.0, 10.0)),
    (Category::ElbMutating, Rate::new(20.0, 3.0)),
];

impl Rate {
    const fn new(capacity: f64, refill: f64) -> Rate {
        Rate { capacity, refill }
    }
}

/// The throttling categories heet's calls fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Launch,
    LaunchedInstances,
    Terminate,
    TerminatedInstances,
    Tags,
    Volumes,
    ResourceIntensive,
    Mutating,
    Describe,
    SsmRead,
    SsmWrite,
    Route53,
    ElbAccount,
    ElbResourceIntensive,
    ElbRegistration,
    ElbDescribe,
    ElbMutating,
}

fn rate(category: Category) -> Rate {
    RATES
        .iter()
        .find(|(c, _)| *c == category)
        .map(|(_, r)| *r)
        .expect("every category has a rate")
}

/// What one attempt of `operation` (`service:Operation`) takes, and from which buckets;
/// `instances` is the instance count of a RunInstances or TerminateInstances call.
pub fn cost(operation: &str, instances: u32) -> Vec<(String, Category, f64)> {
    let (service, action) = operation.split_once(':').unwrap_or(("", operation));
    let one = |bucket: &str, category| vec![(bucket.to_owned(), category, 1.0)];
    match service {
        "ec2" => match action {
            "RunInstances" => vec![
                (operation.to_owned(), Category::Launch, 1.0),
                (
                    format!("{operation}/instances"),
                    Category::LaunchedInstances,
                    f64::from(instances.max(1)),
                ),
            ],
            "StartInstances" => one(operation, Category::Launch),
            "TerminateInstances" => vec![
                (operation.to_owned(), Category::Terminate, 1.0),
                (
                    format!("{operation}/instances"),
                    Category::TerminatedInstances,
                    f64::from(instances.max(1)),
                ),
            ],
            "CreateTags" | "DeleteTags" => one(operation, Category::Tags),
            "CreateVolume" | "DeleteVolume" => one(operation, Category::Volumes),
            "AuthorizeSecurityGroupIngress"
            | "AuthorizeSecurityGroupEgress"
            | "RevokeSecurityGroupIngress"
            | "RevokeSecurityGroupEgress"
            | "CreateKeyPair" => one(operation, Category::ResourceIntensive),
            a if ["Describe", "Get", "List"].iter().any(|p| a.starts_with(p)) => {
                one(operation, Category::Describe)
            }
            _ => one(operation, Category::Mutating),
        },
        "ssm" => match action {
            "GetParameter" | "GetParameters" | "GetParametersByPath" => {
                one("ssm:read", Category::SsmRead)
            }
            "PutParameter" | "DeleteParameter" | "DeleteParameters" => {
                one("ssm:write", Category::SsmWrite)
            }
            _ => Vec::new(),
        },
        "route53" => one("route53", Category::Route53),
        "elasticloadbalancing" => {
            let (bucket, category) = match action {
                "CreateLoadBalancer" | "SetSubnets" => {
                    ("elb:resource-intensive", Category::ElbResourceIntensive)
                }
                "RegisterTargets" | "DeregisterTargets" => {
                    ("elb:registration", Category::ElbRegistration)
                }
                a if a.starts_with("Describe") => ("elb:describe", Category::ElbDescribe),
                _ => ("elb:mutating", Category::ElbMutating),
            };
            vec![
                ("elb:account".to_owned(), Category::ElbAccount, 1.0),
                (bucket.to_owned(), category, 1.0),
            ]
        }
        _ => Vec::new(),
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one heet process, shared by its clients.
#[derive(Debug, Clone)]
pub struct Pacer {
    scale: f64,
    buckets: Arc<Mutex<BTreeMap<String, Bucket>>>,
}

impl Pacer {
    /// Buckets at AWS's default rates times `scale` (`[aws] pace`).
    pub fn new(scale: f64) -> Pacer {
        Pacer {
            scale,
            buckets: Arc::default(),
        }
    }

    /// How long to wait before spending `wants`, which is spent now: tokens are reserved in
    /// arrival order, so concurrent calls queue instead of racing for the same refill.
    fn reserve(&self, wants: &[(String, Category, f64)], now: Instant) -> Duration {
        let mut buckets = self.buckets.lock().expect("pacer lock");
        let mut wait = Duration::ZERO;
        for (key, category, cost) in wants {
            let r = rate(*category);
            let (capacity, refill) = (r.capacity * self.scale, r.refill * self.scale);
            let b = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
            b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * refill)
                .min(capacity);
            b.at = now;
            // One request may cost more than the bucket holds (a launch of 2,000): it waits
            // for a full bucket, not forever.
            b.tokens -= cost.min(capacity);
            if b.tokens < 0.0 {
                wait = wait.max(Duration::from_secs_f64(-b.tokens / refill));
            }
        }
        wait
    }

    /// The account said these buckets are empty (another process or tool spent them): from
    /// now on heet waits for their refill instead of assuming its own view.
    fn drain(&self, wants: &[(String, Category, f64)]) {
        let mut buckets = self.buckets.lock().expect("pacer lock");
        for (key, _, _) in wants {
            if let Some(b) = buckets.get_mut(key) {
                b.tokens = b.tokens.min(0.0);
            }
        }
    }

    async fn acquire(&self, wants: &[(String, Category, f64)]) {
        let wait = self.reserve(wants, Instant::now());
        if !wait.is_zero() {
            tracing::trace!("pacing: waiting {} ms for {:?}", wait.as_millis(), wants);
            tokio::time::sleep(wait).await;
        }
    }

    /// `base`, with every attempt waiting for its tokens first.
    pub fn wrap(&self, base: SharedHttpClient) -> SharedHttpClient {
        let pacer = self.clone();
        http_client_fn(move |settings, components| {
            SharedHttpConnector::new(PacedConnector {
                inner: base.http_connector(settings, components),
                pacer: pacer.clone(),
            })
        })
    }

    /// The interceptor that prices each attempt for the connector.
    pub fn interceptor(&self) -> Pricing {
        Pricing(self.clone())
    }
}

/// The HTTP client the SDK would use by itself (hyper, rustls with aws-lc, proxies from the
/// environment), built here because the SDK adds its own per client, out of reach of a wrapper.
pub fn default_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

#[derive(Debug)]
struct PacedConnector {
    inner: SharedHttpConnector,
    pacer: Pacer,
}

/// The price of an attempt, attached to its request by [`Pricing`].
#[derive(Debug, Clone)]
struct Price(Vec<(String, Category, f64)>);

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let price = request.extension::<Price>().cloned();
        let (inner, pacer) = (self.inner.clone(), self.pacer.clone());
        HttpConnectorFuture::new(async move {
            if let Some(Price(wants)) = price {
                pacer.acquire(&wants).await;
            }
            inner.call(request).await
        })
    }
}

/// How many instances a call launches or terminates, read from its input.
#[derive(Debug, Clone, Copy)]
struct Instances(u32);

impl Storable for Instances {
    type Storer = StoreReplace<Self>;
}

/// Prices every attempt of every operation (see [`cost`]), and drains the buckets of an
/// attempt AWS throttled.
#[derive(Debug)]
pub struct Pricing(Pacer);

/// Throttling, in each service's words, as it appears in an error answer's body.
const THROTTLED: [&str; 3] = [
    "RequestLimitExceeded",
    "ThrottlingException",
    ">Throttling<",
];

impl Intercept for Pricing {
    fn name(&self) -> &'static str {
        "heet-pricing"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let n = if let Some(run) =
            input.downcast_ref::<aws_sdk_ec2::operation::run_instances::RunInstancesInput>()
        {
            run.max_count().unwrap_or(1).max(1) as u32
        } else if let Some(t) = input
            .downcast_ref::<aws_sdk_ec2::operation::terminate_instances::TerminateInstancesInput>(
        ) {
            t.instance_ids().len() as u32
        } else {
            return Ok(());
        };
        cfg.interceptor_state().store_put(Instances(n));
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = super::stats::operation(cfg);
        let instances = cfg.load::<Instances>().map_or(1, |i| i.0);
        let wants = cost(&operation, instances);
        if !wants.is_empty() {
            context.request_mut().add_extension(Price(wants));
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(response) = context.response() else {
            return Ok(());
        };
        if response.status().is_success() {
            return Ok(());
        }
        let body = response.body().bytes().unwrap_or_default();
        let body = String::from_utf8_lossy(body);
        if THROTTLED.iter().any(|t| body.contains(t)) {
            let operation = super::stats::operation(cfg);
            let instances = cfg.load::<Instances>().map_or(1, |i| i.0);
            tracing::debug!("pacing: {operation} was throttled: waiting for the refill");
            self.0.drain(&cost(&operation, instances));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_priced_from_their_buckets() {
        assert_eq!(
            cost("ec2:RunInstances", 100),
            vec![
                ("ec2:RunInstances".to_owned(), Category::Launch, 1.0),
                (
                    "ec2:RunInstances/instances".to_owned(),
                    Category::LaunchedInstances,
                    100.0
                )
            ]
        );
        assert_eq!(cost("ec2:CreateTags", 1)[0].1, Category::Tags);
        assert_eq!(cost("ec2:DescribeInstances", 1)[0].1, Category::Describe);
        assert_eq!(cost("ec2:CreateVpc", 1)[0].1, Category::Mutating);
        assert_eq!(
            cost("ssm:PutParameter", 1),
            cost("ssm:DeleteParameters", 1),
            "SSM's writes share a bucket"
        );
        assert_eq!(cost("route53:GetChange", 1)[0].0, "route53");
        assert!(cost("sts:GetCallerIdentity", 1).is_empty());
        // ELB: the account's bucket and the call's category, every call.
        let elb = |op: &str| {
            let c = cost(op, 1);
            assert_eq!(c[0].1, Category::ElbAccount, "{op}");
            c[1].1
        };
        assert_eq!(
            elb("elasticloadbalancing:CreateLoadBalancer"),
            Category::ElbResourceIntensive
        );
        assert_eq!(
            elb("elasticloadbalancing:DeregisterTargets"),
            Category::ElbRegistration
        );
        assert_eq!(
            elb("elasticloadbalancing:DescribeTargetHealth"),
            Category::ElbDescribe
        );
        assert_eq!(
            elb("elasticloadbalancing:CreateTargetGroup"),
            Category::ElbMutating
        );
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_refill_rate() {
        let pacer = Pacer::new(1.0);
        let t0 = Instant::now();
        let run = cost("ec2:RunInstances", 1);
        let waits: Vec<f64> = (0..8)
            .map(|_| pacer.reserve(&run, t0).as_secs_f64())
            .collect();
        assert_eq!(&waits[..5], &[0.0; 5], "a burst of 5");
        // Then one every 0.5 s (2 per second), in arrival order.
        assert!((waits[5] - 0.5).abs() < 1e-9, "{waits:?}");
        assert!((waits[6] - 1.0).abs() < 1e-9, "{waits:?}");
        assert!((waits[7] - 1.5).abs() < 1e-9, "{waits:?}");
    }

    #[test]
    fn pace_scales_every_bucket() {
        let pacer = Pacer::new(2.0);
        let t0 = Instant::now();
        let put = cost("ssm:PutParameter", 1);
        let waits: Vec<f64> = (0..7)
            .map(|_| pacer.reserve(&put, t0).as_secs_f64())
            .collect();
        assert_eq!(&waits[..6], &[0.0; 6], "a burst of 2 × 3");
        assert!((waits[6] - 1.0 / 6.0).abs() < 1e-9, "{waits:?}");
    }

    #[test]
    fn a_launch_of_many_instances_waits_for_its_resource_tokens() {
        let pacer = Pacer::new(1.0);
        let t0 = Instant::now();
        assert_eq!(
            pacer.reserve(&cost("ec2:RunInstances", 900), t0),
            Duration::ZERO
        );
        // 100 instance tokens left; 200 more take 50 s at 2 per second.
        let wait = pacer.reserve(&cost("ec2:RunInstances", 200), t0);
        assert!((wait.as_secs_f64() - 50.0).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn a_throttled_bucket_is_treated_as_empty_from_then_on() {
        let pacer = Pacer::new(1.0);
        let t0 = Instant::now();
        let put = cost("ssm:PutParameter", 1);
        assert_eq!(pacer.reserve(&put, t0), Duration::ZERO);
        pacer.drain(&put);
        let wait = pacer.reserve(&put, t0).as_secs_f64();
        assert!((wait - 1.0 / 3.0).abs() < 1e-9, "one refill at 3/s: {wait}");
    }
}
