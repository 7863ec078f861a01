//! The AWS model: a loopback proxy in front of moto that behaves as AWS does where moto does
//! not, so that what heet depends on in a real account is exercised by every test that runs
//! through it. moto never throttles, launches instances `running`, ignores ClientToken, is
//! consistent at once and never loses an answer; this proxy adds, each a setting of [`Model`]:
//!
//! - token-bucket throttling per account, with AWS's documented bucket sizes and refill rates
//!   ([`Model::aws`]), answered in each service's own words before the call reaches moto;
//! - RunInstances ClientToken idempotency: the same token and parameters replay the first
//!   answer, other parameters get `IdempotentParameterMismatch`, a token whose instances are
//!   all terminated gets `IdempotentInstanceTerminated`;
//! - instances `pending` (no public DNS name yet) for a while after launch, and
//!   `shutting-down` for a while after termination; their EC2 status checks
//!   (DescribeInstanceStatus) `initializing` for a while once they run, then `ok`, or
//!   `impaired` for instances launched with a chosen instance type;
//! - eventual consistency: a new instance, group, subnet, VPC or gateway is missing from
//!   describes for a window, and calls naming it get `*.NotFound`;
//! - `DependencyViolation` on deleting a group or subnet for a window after an instance in it
//!   terminated; a new instance profile refused by RunInstances for a window;
//! - no public DNS name for instances in a VPC whose `enableDnsHostnames` is off (moto fills
//!   one in anyway);
//! - Route53 change batches validated as Route53 does, change by change in the batch's order
//!   (DELETE of a missing record, CREATE of an existing one, or a CNAME beside another record
//!   at its name is `InvalidChangeBatch`), changes `PENDING` for a window (GetChange),
//!   a new change to the zone refused with `PriorRequestNotComplete` for the shorter window
//!   Route53 takes to process the previous request (not while it propagates), and a repeated
//!   CallerReference refused with `HostedZoneAlreadyExists` (in the caller's account: two
//!   accounts may use one reference, as in AWS);
//! - SSM Run Command: an invocation unknown (`InvocationDoesNotExist`) for a moment after
//!   SendCommand, then `InProgress` while it runs, then `Failed` (exit 1) on instances
//!   launched with a chosen instance type, or moto's `Success`; only the instances the
//!   command named have an invocation (moto gives every instance of the region one);
//! - what moto drops of RunInstances: termination protection (`DisableApiTermination`, set
//!   on moto's instances so TerminateInstances is refused), a placement group and tenancy
//!   (shown in DescribeInstances as asked); MonitorInstances and UnmonitorInstances, which
//!   moto does not implement, answered and shown in DescribeInstances;
//! - ELB: targets `initial` until their health checks pass, then `healthy` (or `unhealthy`
//!   on an impaired instance), `draining` once deregistered, `unused` while no balancer's
//!   listener forwards to their group; a balancer's groups and subnets busy while it lives
//!   and for a while after; a health check's timeout shorter than its interval;
//! - lost answers: a share of chosen mutating calls is carried out and its answer dropped;
//! - latency per call, and plain injected faults (throttling, 500, 503, a dropped
//!   connection) at a set share, before the call reaches moto.
//!
//! Its own look at moto (an instance terminated yet, a VPC's DNS hostnames) is made with the
//! caller's credentials, so an environment in another account (an assumed role) is modelled
//! from what that account holds.
//!
//! It counts, per operation, the calls it received, forwarded, throttled, faulted, lost and
//! answered itself, and moto's service time. docs/testing.md lists the defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::child_text;

/// A token bucket's size and refill rate (tokens per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub capacity: f64,
    pub refill: f64,
}

const fn rate(capacity: f64, refill: f64) -> Rate {
    Rate { capacity, refill }
}

/// AWS's documented buckets, by category (docs: "Request throttling for the Amazon EC2 API";
/// SSM's and Route53's service quotas). EC2 keeps one bucket per action, sized by the
/// action's category; the SSM and Route53 categories are one bucket each.
pub const AWS_RATES: [(&str, Rate); 18] = [
    ("ec2:RunInstances", rate(5.0, 2.0)),
    ("ec2:RunInstances/instances", rate(1000.0, 2.0)),
    ("ec2:TerminateInstances", rate(100.0, 5.0)),
    ("ec2:TerminateInstances/instances", rate(1000.0, 20.0)),
    ("ec2:tags", rate(100.0, 10.0)),
    ("ec2:volumes", rate(100.0, 5.0)),
    ("ec2:resource-intensive", rate(50.0, 5.0)),
    ("ec2:mutating", rate(50.0, 5.0)),
    ("ec2:describe", rate(100.0, 20.0)),
    ("ec2:describe-unfiltered", rate(50.0, 10.0)),
    ("ssm:read", rate(40.0, 40.0)),
    ("ssm:write", rate(3.0, 3.0)),
    ("route53", rate(50.0, 10.0)),
    // ELB (API version 2): an account bucket every action draws on, and one per category
    // ("Request throttling for the ELB API").
    ("elb:account", rate(40.0, 10.0)),
    ("elb:resource-intensive", rate(10.0, 0.2)),
    ("elb:registration", rate(20.0, 4.0)),
    ("elb:describe", rate(40.0, 10.0)),
    ("elb:mutating", rate(20.0, 3.0)),
];

/// What the model does. Every field is a setting; [`Model::aws`] is AWS as documented,
/// [`Model::quick`] the same behaviour with shorter windows, [`Model::raw`] moto as it is.
#[derive(Debug, Clone)]
pub struct Model {
    /// Bucket sizes by category (see [`AWS_RATES`]); `None`: no throttling.
    pub rates: Option<BTreeMap<&'static str, Rate>>,
    /// How long a new instance stays `pending`.
    pub pending: Duration,
    /// How long a terminated instance shows `shutting-down`.
    pub shutting_down: Duration,
    /// How long an instance's status checks say `initializing` once it runs.
    pub status_checks: Duration,
    /// Instance types whose instances' status checks end `impaired` instead of `ok`: a
    /// launch that boots but never becomes healthy.
    pub impaired_types: Vec<String>,
    /// How long a new instance, group, subnet, VPC or gateway is invisible.
    pub consistency: Duration,
    /// How long SSM does not know a command's invocations after SendCommand.
    pub invocation_delay: Duration,
    /// How long an invocation runs (`InProgress`) once SSM knows it.
    pub command_run: Duration,
    /// Instance types on whose instances every command fails (exit 1): a script that
    /// breaks there.
    pub failing_types: Vec<String>,
    /// How long a group or subnet cannot be deleted after an instance in it terminated.
    pub dependency: Duration,
    /// How long RunInstances refuses a new instance profile.
    pub profile_propagation: Duration,
    /// How long a Route53 change stays `PENDING`.
    pub insync: Duration,
    /// How long Route53 refuses a new change to a zone after one (PriorRequestNotComplete):
    /// the time it takes to process a request, far shorter than `insync`.
    pub processing: Duration,
    /// Added to every call.
    pub latency: Duration,
    /// Added to RunInstances instead of `latency`.
    pub run_latency: Duration,
    /// Share (%) of the calls to `lost_ops` that are carried out and whose answer is lost.
    pub lost_percent: u32,
    /// Operations whose answers may be lost, e.g. `ec2:RunInstances`.
    pub lost_ops: Vec<String>,
    /// Lose only the first answer to each distinct request (the client's retry of the same
    /// request is answered): every first answer, deterministically, at `lost_percent` 100.
    pub lose_once: bool,
    /// Share (%) of all calls answered with a fault before they reach moto.
    pub fault_percent: u32,
    /// Seeds the choice of faults and lost answers.
    pub seed: u64,
    /// The roles STS lets the callers assume, each with the external id its trust policy
    /// asks for (`None`: moto's way, any role of any account, no trust checked).
    pub trusted_roles: Option<Vec<(String, Option<String>)>>,
    /// How long CloudFormation works on a stack (create, update, delete) or a change set
    /// before it is done: moto is done before it answers.
    pub stack_work: Duration,
    /// ELB's windows as a share of what the target group asks: a registered target is
    /// `initial` for its health check interval times its healthy threshold, a deregistered
    /// one `draining` for its deregistration delay (moto: healthy at once, gone at once).
    /// 1.0 is AWS; 0 is moto.
    pub elb_scale: f64,
}

/// The operations whose lost answers heet must survive, as `Model::lose` defaults them.
pub const LOSABLE: [&str; 4] = [
    "ec2:RunInstances",
    "ec2:CreateTags",
    "ssm:PutParameter",
    "route53:ChangeResourceRecordSets",
];

impl Model {
    /// AWS as documented: its buckets, instances pending 8 s, RunInstances 400 ms, other
    /// calls 20 ms, windows of a few seconds.
    pub fn aws() -> Model {
        Model {
            rates: Some(AWS_RATES.iter().copied().collect()),
            pending: Duration::from_secs(8),
            shutting_down: Duration::from_secs(4),
            status_checks: Duration::from_secs(30),
            impaired_types: Vec::new(),
            consistency: Duration::from_secs(2),
            invocation_delay: Duration::from_secs(1),
            command_run: Duration::from_secs(3),
            failing_types: Vec::new(),
            dependency: Duration::from_secs(6),
            profile_propagation: Duration::from_secs(10),
            insync: Duration::from_secs(2),
            processing: Duration::from_millis(300),
            latency: Duration::from_millis(20),
            run_latency: Duration::from_millis(400),
            lost_percent: 0,
            lost_ops: LOSABLE.iter().map(|s| (*s).to_owned()).collect(),
            lose_once: false,
            fault_percent: 0,
            seed: 1,
            trusted_roles: None,
            stack_work: Duration::from_secs(5),
            elb_scale: 1.0,
        }
    }

    /// AWS's behaviour and buckets with short windows: what every integration suite runs
    /// through, so each test meets pending instances, eventual consistency and throttling
    /// without taking the seconds the real windows take.
    pub fn quick() -> Model {
        Model {
            pending: Duration::from_millis(1200),
            shutting_down: Duration::from_millis(600),
            status_checks: Duration::from_millis(800),
            consistency: Duration::from_millis(500),
            invocation_delay: Duration::from_millis(300),
            command_run: Duration::from_millis(600),
            dependency: Duration::from_millis(1500),
            profile_propagation: Duration::from_secs(2),
            insync: Duration::from_millis(400),
            processing: Duration::from_millis(100),
            latency: Duration::from_millis(2),
            run_latency: Duration::from_millis(50),
            stack_work: Duration::from_millis(1500),
            elb_scale: 0.05,
            ..Model::aws()
        }
    }

    /// moto as it is: the proxy only counts.
    pub fn raw() -> Model {
        Model {
            rates: None,
            pending: Duration::ZERO,
            shutting_down: Duration::ZERO,
            status_checks: Duration::ZERO,
            impaired_types: Vec::new(),
            consistency: Duration::ZERO,
            invocation_delay: Duration::ZERO,
            command_run: Duration::ZERO,
            failing_types: Vec::new(),
            dependency: Duration::ZERO,
            profile_propagation: Duration::ZERO,
            insync: Duration::ZERO,
            processing: Duration::ZERO,
            latency: Duration::ZERO,
            run_latency: Duration::ZERO,
            lost_percent: 0,
            lost_ops: Vec::new(),
            lose_once: false,
            fault_percent: 0,
            seed: 1,
            trusted_roles: None,
            stack_work: Duration::ZERO,
            elb_scale: 0.0,
        }
    }

    /// Whether the model only forwards: raw moto with faults at most. Then it keeps no state
    /// and never reads moto's answers.
    fn is_raw(&self) -> bool {
        self.rates.is_none()
            && self.pending.is_zero()
            && self.shutting_down.is_zero()
            && self.status_checks.is_zero()
            && self.impaired_types.is_empty()
            && self.consistency.is_zero()
            && self.invocation_delay.is_zero()
            && self.command_run.is_zero()
            && self.failing_types.is_empty()
            && self.dependency.is_zero()
            && self.profile_propagation.is_zero()
            && self.insync.is_zero()
            && self.processing.is_zero()
            && self.lost_percent == 0
            && self.trusted_roles.is_none()
            && self.stack_work.is_zero()
    }

    /// Every bucket's size and refill multiplied by `scale`: an account with raised limits.
    pub fn scaled(mut self, scale: f64) -> Model {
        if let Some(rates) = &mut self.rates {
            for r in rates.values_mut() {
                *r = rate(r.capacity * scale, r.refill * scale);
            }
        }
        self
    }

    /// Instances launched as `instance_type` fail their status checks.
    pub fn impaired(mut self, instance_type: &str) -> Model {
        self.impaired_types.push(instance_type.to_owned());
        self
    }

    /// Commands sent to instances launched as `instance_type` fail.
    pub fn failing_commands(mut self, instance_type: &str) -> Model {
        self.failing_types.push(instance_type.to_owned());
        self
    }

    /// Loses `percent` % of the answers of `ops`.
    pub fn lose(mut self, percent: u32, ops: &[&str]) -> Model {
        self.lost_percent = percent;
        self.lost_ops = ops.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Loses the first answer to every distinct request to `ops` (each is carried out; the
    /// client's retry of it is answered).
    pub fn lose_first(mut self, ops: &[&str]) -> Model {
        self = self.lose(100, ops);
        self.lose_once = true;
        self
    }

    /// STS lets the callers assume only these roles (ARN, and the external id their trust
    /// asks for), as trust policies do; any other AssumeRole is `AccessDenied`.
    pub fn trusting(mut self, roles: &[(&str, Option<&str>)]) -> Model {
        self.trusted_roles = Some(
            roles
                .iter()
                .map(|(arn, id)| ((*arn).to_owned(), id.map(str::to_owned)))
                .collect(),
        );
        self
    }

    /// Faults `percent` % of all calls, seeded.
    pub fn faults(mut self, percent: u32, seed: u64) -> Model {
        self.fault_percent = percent;
        self.seed = seed;
        self
    }

    /// Listens on a free loopback port in front of moto at `upstream`. The proxy lives as
    /// long as the process.
    pub fn start(self, upstream: &str) -> AwsModel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            rng: Mutex::new(fastrand::Rng::with_seed(self.seed)),
            model: self,
            upstream: upstream.to_owned(),
            state: Mutex::new(State::default()),
            stats: Mutex::new(BTreeMap::new()),
        });
        let server = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = server.clone();
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
        AwsModel { endpoint, shared }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A running model.
pub struct AwsModel {
    pub endpoint: String,
    shared: Arc<Shared>,
}

/// An SSM command as heet sent it (AWS-RunShellScript's parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct SentCommand {
    pub command_id: String,
    pub instance_ids: Vec<String>,
    /// The script's lines (`commands`).
    pub commands: Vec<String>,
    pub execution_timeout: Option<String>,
    pub working_dir: Option<String>,
    pub comment: String,
    pub max_concurrency: Option<String>,
    pub max_errors: Option<String>,
}

impl AwsModel {
    /// The AssumeRole requests the model saw, in order: each its form (`RoleArn`,
    /// `RoleSessionName`, `ExternalId`, `DurationSeconds`, ...).
    pub fn assume_requests(&self) -> Vec<BTreeMap<String, String>> {
        self.shared.state.lock().unwrap().assumed.clone()
    }

    /// The SSM commands sent through the model, in the order they were sent.
    /// The deregistrations from target groups and the terminations the model carried out,
    /// in order: (operation, instance ids).
    pub fn journal(&self) -> Vec<(String, Vec<String>)> {
        self.shared.state.lock().unwrap().journal.clone()
    }

    pub fn sent_commands(&self) -> Vec<SentCommand> {
        let state = self.shared.state.lock().unwrap();
        state
            .sent
            .iter()
            .map(|id| state.commands[id].0.clone())
            .collect()
    }
}

struct Shared {
    model: Model,
    upstream: String,
    rng: Mutex<fastrand::Rng>,
    state: Mutex<State>,
    stats: Mutex<BTreeMap<String, OpStats>>,
}

/// What the model did with the calls of one operation (`service:Operation`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpStats {
    /// Requests received, retries included.
    pub calls: u64,
    pub forwarded: u64,
    pub throttled: u64,
    /// Injected faults: throttling, 500, 503 or a dropped connection.
    pub faults: u64,
    /// Carried out, answer dropped.
    pub lost: u64,
    /// Answered by the model in AWS's words: NotFound, DependencyViolation, a replayed
    /// ClientToken, PriorRequestNotComplete, ...
    pub modelled: u64,
    /// moto's time to answer each forwarded call.
    pub service: Vec<Duration>,
}

/// The model's counts, per operation.
#[derive(Debug, Clone, Default)]
pub struct Stats(pub BTreeMap<String, OpStats>);

impl Stats {
    pub fn total(&self, f: impl Fn(&OpStats) -> u64) -> u64 {
        self.0.values().map(f).sum()
    }

    pub fn op(&self, op: &str) -> OpStats {
        self.0.get(op).cloned().unwrap_or_default()
    }

    /// `calls, throttled, faults, lost, modelled`, and the throttled calls by operation.
    pub fn summary(&self) -> String {
        let throttled: Vec<String> = self
            .0
            .iter()
            .filter(|(_, s)| s.throttled > 0)
            .map(|(op, s)| format!("{op}×{}", s.throttled))
            .collect();
        format!(
            "{} calls, {} throttled ({}), {} faults, {} answers lost, {} answered by the model",
            self.total(|s| s.calls),
            self.total(|s| s.throttled),
            if throttled.is_empty() {
                "-".to_owned()
            } else {
                throttled.join(" ")
            },
            self.total(|s| s.faults),
            self.total(|s| s.lost),
            self.total(|s| s.modelled),
        )
    }

    /// The median of moto's service time for `op`, if it was called.
    pub fn median_service(&self, op: &str) -> Option<Duration> {
        let mut times = self.0.get(op)?.service.clone();
        if times.is_empty() {
            return None;
        }
        times.sort();
        Some(times[times.len() / 2])
    }

    /// The counts since `earlier`, a snapshot of the same model.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let mut out = BTreeMap::new();
        for (op, s) in &self.0 {
            let e = earlier.0.get(op).cloned().unwrap_or_default();
            out.insert(
                op.clone(),
                OpStats {
                    calls: s.calls - e.calls,
                    forwarded: s.forwarded - e.forwarded,
                    throttled: s.throttled - e.throttled,
                    faults: s.faults - e.faults,
                    lost: s.lost - e.lost,
                    modelled: s.modelled - e.modelled,
                    service: s.service[e.service.len().min(s.service.len())..].to_vec(),
                },
            );
        }
        Stats(out)
    }
}

impl AwsModel {
    pub fn stats(&self) -> Stats {
        Stats(self.shared.stats.lock().unwrap().clone())
    }

    pub fn model(&self) -> &Model {
        &self.shared.model
    }

    /// Forgets what the model saw and fills every bucket, as for an account quiet for a
    /// while (moto itself is reset separately).
    pub fn reset(&self) {
        *self.shared.state.lock().unwrap() = State::default();
    }

    /// Makes RunInstances refuse `profile` for the propagation window from now, as if it had
    /// just been created (for profiles created straight on moto).
    pub fn new_instance_profile(&self, profile: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .profiles
            .insert(profile.to_owned(), Instant::now());
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A ClientToken's first answer, as EC2 remembers it.
#[derive(Debug, Clone)]
struct TokenUse {
    params: String,
    answer: String,
    instances: Vec<String>,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    /// Ids made through the model, when.
    created: BTreeMap<String, Instant>,
    /// Instances launched through the model, when.
    launched: BTreeMap<String, Instant>,
    /// Instances launched with one of the model's impaired instance types.
    impaired: BTreeSet<String>,
    /// Instances terminated through the model, when.
    terminated: BTreeMap<String, Instant>,
    /// The groups and subnet of each instance launched through the model.
    uses: BTreeMap<String, Vec<String>>,
    tokens: BTreeMap<String, TokenUse>,
    profiles: BTreeMap<String, Instant>,
    /// Route53: the last change to each zone, and when each change was submitted.
    zone_changed: BTreeMap<String, Instant>,
    changes: BTreeMap<String, Instant>,
    /// Route53's caller references, by account.
    caller_references: BTreeSet<(String, String)>,
    /// The account of each access key seen (moto's STS says).
    accounts: BTreeMap<String, String>,
    /// AssumeRole requests, in order.
    assumed: Vec<BTreeMap<String, String>>,
    /// Requests whose answer was lost once (`lose_once`), by path and body.
    lost_once: BTreeSet<(String, Vec<u8>)>,
    /// Whether each VPC has DNS hostnames on, as moto said.
    dns_hostnames: BTreeMap<String, bool>,
    /// SSM commands by id, and when each was sent; their ids in the order sent.
    commands: BTreeMap<String, (SentCommand, Instant)>,
    sent: Vec<String>,
    /// Instances launched with one of the model's failing instance types.
    failing: BTreeSet<String>,
    /// Instances launched into a placement group or with a tenancy, which moto drops:
    /// (group, tenancy) as RunInstances asked.
    placements: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Detailed monitoring turned on or off since launch (moto has no Monitor/Unmonitor).
    monitoring: BTreeMap<String, bool>,
    /// CloudFormation: the operation each stack (by id) or change set (by ARN) is under,
    /// since when.
    stack_ops: BTreeMap<String, StackOp>,
    /// ELB: each target group's health check interval, healthy threshold and drain time
    /// (seconds), by ARN.
    target_groups: BTreeMap<String, (f64, f64, f64)>,
    /// ELB: each target (group ARN, instance id): when it was registered, and deregistered.
    targets: BTreeMap<(String, String), (Instant, Option<Instant>)>,
    /// ELB: the groups and subnets of each balancer made through the model, by ARN: busy
    /// (`DependencyViolation`) while it lives.
    balancer_uses: BTreeMap<String, Vec<String>>,
    /// ELB: each listener made through the model: its balancer and the target group it
    /// forwards to. A target group no live balancer's listener forwards to is not in use.
    listeners: BTreeMap<String, (String, String)>,
    /// Groups and subnets a balancer was deleted from, when: its network interfaces linger.
    freed: BTreeMap<String, Instant>,
    /// Deregistrations and terminations, in order: (operation, instance ids).
    journal: Vec<(String, Vec<String>)>,
}

/// An operation CloudFormation works on for [`Model::stack_work`].
#[derive(Debug, Clone)]
struct StackOp {
    /// `CREATE`, `UPDATE`, `DELETE`.
    verb: &'static str,
    since: Instant,
    /// A create moto refused for a resource (it answers at once, with the resource's error,
    /// and leaves the stack `CREATE_IN_PROGRESS`): AWS accepts it, and rolls it back.
    failed: Option<StackFailure>,
}

/// A create the model rolls back. moto keeps the stack, `CREATE_IN_PROGRESS`, and answers
/// every describe of it with the resource's error again, even once it is deleted: the model
/// describes it itself.
#[derive(Debug, Clone)]
struct StackFailure {
    stack_name: String,
    logical_id: String,
    resource_type: String,
    reason: String,
    /// As CreateStack gave them: `(key, value)`.
    parameters: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    /// Deleted since (DeleteStack).
    deleted: bool,
}

impl State {
    /// Takes `cost` from each bucket, or none if any lacks tokens.
    fn take(&mut self, model: &Model, wants: &[(String, &'static str, f64)]) -> bool {
        let Some(rates) = &model.rates else {
            return true;
        };
        let now = Instant::now();
        let mut ok = true;
        for (key, category, cost) in wants {
            let r = rates[category];
            let b = self.buckets.entry(key.clone()).or_insert(Bucket {
                tokens: r.capacity,
                at: now,
            });
            b.tokens =
                (b.tokens + now.duration_since(b.at).as_secs_f64() * r.refill).min(r.capacity);
            b.at = now;
            // A request that costs more than the bucket can ever hold still goes once the
            // bucket is full (EC2 would refuse it outright; heet never asks for that).
            if b.tokens < cost.min(r.capacity) {
                ok = false;
            }
        }
        if ok {
            for (key, _, cost) in wants {
                if let Some(b) = self.buckets.get_mut(key) {
                    b.tokens -= cost;
                }
            }
        }
        ok
    }

    fn within(at: Option<&Instant>, window: Duration) -> bool {
        at.is_some_and(|t| t.elapsed() < window)
    }

    fn hidden(&self, id: &str, model: &Model) -> bool {
        State::within(self.created.get(id), model.consistency)
    }
}

/// One HTTP request as the proxy reads it.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The AWS service the request is signed for.
    fn service(&self) -> String {
        self.header("authorization")
            .and_then(|v| v.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("")
            .to_owned()
    }

    fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// The operation a request calls, as `service:Operation`.
fn operation(req: &Request, form: &[(String, String)]) -> String {
    let service = req.service();
    let op = match service.as_str() {
        "ssm" => req
            .header("x-amz-target")
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or("?")
            .to_owned(),
        "route53" => route53_operation(&req.method, &req.path).to_owned(),
        _ => form
            .iter()
            .find(|(k, _)| k == "Action")
            .map_or_else(|| "?".to_owned(), |(_, v)| v.clone()),
    };
    format!("{service}:{op}")
}

fn route53_operation(method: &str, path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", [_, "hostedzonesbyname"]) => "ListHostedZonesByName",
        ("POST", [_, "hostedzone"]) => "CreateHostedZone",
        ("GET", [_, "hostedzone"]) => "ListHostedZones",
        ("GET", [_, "hostedzone", _]) => "GetHostedZone",
        ("DELETE", [_, "hostedzone", _]) => "DeleteHostedZone",
        ("POST", [_, "hostedzone", _, "rrset"]) => "ChangeResourceRecordSets",
        ("GET", [_, "hostedzone", _, "rrset"]) => "ListResourceRecordSets",
        ("GET", [_, "change", _]) => "GetChange",
        _ => "Other",
    }
}

/// The buckets a call takes tokens from: (bucket, category, cost).
fn buckets(op: &str, form: &[(String, String)]) -> Vec<(String, &'static str, f64)> {
    let (service, action) = op.split_once(':').unwrap_or(("", op));
    let one = |key: &str, category: &'static str| vec![(key.to_owned(), category, 1.0)];
    match service {
        "ec2" => {
            let count = |prefix: &str| form.iter().filter(|(k, _)| k.starts_with(prefix)).count();
            match action {
                "RunInstances" => {
                    let n = form
                        .iter()
                        .find(|(k, _)| k == "MaxCount")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(1.0);
                    vec![
                        (op.to_owned(), "ec2:RunInstances", 1.0),
                        (format!("{op}/instances"), "ec2:RunInstances/instances", n),
                    ]
                }
                "StartInstances" => one(op, "ec2:RunInstances"),
                "TerminateInstances" => vec![
                    (op.to_owned(), "ec2:TerminateInstances", 1.0),
                    (
                        format!("{op}/instances"),
                        "ec2:TerminateInstances/instances",
                        count("InstanceId.") as f64,
                    ),
                ],
                "CreateTags" | "DeleteTags" => one(op, "ec2:tags"),
                "CreateVolume" | "DeleteVolume" => one(op, "ec2:volumes"),
                "AuthorizeSecurityGroupIngress"
                | "AuthorizeSecurityGroupEgress"
                | "RevokeSecurityGroupIngress"
                | "RevokeSecurityGroupEgress"
                | "CreateKeyPair" => one(op, "ec2:resource-intensive"),
                a if a == "DescribeInstances"
                    && count("Filter.") == 0
                    && count("InstanceId.") == 0
                    && count("MaxResults") == 0 =>
                {
                    one(op, "ec2:describe-unfiltered")
                }
                a if a.starts_with("Describe") || a.starts_with("Get") || a.starts_with("List") => {
                    one(op, "ec2:describe")
                }
                _ => one(op, "ec2:mutating"),
            }
        }
        "ssm" => match action {
            "GetParameter" | "GetParameters" | "GetParametersByPath" => one("ssm:read", "ssm:read"),
            "PutParameter" | "DeleteParameter" | "DeleteParameters" => {
                one("ssm:write", "ssm:write")
            }
            _ => Vec::new(),
        },
        "route53" => one("route53", "route53"),
        "elasticloadbalancing" => {
            let category = match action {
                "CreateLoadBalancer" | "SetSubnets" => "elb:resource-intensive",
                "RegisterTargets" | "DeregisterTargets" => "elb:registration",
                a if a.starts_with("Describe") => "elb:describe",
                _ => "elb:mutating",
            };
            vec![
                ("elb:account".to_owned(), "elb:account", 1.0),
                (category.to_owned(), category, 1.0),
            ]
        }
        _ => Vec::new(),
    }
}

/// An answer to send, or a connection to drop.
enum Answer {
    Send {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    Drop,
}

impl Answer {
    fn xml(status: u16, body: String) -> Answer {
        Answer::Send {
            status,
            content_type: "text/xml".into(),
            body: body.into_bytes(),
        }
    }
}

/// An error answer as each protocol gives it.
fn error(service: &str, status: u16, code: &str, message: &str) -> Answer {
    let message = xml_escape(message);
    match service {
        "ssm" => Answer::Send {
            status,
            content_type: "application/x-amz-json-1.1".into(),
            body: serde_json::json!({"__type": code, "message": message})
                .to_string()
                .into_bytes(),
        },
        "route53" | "iam" | "sts" => Answer::xml(
            status,
            format!(
                "<?xml version=\"1.0\"?><ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>model</RequestId></ErrorResponse>"
            ),
        ),
        _ => Answer::xml(
            status,
            format!(
                "<?xml version=\"1.0\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>model</RequestID></Response>"
            ),
        ),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Throttling, in each service's words.
fn throttled(service: &str) -> Answer {
    match service {
        "ssm" | "elasticloadbalancing" => {
            error(service, 400, "ThrottlingException", "Rate exceeded")
        }
        "route53" => error(service, 400, "Throttling", "Rate exceeded"),
        _ => error(
            service,
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
    }
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: model\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).is_ok() && conn.write_all(body).is_ok()
}

fn serve(conn: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let agent = agent();
    while let Some(req) = read_request(&mut reader) {
        match handle(shared, &agent, req) {
            Answer::Send {
                status,
                content_type,
                body,
            } => {
                if !respond(&mut conn, status, &content_type, &body) {
                    return;
                }
            }
            Answer::Drop => {
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

fn count(shared: &Shared, op: &str, f: impl FnOnce(&mut OpStats)) {
    f(shared
        .stats
        .lock()
        .unwrap()
        .entry(op.to_owned())
        .or_default());
}

fn handle(shared: &Shared, agent: &ureq::Agent, req: Request) -> Answer {
    let model = &shared.model;
    let service = req.service();
    let form = if matches!(service.as_str(), "ssm" | "route53") {
        Vec::new()
    } else {
        req.form()
    };
    let op = operation(&req, &form);
    count(shared, &op, |s| s.calls += 1);

    if model.fault_percent > 0 {
        let (fault, kind) = {
            let mut rng = shared.rng.lock().unwrap();
            (rng.u32(0..100) < model.fault_percent, rng.u8(0..4))
        };
        if fault {
            count(shared, &op, |s| s.faults += 1);
            return match kind {
                0 => throttled(&service),
                1 => error(&service, 500, "InternalError", "injected by the model"),
                2 => error(&service, 503, "ServiceUnavailable", "injected by the model"),
                _ => Answer::Drop,
            };
        }
    }
    if model.is_raw() {
        return forward(shared, agent, &op, &req, None);
    }
    if !shared
        .state
        .lock()
        .unwrap()
        .take(model, &buckets(&op, &form))
    {
        count(shared, &op, |s| s.throttled += 1);
        return throttled(&service);
    }
    let latency = if op == "ec2:RunInstances" {
        model.run_latency
    } else {
        model.latency
    };
    std::thread::sleep(latency);

    let answer = match service.as_str() {
        "ec2" => ec2(shared, agent, &op, &req, &form),
        "route53" => route53(shared, agent, &op, &req),
        "ssm" if matches!(op.as_str(), "ssm:SendCommand" | "ssm:GetCommandInvocation") => {
            run_command(shared, agent, &op, &req)
        }
        "iam" => {
            if matches!(
                op.as_str(),
                "iam:CreateInstanceProfile" | "iam:AddRoleToInstanceProfile"
            ) && let Some((_, name)) = form.iter().find(|(k, _)| k == "InstanceProfileName")
            {
                shared
                    .state
                    .lock()
                    .unwrap()
                    .profiles
                    .insert(name.clone(), Instant::now());
            }
            forward(shared, agent, &op, &req, None)
        }
        "sts" if op == "sts:AssumeRole" => assume_role(shared, agent, &op, &req, &form),
        "cloudformation" => cloudformation(shared, agent, &op, &req, &form),
        "elasticloadbalancing" => elb(shared, agent, &op, &req, &form),
        _ => forward(shared, agent, &op, &req, None),
    };
    let lose = model.lost_percent > 0
        && model.lost_ops.contains(&op)
        && matches!(&answer, Answer::Send { status: 200, .. })
        && shared.rng.lock().unwrap().u32(0..100) < model.lost_percent
        && (!model.lose_once
            || shared
                .state
                .lock()
                .unwrap()
                .lost_once
                .insert((req.path.clone(), req.body.clone())));
    if lose {
        count(shared, &op, |s| s.lost += 1);
        return Answer::Drop;
    }
    answer
}

/// Sends the request to moto (with `body` instead of the request's own, if given).
fn forward(
    shared: &Shared,
    agent: &ureq::Agent,
    op: &str,
    req: &Request,
    body: Option<Vec<u8>>,
) -> Answer {
    let mut builder = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("{}{}", shared.upstream, req.path));
    for (k, v) in &req.headers {
        if !["host", "content-length", "connection", "transfer-encoding"]
            .contains(&k.to_ascii_lowercase().as_str())
        {
            builder = builder.header(k, v);
        }
    }
    let Ok(request) = builder.body(body.unwrap_or_else(|| req.body.clone())) else {
        return Answer::Drop;
    };
    let started = Instant::now();
    let Ok(mut response) = agent.run(request) else {
        return Answer::Drop;
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    let Ok(body) = response.body_mut().read_to_vec() else {
        return Answer::Drop;
    };
    let took = started.elapsed();
    count(shared, op, |s| {
        s.forwarded += 1;
        s.service.push(took);
    });
    Answer::Send {
        status,
        content_type,
        body,
    }
}

/// A call the model answers itself, in AWS's words, counted as such.
fn modelled(shared: &Shared, op: &str, answer: Answer) -> Answer {
    count(shared, op, |s| s.modelled += 1);
    answer
}

/// SSM Run Command as AWS runs it: SendCommand recorded (and answered naming only the
/// instances it named), GetCommandInvocation unknown, then in progress, then failed on the
/// model's failing instances or moto's `Success`.
fn run_command(shared: &Shared, agent: &ureq::Agent, op: &str, req: &Request) -> Answer {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let first = |v: &serde_json::Value| strings(v).into_iter().next();
    if op == "ssm:SendCommand" {
        let (content_type, answer_body) = match forward(shared, agent, op, req, None) {
            Answer::Send {
                status: 200,
                content_type,
                body,
            } => (content_type, body),
            other => return other,
        };
        let mut out: serde_json::Value = serde_json::from_slice(&answer_body).unwrap_or_default();
        let ids = strings(&body["InstanceIds"]);
        let command_id = out["Command"]["CommandId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        out["Command"]["InstanceIds"] = serde_json::json!(ids);
        out["Command"]["TargetCount"] = serde_json::json!(ids.len());
        let params = &body["Parameters"];
        let sent = SentCommand {
            command_id: command_id.clone(),
            instance_ids: ids,
            commands: strings(&params["commands"]),
            execution_timeout: first(&params["executionTimeout"]),
            working_dir: first(&params["workingDirectory"]),
            comment: body["Comment"].as_str().unwrap_or_default().to_owned(),
            max_concurrency: body["MaxConcurrency"].as_str().map(str::to_owned),
            max_errors: body["MaxErrors"].as_str().map(str::to_owned),
        };
        let mut state = shared.state.lock().unwrap();
        state.sent.push(command_id.clone());
        state.commands.insert(command_id, (sent, Instant::now()));
        return Answer::Send {
            status: 200,
            content_type,
            body: out.to_string().into_bytes(),
        };
    }
    let model = &shared.model;
    let command_id = body["CommandId"].as_str().unwrap_or_default();
    let instance_id = body["InstanceId"].as_str().unwrap_or_default();
    let (named, since, failing) = {
        let state = shared.state.lock().unwrap();
        match state.commands.get(command_id) {
            None => return forward(shared, agent, op, req, None),
            Some((sent, at)) => (
                sent.instance_ids.iter().any(|i| i == instance_id),
                at.elapsed(),
                state.failing.contains(instance_id),
            ),
        }
    };
    if !named || since < model.invocation_delay {
        return modelled(
            shared,
            op,
            error(
                "ssm",
                400,
                "InvocationDoesNotExist",
                "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation",
            ),
        );
    }
    let invocation = |status: &str, code: i64, output: &str, error: &str| {
        modelled(
            shared,
            op,
            Answer::Send {
                status: 200,
                content_type: "application/x-amz-json-1.1".into(),
                body: serde_json::json!({
                    "CommandId": command_id,
                    "InstanceId": instance_id,
                    "DocumentName": "AWS-RunShellScript",
                    "PluginName": "aws:runShellScript",
                    "Status": status,
                    "StatusDetails": status,
                    "ResponseCode": code,
                    "StandardOutputContent": output,
                    "StandardErrorContent": error,
                })
                .to_string()
                .into_bytes(),
            },
        )
    };
    if since < model.invocation_delay + model.command_run {
        invocation("InProgress", -1, "", "")
    } else if failing {
        invocation(
            "Failed",
            1,
            "started\n",
            &format!(
                "the script failed on {instance_id} (the model's failing instance type)\nfailed to run commands: exit status 1"
            ),
        )
    } else {
        forward(shared, agent, op, req, None)
    }
}

/// The EC2 NotFound code for an id, by its prefix.
fn not_found(id: &str) -> &'static str {
    match id.split('-').next().unwrap_or("") {
        "i" => "InvalidInstanceID.NotFound",
        "sg" => "InvalidGroup.NotFound",
        "subnet" => "InvalidSubnetID.NotFound",
        "vpc" => "InvalidVpcID.NotFound",
        "igw" => "InvalidInternetGatewayID.NotFound",
        _ => "InvalidID.NotFound",
    }
}

/// The form with `instance-state-name` filters taken out (moto's states are not the model's),
/// renumbered; and the states they asked for.
fn without_state_filter(form: &[(String, String)]) -> (Vec<(String, String)>, Option<Vec<String>>) {
    let mut filters: BTreeMap<u32, (Option<String>, Vec<String>)> = BTreeMap::new();
    let mut rest = Vec::new();
    for (k, v) in form {
        let mut parts = k.splitn(3, '.');
        if let (Some("Filter"), Some(n), Some(field)) = (parts.next(), parts.next(), parts.next())
            && let Ok(n) = n.parse::<u32>()
        {
            let f = filters.entry(n).or_default();
            if field == "Name" {
                f.0 = Some(v.clone());
            } else {
                f.1.push(v.clone());
            }
            continue;
        }
        rest.push((k.clone(), v.clone()));
    }
    let mut states = None;
    let mut n = 0;
    for (name, values) in filters.into_values() {
        if name.as_deref() == Some("instance-state-name") {
            states = Some(values);
            continue;
        }
        n += 1;
        if let Some(name) = name {
            rest.push((format!("Filter.{n}.Name"), name));
        }
        for (i, v) in values.into_iter().enumerate() {
            rest.push((format!("Filter.{n}.Value.{}", i + 1), v));
        }
    }
    (rest, states)
}

fn encode(form: &[(String, String)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
        .into_bytes()
}

fn ec2(
    shared: &Shared,
    agent: &ureq::Agent,
    op: &str,
    req: &Request,
    form: &[(String, String)],
) -> Answer {
    let model = &shared.model;
    let action = op.trim_start_matches("ec2:");
    let describe = action.starts_with("Describe");
    // Calls naming an id EC2 does not know yet.
    {
        let state = shared.state.lock().unwrap();
        let named = form.iter().filter(|(k, _)| {
            if describe {
                [
                    "InstanceId.",
                    "GroupId.",
                    "SubnetId.",
                    "VpcId.",
                    "InternetGatewayId.",
                ]
                .iter()
                .any(|p| k.starts_with(p))
            } else {
                !(k.starts_with("Filter.")
                    || k.starts_with("TagSpecification")
                    || k.starts_with("Tag."))
            }
        });
        for (_, v) in named {
            if state.hidden(v, model) {
                return modelled(
                    shared,
                    op,
                    error(
                        "ec2",
                        400,
                        not_found(v),
                        &format!("The ID '{v}' does not exist"),
                    ),
                );
            }
        }
    }
    match action {
        "RunInstances" => run_instances(shared, agent, op, req, form),
        // moto has no detailed monitoring to turn on or off: the model keeps it.
        "MonitorInstances" | "UnmonitorInstances" => {
            let on = action == "MonitorInstances";
            let ids: Vec<String> = form
                .iter()
                .filter(|(k, _)| k.starts_with("InstanceId."))
                .map(|(_, v)| v.clone())
                .collect();
            let mut items = String::new();
            {
                let mut state = shared.state.lock().unwrap();
                for id in &ids {
                    state.monitoring.insert(id.clone(), on);
                    items.push_str(&format!(
                        "<item><instanceId>{}</instanceId><monitoring><state>{}</state></monitoring></item>",
                        xml_escape(id),
                        if on { "pending" } else { "disabling" }
                    ));
                }
            }
            modelled(
                shared,
                op,
                Answer::xml(
                    200,
                    format!(
                        "<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>heet-model</requestId><instancesSet>{items}</instancesSet></{action}Response>"
                    ),
                ),
            )
        }
        "TerminateInstances" => {
            let answer = forward(shared, agent, op, req, None);
            if let Answer::Send { status: 200, .. } = answer {
                let mut state = shared.state.lock().unwrap();
                let mut ids = Vec::new();
                for (k, v) in form {
                    if k.starts_with("InstanceId.") {
                        state.terminated.insert(v.clone(), Instant::now());
                        ids.push(v.clone());
                    }
                }
                state.journal.push((op.to_owned(), ids));
            }
            answer
        }
        "DeleteSecurityGroup" | "DeleteSubnet" => {
            let id = form
                .iter()
                .find(|(k, _)| k == "GroupId" || k == "SubnetId")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let busy = {
                let state = shared.state.lock().unwrap();
                state.uses.iter().any(|(instance, uses)| {
                    uses.contains(&id)
                        && State::within(state.terminated.get(instance), model.dependency)
                }) || State::within(state.freed.get(&id), model.dependency)
                    || state.balancer_uses.values().any(|u| u.contains(&id))
            };
            if busy {
                return modelled(
                    shared,
                    op,
                    error(
                        "ec2",
                        400,
                        "DependencyViolation",
                        &format!("resource {id} has a dependent object"),
                    ),
                );
            }
            forward(shared, agent, op, req, None)
        }
        "ModifyVpcAttribute" => {
            if let Some((_, vpc)) = form.iter().find(|(k, _)| k == "VpcId") {
                shared.state.lock().unwrap().dns_hostnames.remove(vpc);
            }
            forward(shared, agent, op, req, None)
        }
        "DescribeInstanceStatus" => {
            let answer = forward(shared, agent, op, req, None);
            rewrite(answer, |xml| statuses_as_aws(shared, xml))
        }
        "DescribeInstances" => {
            let (stripped, states) = without_state_filter(form);
            let answer = forward(shared, agent, op, req, Some(encode(&stripped)));
            rewrite(answer, |xml| {
                instances_as_aws(
                    shared,
                    agent,
                    req.header("authorization"),
                    xml,
                    states.as_deref(),
                    Launch::No,
                )
            })
        }
        a if a.starts_with("Describe") => {
            let answer = forward(shared, agent, op, req, None);
            rewrite(answer, |xml| hide_new(shared, xml))
        }
        a if a.starts_with("Create") => {
            let answer = forward(shared, agent, op, req, None);
            if let Answer::Send {
                status: 200, body, ..
            } = &answer
                && let Ok(xml) = std::str::from_utf8(body)
                && let Ok(doc) = roxmltree::Document::parse(xml)
            {
                let id = ["groupId", "subnetId", "vpcId", "internetGatewayId"]
                    .iter()
                    .find_map(|t| doc.descendants().find(|n| n.has_tag_name(*t)))
                    .and_then(|n| n.text());
                if let Some(id) = id {
                    shared
                        .state
                        .lock()
                        .unwrap()
                        .created
                        .insert(id.to_owned(), Instant::now());
                }
            }
            answer
        }
        _ => forward(shared, agent, op, req, None),
    }
}

/// Applies `f` to a successful XML answer.
fn rewrite(answer: Answer, f: impl FnOnce(&str) -> String) -> Answer {
    match answer {
        Answer::Send {
            status: 200,
            content_type,
            body,
        } => match String::from_utf8(body) {
            Ok(xml) => Answer::Send {
                status: 200,
                content_type,
                body: f(&xml).into_bytes(),
            },
            Err(e) => Answer::Send {
                status: 200,
                content_type,
                body: e.into_bytes(),
            },
        },
        other => other,
    }
}

/// The canonical parameters of a RunInstances call, for ClientToken comparison.
fn run_params(form: &[(String, String)]) -> String {
    let mut params: Vec<&(String, String)> = form
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "ClientToken" | "Action" | "Version"))
        .collect();
    params.sort();
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn run_instances(
    shared: &Shared,
    agent: &ureq::Agent,
    op: &str,
    req: &Request,
    form: &[(String, String)],
) -> Answer {
    let model = &shared.model;
    let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let profile = get("IamInstanceProfile.Name").or_else(|| {
        get("IamInstanceProfile.Arn").map(|a| a.rsplit('/').next().unwrap_or("").to_owned())
    });
    if let Some(profile) = profile
        && State::within(
            shared.state.lock().unwrap().profiles.get(&profile),
            model.profile_propagation,
        )
    {
        return modelled(
            shared,
            op,
            error(
                "ec2",
                400,
                "InvalidParameterValue",
                &format!(
                    "Value ({profile}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
                ),
            ),
        );
    }
    let token = get("ClientToken");
    let params = run_params(form);
    if let Some(token) = &token {
        let used = shared.state.lock().unwrap().tokens.get(token).cloned();
        if let Some(used) = used {
            if used.params != params {
                return modelled(
                    shared,
                    op,
                    error(
                        "ec2",
                        400,
                        "IdempotentParameterMismatch",
                        &format!(
                            "Arguments on this idempotent request are inconsistent with arguments used in previous request(s) (client token {token})"
                        ),
                    ),
                );
            }
            if all_terminated(shared, agent, req.header("authorization"), &used.instances) {
                return modelled(
                    shared,
                    op,
                    error(
                        "ec2",
                        400,
                        "IdempotentInstanceTerminated",
                        &format!(
                            "The client token {token} was used for instances that have been terminated"
                        ),
                    ),
                );
            }
            // The first answer again, with the instances' states as they are now.
            let answer = instances_as_aws(
                shared,
                agent,
                req.header("authorization"),
                &used.answer,
                None,
                Launch::Replay,
            );
            return modelled(shared, op, Answer::xml(200, answer));
        }
    }
    let answer = forward(shared, agent, op, req, None);
    let Answer::Send {
        status: 200, body, ..
    } = &answer
    else {
        return answer;
    };
    let Ok(xml) = std::str::from_utf8(body) else {
        return answer;
    };
    let mut ids = Vec::new();
    if let Ok(doc) = roxmltree::Document::parse(xml) {
        let mut state = shared.state.lock().unwrap();
        let now = Instant::now();
        for item in instance_items(&doc) {
            let id = child_text(item, "instanceId");
            let mut uses: Vec<String> = item
                .children()
                .filter(|c| c.has_tag_name("groupSet"))
                .flat_map(|s| s.children().filter(|c| c.has_tag_name("item")))
                .map(|g| child_text(g, "groupId"))
                .collect();
            uses.push(child_text(item, "subnetId"));
            state.uses.insert(id.clone(), uses);
            state.launched.insert(id.clone(), now);
            state.created.insert(id.clone(), now);
            if get("InstanceType").is_some_and(|t| model.impaired_types.contains(&t)) {
                state.impaired.insert(id.clone());
            }
            if get("InstanceType").is_some_and(|t| model.failing_types.contains(&t)) {
                state.failing.insert(id.clone());
            }
            let (group, tenancy) = (get("Placement.GroupName"), get("Placement.Tenancy"));
            if group.is_some() || tenancy.is_some() {
                state.placements.insert(id.clone(), (group, tenancy));
            }
            ids.push(id);
        }
        if let Some(token) = token {
            state.tokens.insert(
                token,
                TokenUse {
                    params,
                    answer: xml.to_owned(),
                    instances: ids.clone(),
                },
            );
        }
    }
    // moto launches every instance without termination protection: it is set as EC2 sets
    // it, so that TerminateInstances is refused as EC2 refuses it.
    if get("DisableApiTermination").as_deref() == Some("true") {
        for id in &ids {
            let form: Vec<(String, String)> = [
                ("Action", "ModifyInstanceAttribute"),
                ("Version", "2016-11-15"),
                ("InstanceId", id.as_str()),
                ("DisableApiTermination.Value", "true"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            upstream_ec2(shared, agent, req.header("authorization"), &form);
        }
    }
    Answer::xml(
        200,
        instances_as_aws(
            shared,
            agent,
            req.header("authorization"),
            xml,
            None,
            Launch::First,
        ),
    )
}

/// Whether every one of `ids` is terminated, as moto says.
fn all_terminated(
    shared: &Shared,
    agent: &ureq::Agent,
    auth: Option<&str>,
    ids: &[String],
) -> bool {
    if ids.is_empty() {
        return false;
    }
    let mut form = vec![
        ("Action".to_owned(), "DescribeInstances".to_owned()),
        ("Version".to_owned(), "2016-11-15".to_owned()),
    ];
    for (i, id) in ids.iter().enumerate() {
        form.push((format!("InstanceId.{}", i + 1), id.clone()));
    }
    let Some(xml) = upstream_ec2(shared, agent, auth, &form) else {
        return false;
    };
    let Ok(doc) = roxmltree::Document::parse(&xml) else {
        return false;
    };
    let states: Vec<String> = instance_items(&doc)
        .map(|i| {
            i.children()
                .find(|c| c.has_tag_name("instanceState"))
                .map(|s| child_text(s, "name"))
                .unwrap_or_default()
        })
        .collect();
    !states.is_empty() && states.iter().all(|s| s == "terminated")
}

/// A call of the model's own to moto's EC2 (not counted, not throttled), in the account of
/// the caller whose request it models (`auth`, its Authorization header).
fn upstream_ec2(
    shared: &Shared,
    agent: &ureq::Agent,
    auth: Option<&str>,
    form: &[(String, String)],
) -> Option<String> {
    let default = crate::auth("ec2");
    let mut response = agent
        .post(format!("{}/", shared.upstream))
        .header("Authorization", auth.unwrap_or(&default))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(encode(form))
        .ok()?;
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .ok()?;
    Some(body)
}

/// Whether `vpc` has DNS hostnames on, asked of moto once and remembered.
fn dns_hostnames(shared: &Shared, agent: &ureq::Agent, auth: Option<&str>, vpc: &str) -> bool {
    if vpc.is_empty() {
        return true;
    }
    if let Some(on) = shared.state.lock().unwrap().dns_hostnames.get(vpc) {
        return *on;
    }
    let form = [
        ("Action", "DescribeVpcAttribute"),
        ("Version", "2016-11-15"),
        ("VpcId", vpc),
        ("Attribute", "enableDnsHostnames"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let on = upstream_ec2(shared, agent, auth, &form)
        .and_then(|xml| {
            let doc = roxmltree::Document::parse(&xml).ok()?;
            let attr = doc
                .descendants()
                .find(|n| n.has_tag_name("enableDnsHostnames"))?;
            Some(child_text(attr, "value") == "true")
        })
        .unwrap_or(true);
    shared
        .state
        .lock()
        .unwrap()
        .dns_hostnames
        .insert(vpc.to_owned(), on);
    on
}

fn instance_items<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("instancesSet"))
        .flat_map(|s| s.children().filter(|c| c.has_tag_name("item")))
}

/// The range of the text inside `n`'s child `name`, or where it would go when empty.
fn text_range(n: roxmltree::Node, name: &str) -> Option<Range<usize>> {
    let child = n.children().find(|c| c.has_tag_name(name))?;
    child
        .first_child()
        .filter(|t| t.is_text())
        .map(|t| t.range())
}

/// Edits giving an instance's `placement` the group and tenancy RunInstances asked for: a
/// value moto holds is replaced, one it leaves out is added before `</placement>`.
fn placement_as_asked(
    placement: roxmltree::Node,
    group: Option<String>,
    tenancy: Option<String>,
) -> Vec<(Range<usize>, String)> {
    let end = placement.range().end - "</placement>".len();
    let mut edits = Vec::new();
    for (tag, value) in [("groupName", group), ("tenancy", tenancy)] {
        let Some(value) = value else {
            continue;
        };
        match text_range(placement, tag) {
            Some(r) => edits.push((r, xml_escape(&value))),
            None => {
                // Not there, or there empty (`<groupName/>`): a whole element of ours.
                if let Some(n) = placement.children().find(|c| c.has_tag_name(tag)) {
                    edits.push((n.range(), String::new()));
                }
                edits.push((end..end, format!("<{tag}>{}</{tag}>", xml_escape(&value))));
            }
        }
    }
    edits
}

fn splice(src: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|e| std::cmp::Reverse(e.0.start));
    let mut out = src.to_owned();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    out
}

/// Which answer [`instances_as_aws`] rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// A describe.
    No,
    /// RunInstances' own answer: every instance pending, none hidden.
    First,
    /// RunInstances' answer replayed for its ClientToken: none hidden.
    Replay,
}

/// Instances as AWS would describe them now: new ones hidden for the consistency window
/// (not in RunInstances' answers), `pending` with no public DNS name for the pending window,
/// `shutting-down` after termination, no public DNS name in VPCs without DNS hostnames; then
/// only those in `states`, when given.
fn instances_as_aws(
    shared: &Shared,
    agent: &ureq::Agent,
    auth: Option<&str>,
    xml: &str,
    states: Option<&[String]>,
    launch: Launch,
) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let model = &shared.model;
    let mut edits = Vec::new();
    for set in doc.descendants().filter(|n| n.has_tag_name("instancesSet")) {
        let items: Vec<_> = set.children().filter(|c| c.has_tag_name("item")).collect();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        for item in &items {
            let id = child_text(*item, "instanceId");
            let vpc = child_text(*item, "vpcId");
            let state_node = item.children().find(|c| c.has_tag_name("instanceState"));
            let moto_state = state_node
                .map(|s| child_text(s, "name"))
                .unwrap_or_default();
            let (hidden, launched, terminated) = {
                let st = shared.state.lock().unwrap();
                (
                    launch == Launch::No && st.hidden(&id, model),
                    st.launched.get(&id).copied(),
                    st.terminated.get(&id).copied(),
                )
            };
            if hidden {
                removed.push(*item);
                continue;
            }
            let now_state = match moto_state.as_str() {
                "running" | "pending"
                    if launch == Launch::First
                        || State::within(launched.as_ref(), model.pending) =>
                {
                    "pending"
                }
                "terminated" if State::within(terminated.as_ref(), model.shutting_down) => {
                    "shutting-down"
                }
                s => s,
            }
            .to_owned();
            if let Some(states) = states
                && !states.contains(&now_state)
            {
                removed.push(*item);
                continue;
            }
            let mut e = Vec::new();
            if now_state != moto_state
                && let Some(s) = state_node
            {
                let code = match now_state.as_str() {
                    "pending" => "0",
                    "shutting-down" => "32",
                    _ => "16",
                };
                e.extend(text_range(s, "code").map(|r| (r, code.to_owned())));
                e.extend(text_range(s, "name").map(|r| (r, now_state.clone())));
            }
            let no_dns = now_state == "pending" || !dns_hostnames(shared, agent, auth, &vpc);
            if no_dns {
                e.extend(text_range(*item, "dnsName").map(|r| (r, String::new())));
            }
            let monitored = shared.state.lock().unwrap().monitoring.get(&id).copied();
            if let (Some(on), Some(m)) = (
                monitored,
                item.children().find(|c| c.has_tag_name("monitoring")),
            ) {
                let state = if on { "enabled" } else { "disabled" };
                e.extend(text_range(m, "state").map(|r| (r, state.to_owned())));
            }
            let placed = shared.state.lock().unwrap().placements.get(&id).cloned();
            if let (Some((group, tenancy)), Some(placement)) = (
                placed,
                item.children().find(|c| c.has_tag_name("placement")),
            ) {
                e.extend(placement_as_asked(placement, group, tenancy));
            }
            changed.push(e);
        }
        let reservation = set
            .parent()
            .filter(|p| p.has_tag_name("item") && launch == Launch::No);
        match reservation {
            Some(r) if !items.is_empty() && removed.len() == items.len() => {
                edits.push((r.range(), String::new()));
            }
            _ => {
                edits.extend(removed.iter().map(|i| (i.range(), String::new())));
                edits.extend(changed.into_iter().flatten());
            }
        }
    }
    splice(xml, edits)
}

/// Status checks as AWS would report them now: none while an instance is pending (it is
/// not running yet), `initializing` for the status-check window once it runs, then `ok`, or
/// `impaired` (the instance check) for an instance of an impaired type.
fn statuses_as_aws(shared: &Shared, xml: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let model = &shared.model;
    let state = shared.state.lock().unwrap();
    let mut edits = Vec::new();
    for set in doc
        .descendants()
        .filter(|n| n.has_tag_name("instanceStatusSet"))
    {
        for item in set.children().filter(|c| c.has_tag_name("item")) {
            let id = child_text(item, "instanceId");
            let launched = state.launched.get(&id);
            if State::within(launched, model.pending) {
                edits.push((item.range(), String::new()));
                continue;
            }
            let checking = State::within(launched, model.pending + model.status_checks);
            for (check, node) in ["systemStatus", "instanceStatus"].iter().filter_map(|t| {
                item.children()
                    .find(|c| c.has_tag_name(*t))
                    .map(|n| (*t, n))
            }) {
                let status = if checking {
                    "initializing"
                } else if check == "instanceStatus" && state.impaired.contains(&id) {
                    "impaired"
                } else {
                    continue;
                };
                edits.extend(text_range(node, "status").map(|r| (r, status.to_owned())));
            }
        }
    }
    splice(xml, edits)
}

/// Other describes: items made within the consistency window are left out.
fn hide_new(shared: &Shared, xml: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let sets = [
        ("securityGroupInfo", "groupId"),
        ("subnetSet", "subnetId"),
        ("vpcSet", "vpcId"),
        ("internetGatewaySet", "internetGatewayId"),
    ];
    let state = shared.state.lock().unwrap();
    let mut edits = Vec::new();
    for (set, field) in sets {
        for s in doc.descendants().filter(|n| n.has_tag_name(set)) {
            for item in s.children().filter(|c| c.has_tag_name("item")) {
                if state.hidden(&child_text(item, field), &shared.model) {
                    edits.push((item.range(), String::new()));
                }
            }
        }
    }
    drop(state);
    splice(xml, edits)
}

/// A Route53 change, as the request spells it.
struct RecordChange {
    action: String,
    name: String,
    kind: String,
}

/// STS's AssumeRole, recorded; refused as AWS refuses it when the model names the roles that
/// trust the callers (`Model::trusting`): another role, or a missing or wrong external id.
fn assume_role(
    shared: &Shared,
    agent: &ureq::Agent,
    op: &str,
    req: &Request,
    form: &[(String, String)],
) -> Answer {
    let asked: BTreeMap<String, String> = form.iter().cloned().collect();
    shared.state.lock().unwrap().assumed.push(asked.clone());
    if let Some(trusted) = &shared.model.trusted_roles {
        let arn = asked.get("RoleArn").cloned().unwrap_or_default();
        let allowed = trusted
            .iter()
            .any(|(role, id)| *role == arn && id.as_ref() == asked.get("ExternalId"));
        if !allowed {
            return modelled(
                shared,
                op,
                error(
                    "sts",
                    403,
                    "AccessDenied",
                    &format!(
                        "User is not authorized to perform: sts:AssumeRole on resource: {arn}"
                    ),
                ),
            );
        }
    }
    forward(shared, agent, op, req, None)
}

/// The account the caller of `req` acts in: what moto's STS says of its access key (the
/// default account's key, or credentials an AssumeRole gave), asked once per key.
fn account_of(shared: &Shared, agent: &ureq::Agent, req: &Request) -> String {
    let auth = req.header("authorization").unwrap_or_default().to_owned();
    let key = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_owned();
    if let Some(account) = shared.state.lock().unwrap().accounts.get(&key) {
        return account.clone();
    }
    let answer = agent
        .post(format!("{}/", shared.upstream))
        .header("Authorization", auth.replace("/route53/", "/sts/"))
        .send_form([("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]);
    let account = answer
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .map(|xml| crate::xml_text(&xml, "Account"))
        .unwrap_or_default();
    // Only an answer is kept: a key moto could not place is asked about again.
    if !account.is_empty() {
        shared
            .state
            .lock()
            .unwrap()
            .accounts
            .insert(key, account.clone());
    }
    account
}

fn route53(shared: &Shared, agent: &ureq::Agent, op: &str, req: &Request) -> Answer {
    let model = &shared.model;
    let body = String::from_utf8_lossy(&req.body).into_owned();
    match op {
        "route53:CreateHostedZone" => {
            let reference = roxmltree::Document::parse(&body)
                .ok()
                .and_then(|d| {
                    d.descendants()
                        .find(|n| n.has_tag_name("CallerReference"))
                        .and_then(|n| n.text().map(str::to_owned))
                })
                .unwrap_or_default();
            // Route53 keeps caller references per account.
            let account = account_of(shared, agent, req);
            if !shared
                .state
                .lock()
                .unwrap()
                .caller_references
                .insert((account, reference.clone()))
            {
                return modelled(
                    shared,
                    op,
                    error(
                        "route53",
                        409,
                        "HostedZoneAlreadyExists",
                        &format!(
                            "A hosted zone has already been created with the specified caller reference ({reference})"
                        ),
                    ),
                );
            }
            forward(shared, agent, op, req, None)
        }
        "route53:ChangeResourceRecordSets" => {
            let zone = req
                .path
                .trim_matches('/')
                .split('/')
                .nth(2)
                .unwrap_or("")
                .to_owned();
            if State::within(
                shared.state.lock().unwrap().zone_changed.get(&zone),
                model.processing,
            ) {
                return modelled(
                    shared,
                    op,
                    error(
                        "route53",
                        400,
                        "PriorRequestNotComplete",
                        "The request was rejected because Route 53 was still processing a prior request.",
                    ),
                );
            }
            let changes = record_changes(&body);
            // A batch is applied in order, all or nothing: each change is checked against
            // the zone as the changes before it in the batch leave it.
            let mut records = zone_records(shared, agent, req, &zone);
            for c in &changes {
                let key = (c.name.to_ascii_lowercase(), c.kind.clone());
                let exists = records.contains(&key);
                let cname_there = records.contains(&(key.0.clone(), "CNAME".to_owned()));
                let other_there = records.iter().any(|(n, k)| *n == key.0 && k != "CNAME");
                let problem = match c.action.as_str() {
                    "DELETE" if !exists => Some(format!(
                        "Tried to delete resource record set [name='{}', type='{}'] but it was not found",
                        c.name, c.kind
                    )),
                    "CREATE" if exists => Some(format!(
                        "Tried to create resource record set [name='{}', type='{}'] but it already exists",
                        c.name, c.kind
                    )),
                    // A CNAME shares its name with no other record.
                    "CREATE" | "UPSERT" if c.kind == "CNAME" && other_there => Some(format!(
                        "RRSet of type CNAME with DNS name {}. is not permitted as it conflicts with other records with the same DNS name in zone",
                        c.name
                    )),
                    "CREATE" | "UPSERT" if c.kind != "CNAME" && cname_there => Some(format!(
                        "RRSet of type {} with DNS name {}. is not permitted because a conflicting RRSet of type CNAME with the same DNS name already exists in zone",
                        c.kind, c.name
                    )),
                    _ => None,
                };
                if let Some(message) = problem {
                    return modelled(
                        shared,
                        op,
                        error("route53", 400, "InvalidChangeBatch", &message),
                    );
                }
                if c.action == "DELETE" {
                    records.remove(&key);
                } else {
                    records.insert(key);
                }
            }
            let answer = forward(shared, agent, op, req, None);
            if let Answer::Send {
                status: 200, body, ..
            } = &answer
            {
                let now = Instant::now();
                let mut state = shared.state.lock().unwrap();
                state.zone_changed.insert(zone, now);
                if let Some(id) = roxmltree::Document::parse(&String::from_utf8_lossy(body))
                    .ok()
                    .and_then(|d| {
                        d.descendants()
                            .find(|n| n.has_tag_name("Id"))
                            .and_then(|n| {
                                n.text()
                                    .map(|t| t.rsplit('/').next().unwrap_or(t).to_owned())
                            })
                    })
                {
                    state.changes.insert(id, now);
                }
            }
            answer
        }
        "route53:GetChange" => {
            let id = req
                .path
                .split('?')
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_owned();
            let pending =
                State::within(shared.state.lock().unwrap().changes.get(&id), model.insync);
            let answer = forward(shared, agent, op, req, None);
            if pending {
                rewrite(answer, |xml| xml.replace("INSYNC", "PENDING"))
            } else {
                answer
            }
        }
        _ => forward(shared, agent, op, req, None),
    }
}

fn record_changes(body: &str) -> Vec<RecordChange> {
    let Ok(doc) = roxmltree::Document::parse(body) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("Change"))
        .map(|c| {
            let set = c.children().find(|n| n.has_tag_name("ResourceRecordSet"));
            RecordChange {
                action: child_text(c, "Action"),
                name: set
                    .map(|s| child_text(s, "Name"))
                    .unwrap_or_default()
                    .trim_end_matches('.')
                    .to_owned(),
                kind: set.map(|s| child_text(s, "Type")).unwrap_or_default(),
            }
        })
        .collect()
}

/// The (name, type) of every record of `zone`, as moto holds them, every page.
fn zone_records(
    shared: &Shared,
    agent: &ureq::Agent,
    req: &Request,
    zone: &str,
) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut start: Option<(String, String)> = None;
    loop {
        let mut url = format!(
            "{}/2013-04-01/hostedzone/{zone}/rrset?maxitems=300",
            shared.upstream
        );
        if let Some((name, kind)) = &start {
            url.push_str(&format!("&name={name}&type={kind}"));
        }
        let mut call = agent.get(&url);
        if let Some(auth) = req.header("authorization") {
            call = call.header("Authorization", auth);
        }
        let Ok(mut response) = call.call() else {
            return found;
        };
        let mut xml = String::new();
        if response
            .body_mut()
            .as_reader()
            .read_to_string(&mut xml)
            .is_err()
        {
            return found;
        }
        let Ok(doc) = roxmltree::Document::parse(&xml) else {
            return found;
        };
        for set in doc
            .descendants()
            .filter(|n| n.has_tag_name("ResourceRecordSet"))
        {
            found.insert((
                child_text(set, "Name")
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                child_text(set, "Type"),
            ));
        }
        let root = doc.root_element();
        if child_text(root, "IsTruncated") != "true" {
            return found;
        }
        start = Some((
            child_text(root, "NextRecordName"),
            child_text(root, "NextRecordType"),
        ));
    }
}

/// CloudFormation as AWS runs it, where moto does everything before it answers: a stack (or
/// change set) is worked on for [`Model::stack_work`] after the call that starts it
/// (`*_IN_PROGRESS`, a new stack without outputs yet, a change set without its changes), and
/// a create that fails on one of its resources is accepted and rolled back
/// (`ROLLBACK_COMPLETE`, the resource's `CREATE_FAILED` among the stack's events), where moto
/// refuses the call with the resource's error and leaves the stack `CREATE_IN_PROGRESS`.
fn cloudformation(
    shared: &Shared,
    agent: &ureq::Agent,
    op: &str,
    req: &Request,
    form: &[(String, String)],
) -> Answer {
    let param = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let record = |id: String, verb: &'static str, failed: Option<StackFailure>| {
        shared.state.lock().unwrap().stack_ops.insert(
            id,
            StackOp {
                verb,
                since: Instant::now(),
                failed,
            },
        );
    };
    if op == "cloudformation:DescribeStacks"
        && let Some(answer) = failed_stack(shared, &param("StackName"))
    {
        return modelled(shared, op, answer);
    }
    let answer = forward(shared, agent, op, req, None);
    let (status, body) = match &answer {
        Answer::Send { status, body, .. } => (*status, String::from_utf8_lossy(body).into_owned()),
        Answer::Drop => return answer,
    };
    match op {
        "cloudformation:CreateStack" if status == 200 => {
            if let Some(id) = xml_first(&body, "StackId") {
                record(id, "CREATE", None);
            }
            answer
        }
        "cloudformation:CreateStack" if status == 400 => {
            let code = xml_first(&body, "Code").unwrap_or_default();
            // Refusals AWS makes at once too: the template, the parameters, the name.
            if code.is_empty() || code == "ValidationError" || code.starts_with("AlreadyExists") {
                return answer;
            }
            let name = param("StackName");
            // moto answers a describe of the stack with the resource's error; its list of
            // stacks under way names it. (A query-protocol call like EC2's, signed as the
            // caller's.)
            let list = [
                ("Action", "ListStacks"),
                ("Version", "2010-05-15"),
                ("StackStatusFilter.member.1", "CREATE_IN_PROGRESS"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
            let Some(id) = upstream_ec2(shared, agent, req.header("authorization"), &list)
                .and_then(|xml| {
                    let doc = roxmltree::Document::parse(&xml).ok()?;
                    let member = doc.descendants().find(|n| {
                        n.has_tag_name("member")
                            && n.children().any(|c| {
                                c.has_tag_name("StackName") && c.text() == Some(name.as_str())
                            })
                    })?;
                    member
                        .children()
                        .find(|c| c.has_tag_name("StackId"))
                        .and_then(|c| c.text())
                        .map(str::to_owned)
                })
            else {
                return answer;
            };
            let (logical_id, resource_type) = failing_resource(&param("TemplateBody"), &code);
            let reason = format!(
                "{} (Service: Ec2, Status Code: 400, Error Code: {code})",
                xml_first(&body, "Message").unwrap_or_default()
            );
            let pairs = |list: &str, key: &str, value: &str| -> Vec<(String, String)> {
                (1..)
                    .map_while(|n| {
                        let k = param(&format!("{list}.member.{n}.{key}"));
                        (!k.is_empty()).then(|| (k, param(&format!("{list}.member.{n}.{value}"))))
                    })
                    .collect()
            };
            record(
                id.clone(),
                "CREATE",
                Some(StackFailure {
                    stack_name: name,
                    logical_id,
                    resource_type,
                    reason,
                    parameters: pairs("Parameters", "ParameterKey", "ParameterValue"),
                    tags: pairs("Tags", "Key", "Value"),
                    deleted: false,
                }),
            );
            modelled(
                shared,
                op,
                Answer::xml(
                    200,
                    format!(
                        "<CreateStackResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><CreateStackResult><StackId>{}</StackId></CreateStackResult><ResponseMetadata><RequestId>model</RequestId></ResponseMetadata></CreateStackResponse>",
                        xml_escape(&id)
                    ),
                ),
            )
        }
        "cloudformation:UpdateStack" | "cloudformation:DeleteStack" if status == 200 => {
            // heet names its stacks by id here; a name would need a describe to find it.
            let id = param("StackName");
            if id.starts_with("arn:") {
                let verb = if op.ends_with("UpdateStack") {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                let failed = shared
                    .state
                    .lock()
                    .unwrap()
                    .stack_ops
                    .get(&id)
                    .and_then(|o| o.failed.clone())
                    .map(|f| StackFailure { deleted: true, ..f });
                record(id, verb, failed);
            }
            answer
        }
        "cloudformation:CreateChangeSet" if status == 200 => {
            if let Some(id) = xml_first(&body, "Id") {
                record(id, "CREATE", None);
            }
            answer
        }
        "cloudformation:DescribeStacks" => rewrite(answer, |xml| stacks_as_aws(shared, xml)),
        "cloudformation:DescribeChangeSet" => rewrite(answer, |xml| change_set_as_aws(shared, xml)),
        "cloudformation:DescribeStackEvents" => {
            rewrite(answer, |xml| stack_events_as_aws(shared, xml))
        }
        _ => answer,
    }
}

/// DescribeStacks of a stack whose create the model rolls back, by its id or (until it is
/// deleted) its name: in progress, rolled back, being deleted, deleted; none for any other.
fn failed_stack(shared: &Shared, name_or_id: &str) -> Option<Answer> {
    let ops = shared.state.lock().unwrap().stack_ops.clone();
    let (id, op, failed) = ops.iter().find_map(|(id, op)| {
        let f = op.failed.as_ref()?;
        (id == name_or_id || (f.stack_name == name_or_id && !f.deleted)).then_some((id, op, f))
    })?;
    let status = match (op.verb, op.under_way(&shared.model)) {
        ("DELETE", true) => "DELETE_IN_PROGRESS",
        ("DELETE", false) => "DELETE_COMPLETE",
        (_, true) => "CREATE_IN_PROGRESS",
        (_, false) => "ROLLBACK_COMPLETE",
    };
    let members = |list: &[(String, String)], key: &str, value: &str| -> String {
        list.iter()
            .map(|(k, v)| {
                format!(
                    "<member><{key}>{}</{key}><{value}>{}</{value}></member>",
                    xml_escape(k),
                    xml_escape(v)
                )
            })
            .collect()
    };
    Some(Answer::xml(
        200,
        format!(
            "<DescribeStacksResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><DescribeStacksResult><Stacks><member><StackId>{}</StackId><StackName>{}</StackName><Parameters>{}</Parameters><CreationTime>2026-01-01T00:00:00.000Z</CreationTime><StackStatus>{status}</StackStatus><StackStatusReason>The following resource(s) failed to create: [{}].</StackStatusReason><Tags>{}</Tags></member></Stacks></DescribeStacksResult><ResponseMetadata><RequestId>model</RequestId></ResponseMetadata></DescribeStacksResponse>",
            xml_escape(id),
            xml_escape(&failed.stack_name),
            members(&failed.parameters, "ParameterKey", "ParameterValue"),
            xml_escape(&failed.logical_id),
            members(&failed.tags, "Key", "Value"),
        ),
    ))
}

/// The text of the first element `name` in `xml`.
/// The values of a Query list (`Targets.member.N.Id`), in order.
fn members(form: &[(String, String)], list: &str, field: &str) -> Vec<String> {
    let prefix = format!("{list}.member.");
    let mut found: Vec<(u32, String)> = form
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(&prefix)?;
            let (n, tail) = match rest.split_once('.') {
                Some((n, tail)) => (n, tail),
                None => (rest, ""),
            };
            (tail == field).then(|| Some((n.parse().ok()?, v.clone())))?
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v)| v).collect()
}

/// Elastic Load Balancing as AWS runs it where moto does not: a registered target is
/// `unused` while no live balancer's listener forwards to its group, else `initial` until
/// its health checks pass (its group's interval times its healthy threshold, scaled by
/// [`Model::elb_scale`]), then `healthy`, or `unhealthy` on an impaired instance; registered
/// again, it keeps its state; a deregistered one is `draining` for its group's deregistration
/// delay. A balancer's groups and subnets are busy (`DependencyViolation`) while it lives,
/// and for [`Model::dependency`] after it is deleted or leaves a subnet (its network
/// interfaces linger). A health check's timeout must be shorter than its interval.
fn elb(
    shared: &Shared,
    agent: &ureq::Agent,
    op: &str,
    req: &Request,
    form: &[(String, String)],
) -> Answer {
    let model = &shared.model;
    let param = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let secs = |s: String, default: f64| s.parse::<f64>().unwrap_or(default);
    // A health check's timeout (given, else 5 s) must be shorter than its interval.
    if matches!(
        op,
        "elasticloadbalancing:CreateTargetGroup" | "elasticloadbalancing:ModifyTargetGroup"
    ) && let Ok(interval) = param("HealthCheckIntervalSeconds").parse::<f64>()
        && secs(param("HealthCheckTimeoutSeconds"), 5.0) >= interval
    {
        return modelled(
            shared,
            op,
            error(
                "elasticloadbalancing",
                400,
                "ValidationError",
                "Health check interval must be greater than the timeout.",
            ),
        );
    }
    if op == "elasticloadbalancing:SetSubnets" {
        let mut state = shared.state.lock().unwrap();
        let arn = param("LoadBalancerArn");
        let subnets = members(form, "Subnets", "");
        let now = Instant::now();
        let left: Vec<String> = state
            .balancer_uses
            .get(&arn)
            .into_iter()
            .flatten()
            .filter(|u| u.starts_with("subnet-") && !subnets.contains(u))
            .cloned()
            .collect();
        for id in left {
            state.freed.insert(id, now);
        }
        if let Some(uses) = state.balancer_uses.get_mut(&arn) {
            uses.retain(|u| !u.starts_with("subnet-"));
            uses.extend(subnets);
        }
    }
    if op == "elasticloadbalancing:DeleteLoadBalancer" {
        let mut state = shared.state.lock().unwrap();
        let uses = state
            .balancer_uses
            .remove(&param("LoadBalancerArn"))
            .unwrap_or_default();
        let now = Instant::now();
        for id in uses {
            state.freed.insert(id, now);
        }
    }
    let answer = forward(shared, agent, op, req, None);
    let (status, body) = match &answer {
        Answer::Send { status, body, .. } => (*status, String::from_utf8_lossy(body).into_owned()),
        Answer::Drop => return answer,
    };
    if status != 200 {
        return answer;
    }
    let now = Instant::now();
    let group = param("TargetGroupArn");
    let ids = members(form, "Targets", "Id");
    match op {
        "elasticloadbalancing:CreateLoadBalancer" => {
            if let Some(arn) = xml_first(&body, "LoadBalancerArn") {
                let mut uses = members(form, "SecurityGroups", "");
                uses.extend(members(form, "Subnets", ""));
                shared.state.lock().unwrap().balancer_uses.insert(arn, uses);
            }
            answer
        }
        "elasticloadbalancing:CreateTargetGroup" => {
            if let Some(arn) = xml_first(&body, "TargetGroupArn") {
                let interval = secs(param("HealthCheckIntervalSeconds"), 30.0);
                let threshold = secs(param("HealthyThresholdCount"), 5.0);
                shared
                    .state
                    .lock()
                    .unwrap()
                    .target_groups
                    .insert(arn, (interval, threshold, 300.0));
            }
            answer
        }
        "elasticloadbalancing:ModifyTargetGroup"
        | "elasticloadbalancing:ModifyTargetGroupAttributes" => {
            let mut state = shared.state.lock().unwrap();
            let g = state
                .target_groups
                .entry(group)
                .or_insert((30.0, 5.0, 300.0));
            if let Ok(i) = param("HealthCheckIntervalSeconds").parse() {
                g.0 = i;
            }
            let keys = members(form, "Attributes", "Key");
            let values = members(form, "Attributes", "Value");
            for (k, v) in keys.iter().zip(&values) {
                if k == "deregistration_delay.timeout_seconds" {
                    g.2 = secs(v.clone(), 300.0);
                }
            }
            answer
        }
        "elasticloadbalancing:CreateListener" => {
            let forwards = members(form, "DefaultActions", "TargetGroupArn");
            if let (Some(arn), Some(tg)) = (xml_first(&body, "ListenerArn"), forwards.first()) {
                shared
                    .state
                    .lock()
                    .unwrap()
                    .listeners
                    .insert(arn, (param("LoadBalancerArn"), tg.clone()));
            }
            answer
        }
        "elasticloadbalancing:ModifyListener" => {
            let forwards = members(form, "DefaultActions", "TargetGroupArn");
            if let Some(tg) = forwards.first()
                && let Some(l) = shared
                    .state
                    .lock()
                    .unwrap()
                    .listeners
                    .get_mut(&param("ListenerArn"))
            {
                l.1 = tg.clone();
            }
            answer
        }
        "elasticloadbalancing:RegisterTargets" => {
            let mut state = shared.state.lock().unwrap();
            for id in ids {
                // ELB keeps the state of a target registered again; one that had left
                // starts over.
                let t = state
                    .targets
                    .entry((group.clone(), id))
                    .or_insert((now, None));
                if t.1.is_some() {
                    *t = (now, None);
                }
            }
            answer
        }
        "elasticloadbalancing:DeregisterTargets" => {
            let mut state = shared.state.lock().unwrap();
            for id in &ids {
                if let Some(t) = state.targets.get_mut(&(group.clone(), id.clone())) {
                    t.1 = Some(now);
                }
            }
            state.journal.push((op.to_owned(), ids));
            answer
        }
        "elasticloadbalancing:DescribeTargetHealth" => modelled(
            shared,
            op,
            target_health(shared, &group, &ids, &body, model),
        ),
        _ => answer,
    }
}

/// A DescribeTargetHealth answer as AWS gives it, from moto's (every target it lists, and
/// each target asked for by id, `healthy` or `unused`).
fn target_health(
    shared: &Shared,
    group: &str,
    asked: &[String],
    moto: &str,
    model: &Model,
) -> Answer {
    let state = shared.state.lock().unwrap();
    let (interval, threshold, drain) = state
        .target_groups
        .get(group)
        .copied()
        .unwrap_or((30.0, 5.0, 300.0));
    let warmup = Duration::from_secs_f64(interval * threshold * model.elb_scale);
    let draining = Duration::from_secs_f64(drain * model.elb_scale);
    let now = Instant::now();
    // Health is checked only through a live balancer's listener.
    let in_use = state
        .listeners
        .values()
        .any(|(lb, tg)| tg == group && state.balancer_uses.contains_key(lb));
    // (id, port, state, reason) as moto says them.
    let mut listed: Vec<(String, String, String, Option<&'static str>)> = Vec::new();
    if let Ok(doc) = roxmltree::Document::parse(moto) {
        for m in doc.descendants().filter(|n| n.has_tag_name("member")) {
            let Some(t) = m.children().find(|n| n.has_tag_name("Target")) else {
                continue;
            };
            let text = |n: roxmltree::Node, name: &str| {
                n.descendants()
                    .find(|c| c.has_tag_name(name))
                    .and_then(|c| c.text())
                    .unwrap_or_default()
                    .to_owned()
            };
            let health = m.children().find(|n| n.has_tag_name("TargetHealth"));
            listed.push((
                text(t, "Id"),
                text(t, "Port"),
                health.map(|h| text(h, "State")).unwrap_or_default(),
                None,
            ));
        }
    }
    for entry in &mut listed {
        let Some((registered, deregistered)) =
            state.targets.get(&(group.to_owned(), entry.0.clone()))
        else {
            continue;
        };
        match deregistered {
            Some(at) if now.duration_since(*at) < draining => {
                entry.2 = "draining".into();
                entry.3 = Some("Target.DeregistrationInProgress");
            }
            Some(_) => {}
            None if !in_use => {
                entry.2 = "unused".into();
                entry.3 = Some("Target.NotInUse");
            }
            None if now.duration_since(*registered) < warmup => {
                entry.2 = "initial".into();
                entry.3 = Some("Elb.RegistrationInProgress");
            }
            None if state.impaired.contains(&entry.0) => {
                entry.2 = "unhealthy".into();
                entry.3 = Some("Target.FailedHealthChecks");
            }
            None => {}
        }
    }
    // moto forgets a deregistered target at once; AWS lists it while it drains.
    if asked.is_empty() {
        for ((g, id), (_, deregistered)) in &state.targets {
            if g == group
                && deregistered.is_some_and(|at| now.duration_since(at) < draining)
                && !listed.iter().any(|l| l.0 == *id)
            {
                listed.push((
                    id.clone(),
                    String::new(),
                    "draining".into(),
                    Some("Target.DeregistrationInProgress"),
                ));
            }
        }
    }
    let members: String = listed
        .iter()
        .map(|(id, port, s, reason)| {
            let port = if port.is_empty() {
                String::new()
            } else {
                format!("<Port>{}</Port>", xml_escape(port))
            };
            let reason = reason.map_or(String::new(), |r| format!("<Reason>{r}</Reason>"));
            format!(
                "<member><Target><Id>{}</Id>{port}</Target><TargetHealth><State>{}</State>{reason}</TargetHealth></member>",
                xml_escape(id),
                xml_escape(s)
            )
        })
        .collect();
    Answer::xml(
        200,
        format!(
            "<DescribeTargetHealthResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DescribeTargetHealthResult><TargetHealthDescriptions>{members}</TargetHealthDescriptions></DescribeTargetHealthResult><ResponseMetadata><RequestId>model</RequestId></ResponseMetadata></DescribeTargetHealthResponse>"
        ),
    )
}

fn xml_first(xml: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .find(|n| n.has_tag_name(name))
        .and_then(|n| n.text())
        .map(str::to_owned)
}

/// The resource of a YAML template a moto error code is about (`InvalidSubnet.Range`: the
/// first `AWS::EC2::Subnet`), as (logical id, type); empty when none is.
fn failing_resource(template: &str, code: &str) -> (String, String) {
    let noun: String = code
        .trim_start_matches("Invalid")
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    let noun = noun
        .trim_end_matches("ID")
        .trim_end_matches("Id")
        .to_ascii_lowercase();
    let mut current = None;
    for line in template.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent == 2 && t.ends_with(':') {
            current = Some(t.trim_end_matches(':').to_owned());
        } else if let (Some(id), Some(ty)) = (&current, t.strip_prefix("Type:")) {
            let ty = ty.trim().trim_matches(|c| c == '"' || c == '\'');
            let last = ty
                .rsplit("::")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !noun.is_empty() && last == noun {
                return (id.clone(), ty.to_owned());
            }
        }
    }
    (String::new(), String::new())
}

impl StackOp {
    /// Whether CloudFormation still works on it.
    fn under_way(&self, model: &Model) -> bool {
        self.since.elapsed() < model.stack_work
    }
}

/// DescribeStacks as AWS answers it now: a stack under way `*_IN_PROGRESS` (a new one
/// without outputs), a create that failed `ROLLBACK_COMPLETE`.
fn stacks_as_aws(shared: &Shared, xml: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let ops = shared.state.lock().unwrap().stack_ops.clone();
    let mut edits = Vec::new();
    for stack in doc
        .descendants()
        .filter(|n| n.has_tag_name("member") && n.children().any(|c| c.has_tag_name("StackStatus")))
    {
        let Some(op) = stack
            .children()
            .find(|c| c.has_tag_name("StackId"))
            .and_then(|n| n.text())
            .and_then(|id| ops.get(id))
        else {
            continue;
        };
        let status = if op.under_way(&shared.model) {
            format!("{}_IN_PROGRESS", op.verb)
        } else if op.failed.is_some() {
            "ROLLBACK_COMPLETE".to_owned()
        } else {
            continue;
        };
        if let Some(r) = text_range(stack, "StackStatus") {
            edits.push((r, status));
        }
        if op.verb == "CREATE"
            && let Some(outputs) = stack.children().find(|c| c.has_tag_name("Outputs"))
        {
            edits.push((outputs.range(), String::new()));
        }
    }
    splice(xml, edits)
}

/// DescribeChangeSet as AWS answers it while it works the change set out: in progress, no
/// changes yet.
fn change_set_as_aws(shared: &Shared, xml: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let Some(result) = doc
        .descendants()
        .find(|n| n.has_tag_name("DescribeChangeSetResult"))
    else {
        return xml.to_owned();
    };
    let under_way = result
        .children()
        .find(|c| c.has_tag_name("ChangeSetId"))
        .and_then(|n| n.text())
        .and_then(|id| shared.state.lock().unwrap().stack_ops.get(id).cloned())
        .is_some_and(|op| op.under_way(&shared.model));
    if !under_way {
        return xml.to_owned();
    }
    let mut edits = Vec::new();
    for (tag, value) in [
        ("Status", "CREATE_IN_PROGRESS"),
        ("ExecutionStatus", "UNAVAILABLE"),
    ] {
        if let Some(r) = text_range(result, tag) {
            edits.push((r, value.to_owned()));
        }
    }
    for tag in ["Changes", "StatusReason"] {
        if let Some(n) = result.children().find(|c| c.has_tag_name(tag)) {
            edits.push((n.range(), String::new()));
        }
    }
    splice(xml, edits)
}

/// DescribeStackEvents of a create that failed, as AWS tells it (newest first): rolled back,
/// because the resource failed to create, with the resource's own error.
fn stack_events_as_aws(shared: &Shared, xml: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let Some(events) = doc.descendants().find(|n| n.has_tag_name("StackEvents")) else {
        return xml.to_owned();
    };
    let Some(first) = events.children().find(|c| c.has_tag_name("member")) else {
        return xml.to_owned();
    };
    let field = |tag: &str| {
        first
            .children()
            .find(|c| c.has_tag_name(tag))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .to_owned()
    };
    let id = field("StackId");
    let Some(op) = shared.state.lock().unwrap().stack_ops.get(&id).cloned() else {
        return xml.to_owned();
    };
    if op.under_way(&shared.model) {
        return xml.to_owned();
    }
    let Some(failed) = op.failed else {
        return xml.to_owned();
    };
    let at = field("Timestamp");
    let event = |n: u32, logical: &str, physical: &str, ty: &str, status: &str, reason: &str| {
        format!(
            "<member><StackId>{}</StackId><EventId>model-{n}</EventId><StackName>{}</StackName><LogicalResourceId>{}</LogicalResourceId><PhysicalResourceId>{}</PhysicalResourceId><ResourceType>{}</ResourceType><Timestamp>{at}</Timestamp><ResourceStatus>{status}</ResourceStatus><ResourceStatusReason>{}</ResourceStatusReason></member>",
            xml_escape(&id),
            xml_escape(&failed.stack_name),
            xml_escape(logical),
            xml_escape(physical),
            xml_escape(ty),
            xml_escape(reason)
        )
    };
    let stack_type = "AWS::CloudFormation::Stack";
    let (logical, ty) = if failed.logical_id.is_empty() {
        (failed.stack_name.as_str(), stack_type)
    } else {
        (failed.logical_id.as_str(), failed.resource_type.as_str())
    };
    let added = [
        event(3, &failed.stack_name, &id, stack_type, "ROLLBACK_COMPLETE", ""),
        event(
            2,
            &failed.stack_name,
            &id,
            stack_type,
            "ROLLBACK_IN_PROGRESS",
            &format!("The following resource(s) failed to create: [{logical}]. Rollback requested by user."),
        ),
        event(1, logical, "", ty, "CREATE_FAILED", &failed.reason),
    ]
    .concat();
    let at = first.range().start;
    splice(xml, vec![(at..at, added)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn calls_take_from_their_buckets() {
        let run = form(&[("Action", "RunInstances"), ("MaxCount", "100")]);
        assert_eq!(
            buckets("ec2:RunInstances", &run),
            vec![
                ("ec2:RunInstances".to_owned(), "ec2:RunInstances", 1.0),
                (
                    "ec2:RunInstances/instances".to_owned(),
                    "ec2:RunInstances/instances",
                    100.0
                )
            ]
        );
        let unfiltered = form(&[("Action", "DescribeInstances")]);
        assert_eq!(
            buckets("ec2:DescribeInstances", &unfiltered)[0].1,
            "ec2:describe-unfiltered"
        );
        let filtered = form(&[("Filter.1.Name", "tag:a")]);
        assert_eq!(
            buckets("ec2:DescribeInstances", &filtered)[0].1,
            "ec2:describe"
        );
        assert_eq!(buckets("ec2:CreateTags", &[])[0].0, "ec2:CreateTags");
        assert_eq!(buckets("ssm:GetParameter", &[])[0].0, "ssm:read");
        assert_eq!(buckets("ssm:DeleteParameters", &[])[0].0, "ssm:write");
        assert_eq!(buckets("route53:GetChange", &[])[0].0, "route53");
        assert!(buckets("iam:CreateRole", &[]).is_empty());
    }

    #[test]
    fn a_bucket_refuses_past_its_capacity_and_refills() {
        let model = Model::aws();
        let mut state = State::default();
        let want = buckets("ec2:RunInstances", &form(&[("MaxCount", "1")]));
        for _ in 0..5 {
            assert!(state.take(&model, &want));
        }
        assert!(!state.take(&model, &want), "the sixth in a burst of 5");
        std::thread::sleep(Duration::from_millis(520));
        assert!(
            state.take(&model, &want),
            "one token back after 0.5 s at 2/s"
        );
        assert!(!state.take(&model, &want));
    }

    #[test]
    fn state_filters_are_taken_out_and_the_rest_renumbered() {
        let (rest, states) = without_state_filter(&form(&[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", "tag:p"),
            ("Filter.1.Value.1", "x"),
            ("Filter.2.Name", "instance-state-name"),
            ("Filter.2.Value.1", "pending"),
            ("Filter.2.Value.2", "running"),
            ("Filter.3.Name", "tag:e"),
            ("Filter.3.Value.1", "y"),
        ]));
        assert_eq!(
            states,
            Some(vec!["pending".to_owned(), "running".to_owned()])
        );
        assert_eq!(
            rest,
            form(&[
                ("Action", "DescribeInstances"),
                ("Filter.1.Name", "tag:p"),
                ("Filter.1.Value.1", "x"),
                ("Filter.2.Name", "tag:e"),
                ("Filter.2.Value.1", "y"),
            ])
        );
    }

    #[test]
    fn route53_paths_name_their_operations() {
        assert_eq!(
            route53_operation("POST", "/2013-04-01/hostedzone/Z1/rrset"),
            "ChangeResourceRecordSets"
        );
        assert_eq!(
            route53_operation("GET", "/2013-04-01/hostedzone/Z1/rrset?maxitems=300"),
            "ListResourceRecordSets"
        );
        assert_eq!(
            route53_operation("GET", "/2013-04-01/hostedzonesbyname?dnsname=a."),
            "ListHostedZonesByName"
        );
        assert_eq!(
            route53_operation("GET", "/2013-04-01/change/C1"),
            "GetChange"
        );
    }
}
