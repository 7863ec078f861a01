//! The only module that links aws-sdk-*: thin adapters that speak heet's types outward.
//!
//! Every client shares one [`CallStats`] interceptor, so each command can report exactly
//! which AWS operations it made (a no-op `up` must make no mutating call).

mod cfn;
mod ec2;
mod elb;
mod iam;
mod keys;
mod net;
mod pace;
mod route53;
mod ssm;
mod stats;

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};

pub use cfn::{Cfn, StackFailed};
pub use ec2::{Ec2, Launch, LaunchError, Verdict};
pub use elb::Elb;
pub use iam::Iam;
pub use net::Net;
pub use route53::Route53;
pub use ssm::{ConfigValue, EnvLocked, Invocation, LockHolder, ShellCommand, Ssm};
pub use stats::{CallStats, CallSummary};

/// AWS cannot be used as set up: no credentials, no region, or an endpoint that refuses
/// connections. One line each, saying what to do; exit 2.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "no AWS credentials found: use a profile (--profile, the environment's profile, or AWS_PROFILE, from ~/.aws/config), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or, for an emulator such as moto, --endpoint-url with any test keys"
    )]
    NoCredentials,
    #[error(
        "no AWS region: pass --region, set AWS_REGION, or set the environment's region or project.region in heet.toml"
    )]
    NoRegion,
    #[error(
        "cannot reach AWS at {endpoint}: {op}: connection refused (is the endpoint right and its server up? --endpoint-url, AWS_ENDPOINT_URL)"
    )]
    Unreachable { endpoint: String, op: String },
    #[error(
        "{env} is pinned to account {pinned} (environments.{env}.account_id), but these credentials are for account {actual}: nothing was done; use the credentials or profile of {pinned}"
    )]
    WrongAccount {
        env: String,
        pinned: String,
        actual: String,
    },
    #[error(
        "cannot assume {arn} (environments.{env}.assume_role): {cause}; the role's trust policy must let these credentials assume it (heet iam-policy --trust {env} prints one)"
    )]
    CannotAssume {
        env: String,
        arn: String,
        cause: String,
    },
}

/// Where this process sends its AWS calls, for [`SetupError::Unreachable`].
static ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Attempts per AWS call, first try included, unless `AWS_MAX_ATTEMPTS` says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;

/// How to reach AWS: the standard chain (env, profile, IMDS) with these overrides.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The region `--region` or the environment's `region` names.
    pub region: Option<Source>,
    /// The profile `--profile` or the environment's `profile` names.
    pub profile: Option<Source>,
    pub endpoint_url: Option<String>,
    /// The region when neither the command line nor the AWS config chain names one
    /// (`project.region`).
    pub default_region: Option<String>,
    /// A scale of AWS's default request rates (`[aws] pace`).
    pub pace: f64,
    /// The environment and the account it is pinned to (`account_id`): before any other
    /// call, the credentials must be that account's.
    pub pin: Option<(String, String)>,
    /// The environment and the role heet assumes there.
    pub assume_role: Option<(String, crate::definition::AssumeRole)>,
}

/// A setting and where it was given (`--region`, `environments.production.region`), which
/// `-v` shows.
#[derive(Debug, Clone)]
pub struct Source {
    pub value: String,
    pub from: String,
}

/// The session name heet uses for an assumed role when `session_name` does not say:
/// `heet-<user>`, in the characters STS accepts, at most 64.
pub fn session_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let user: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || crate::validate::IAM_NAME_CHARS.contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(59)
        .collect();
    format!("heet-{user}")
}

/// The AWS clients of one heet process.
pub struct Aws {
    pub ec2: Ec2,
    pub net: Net,
    pub route53: Route53,
    pub ssm: Ssm,
    /// Global: one endpoint whatever the region.
    pub iam: Iam,
    pub cfn: Cfn,
    pub elb: Elb,
    pub stats: CallStats,
    pub region: String,
    /// The account the credentials are for (STS GetCallerIdentity): in every report.
    pub account: String,
}

impl Aws {
    pub async fn connect(conn: &Connection) -> anyhow::Result<Aws> {
        // The standard AWS_MAX_ATTEMPTS still applies: an explicit retry config would
        // otherwise override it.
        let attempts = std::env::var("AWS_MAX_ATTEMPTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(DEFAULT_MAX_ATTEMPTS);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Standard, not adaptive: heet paces itself (`pace`), and adaptive mode's own
            // limiter waits seconds after a single throttle.
            .retry_config(RetryConfig::standard().with_max_attempts(attempts));
        if let Some(region) = &conn.region {
            loader = loader.region(Region::new(region.value.clone()));
        }
        if let Some(profile) = &conn.profile {
            // A profile named on purpose wins over access keys in the shell, as with the AWS
            // CLI: the default chain would read AWS_ACCESS_KEY_ID first and ignore it.
            loader = loader.profile_name(&profile.value).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .profile_name(&profile.value)
                    .build(),
            );
        }
        if let Some(url) = &conn.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let mut config = loader.load().await;
        let region_from = match (&conn.region, config.region()) {
            (Some(r), _) => r.from.clone(),
            (None, Some(_)) => "the AWS config chain".to_owned(),
            (None, None) => {
                let Some(region) = &conn.default_region else {
                    return Err(SetupError::NoRegion.into());
                };
                config = config
                    .into_builder()
                    .region(Region::new(region.clone()))
                    .build();
                "project.region".to_owned()
            }
        };
        if let Some((_, role)) = &conn.assume_role {
            // aws-config's provider: its credentials are cached and assumed again before
            // they expire, so a long rollout never runs out of them.
            let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.arn)
                .configure(&config)
                .session_name(role.session_name.clone().unwrap_or_else(session_name));
            if let Some(id) = &role.external_id {
                provider = provider.external_id(id);
            }
            if let Some(seconds) = role.duration {
                provider = provider.session_length(std::time::Duration::from_secs(seconds.into()));
            }
            config = config
                .into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(
                        provider.build().await,
                    ),
                )
                .build();
        }
        let pacer = pace::Pacer::new(conn.pace);
        config = config
            .into_builder()
            .http_client(pacer.wrap(pace::default_http_client()))
            .build();
        let region = config.region().map(ToString::to_string).unwrap_or_default();
        let _ = ENDPOINT.set(match &conn.endpoint_url {
            Some(url) => url.clone(),
            None => format!("its {region} endpoints"),
        });
        let stats = CallStats::from_env();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&config)
                .retry_classifier(RefusedIsFinal)
                .interceptor(stats.clone())
                .interceptor(pacer.interceptor())
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&config)
                .retry_classifier(RefusedIsFinal)
                .interceptor(stats.clone())
                .interceptor(pacer.interceptor())
                .build(),
        );
        let route53 = aws_sdk_route53::Client::from_conf(
            aws_sdk_route53::config::Builder::from(&config)
                .retry_classifier(RefusedIsFinal)
                .interceptor(stats.clone())
                .interceptor(pacer.interceptor())
                .build(),
        );
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&config)
                .retry_classifier(RefusedIsFinal)
                .retry_classifier(ConcurrentIsTransient)
                .interceptor(stats.clone())
                .interceptor(pacer.interceptor())
                .build(),
        );
        let cfn = Cfn::new(aws_sdk_cloudformation::Client::from_conf(
            aws_sdk_cloudformation::config::Builder::from(&config)
                .retry_classifier(RefusedIsFinal)
                .interceptor(stats.clone())
                .interceptor(pacer.interceptor())
                .build(),
        ));
        let elb = Elb::new(
            aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&config)
                    .retry_classifier(RefusedIsFinal)
                    .interceptor(stats.clone())
                    .interceptor(pacer.interceptor())
                    .build(),
            ),
            ec2.clone(),
        );
        // Every run asks who it is before anything else: the account goes in every report
        // and the lock, and a pinned environment refuses another account's credentials
        // before the lock, the ledger or anything else is touched.
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&config)
                .retry_classifier(RefusedIsFinal)
                .interceptor(stats.clone())
                .build(),
        );
        let identity = sts.get_caller_identity().send().await;
        let account = match (identity, &conn.assume_role) {
            (Ok(out), _) => out.account.unwrap_or_default(),
            (Err(e), Some((env, role))) if sts_refused_assume(&e) => {
                return Err(SetupError::CannotAssume {
                    env: env.clone(),
                    arn: role.arn.clone(),
                    cause: error_chain(&e),
                }
                .into());
            }
            (Err(e), _) => return Err(sdk_error("sts:GetCallerIdentity", e)),
        };
        if let Some((env, pinned)) = &conn.pin
            && account != *pinned
        {
            return Err(SetupError::WrongAccount {
                env: env.clone(),
                pinned: pinned.clone(),
                actual: account,
            }
            .into());
        }
        tracing::debug!("region {region} (from {region_from})");
        match &conn.profile {
            Some(p) => tracing::debug!("profile {} (from {})", p.value, p.from),
            None => tracing::debug!("credentials from the AWS config chain"),
        }
        match &conn.assume_role {
            Some((env, role)) => tracing::debug!(
                "account {account}, as the role {} (environments.{env}.assume_role)",
                role.arn
            ),
            None => tracing::debug!("account {account}"),
        }
        let ssm = Ssm::new(ssm);
        Ok(Aws {
            iam: Iam::new(iam, ssm.clone()),
            net: Net::new(ec2.clone(), ssm.clone()),
            ec2: Ec2::new(ec2),
            route53: Route53::new(route53),
            ssm,
            cfn,
            elb,
            stats,
            region,
            account,
        })
    }
}

/// An error of an AWS SDK call, as heet reports it: its code and message, and the HTTP
/// status of the answer when there was one.
pub(crate) trait AwsError:
    std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata
{
    fn http_status(&self) -> Option<u16>;
}

impl<E> AwsError for aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
{
    fn http_status(&self) -> Option<u16> {
        self.raw_response().map(|r| r.status().as_u16())
    }
}

/// An SDK error as one readable line: AWS's code and message for service errors, the cause
/// chain for the rest (the SDK's own Display says only "service error").
pub(crate) fn sdk_error<E>(op: &str, err: E) -> anyhow::Error
where
    E: AwsError,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => anyhow::anyhow!("{op}: {code}: {message}"),
        (Some(code), None) => anyhow::anyhow!("{op}: {code}"),
        _ => {
            if let Some(setup) =
                std::iter::successors(err.source(), |e| e.source()).find_map(|c| setup_error(op, c))
            {
                return setup.into();
            }
            let chain = error_chain(&err);
            // An answer without an error code the SDK can read (an emulator's, a proxy's):
            // its HTTP status is the one thing that says what happened.
            match err.http_status() {
                Some(status) => anyhow::anyhow!("{op}: HTTP {status}: {chain}"),
                None => anyhow::anyhow!("{op}: {chain}"),
            }
        }
    }
}

/// Whether `err` failed because STS refused to let the credentials assume the role (its
/// answer to AssumeRole, not a missing base credential or an endpoint that is down).
fn sts_refused_assume(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source())
        .any(|e| e.is::<aws_sdk_sts::operation::assume_role::AssumeRoleError>())
}

/// `err` and its causes in one line, repeats dropped.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = vec![err.to_string()];
    chain.extend(std::iter::successors(err.source(), |e| e.source()).map(ToString::to_string));
    chain.dedup();
    chain.join(": ")
}

/// Whether `err` itself is a refused connection (not its causes).
fn is_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// An endpoint that refuses connections is not coming back within a retry's backoff (AWS's
/// never do; an emulator that is down stays down): the SDK would otherwise retry it for
/// seconds before saying so.
#[derive(Debug)]
struct RefusedIsFinal;

impl ClassifyRetry for RefusedIsFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(err))
                if err.as_connector_error().is_some_and(|c| {
                    std::iter::successors(Some(c as &(dyn std::error::Error + 'static)), |e| {
                        e.source()
                    })
                    .any(is_refused)
                }) =>
            {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "connection refused is final"
    }
}

/// IAM refuses a change to an entity while another is under way with
/// `ConcurrentModification`, which the SDK does not retry: apply makes a tier's IAM changes at
/// once (three policies attached to one role), so the refused one is tried again. AWS did so
/// for AttachRolePolicy for a while in November 2023; Terraform retries it since.
#[derive(Debug)]
struct ConcurrentIsTransient;

impl ClassifyRetry for ConcurrentIsTransient {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let refused = ctx.response().is_some_and(|r| {
            r.status().as_u16() == 409
                && r.body().bytes().is_some_and(|b| {
                    String::from_utf8_lossy(b).contains("<Code>ConcurrentModification</Code>")
                })
        });
        if refused {
            RetryAction::transient_error()
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "iam concurrent modification is transient"
    }
}

/// The set-up problem `cause` (one error of a call's chain, looked at alone: the caller
/// walks the chain) shows, if it shows one.
fn setup_error(op: &str, cause: &(dyn std::error::Error + 'static)) -> Option<SetupError> {
    if cause.is::<aws_credential_types::provider::error::CredentialsError>() {
        return Some(SetupError::NoCredentials);
    }
    is_refused(cause).then(|| SetupError::Unreachable {
        endpoint: ENDPOINT
            .get()
            .cloned()
            .unwrap_or_else(|| "its endpoint".into()),
        op: op.to_owned(),
    })
}

/// How long a call naming an id heet just created is retried while EC2 does not know the id
/// yet (eventual consistency: `InvalidGroup.NotFound` right after CreateSecurityGroup, ...).
pub const FRESH_ID_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long RunInstances is retried while a new instance profile propagates (Terraform waits
/// as long).
pub const PROFILE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether EC2 refused a call because an id it names is not known yet.
pub(crate) fn not_known_yet<E: aws_sdk_ec2::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code().is_some_and(|c| c.ends_with(".NotFound"))
}

/// Retries `call` while `transient` says its error will pass (beyond the SDK's own retries,
/// which only cover throttling and transport), for up to `window`, backing off from 250 ms to
/// 5 s; the last error is returned as [`sdk_error`] names it.
pub(crate) async fn retry_while<T, E, Fut>(
    label: &str,
    window: std::time::Duration,
    transient: impl Fn(&E) -> bool,
    call: impl Fn() -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: AwsError,
{
    retry_raw(label, window, transient, call)
        .await
        .map_err(|e| sdk_error(label, e))
}

/// [`retry_while`], returning the last error as the SDK gave it.
pub(crate) async fn retry_raw<T, E, Fut>(
    label: &str,
    window: std::time::Duration,
    transient: impl Fn(&E) -> bool,
    call: impl Fn() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata,
{
    let start = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && start.elapsed() < window => {
                tracing::debug!(
                    "{label}: {}: retrying in {} ms",
                    e.code().unwrap_or("?"),
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::interceptors::context::Input;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn classified(status: u16, body: &str) -> RetryAction {
        let mut ctx = InterceptorContext::new(Input::doesnt_matter());
        ctx.set_response(Response::new(
            StatusCode::try_from(status).unwrap(),
            SdkBody::from(body.to_owned()),
        ));
        ConcurrentIsTransient.classify_retry(&ctx)
    }

    /// IAM's error answer, as its query protocol writes one.
    fn iam_error(code: &str) -> String {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        )
    }

    #[test]
    fn only_iams_concurrent_modification_is_made_transient() {
        assert_eq!(
            classified(409, &iam_error("ConcurrentModification")),
            RetryAction::transient_error()
        );
        // The same status for a name taken is final.
        assert_eq!(
            classified(409, &iam_error("EntityAlreadyExists")),
            RetryAction::NoActionIndicated
        );
        assert_eq!(
            classified(200, "<Code>ConcurrentModification</Code>"),
            RetryAction::NoActionIndicated
        );
    }
}
