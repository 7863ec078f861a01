//! Counts the AWS operations and HTTP attempts a command makes, by operation name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

#[derive(Debug, Clone, Default)]
pub struct CallStats(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    operations: BTreeMap<String, u32>,
    attempts: u32,
    finished: u32,
    /// `HEET_TEST_ABORT_AFTER_CALLS`: the process aborts once this many calls have finished.
    abort_after: Option<u32>,
    /// `HEET_TEST_ABORT_AFTER_OP=service:Operation[:n]`: the process aborts once the nth call
    /// of that operation (the first by default) has finished.
    abort_after_op: Option<(String, u32)>,
    finished_by_op: BTreeMap<String, u32>,
}

/// What a command reports of its AWS calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallSummary {
    /// Operations called, e.g. `ec2:DescribeInstances`, with how many times.
    pub operations: BTreeMap<String, u32>,
    pub calls: u32,
    /// Calls that change something (anything but Describe*/List*/Get*).
    pub mutating: u32,
    /// HTTP attempts including the SDK's retries.
    pub attempts: u32,
}

/// Whether an operation only reads.
pub fn is_read_only(operation: &str) -> bool {
    let op = operation.rsplit(':').next().unwrap_or(operation);
    ["Describe", "List", "Get"]
        .iter()
        .any(|p| op.starts_with(p))
}

impl CallStats {
    /// Counts as usual, and honours `HEET_TEST_ABORT_AFTER_CALLS=N` and
    /// `HEET_TEST_ABORT_AFTER_OP=ec2:RunInstances[:n]`: crash tests kill the process right
    /// after its Nth AWS call, or the nth call of an operation, as a kill -9 there would.
    pub fn from_env() -> CallStats {
        let stats = CallStats::default();
        {
            let mut counts = stats.0.lock().expect("stats lock");
            counts.abort_after = std::env::var("HEET_TEST_ABORT_AFTER_CALLS")
                .ok()
                .and_then(|n| n.parse().ok());
            counts.abort_after_op =
                std::env::var("HEET_TEST_ABORT_AFTER_OP").ok().map(|v| {
                    match v.rsplit_once(':').map(|(op, n)| (op, n.parse::<u32>())) {
                        Some((op, Ok(n))) => (op.to_owned(), n),
                        _ => (v, 1),
                    }
                });
        }
        stats
    }

    pub fn summary(&self) -> CallSummary {
        let counts = self.0.lock().expect("stats lock");
        let calls = counts.operations.values().sum();
        let mutating = counts
            .operations
            .iter()
            .filter(|(op, _)| !is_read_only(op))
            .map(|(_, n)| n)
            .sum();
        CallSummary {
            operations: counts.operations.clone(),
            calls,
            mutating,
            attempts: counts.attempts,
        }
    }
}

/// `service:Operation` of the call `cfg` belongs to, e.g. `ec2:RunInstances`: the
/// service as IAM names its actions (the SDK's `ElasticLoadBalancingV2` is IAM's
/// `elasticloadbalancing`).
pub(super) fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>().map_or_else(
        || "unknown".to_owned(),
        |m| {
            let service = m.service().to_ascii_lowercase().replace(' ', "");
            let service = match service.as_str() {
                "elasticloadbalancingv2" => "elasticloadbalancing",
                s => s,
            };
            format!("{service}:{}", m.name())
        },
    )
}

impl Intercept for CallStats {
    fn name(&self) -> &'static str {
        "heet-call-stats"
    }

    // Not read_before_execution: the operation's metadata is not in the config bag yet there.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        *self
            .0
            .lock()
            .expect("stats lock")
            .operations
            .entry(operation(cfg))
            .or_default() += 1;
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.lock().expect("stats lock").attempts += 1;
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut counts = self.0.lock().expect("stats lock");
        counts.finished += 1;
        let op = operation(cfg);
        // Numbered as HEET_TEST_ABORT_AFTER_CALLS counts: by completion.
        tracing::trace!("aws call {} done: {op}", counts.finished);
        if counts.abort_after == Some(counts.finished) {
            eprintln!(
                "heet: HEET_TEST_ABORT_AFTER_CALLS={}: aborting",
                counts.finished
            );
            std::process::abort();
        }
        let nth = {
            let n = counts.finished_by_op.entry(op.clone()).or_default();
            *n += 1;
            *n
        };
        if counts.abort_after_op.as_ref() == Some(&(op.clone(), nth)) {
            eprintln!("heet: HEET_TEST_ABORT_AFTER_OP={op}:{nth}: aborting");
            std::process::abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_read_only;

    #[test]
    fn read_only_operations() {
        assert!(is_read_only("ec2:DescribeInstances"));
        assert!(is_read_only("ssm:GetParametersByPath"));
        assert!(is_read_only("route53:ListResourceRecordSets"));
        assert!(!is_read_only("ec2:RunInstances"));
        assert!(!is_read_only("ec2:CreateTags"));
        assert!(!is_read_only("ec2:TerminateInstances"));
    }
}
