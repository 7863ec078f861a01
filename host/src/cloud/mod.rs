//! The only module that links aws-sdk-*: thin adapters that speak heet's types outward.
//!
//! Every client shares one [`CallStats`] interceptor, so each command can report exactly
//! which AWS operations it made (a no-op `up` must make no mutating call).

mod ec2;
mod net;
mod route53;
mod ssm;
mod stats;

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};

pub use ec2::Ec2;
pub use net::Net;
pub use route53::Route53;
pub use ssm::{ConfigValue, EnvLocked, LockHolder, Ssm};
pub use stats::{CallStats, CallSummary};

/// Attempts per AWS call, first try included, unless `AWS_MAX_ATTEMPTS` says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;

/// How to reach AWS: the standard chain (env, profile, IMDS) with these overrides.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The AWS clients of one heet process.
pub struct Aws {
    pub ec2: Ec2,
    pub net: Net,
    pub route53: Route53,
    pub ssm: Ssm,
    pub stats: CallStats,
    pub region: String,
}

impl Aws {
    /// `default_region` (from heet.toml) applies when neither the command line nor the AWS
    /// config chain names one.
    pub async fn connect(conn: &Connection, default_region: Option<&str>) -> anyhow::Result<Aws> {
        // The standard AWS_MAX_ATTEMPTS still applies: an explicit retry config would
        // otherwise override it.
        let attempts = std::env::var("AWS_MAX_ATTEMPTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(DEFAULT_MAX_ATTEMPTS);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Adaptive: back off client-side when AWS throttles, as a large `up` will.
            .retry_config(RetryConfig::adaptive().with_max_attempts(attempts));
        if let Some(region) = &conn.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &conn.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &conn.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let mut config = loader.load().await;
        if config.region().is_none() {
            let Some(region) = default_region else {
                anyhow::bail!(
                    "no AWS region: pass --region, set AWS_REGION, or set project.region in heet.toml"
                );
            };
            config = config
                .into_builder()
                .region(Region::new(region.to_owned()))
                .build();
        }
        let region = config.region().map(ToString::to_string).unwrap_or_default();
        let stats = CallStats::from_env();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&config)
                .interceptor(stats.clone())
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&config)
                .interceptor(stats.clone())
                .build(),
        );
        let route53 = aws_sdk_route53::Client::from_conf(
            aws_sdk_route53::config::Builder::from(&config)
                .interceptor(stats.clone())
                .build(),
        );
        Ok(Aws {
            net: Net::new(ec2.clone()),
            ec2: Ec2::new(ec2),
            route53: Route53::new(route53),
            ssm: Ssm::new(ssm),
            stats,
            region,
        })
    }
}

/// An SDK error as one readable line: AWS's code and message for service errors, the cause
/// chain for the rest (the SDK's own Display says only "service error").
pub(crate) fn sdk_error<E>(op: &str, err: E) -> anyhow::Error
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => anyhow::anyhow!("{op}: {code}: {message}"),
        (Some(code), None) => anyhow::anyhow!("{op}: {code}"),
        _ => {
            let mut chain = vec![err.to_string()];
            let mut source = err.source();
            while let Some(cause) = source {
                chain.push(cause.to_string());
                source = cause.source();
            }
            chain.dedup();
            anyhow::anyhow!("{op}: {}", chain.join(": "))
        }
    }
}
