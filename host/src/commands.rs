//! The commands: each loads what it needs, computes a value, and returns a report that is
//! both `Display` (text output) and `Serialize` (JSON output).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use serde::Serialize;

use crate::apply::{self, Applied, InstanceSummary};
use crate::cli::{Global, Output};
use crate::cloud::{Aws, CallSummary, Connection, LockHolder};
use crate::definition::Definition;
use crate::desired::{self, Desired};
use crate::kinds;
use crate::kinds::instances::InstanceChange;
use crate::kinds::network::{self, ObservedResource};
use crate::kinds::records::DnsState;
use crate::ledger::{self, Ledger};
use crate::plan::{self, Plan};
use crate::plugins::{self, PluginInfo, PluginSet, Runtime};
use crate::progress::Progress;

/// A usage error: the command line asks for something heet will not do. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What a command tells `main` beyond success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `plan --detailed-exitcode` found changes.
    Changes,
}

pub fn emit<R: fmt::Display + Serialize>(global: &Global, report: &R) -> anyhow::Result<()> {
    match global.output {
        Output::Text => writeln!(
            std::io::stdout().lock(),
            "{}",
            crate::style::changes(&report.to_string(), crate::style::stdout_color())
        )?,
        Output::Json => json(report)?,
    }
    Ok(())
}

/// Writes `value` as `--output json` does.
fn json(value: &impl Serialize) -> anyhow::Result<()> {
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(value)?
    )?;
    Ok(())
}

/// A report of a command that acted in an AWS account: in JSON, the account comes first.
#[derive(Serialize)]
struct InAccount<'a, R> {
    account: &'a str,
    #[serde(flatten)]
    report: &'a R,
}

/// Writes `report` as [`emit`] does; its JSON names the account heet acted in.
pub fn emit_in<R: fmt::Display + Serialize>(
    global: &Global,
    aws: &Aws,
    report: &R,
) -> anyhow::Result<()> {
    match global.output {
        Output::Text => emit(global, report),
        Output::Json => json(&InAccount {
            account: &aws.account,
            report,
        }),
    }
}

pub(crate) fn emit_stats(global: &Global, stats: &CallSummary) {
    if global.stats && global.output == Output::Text {
        let ops: Vec<String> = stats
            .operations
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        eprintln!(
            "aws calls: {} ({} mutating, {} attempts): {}",
            stats.calls,
            stats.mutating,
            stats.attempts,
            ops.join(" ")
        );
    }
}

/// How `env` of `def` reaches AWS. Region and profile: the command line's, else the
/// environment's, else the AWS config chain's (`AWS_REGION`, `AWS_PROFILE`, the profile's
/// region), else (region) `project.region`. The account it is pinned to, the role it is
/// reached through.
pub(crate) fn connection(global: &Global, def: &Definition, env: &str) -> Connection {
    let environment = def.environments.get(env);
    let given = |flag: &Option<String>, name: &str, key: Option<&String>| {
        flag.as_ref()
            .map(|v| crate::cloud::Source {
                value: v.clone(),
                from: format!("--{name}"),
            })
            .or_else(|| {
                key.map(|v| crate::cloud::Source {
                    value: v.clone(),
                    from: format!("environments.{env}.{name}"),
                })
            })
    };
    Connection {
        region: given(
            &global.region,
            "region",
            environment.and_then(|e| e.region.as_ref()),
        ),
        profile: given(
            &global.profile,
            "profile",
            environment.and_then(|e| e.profile.as_ref()),
        ),
        endpoint_url: global.endpoint_url.clone(),
        default_region: def.region.clone(),
        pace: def.aws.pace,
        pin: environment
            .and_then(|e| e.account_id.clone())
            .map(|id| (env.to_owned(), id)),
        assume_role: environment
            .and_then(|e| e.assume_role.clone())
            .map(|r| (env.to_owned(), r)),
    }
}

/// `heet iam-policy --trust ENV`: the trust policy of the role `env` assumes, for
/// `principal`'s account, else for the account of the credentials in use (before any role
/// is assumed: they are who will assume it).
pub async fn trust_policy(
    global: &Global,
    env: &str,
    principal: Option<&str>,
) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    def.environment(env)?;
    // Refused before any call when there is no role to trust anyone.
    let role = crate::iam::assumed_role(&def, env).map_err(UsageError)?;
    let account = match principal {
        Some(a) if crate::validate::is_account_id(a) => a.to_owned(),
        Some(a) => {
            return Err(UsageError(format!(
                "--principal {a:?} is not an AWS account id (12 digits)"
            ))
            .into());
        }
        None => {
            let mut base = connection(global, &def, env);
            (base.assume_role, base.pin) = (None, None);
            Aws::connect(&base).await?.account
        }
    };
    emit(global, &crate::iam::trust(role, &account))?;
    Ok(Outcome::Done)
}

/// What a command that plans works from.
struct Prepared {
    def: Definition,
    aws: Aws,
    desired: Desired,
    runtime: Runtime,
    plugins: PluginSet,
}

/// Definition, plugins and desired state: everything before the first change. A bad
/// definition or a failing plugin stops before any AWS call; a policy veto before anything
/// is changed (the stacks' outputs are read first when the definition has stacks).
async fn prepare(global: &Global, env: &str) -> anyhow::Result<Prepared> {
    let def = Definition::load(&global.file)?;
    def.environment(env)?;
    let runtime = Runtime::new()?;
    let mut plugins = PluginSet::load(&runtime, &def)?;
    let aws = Aws::connect(&connection(global, &def, env)).await?;
    let desired = desire(&aws, &def, env, &runtime, &mut plugins).await?;
    Ok(Prepared {
        def,
        aws,
        desired,
        runtime,
        plugins,
    })
}

/// The desired state of `env`: the definition, with the outputs of its stacks as they are
/// now, through the plugins (configured again when their config reads an output).
async fn desire(
    aws: &Aws,
    def: &Definition,
    env: &str,
    runtime: &Runtime,
    plugins: &mut PluginSet,
) -> anyhow::Result<Desired> {
    if def.stacks.is_empty() {
        return Ok(desired::compute(def, env, &aws.region, plugins)?);
    }
    let names = stack_names(&def.project, env, def.stacks.keys());
    let observed = aws.cfn.observe(&names).await?;
    let outputs = kinds::stacks::outputs_of(&def.project, env, &observed);
    let (resolved, unknown) = def.resolved(&outputs);
    if resolved.plugins.config != def.plugins.config {
        *plugins = PluginSet::load(runtime, &resolved)?;
    }
    plugins.set_outputs(outputs);
    let mut desired = desired::compute(&resolved, env, &aws.region, plugins)?;
    desired.unknown_outputs = unknown;
    desired.stacks_read = observed;
    Ok(desired)
}

/// Each stack's heet name and its name in CloudFormation.
fn stack_names<'a>(
    project: &str,
    env: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<(String, String)> {
    names
        .into_iter()
        .map(|n| (n.clone(), kinds::stacks::full_name(project, env, n)))
        .collect()
}

/// Asks CloudFormation what each stack update of `plan` would do (a change set, deleted
/// again): what `plan` and `up` show of it.
async fn preview(aws: &Aws, plan: &mut Plan) -> anyhow::Result<()> {
    let token = run_id()?;
    let previews = futures::future::join_all(plan.stacks.changes.iter().map(|c| async {
        match c {
            kinds::stacks::StackChange::Update { name, send, .. } => {
                Some(aws.cfn.preview(name, send, &token).await)
            }
            _ => None,
        }
    }))
    .await;
    for (c, p) in plan.stacks.changes.iter_mut().zip(previews) {
        if let (kinds::stacks::StackChange::Update { preview, .. }, Some(p)) = (c, p) {
            *preview = p;
        }
    }
    Ok(())
}

/// Reads the ledger of `project`/`env`; pages heet cannot read are named in a warning and
/// otherwise left alone.
async fn read_ledger(aws: &Aws, project: &str, env: &str) -> anyhow::Result<Ledger> {
    let prefix = ledger::prefix(project, env);
    let (ledger, unreadable) = Ledger::parse(prefix.clone(), aws.ssm.list(&prefix).await?);
    if !unreadable.is_empty() {
        tracing::warn!(
            "ledger pages heet cannot read, left alone: {}",
            unreadable.join(", ")
        );
    }
    Ok(ledger)
}

/// The DNS side of the state: the zone and its records, only when some record is wanted or
/// owned (so a project without CNAMEs makes no Route53 call), and what the ledger says heet
/// owns, when it was read.
async fn observe_dns(
    aws: &Aws,
    def: &Definition,
    desired: &Desired,
    ledger: Option<&Ledger>,
) -> anyhow::Result<DnsState> {
    let owned = ledger.map(Ledger::records);
    let wanted = desired.instances.iter().any(|i| !i.cnames.is_empty())
        || desired.balancers.iter().any(|b| !b.cnames.is_empty());
    let Some(domain) = def.domain.clone() else {
        return Ok(DnsState {
            owned,
            ..DnsState::default()
        });
    };
    if !wanted && owned.as_ref().is_none_or(|o| o.is_empty()) {
        return Ok(DnsState {
            domain: Some(domain),
            owned,
            ..DnsState::default()
        });
    }
    let zone = aws.route53.find_zone(&domain).await?;
    let records = match &zone {
        Some(zone) => aws.route53.records(zone).await?,
        None if def.create_zone => Default::default(),
        None if wanted => {
            let message = format!(
                "project.domain: there is no hosted zone for {domain}: create it, or set project.create_zone = true"
            );
            return Err(match def.domain_at {
                Some(at) => def.error_at(at, message).into(),
                None => anyhow::anyhow!(message),
            });
        }
        None => Default::default(),
    };
    Ok(DnsState {
        domain: Some(domain),
        zone,
        records,
        owned,
        balancers: BTreeMap::new(),
    })
}

/// What AWS holds for an environment, and the plan from it to `desired`.
struct Survey {
    /// Empty when it was not read.
    ledger: Ledger,
    observed: Vec<crate::kinds::instances::ObservedInstance>,
    resources: Vec<ObservedResource>,
    dns: DnsState,
    plan: Plan,
}

/// Observes and plans. Without `with_ledger` (a no-op `up`'s first look) the plan cannot see
/// heet's stale records or tell foreign records apart, and no ledger call is made.
async fn survey(
    aws: &Aws,
    def: &Definition,
    desired: &Desired,
    with_ledger: bool,
) -> anyhow::Result<Survey> {
    // The instances at once; beside them the ledger, then the network and DNS (which depend
    // on what the ledger lists): a survey takes as long as its longest read, the describe of
    // every instance.
    // IAM entities and stacks are proven heet's by the ledger alone: it is read whenever
    // they are wanted.
    let iam_wanted = !desired.iam.is_empty();
    let rest = async {
        let ledger = if with_ledger
            || iam_wanted
            || !desired.stacks.is_empty()
            || !desired.balancers.is_empty()
        {
            read_ledger(aws, &desired.project, &desired.env).await?
        } else {
            Ledger::new(ledger::prefix(&desired.project, &desired.env))
        };
        // The kinds of network resource the definition uses, and those the ledger says heet
        // made (which a changed definition may no longer use).
        let mut kinds = desired.network.kinds();
        kinds.extend(
            ledger
                .resource_kinds()
                .into_iter()
                .filter_map(network::Kind::of_resource),
        );
        let iam = async {
            if iam_wanted || kinds::iam::in_ledger(&ledger) {
                let managed = desired.iam.iam.managed_arns();
                let observed = aws.iam.observe(&desired.project, &desired.env, &managed);
                Ok(Some(observed.await?))
            } else {
                anyhow::Ok(None)
            }
        };
        let given: Vec<String> = desired
            .network
            .addresses
            .iter()
            .filter_map(|a| a.given.clone())
            .collect();
        let resources = async {
            let (mut heets, given) = tokio::try_join!(
                aws.net.observe(&desired.project, &desired.env, &kinds),
                aws.net.given_addresses(&given),
            )?;
            heets.extend(given);
            anyhow::Ok(heets)
        };
        let owned_stacks = kinds::stacks::owned(&ledger);
        // The wanted stacks were read as their outputs were resolved; only the ones the
        // ledger lists beside them are read here.
        let stacks = async {
            let mut read = desired.stacks_read.clone();
            let others: Vec<&String> = owned_stacks
                .keys()
                .filter(|n| !desired.stacks.contains_key(*n))
                .collect();
            if !others.is_empty() {
                let names = stack_names(&desired.project, &desired.env, others);
                read.extend(aws.cfn.observe(&names).await?);
            }
            anyhow::Ok(read)
        };
        // Balancers by heet's names: the wanted roles' and the ledger's.
        let owned_balancers = kinds::balancers::owned(&ledger);
        let balancers = async {
            let mut names: BTreeSet<String> =
                desired.balancers.iter().map(|b| b.name.clone()).collect();
            names.extend(owned_balancers.keys().filter_map(|r| {
                let role = r.split_once('/')?.1;
                Some(kinds::balancers::aws_name(
                    &desired.project,
                    &desired.env,
                    role,
                ))
            }));
            aws.elb.observe(&names).await
        };
        let (resources, mut dns, iam, stacks, balancers) = tokio::try_join!(
            resources,
            observe_dns(aws, def, desired, with_ledger.then_some(&ledger)),
            iam,
            stacks,
            balancers,
        )?;
        // What the balancers' names point at: the DNS name of each that is heet's.
        dns.balancers = kinds::balancers::dns(
            &desired.project,
            &desired.env,
            &desired.balancers,
            &balancers,
            &owned_balancers,
        );
        let stacks = kinds::stacks::plan(
            &desired.project,
            &desired.env,
            &desired.stacks,
            &stacks,
            &owned_stacks,
            desired.unknown_outputs.clone(),
        );
        anyhow::Ok((
            ledger,
            resources,
            dns,
            iam,
            stacks,
            (balancers, owned_balancers),
        ))
    };
    let (observed, (ledger, resources, dns, iam, stacks, (balancers, owned_balancers))) =
        tokio::try_join!(aws.ec2.instances(&desired.project, &desired.env), rest)?;
    let batches = ledger.batches();
    let mut plan = plan::plan(
        desired,
        &observed,
        &resources,
        &dns,
        with_ledger.then_some(&batches),
        now_secs(),
    );
    if let Some(iam) = iam {
        plan.iam = kinds::iam::plan(&desired.iam, &iam, &kinds::iam::owned(&ledger));
    }
    plan.stacks = stacks;
    let network: BTreeMap<String, String> = resources
        .iter()
        .filter(|r| r.is_heets(&desired.project, &desired.env))
        .map(|r| (r.resource.clone(), r.aws_id.clone()))
        .collect();
    let slots: BTreeMap<String, (String, String)> = desired
        .instances
        .iter()
        .map(|d| (d.id.clone(), (d.role.clone(), d.name.clone())))
        .collect();
    plan.balancers = kinds::balancers::plan(
        &desired.project,
        &desired.env,
        &desired.balancers,
        &balancers,
        &owned_balancers,
        kinds::balancers::Around {
            plan: &plan.instances,
            found: &observed,
            slots: &slots,
            network: &network,
        },
    );
    // A booting instance a target waits for is waited for by the instances.
    for c in &plan.balancers.changes {
        if let Some((slot, id)) = kinds::Change::waits_for(c) {
            plan.instances
                .awaited
                .push((slot.to_owned(), id.to_owned()));
        }
    }
    Ok(Survey {
        ledger,
        observed,
        resources,
        dns,
        plan,
    })
}

/// Seconds since the epoch (0 on a clock before it).
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn run_id() -> anyhow::Result<String> {
    Ok(format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ))
}

#[derive(Debug, Serialize)]
pub struct PlanReport {
    #[serde(serialize_with = "crate::report::plan")]
    pub plan: Plan,
    pub aws_calls: CallSummary,
}

impl fmt::Display for PlanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.plan.fmt(f)
    }
}

/// The roles `--role` names, each checked against the definition; empty: every role.
fn roles_named(def: &Definition, roles: &[String]) -> anyhow::Result<BTreeSet<String>> {
    for r in roles {
        if !def.roles.iter().any(|d| d.name == *r) {
            let known: Vec<&str> = def.roles.iter().map(|d| d.name.as_str()).collect();
            return Err(UsageError(format!(
                "--role {r}: there is no role {r:?} in the definition; its roles are {}",
                known.join(", ")
            ))
            .into());
        }
    }
    Ok(roles.iter().cloned().collect())
}

/// `plan` limited to `roles` when any are named (see [`Plan::only`]).
fn limited(plan: Plan, roles: &BTreeSet<String>, theirs_only: bool) -> Plan {
    if roles.is_empty() {
        plan
    } else {
        plan.only(roles, theirs_only)
    }
}

pub async fn plan(
    global: &Global,
    env: &str,
    detailed_exitcode: bool,
    roles: &[String],
) -> anyhow::Result<Outcome> {
    let Prepared {
        def, aws, desired, ..
    } = prepare(global, env).await?;
    let roles = roles_named(&def, roles)?;
    // The ledger too: `plan` shows exactly what `up` would do, stale records included.
    let Survey { mut plan, .. } = survey(&aws, &def, &desired, true).await?;
    preview(&aws, &mut plan).await?;
    let plan = limited(plan, &roles, false);
    let report = PlanReport {
        plan,
        aws_calls: aws.stats.summary(),
    };
    emit_in(global, &aws, &report)?;
    emit_stats(global, &report.aws_calls);
    Ok(if detailed_exitcode && !report.plan.is_empty() {
        Outcome::Changes
    } else {
        Outcome::Done
    })
}

#[derive(Debug, Serialize)]
pub struct UpReport {
    #[serde(serialize_with = "crate::report::plan")]
    pub plan: Plan,
    pub applied: Option<Applied>,
    pub aws_calls: CallSummary,
}

impl fmt::Display for UpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.plan)?;
        if let Some(a) = &self.applied {
            write!(
                f,
                "\napplied: {} launched, {} terminated, {} retagged",
                a.launched.len(),
                a.terminated.len(),
                a.retagged.len()
            )?;
            if !a.stacks.is_empty() {
                write!(f, ", {} stack(s) applied", a.stacks.len())?;
            }
            for i in &a.launched {
                write!(
                    f,
                    "\n  {} {} {} {}",
                    i.name,
                    i.instance_id,
                    i.state,
                    i.dns_name.as_deref().unwrap_or("-")
                )?;
            }
            for u in &a.unresolved {
                write!(f, "\n  record not written: {u}")?;
            }
        }
        Ok(())
    }
}

pub async fn up(
    global: &Global,
    env: &str,
    yes: bool,
    keep_failed: bool,
    roles: &[String],
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let Prepared {
        def,
        aws,
        mut desired,
        runtime,
        mut plugins,
    } = prepare(global, env).await?;
    let roles = roles_named(&def, roles)?;
    let mut plan = limited(
        survey(&aws, &def, &desired, false).await?.plan,
        &roles,
        false,
    );

    // A converged environment is left without taking the lock: a no-op `up` changes nothing,
    // not even the lock. Otherwise the state is read again under the lock, since another run
    // may have changed it in between.
    let applied = if plan.is_empty() {
        None
    } else {
        let work = async {
            if !def.stacks.is_empty() {
                // The outputs as they are under the lock: another run may have changed a stack.
                desired = desire(&aws, &def, env, &runtime, &mut plugins).await?;
            }
            let mut now = survey(&aws, &def, &desired, true).await?;
            preview(&aws, &mut now.plan).await?;
            plan = limited(now.plan, &roles, false);
            apply::applicable(&plan)?;
            if plan.stacks.changes.iter().any(|c| c.is_destructive()) && !yes {
                eprintln!("{plan}");
                confirm(
                    &format!(
                        "this may remove or replace stacks of {}/{env}, or resources in them",
                        def.project
                    ),
                    None,
                )?;
            }
            // Stacks first: what the rest reads of them is known once they are made, so the
            // rest is planned again after.
            let mut stacks_applied = None;
            if let Some(first) = plan.stacks_first() {
                let cx = apply::Context {
                    ledger: &mut now.ledger,
                    resources: &now.resources,
                    zone: now.dns.zone.clone(),
                    run_id: &run_id()?,
                    keep_failed,
                };
                let applied = apply::apply(&aws, &first, cx, progress).await?;
                desired = desire(&aws, &def, env, &runtime, &mut plugins).await?;
                now = survey(&aws, &def, &desired, true).await?;
                plan = limited(now.plan, &roles, false);
                if plan.stacks.makes() {
                    anyhow::bail!(
                        "the stacks were applied, but a stack changed again since: nothing else applied; run up again"
                    );
                }
                stacks_applied = Some((first.stacks, applied.stacks));
            }
            // An output no stack has (a condition leaves it out): nothing reads a placeholder.
            if !desired.unknown_outputs.is_empty() {
                anyhow::bail!(
                    "the stacks have no outputs for {}: nothing else applied",
                    desired
                        .unknown_outputs
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let (mut ledger, dns, resources) = (now.ledger, now.dns, now.resources);
            if plan.is_empty() {
                return Ok(stacks_applied.map(|(shown, made)| {
                    plan.stacks.changes = shown.changes;
                    Applied {
                        stacks: made,
                        ..Applied::default()
                    }
                }));
            }
            apply::applicable(&plan)?;
            if plan.instances.is_destructive() && !yes {
                let doomed = plan.instances.terminated_ids().count();
                eprintln!("{plan}");
                confirm(
                    &format!(
                        "this terminates {doomed} instance(s) of {}/{env}",
                        def.project
                    ),
                    None,
                )?;
            }
            let cx = apply::Context {
                ledger: &mut ledger,
                resources: &resources,
                zone: dns.zone.clone(),
                run_id: &run_id()?,
                keep_failed,
            };
            let mut applied = apply::apply(&aws, &plan, cx, progress).await?;
            if let Some((mut shown, mut made)) = stacks_applied {
                // Pass one's stack changes, then pass two's (stacks deleted once the rest is).
                shown.changes.append(&mut plan.stacks.changes);
                plan.stacks.changes = shown.changes;
                made.append(&mut applied.stacks);
                applied.stacks = made;
            }
            Ok(Some(applied))
        };
        locked(&aws, &def.project, env, "up", work).await?
    };
    let report = UpReport {
        plan,
        applied,
        aws_calls: aws.stats.summary(),
    };
    emit_in(global, &aws, &report)?;
    emit_stats(global, &report.aws_calls);
    Ok(Outcome::Done)
}

#[derive(Debug, Serialize)]
pub struct DownReport {
    pub project: String,
    pub env: String,
    pub terminated: Vec<InstanceSummary>,
    /// Each family's changes by its label (`record`: records deleted, or found gone and
    /// forgotten; `network`: resources deleted or released and rules revoked on the way;
    /// `iam`: entities deleted and what held them undone).
    #[serde(flatten)]
    pub families: FamilyLines,
    /// Tagged for this project/env but not created by heet: left alone.
    pub foreign: Vec<String>,
    /// Records heet created that someone changed since: forgotten, left alone.
    pub foreign_records: Vec<String>,
    pub aws_calls: CallSummary,
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = format!("{}/{}", self.project, self.env);
        if self.terminated.is_empty() && self.families.0.iter().all(|(_, lines)| lines.is_empty()) {
            write!(f, "nothing to delete: heet runs nothing for {target}")?;
        } else {
            write!(
                f,
                "terminated {} instance(s) of {target}",
                self.terminated.len()
            )?;
            for n in self.families.0.iter().flat_map(|(_, lines)| lines) {
                write!(f, "\n  {n}")?;
            }
        }
        if !self.foreign.is_empty() {
            write!(
                f,
                "\nleft alone (tagged for {target} but not created by heet): {}",
                crate::text::shown_all(&self.foreign)
            )?;
        }
        if !self.foreign_records.is_empty() {
            write!(
                f,
                "\nleft alone (records heet made but someone changed since): {}",
                crate::text::shown_all(&self.foreign_records)
            )?;
        }
        Ok(())
    }
}

/// Lines by family label, in the plan's order of families; in JSON, one key per label.
#[derive(Debug, Default)]
pub struct FamilyLines(pub Vec<(&'static str, Vec<String>)>);

impl FamilyLines {
    /// Every change of each of `plan`'s families, as the plan shows it.
    fn of(plan: &Plan) -> FamilyLines {
        FamilyLines(
            plan.families()
                .iter()
                .map(|f| {
                    let lines = f.changes().iter().map(ToString::to_string).collect();
                    (f.label(), lines)
                })
                .collect(),
        )
    }
}

impl Serialize for FamilyLines {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (label, lines) in &self.0 {
            map.serialize_entry(label, lines)?;
        }
        map.end()
    }
}

/// Lists what `down` deletes (the instances of `plan`, and what each family deletes) and
/// asks, unless `yes`.
fn down_confirmed(
    plan: &Plan,
    yes: bool,
    environment: &crate::definition::Environment,
) -> anyhow::Result<()> {
    let (project, env) = (plan.project.as_str(), plan.env.as_str());
    if yes {
        return Ok(());
    }
    eprintln!("heet will delete these resources of {project}/{env}:");
    let mut counts = Vec::new();
    for family in plan.families() {
        let deleted: Vec<_> = kinds::deleted(family).collect();
        for n in &deleted {
            eprintln!("  {:<8} {n}", family.label());
        }
        counts.push(format!("{} {}", deleted.len(), family.deleted_noun()));
    }
    // "…, 2 network resource(s) and 1 IAM entit(ies)": the last family after an "and".
    let families = match counts.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    confirm(
        &format!("delete {families}"),
        environment.protected.then_some(env),
    )
}

/// Runs `work` holding the environment's lock, and releases it whatever `work` returns. A run
/// killed meanwhile leaves the lock behind, naming itself, for `heet unlock`.
async fn locked<T>(
    aws: &Aws,
    project: &str,
    env: &str,
    command: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let name = crate::namespace::lock_parameter(project, env);
    let me = LockHolder::this_process(command, &aws.account);
    aws.ssm.acquire(&name, &me, project, env).await?;
    tracing::debug!("holding {name}");
    // Tests widen the window in which a second run meets the lock (documented in docs/cli.md).
    if let Some(ms) = std::env::var("HEET_TEST_HOLD_LOCK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let result = work.await;
    let released = aws.ssm.release(&name, &me).await;
    let value = result?;
    released?;
    Ok(value)
}

/// Drift between what runs and what the definition and plugins want (midops' audit).
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub project: String,
    pub env: String,
    pub drift: bool,
    /// Desired instances that do not run.
    pub missing: Vec<String>,
    /// Instances heet created that are not desired any more (or twins).
    pub unexpected: Vec<String>,
    /// Instances or records that differ from the definition: type, launch settings, tags,
    /// DNS target.
    pub changed: Vec<String>,
    /// Slots in a rollout under way: a successor with the new settings runs beside the old
    /// instance, which keeps the names until `up` moves them. Not drift, but not done.
    pub rolling: Vec<String>,
    /// Instances that keep settings their role's `replace_on` leaves out, as launched. Not
    /// drift: the definition says so.
    pub as_launched: Vec<String>,
    /// Records heet created that point at no live instance.
    pub dead_records: Vec<String>,
    /// Names heet wants that records it did not create hold.
    pub conflicts: Vec<String>,
    /// Look-alikes: tagged for this project/env, not created by heet. Not drift: never touched.
    pub foreign: Vec<String>,
    pub foreign_records: Vec<String>,
    /// Each role's last scenario run (`heet run`), from its instances' tags: `www: deploy
    /// at 2026-12-07T01:56:10Z 1.4.2`. Not drift.
    pub last_runs: Vec<String>,
    pub in_sync: usize,
    pub aws_calls: CallSummary,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = format!("{}/{}", self.project, self.env);
        if self.drift {
            write!(f, "drift in {target}:")?;
        } else if !self.rolling.is_empty() {
            write!(
                f,
                "rolling in {target}: a rollout is under way, `up` finishes it"
            )?;
        } else {
            write!(
                f,
                "{target} matches the definition ({} instance(s))",
                self.in_sync
            )?;
        }
        for (label, items) in [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("changed", &self.changed),
            ("rolling", &self.rolling),
            ("as launched", &self.as_launched),
            ("record pointing at nothing live", &self.dead_records),
            ("conflict", &self.conflicts),
            ("not heet's, left alone", &self.foreign),
            (
                "record changed by someone else, left alone",
                &self.foreign_records,
            ),
            ("last run", &self.last_runs),
        ] {
            for item in items {
                write!(f, "\n  {label}: {}", crate::text::shown(item))?;
            }
        }
        Ok(())
    }
}

/// Compares what runs with the definition and plugins; exit 2 when they differ.
pub async fn status(global: &Global, env: &str) -> anyhow::Result<Outcome> {
    let Prepared {
        def, aws, desired, ..
    } = prepare(global, env).await?;
    let Survey {
        observed,
        dns,
        plan,
        ..
    } = survey(&aws, &def, &desired, true).await?;

    let mut report = StatusReport {
        project: def.project.clone(),
        env: env.to_owned(),
        drift: false,
        missing: Vec::new(),
        unexpected: Vec::new(),
        changed: Vec::new(),
        rolling: Vec::new(),
        as_launched: plan
            .instances
            .as_launched
            .iter()
            .map(ToString::to_string)
            .collect(),
        dead_records: Vec::new(),
        conflicts: Vec::new(),
        foreign: Vec::new(),
        foreign_records: plan.dns.forgotten.clone(),
        last_runs: crate::tasks::last_runs(&observed, &def.project, env),
        in_sync: plan.instances.unchanged,
        aws_calls: CallSummary::default(),
    };
    // What a record may point at: a live instance, or one of heet's balancers.
    let mut live: std::collections::BTreeSet<String> =
        observed.iter().flat_map(|o| o.record_targets()).collect();
    live.extend(dns.balancers.values().cloned());
    for (name, owned) in dns.owned.iter().flatten() {
        if let Some(target) = dns.records.get(name).and_then(|r| r.points_at())
            && target == owned.target
            && !live.contains(target)
        {
            report.dead_records.push(format!("{name} → {target}"));
        }
    }
    // What points at a rolling slot (its names, its address) moves with its rollout: part
    // of it, not drift of its own.
    let families = plan.families();
    let changes = || families.iter().flat_map(|f| f.changes());
    let rolling: std::collections::BTreeSet<&str> = changes()
        .filter(|c| c.rolls())
        .filter_map(|c| c.slot())
        .collect();
    for family in families {
        report.conflicts.extend(family.conflicts().iter().cloned());
        report.conflicts.extend(family.refused());
        report.foreign.extend(family.foreign().iter().cloned());
    }
    for c in changes() {
        let rolls_with = !c.rolls() && c.slot().is_some_and(|s| rolling.contains(s));
        if !c.is_drift() || rolls_with {
            continue;
        }
        let line = c.drift_line();
        match kinds::drift(c) {
            kinds::Drift::Missing => report.missing.push(line),
            kinds::Drift::Unexpected => report.unexpected.push(line),
            kinds::Drift::Changed => report.changed.push(line),
            kinds::Drift::Rolling => report.rolling.push(line),
        }
    }
    report.drift = !(report.missing.is_empty()
        && report.unexpected.is_empty()
        && report.changed.is_empty()
        && report.dead_records.is_empty()
        && report.conflicts.is_empty());
    report.aws_calls = aws.stats.summary();
    emit_in(global, &aws, &report)?;
    emit_stats(global, &report.aws_calls);
    Ok(if report.drift || !report.rolling.is_empty() {
        Outcome::Changes
    } else {
        Outcome::Done
    })
}

/// What `heet unlock` did.
#[derive(Debug, Serialize)]
pub struct UnlockReport {
    pub project: String,
    pub env: String,
    /// Who held the lock that was broken; none when there was no lock.
    pub broken: Option<LockHolder>,
}

impl fmt::Display for UnlockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            Some(h) => write!(
                f,
                "unlocked {}/{}: the lock of {} since {} is gone",
                self.project,
                self.env,
                h.who(),
                h.since_rfc3339()
            ),
            None => write!(f, "{}/{} is not locked", self.project, self.env),
        }
    }
}

pub async fn unlock(global: &Global, env: &str, yes: bool) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    def.environment(env)?;
    let aws = Aws::connect(&connection(global, &def, env)).await?;
    let name = crate::namespace::lock_parameter(&def.project, env);
    let broken = aws.ssm.holder(&name).await?;
    if let Some(h) = &broken {
        if !yes {
            eprintln!(
                "{}/{env} is locked by {} since {}",
                def.project,
                h.who(),
                h.since_rfc3339()
            );
            confirm("break the lock (only if that run is gone)", None)?;
        }
        aws.ssm.delete(&name).await?;
    }
    emit_in(
        global,
        &aws,
        &UnlockReport {
            project: def.project.clone(),
            env: env.to_owned(),
            broken,
        },
    )?;
    emit_stats(global, &aws.stats.summary());
    Ok(Outcome::Done)
}

pub async fn down(
    global: &Global,
    env: &str,
    yes: bool,
    roles: &[String],
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    // Plugins are not consulted: teardown must work even when a plugin is broken. It is the
    // plan of an empty definition, applied: every instance and record heet made goes.
    let def = Definition::load(&global.file)?;
    let environment = def.environment(env)?.clone();
    let roles = roles_named(&def, roles)?;
    let aws = Aws::connect(&connection(global, &def, env)).await?;
    let nothing = Desired::nothing(&def.project, env, &aws.region);
    // A first look: anything heet made is in the ledger (records, network resources,
    // batches) or tagged for the env (instances); only an empty ledger needs the describe.
    let ledger = read_ledger(&aws, &def.project, env).await?;
    let any = !ledger.entries.is_empty() || aws.ec2.any(&def.project, env).await?;
    let mut observed = Vec::new();
    let mut plan = plan::plan(
        &nothing,
        &[],
        &[],
        &DnsState::default(),
        Some(&ledger.batches()),
        now_secs(),
    );
    if any {
        locked(&aws, &def.project, env, "down", async {
            // Read again under the lock: another run may have changed things in between.
            let Survey {
                mut ledger,
                observed: now,
                resources,
                dns,
                plan: now_plan,
            } = survey(&aws, &def, &nothing, true).await?;
            (observed, plan) = (now, limited(now_plan, &roles, true));
            apply::applicable(&plan)?;
            if plan.families().iter().any(|f| !f.changes().is_empty()) {
                down_confirmed(&plan, yes, &environment)?;
            }
            let cx = apply::Context {
                ledger: &mut ledger,
                resources: &resources,
                zone: dns.zone.clone(),
                run_id: &run_id()?,
                keep_failed: false,
            };
            apply::apply(&aws, &plan, cx, progress).await?;
            if !roles.is_empty() {
                // The other roles' and what they share stay, and their entries with them.
                return Ok(());
            }
            // Everything the ledger listed is gone or forgotten now.
            aws.ssm.delete_all(&ledger.page_names()).await
        })
        .await?;
    }
    let report = DownReport {
        project: def.project.clone(),
        env: env.to_owned(),
        terminated: terminated_by(&plan, &observed),
        families: FamilyLines::of(&plan),
        foreign: plan
            .families()
            .iter()
            .flat_map(|f| f.foreign())
            .cloned()
            .collect(),
        foreign_records: plan.dns.forgotten.clone(),
        aws_calls: aws.stats.summary(),
    };
    emit_in(global, &aws, &report)?;
    emit_stats(global, &report.aws_calls);
    Ok(Outcome::Done)
}

/// The instances `plan` terminates, as reported: in the slots the plan placed them in (an
/// adopted instance has no slot tags yet).
fn terminated_by(
    plan: &Plan,
    observed: &[crate::kinds::instances::ObservedInstance],
) -> Vec<InstanceSummary> {
    let ids: std::collections::BTreeSet<&str> = plan.instances.terminated_ids().collect();
    let mut out: Vec<InstanceSummary> = observed
        .iter()
        .filter(|o| ids.contains(o.instance_id.as_str()))
        .map(|o| {
            let mut s = InstanceSummary::of(o);
            for c in &plan.instances.changes {
                if let InstanceChange::Delete {
                    instance_id,
                    role,
                    index,
                    ..
                } = c
                    && *instance_id == o.instance_id
                {
                    (s.role, s.index) = (role.clone(), *index);
                }
            }
            s
        })
        .collect();
    apply::sort_by_slot(&mut out);
    out
}

/// Asks on the terminal; refuses outright without one. `type_back` makes the user type that
/// word (a protected environment's name) instead of `y`.
pub(crate) fn confirm(what: &str, type_back: Option<&str>) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{what}: refusing without --yes, as stdin is not a terminal"
        ))
        .into());
    }
    match type_back {
        Some(word) => eprint!("{what}? type {word:?} to confirm: "),
        None => eprint!("{what}? [y/N] "),
    }
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    let answer = answer.trim();
    let ok = match type_back {
        Some(word) => answer == word,
        None => matches!(answer, "y" | "Y" | "yes"),
    };
    if ok {
        Ok(())
    } else {
        Err(UsageError("cancelled: nothing was changed".into()).into())
    }
}

#[derive(Debug, Serialize)]
pub struct PluginList {
    pub plugins: Vec<PluginInfo>,
}

impl fmt::Display for PluginList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.plugins.is_empty() {
            return write!(f, "no plugins");
        }
        for (i, p) in self.plugins.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let hooks: Vec<String> = p.hooks.iter().map(ToString::to_string).collect();
            let grant = p
                .grant
                .as_ref()
                .map_or_else(|| "ungranted".to_owned(), |g| format!("grant: {g}"));
            write!(
                f,
                "{}\t{}\tsha256:{}\thooks: {}\twit: heet:plugin@{}\t{}\t{grant}",
                p.name,
                p.file.display(),
                p.sha256,
                hooks.join(","),
                p.wit.join(","),
                p.lock
            )?;
        }
        Ok(())
    }
}

pub fn plugins_list(global: &Global) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    let runtime = Runtime::new()?;
    emit(
        global,
        &PluginList {
            plugins: plugins::inspect(&runtime, &def)?,
        },
    )?;
    Ok(Outcome::Done)
}

/// What `heet plugins lock` changed.
#[derive(Debug, Serialize)]
pub struct LockReport {
    pub file: PathBuf,
    pub plugins: Vec<LockChange>,
}

#[derive(Debug, Serialize)]
pub struct LockChange {
    pub name: String,
    pub sha256: Option<String>,
    pub change: LockChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockChangeKind {
    Added,
    Updated,
    Unchanged,
    Removed,
}

impl fmt::Display for LockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pinned = self
            .plugins
            .iter()
            .filter(|p| p.change != LockChangeKind::Removed)
            .count();
        write!(f, "wrote {}: {pinned} plugin(s)", self.file.display())?;
        for p in &self.plugins {
            let (mark, what) = match p.change {
                LockChangeKind::Added => ('+', "added"),
                LockChangeKind::Updated => ('~', "updated"),
                LockChangeKind::Unchanged => ('=', "unchanged"),
                LockChangeKind::Removed => ('-', "removed"),
            };
            write!(f, "\n  {mark} {}\t{what}", p.name)?;
            if let Some(sha) = &p.sha256 {
                write!(f, "\tsha256:{sha}")?;
            }
        }
        Ok(())
    }
}

/// Pins the plugin folder as it is. Every plugin is loaded first (without running it), so a
/// file that is not a component heet can run is never locked.
pub fn plugins_lock(global: &Global) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    let runtime = Runtime::new()?;
    let infos = plugins::inspect(&runtime, &def)?;
    let old = plugins::lock::Lock::load(&def)?;
    let new = plugins::lock::Lock::of(infos.iter().map(|i| (i.name.clone(), i.sha256.clone())))
        .with_provenance_of(&old);
    let mut changes: Vec<LockChange> = infos
        .iter()
        .map(|i| LockChange {
            name: i.name.clone(),
            sha256: Some(i.sha256.clone()),
            change: match old.pinned(&i.name) {
                None => LockChangeKind::Added,
                Some(sha) if sha == i.sha256 => LockChangeKind::Unchanged,
                Some(_) => LockChangeKind::Updated,
            },
        })
        .collect();
    changes.extend(
        old.plugins
            .keys()
            .filter(|name| new.pinned(name).is_none())
            .map(|name| LockChange {
                name: name.clone(),
                sha256: None,
                change: LockChangeKind::Removed,
            }),
    );
    let file = plugins::lock::path(&def);
    write_atomically(&file, new.to_toml().as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    emit(
        global,
        &LockReport {
            file,
            plugins: changes,
        },
    )?;
    Ok(Outcome::Done)
}

/// Replaces `file` whole or not at all: a crash never leaves half a lock.
pub(crate) fn write_atomically(file: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, contents)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

fn source(s: &str) -> anyhow::Result<plugins::registry::Source> {
    s.parse().map_err(|e: String| UsageError(e).into())
}

/// A password from the first line of stdin, for `--password-stdin`.
fn password_from_stdin(wanted: bool) -> anyhow::Result<Option<String>> {
    if !wanted {
        return Ok(None);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(UsageError("--password-stdin: stdin held no password".into()).into());
    }
    Ok(Some(password))
}

pub async fn plugins_add(
    global: &Global,
    from: &str,
    name: Option<&str>,
    grant: bool,
) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    let report = plugins::share::add(&def, &Runtime::new()?, &source(from)?, name, grant).await?;
    emit(global, &report)?;
    Ok(Outcome::Done)
}

pub async fn plugins_update(
    global: &Global,
    name: Option<&str>,
    yes: bool,
) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    let report = plugins::share::update(&def, &Runtime::new()?, name, yes).await?;
    emit(global, &report)?;
    Ok(Outcome::Done)
}

pub fn plugins_remove(global: &Global, name: &str) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    emit(global, &plugins::share::remove(&def, name)?)?;
    Ok(Outcome::Done)
}

pub async fn plugins_publish(
    global: &Global,
    file: &Path,
    target: &str,
    key: &Path,
    password_stdin: bool,
) -> anyhow::Result<Outcome> {
    let target = source(target)?;
    let password = password_from_stdin(password_stdin)?;
    let report = plugins::share::publish(&Runtime::new()?, file, &target, key, password).await?;
    emit(global, &report)?;
    Ok(Outcome::Done)
}

pub fn plugins_keygen(
    global: &Global,
    out: &Path,
    password_stdin: bool,
) -> anyhow::Result<Outcome> {
    let password = password_from_stdin(password_stdin)?;
    emit(global, &plugins::share::keygen(out, password)?)?;
    Ok(Outcome::Done)
}

/// What `heet plugins new` wrote.
#[derive(Debug, Serialize)]
pub struct NewReport {
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for NewReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created plugin {} in {}\nnext: cd {} && cargo test && heet plugins build --out <project>/plugins",
            self.name,
            self.dir.display(),
            self.dir.display()
        )
    }
}

pub fn plugins_new(
    global: &Global,
    name: &str,
    lang: plugins::scaffold::Lang,
    path: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let dir = path.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    let files = plugins::scaffold::create(name, lang, &dir)?;
    emit(
        global,
        &NewReport {
            name: name.to_owned(),
            dir,
            files,
        },
    )?;
    Ok(Outcome::Done)
}

/// `heet plugins test`: builds the plugin (unless given a component), runs its fixtures;
/// exit 1 when a case fails, after the report.
pub fn plugins_test(
    global: &Global,
    fixtures: &[PathBuf],
    component: Option<&Path>,
    manifest_path: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let folder = manifest_path
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let out = tempfile::tempdir()?;
    let component = match component {
        Some(c) => c.to_owned(),
        None => {
            let built = plugins::build::build(&plugins::build::BuildRequest {
                manifest_path: manifest_path.map(Path::to_owned),
                packages: Vec::new(),
                out_dir: Some(out.path().to_owned()),
            })?;
            match built.as_slice() {
                [one] => one.path.clone(),
                many => {
                    return Err(UsageError(format!(
                        "this workspace builds {} plugins: name the one to test with --component",
                        many.len()
                    ))
                    .into());
                }
            }
        }
    };
    let fixtures = if fixtures.is_empty() {
        plugins::harness::fixtures_in(&folder)?
    } else {
        fixtures.to_vec()
    };
    let report = plugins::harness::run(&Runtime::new()?, &component, &fixtures)?;
    emit(global, &report)?;
    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} plugin test case(s) failed",
            report.failed,
            report.cases.len()
        );
    }
    Ok(Outcome::Done)
}

#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub built: Vec<plugins::build::Built>,
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.built.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}\t{}\t{} bytes\tsha256:{}",
                b.name,
                b.path.display(),
                b.bytes,
                b.sha256
            )?;
        }
        Ok(())
    }
}

pub fn plugins_build(
    global: &Global,
    req: &plugins::build::BuildRequest,
) -> anyhow::Result<Outcome> {
    emit(
        global,
        &BuildReport {
            built: plugins::build::build(req)?,
        },
    )?;
    Ok(Outcome::Done)
}

/// What `heet init` made.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub project: String,
    pub region: String,
    /// The files written, relative to the project's folder.
    pub files: Vec<PathBuf>,
    #[serde(skip)]
    next: String,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.next)
    }
}

/// Starts a project in the folder of `--file` (the current one by default).
pub async fn init(global: &Global, name: Option<&str>) -> anyhow::Result<Outcome> {
    let folder = match global.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let dir = folder
        .canonicalize()
        .with_context(|| format!("cannot read {}", folder.display()))?;
    let project = crate::init::project_name(name, &dir)?;
    let region = match &global.region {
        Some(r) => crate::init::Region {
            name: r.clone(),
            source: "from --region",
        },
        None => crate::init::region(global.profile.as_deref()).await,
    };
    let files = crate::init::files(&project, &region)?;
    crate::init::create(&dir, &files)?;
    let report = InitReport {
        next: crate::init::next_steps(&project, &region),
        project,
        region: region.name,
        files: files.into_iter().map(|(p, _)| p).collect(),
    };
    emit(global, &report)?;
    Ok(Outcome::Done)
}

/// Draws `env` as `format` on stdout: from the definition and the plugins (no AWS call), or
/// from what runs (`live`: reads only).
pub async fn graph(
    global: &Global,
    env: &str,
    format: crate::cli::GraphFormat,
    live: bool,
) -> anyhow::Result<Outcome> {
    let Prepared {
        def, aws, desired, ..
    } = prepare(global, env).await?;
    let graph = if live {
        let Survey {
            observed,
            resources,
            dns,
            ..
        } = survey(&aws, &def, &desired, true).await?;
        crate::graph::live(&def.project, env, &observed, &resources, &dns)
    } else {
        crate::graph::of(&desired, def.domain.as_deref())
    };
    let text = match format {
        crate::cli::GraphFormat::Dot => crate::graph::dot(&graph),
        crate::cli::GraphFormat::Mermaid => crate::graph::mermaid(&graph),
        crate::cli::GraphFormat::Svg => crate::graph::svg(&graph)?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(Outcome::Done)
}
