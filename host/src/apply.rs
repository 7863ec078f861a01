//! Executes a [`Plan`]: the only code that changes anything in AWS.
//!
//! Order: one loop over stages, rollout rounds and places (`Plan::places`), every family's
//! changes of a place made at once: IAM and network creates, record deletes, terminations
//! that come first, retags; then per round the old instances that may go first, the
//! launches and the wait until they are healthy (while they get their own tags), addresses
//! and record upserts for the round's slots, the old instances they replace; network and
//! IAM deletes last. docs/kinds.md has the table of places.
//!
//! Launches go in batches: one RunInstances per role and launch settings, carrying the tags
//! its instances share and `heet:batch`, written ahead in the ledger with its ClientToken and
//! slots; each instance's slot is its AmiLaunchIndex in the batch, and its own tags (name,
//! index, id) follow by CreateTags. A run killed in between leaves instances the next run
//! places in their slots from the ledger, so whatever a crash interrupts, the next plan
//! finishes it, with no twin and no orphan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cloud::{Aws, Launch, LaunchError, Verdict};
use crate::desired::DesiredInstance;
use crate::kinds::iam::{self as iam_kind, Attachable, IamChange, Kind as IamKind};
use crate::kinds::instances::{Attribute, Ending, InstanceChange, ObservedInstance, Phase};
use crate::kinds::network::{self, NetChange, ObservedResource, Source, SubnetRef, VpcRef};
use crate::kinds::records::{RECORD_TTL, Reach, RecordChange, RecordOp, Zone};
use crate::kinds::stacks::StackChange;
use crate::kinds::{self, Bookkeeping, Change as _, Stage};
use crate::ledger::{self, Ledger};
use crate::namespace;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::rolling::Health;

/// Calls in flight at once (launches, tags, ledger pages): enough to hide latency; the pacer
/// keeps them within the account's rates.
const CONCURRENCY: usize = 16;
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The ledger as apply writes it: one write at a time, as a write rewrites whole pages (two
/// at once could each put back a page without the other's entries), while the work between
/// the writes of different families runs at once.
type Books<'l> = tokio::sync::Mutex<&'l mut Ledger>;

/// One instance as a command reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSummary {
    pub role: String,
    pub index: u32,
    pub name: String,
    pub instance_id: String,
    pub instance_type: String,
    pub state: String,
    pub dns_name: Option<String>,
}

impl InstanceSummary {
    pub fn of(o: &ObservedInstance) -> InstanceSummary {
        let (role, index) = o.role_index();
        InstanceSummary {
            role: role.unwrap_or_default().to_owned(),
            index: index.unwrap_or(0),
            name: o.name().to_owned(),
            instance_id: o.instance_id.clone(),
            instance_type: o.instance_type.clone(),
            state: o.state.clone(),
            dns_name: o.dns_name().map(str::to_owned),
        }
    }
}

/// Orders instances as the definition does: by role, then index.
pub fn sort_by_slot(instances: &mut [InstanceSummary]) {
    instances.sort_by(|a, b| (&a.role, a.index).cmp(&(&b.role, b.index)));
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Applied {
    /// Stack changes made, as the plan shows them.
    pub stacks: Vec<String>,
    pub terminated: Vec<String>,
    pub retagged: Vec<String>,
    pub launched: Vec<InstanceSummary>,
    /// Network changes made, as the plan shows them.
    pub network: Vec<String>,
    /// IAM changes made, as the plan shows them.
    pub iam: Vec<String>,
    /// Load balancer changes made, as the plan shows them.
    pub balancers: Vec<String>,
    /// Names not written because their instance has no DNS name or address at all.
    pub unresolved: Vec<String>,
}

/// What apply needs beyond the plan.
pub struct Context<'a> {
    /// Read under the lock; kept current as apply writes it.
    pub ledger: &'a mut Ledger,
    /// The network resources observed when planning: the ids the plan refers to.
    pub resources: &'a [ObservedResource],
    /// The project's zone, when it exists.
    pub zone: Option<Zone>,
    pub run_id: &'a str,
    /// Keep the successors of a rollout batch that did not become healthy, for debugging.
    pub keep_failed: bool,
}

pub async fn apply(
    aws: &Aws,
    plan: &Plan,
    cx: Context<'_>,
    progress: &Progress,
) -> anyhow::Result<Applied> {
    let Context {
        ledger,
        resources,
        zone,
        run_id,
        keep_failed,
    } = cx;
    applicable(plan)?;
    let ids: BTreeMap<String, String> = resources
        .iter()
        .filter(|r| r.is_heets(&plan.project, &plan.env))
        .map(|r| (r.resource.clone(), r.aws_id.clone()))
        .collect();
    let shared = Shared {
        aws,
        ledger: &tokio::sync::Mutex::new(ledger),
        rounds: plan.instances.slot_rounds(),
        live: Mutex::new(Live {
            resources: ids.clone(),
            balancers: plan.balancers.dns.clone(),
            targets: plan.balancers.targets.clone(),
            ..Live::default()
        }),
    };
    // What the ledger says that is only bookkeeping (`Family::settled`: IAM entities and
    // stacks a killed run made confirmed, gone ones and records someone changed forgotten),
    // and the entries of launches from before batch launches (which say nothing the
    // instances' tags do not) go.
    let mut bookkeeping: Entries = Vec::new();
    for family in plan.families() {
        for (b, id) in family.settled() {
            bookkeeping.extend(entries(&b, ledger::State::Done, id)?);
        }
    }
    let legacy = shared.ledger.lock().await.legacy();
    bookkeeping.extend(legacy.into_iter().map(|k| (k, None)));
    book(aws, shared.ledger, bookkeeping).await?;

    // Groups and subnets can only go once their instances are fully gone.
    let full = plan
        .families()
        .iter()
        .flat_map(|f| f.changes())
        .any(|c| c.needs_instances_gone());
    let mut instances = InstanceSteps {
        plan,
        run_id,
        full,
        keep_failed,
        progress,
        done: InstancesDone::default(),
        round: None,
    };
    let mut records = RecordSteps {
        plan,
        zone,
        unresolved: Vec::new(),
    };
    let mut network = Tiered::new(
        "network",
        &plan.network,
        NetApply {
            aws,
            project: &plan.project,
            env: &plan.env,
            ids,
            zones: OnceCell::new(),
            launched: BTreeMap::new(),
            moved: Mutex::default(),
        },
    );
    let mut iam = Tiered::new(
        "iam",
        &plan.iam.changes,
        IamApply {
            aws,
            project: &plan.project,
            env: &plan.env,
            arns: Mutex::new(plan.iam.arns.clone()),
            fresh: Default::default(),
        },
    );
    let mut stacks = Tiered::new(
        "stack",
        &plan.stacks.changes,
        StackApply {
            aws,
            project: &plan.project,
            env: &plan.env,
            run_id,
        },
    );
    let mut balancers = Tiered::new(
        "balancer",
        &plan.balancers.changes,
        BalancerApply {
            aws,
            project: &plan.project,
            env: &plan.env,
            resources: BTreeMap::new(),
            serving: BTreeMap::new(),
            default_network: OnceCell::new(),
            arns: Mutex::default(),
            drains: Mutex::default(),
            made_dns: Mutex::default(),
            registered: Mutex::default(),
            deleted: Mutex::default(),
            unhealthy: Mutex::default(),
        },
    );
    {
        // The one registration of each family's executor; the loop below is apply's order.
        let mut steps: [&mut dyn Steps; 6] = [
            &mut stacks,
            &mut instances,
            &mut balancers,
            &mut records,
            &mut network,
            &mut iam,
        ];
        for stage in Stage::ALL {
            for round in 0..plan.rounds(stage) {
                let places: Vec<u8> = plan.places(stage, round).into_iter().collect();
                let bands: Vec<Vec<u8>> = places
                    .chunk_by(|a, b| stage.band(*a) == stage.band(*b))
                    .map(<[u8]>::to_vec)
                    .collect();
                let shared = &shared;
                for band in &bands {
                    // Each family through the band's places in order, the families at once:
                    // IAM runs through its chain while the network waits out EC2's.
                    let runs = steps.iter_mut().map(|s| async move {
                        for &place in band {
                            s.run(
                                At {
                                    stage,
                                    round,
                                    place,
                                },
                                shared,
                            )
                            .await?;
                        }
                        anyhow::Ok(())
                    });
                    first_error(futures::future::join_all(runs).await)?;
                }
            }
        }
    }
    let InstancesDone {
        terminated,
        retagged,
        mut launched,
    } = instances.done;
    sort_by_slot(&mut launched);
    Ok(Applied {
        stacks: stacks.done,
        terminated,
        retagged,
        launched,
        network: network.done,
        iam: iam.done,
        balancers: balancers.done,
        unresolved: records.unresolved,
    })
}

/// Whether anything stops the plan before it starts: a name someone else holds, or a change
/// the plan must not make, whichever family it is of. Asked before a command asks to
/// confirm, and again by [`apply`].
pub fn applicable(plan: &Plan) -> anyhow::Result<()> {
    for family in plan.families() {
        let (label, names) = (family.label(), family.conflicts());
        if !names.is_empty() {
            anyhow::bail!(
                "nothing applied: {} {label} name(s) are held by what heet did not create: {}",
                names.len(),
                names.join("; ")
            );
        }
        let refused = family.refused();
        if !refused.is_empty() {
            anyhow::bail!(
                "nothing applied: {} {label} change(s) refused: {}",
                refused.len(),
                refused.join("; ")
            );
        }
    }
    Ok(())
}

/// Of the results of the families' steps at one place, run at once and awaited all (one
/// failing does not cut another off between its ledger writes and its calls): the first
/// failure is the error, its typed cause and exit code with it; the others are logged.
fn first_error(results: Vec<anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut errors = results.into_iter().filter_map(Result::err);
    let Some(first) = errors.next() else {
        return Ok(());
    };
    for other in errors {
        tracing::error!("{other:#}");
    }
    Err(first)
}

/// Where apply is: a stage, the rollout round (0 outside the rounds), a place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    stage: Stage,
    round: u32,
    place: u8,
}

/// What the families' executors share while a plan is applied.
struct Shared<'a, 'l> {
    aws: &'a Aws,
    ledger: &'a Books<'l>,
    /// The round each replaced slot's rollout moves what points at it in (others: 0).
    rounds: BTreeMap<&'a str, u32>,
    live: Mutex<Live>,
}

/// What apply learns as it goes that other families need.
#[derive(Default)]
struct Live {
    /// heet's network resources by `heet:resource`, as found and as created: what launches
    /// go into.
    resources: BTreeMap<String, String>,
    /// The instance launched in each slot this run: what addresses are associated with.
    launched: BTreeMap<String, String>,
    /// How each slot's instance is reached once it runs (or got an address): what its
    /// records point at.
    dns: BTreeMap<String, Reach>,
    /// The slots of this round whose successors did not become healthy: nothing moves to
    /// them, and their old instances keep serving.
    failed: BTreeSet<String>,
    /// The DNS name of each role's load balancer, as found and as made: what its names
    /// point at.
    balancers: BTreeMap<String, String>,
    /// The instance each slot of this round holds once it runs (launched, or a successor):
    /// what is registered in its target group.
    serving: BTreeMap<String, String>,
    /// heet's target groups by ARN: each one's drain time (seconds) and the instances
    /// registered in it, which leave it, drained, before they are terminated.
    targets: BTreeMap<String, (u32, BTreeSet<String>)>,
    /// Successors that run but did not become healthy in their target group: (slot, what
    /// was seen).
    unhealthy: Vec<(String, Verdict)>,
}

impl Shared<'_, '_> {
    fn live(&self) -> MutexGuard<'_, Live> {
        locked(&self.live)
    }

    /// Takes `ids` out of every target group heet's balancers send them traffic from, and
    /// waits until each is drained: what an instance serves ends before it is terminated.
    async fn drain(&self, ids: &[String]) -> anyhow::Result<()> {
        let leaving: Vec<(String, u32, Vec<String>)> = {
            let mut live = self.live();
            live.targets
                .iter_mut()
                .filter_map(|(group, (drain, registered))| {
                    let these: Vec<String> = ids
                        .iter()
                        .filter(|i| registered.remove(*i))
                        .cloned()
                        .collect();
                    (!these.is_empty()).then(|| (group.clone(), *drain, these))
                })
                .collect()
        };
        let drains = leaving.iter().map(|(group, drain, these)| async move {
            tracing::info!(
                "draining {} from {group} (up to {drain}s) before terminating",
                these.join(", ")
            );
            self.aws.elb.drain(group, these, *drain).await
        });
        futures::future::try_join_all(drains).await?;
        Ok(())
    }

    /// Whether `c` is made at `at`: due there ([`kinds::due`]), and not pointing at a slot
    /// that failed.
    fn now(&self, c: &dyn kinds::Change, at: At) -> bool {
        c.stage().1 == at.place
            && kinds::due(c, at.stage, at.round, &self.rounds)
            && !c.slot().is_some_and(|s| self.live().failed.contains(s))
    }
}

/// A family's executor as apply's loop runs it: at each place of each stage (and rollout
/// round), every family's changes of that place are made at once.
trait Steps {
    /// Makes its changes at `at` (none: nothing is called).
    fn run<'s>(
        &'s mut self,
        at: At,
        shared: &'s Shared<'_, '_>,
    ) -> LocalBoxFuture<'s, anyhow::Result<()>>;
}

/// A family whose changes are made one by one, tier by tier (network, IAM), by its
/// [`Executor`].
struct Tiered<'a, C, E> {
    family: &'static str,
    changes: &'a [C],
    exec: E,
    /// The changes made, as the plan shows them.
    done: Vec<String>,
}

impl<'a, C, E> Tiered<'a, C, E> {
    fn new(family: &'static str, changes: &'a [C], exec: E) -> Self {
        Tiered {
            family,
            changes,
            exec,
            done: Vec::new(),
        }
    }
}

impl<C: kinds::Change, E: Executor<C>> Steps for Tiered<'_, C, E> {
    fn run<'s>(
        &'s mut self,
        at: At,
        shared: &'s Shared<'_, '_>,
    ) -> LocalBoxFuture<'s, anyhow::Result<()>> {
        async move {
            let tier: Vec<&C> = self.changes.iter().filter(|c| shared.now(*c, at)).collect();
            if tier.is_empty() {
                return Ok(());
            }
            self.exec.begin(&shared.live());
            let done = made_tier(shared, &tier, &mut self.exec, self.family).await;
            // What it made is published even when another change of the tier failed; the
            // tier's own failure stays the error.
            let published = self.exec.end(shared).await;
            self.done.extend(done?);
            published
        }
        .boxed_local()
    }
}

/// A rollout batch whose successors did not become healthy in time: the rollout stopped
/// after it. Exit 1.
#[derive(Debug, thiserror::Error)]
pub struct RolloutStopped {
    /// The batch, from 1.
    pub batch: u32,
    /// Each failed successor: its slot (`role[index] name`) and what was last seen of it.
    pub failed: Vec<(String, Verdict)>,
    /// The old instances that keep running and keep their names.
    pub kept: Vec<String>,
    /// Whether the failed successors were kept (`--keep-failed`).
    pub successors_kept: bool,
}

impl fmt::Display for RolloutStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(slot, v)| format!("{slot}: {v}"))
            .collect();
        write!(
            f,
            "rollout stopped at batch {}: {} successor(s) did not become healthy in time: {}; ",
            self.batch,
            self.failed.len(),
            failed.join("; ")
        )?;
        if self.kept.is_empty() {
            write!(f, "no old instance is left to keep serving")?;
        } else {
            write!(
                f,
                "the old instances keep running and keep their names: {}",
                self.kept.join(", ")
            )?;
        }
        if self.successors_kept {
            write!(f, "; the failed successors are kept (--keep-failed)")
        } else {
            write!(
                f,
                "; the failed successors were terminated (--keep-failed keeps them)"
            )
        }
    }
}

/// What the instances' steps did.
#[derive(Default)]
struct InstancesDone {
    terminated: Vec<String>,
    retagged: Vec<String>,
    launched: Vec<InstanceSummary>,
}

/// What a round's launch step leaves for its retire step.
#[derive(Default)]
struct RoundWaited {
    /// Successors waited on that did not become healthy.
    failed: Vec<Verdict>,
    /// Each successor's slot, by its instance id.
    successor_of: BTreeMap<String, String>,
}

/// The instances' executor, phase by phase ([`Phase`]). Round 0 launches new slots and the
/// first batch of every role's rollout (all of a replacement all at once); each later round
/// the next batch. A round: the old instances that may go first go, the round's instances
/// are launched and waited for until healthy, what points at the slots of the round
/// (addresses, names) is moved to them by its own family, and the old instances they
/// replace go.
struct InstanceSteps<'a> {
    plan: &'a Plan,
    run_id: &'a str,
    /// Whether terminated instances must be fully gone (what they used is deleted after).
    full: bool,
    keep_failed: bool,
    progress: &'a Progress,
    done: InstancesDone,
    round: Option<RoundWaited>,
}

impl Steps for InstanceSteps<'_> {
    fn run<'s>(
        &'s mut self,
        at: At,
        shared: &'s Shared<'_, '_>,
    ) -> LocalBoxFuture<'s, anyhow::Result<()>> {
        async move {
            let Some(phase) = Phase::of(at.stage, at.place) else {
                return Ok(());
            };
            if !self.plan.instances.has_work(phase, at.round) {
                return Ok(());
            }
            match phase {
                Phase::Terminate => self.terminate(shared, Ending::First).await,
                Phase::Retag => self.retag(shared).await,
                Phase::RetireFirst => self.terminate(shared, Ending::BeforeRound(at.round)).await,
                Phase::Launch => self.launch(at.round, shared).await,
                Phase::Retire => self.retire(at.round, shared).await,
            }
        }
        .boxed_local()
    }
}

impl InstanceSteps<'_> {
    /// Terminates the old instances that end at `ending`.
    async fn terminate(&mut self, shared: &Shared<'_, '_>, ending: Ending) -> anyhow::Result<()> {
        let ids: Vec<String> = self
            .plan
            .instances
            .changes
            .iter()
            .filter_map(|c| c.terminates())
            .filter(|(_, e)| *e == ending)
            .map(|(id, _)| id.to_owned())
            .collect();
        shared.drain(&ids).await?;
        self.unprotect(shared, &ids).await?;
        terminate(shared.aws, &ids, self.full, self.progress).await?;
        self.done.terminated.extend(ids);
        Ok(())
    }

    /// Turns termination protection off on those of `ids` whose slot's definition turned it
    /// off (the plan refuses to terminate any other protected instance).
    async fn unprotect(&self, shared: &Shared<'_, '_>, ids: &[String]) -> anyhow::Result<()> {
        for id in ids {
            if self.plan.instances.unprotect.contains(id) {
                tracing::info!("{id}: disable_api_termination off, to terminate it");
                shared
                    .aws
                    .ec2
                    .modify(id, Attribute::ApiTermination(false))
                    .await?;
            }
        }
        Ok(())
    }

    /// Sets the tags of the instances that stay; then the batches whose instances all carry
    /// their slot tags are over.
    async fn retag(&mut self, shared: &Shared<'_, '_>) -> anyhow::Result<()> {
        let aws = shared.aws;
        let retags: Vec<_> = self
            .plan
            .instances
            .changes
            .iter()
            .filter_map(|c| Some((c, c.retags()?)))
            .collect();
        let results: Vec<anyhow::Result<()>> = stream::iter(&retags)
            .map(|(c, (id, name, set))| async move {
                // What is changed in place first; the tags then say it is.
                for a in c.modifies() {
                    tracing::info!("{id} ({name}): {a}");
                    aws.ec2.modify(id, *a).await?;
                }
                if set.is_empty() {
                    return Ok(());
                }
                tracing::info!("retagging {id} ({name})");
                aws.ec2.set_tags(&[(*id).to_owned()], set).await
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
        self.done
            .retagged
            .extend(retags.iter().map(|(_, (id, _, _))| (*id).to_owned()));
        let settled = &self.plan.instances.settled;
        book(
            aws,
            shared.ledger,
            settled.iter().map(|k| (k.clone(), None)).collect(),
        )
        .await
    }

    /// Launches the round's instances and waits until they (and the successors and booting
    /// instances the round needs) are healthy; each instance's own tags go on meanwhile.
    async fn launch(&mut self, round: u32, shared: &Shared<'_, '_>) -> anyhow::Result<()> {
        let (aws, plan) = (shared.aws, self.plan);
        let launches: Vec<&DesiredInstance> = plan
            .instances
            .changes
            .iter()
            .filter_map(InstanceChange::launches)
            .filter(|(_, r)| *r == round)
            .map(|(d, _)| d)
            .collect();
        let resources = shared.live().resources.clone();
        let launched = launch(aws, plan, &launches, shared.ledger, self.run_id, &resources).await?;
        let tagging = async {
            tag_members(aws, &launched.batches).await?;
            set_launch_attributes(aws, &launched.batches).await
        };
        let (tagged, waited) = tokio::join!(tagging, self.wait(round, &launched, shared));
        let waited = waited?;
        tagged?;
        // Every instance of these batches carries its own tags: the batches are over.
        book(aws, shared.ledger, launched.settled()).await?;
        if !launched.failures.is_empty() {
            // The launched ones have their tags (the ledger kept their batches until then):
            // the next `up` keeps them and retries the rest.
            anyhow::bail!(
                "{} of {} launch(es) failed; {} instance(s) launched and kept for the next run: {}",
                launched.failures.len(),
                launched.batches.len() + launched.failures.len(),
                launched.ids().len(),
                launched.failures.join("; ")
            );
        }
        self.round = Some(waited);
        Ok(())
    }

    /// Waits for the round's instances; what became healthy is published for what points at
    /// them, what did not is the round's failed slots.
    async fn wait(
        &mut self,
        round: u32,
        launched: &Launched<'_>,
        shared: &Shared<'_, '_>,
    ) -> anyhow::Result<RoundWaited> {
        let (aws, plan) = (shared.aws, self.plan);
        let rolled: BTreeMap<&str, &DesiredInstance> = plan
            .instances
            .changes
            .iter()
            .filter_map(InstanceChange::rollout)
            .filter(|(_, s)| s.round == round)
            .map(|(d, _)| (d.id.as_str(), d))
            .collect();
        // What the round waits for, and how: a successor as its role's rolling says; a new
        // slot's instance, or a kept one still booting whose names wait, until it runs.
        let mut wants: Vec<(String, Health, Duration)> = Vec::new();
        let mut successor_of: BTreeMap<String, String> = BTreeMap::new();
        for (slot, _, id) in launched.members() {
            match rolled.get(slot.as_str()) {
                Some(d) => {
                    wants.push((id.clone(), d.rolling.health, d.rolling.timeout));
                    successor_of.insert(id, d.id.clone());
                }
                None => wants.push((id, Health::Running, WAIT_TIMEOUT)),
            }
        }
        for c in &plan.instances.changes {
            if let (Some(id), Some((d, step))) = (c.successor(), c.rollout())
                && step.round == round
            {
                wants.push((id.to_owned(), d.rolling.health, d.rolling.timeout));
                successor_of.insert(id.to_owned(), d.id.clone());
            }
        }
        let booting: Vec<(&str, &str)> = if round == 0 {
            let awaited = &plan.instances.awaited;
            awaited
                .iter()
                .map(|(s, i)| (s.as_str(), i.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        for (_, id) in &booting {
            if !wants.iter().any(|(w, _, _)| w == id) {
                wants.push(((*id).to_owned(), Health::Running, WAIT_TIMEOUT));
            }
        }
        let verdicts = if wants.is_empty() {
            Vec::new()
        } else {
            let bar = self.progress.bar(wants.len(), "booting");
            let verdicts = aws
                .ec2
                .health(&wants, |done, _| bar.set_position(done as u64))
                .await?;
            bar.finish_and_clear();
            verdicts
        };
        let (failed, stuck): (Vec<&Verdict>, Vec<&Verdict>) = verdicts
            .iter()
            .filter(|v| !v.healthy)
            .partition(|v| successor_of.contains_key(&v.instance_id));
        if !stuck.is_empty() {
            let shown: Vec<String> = stuck.iter().map(|v| v.to_string()).collect();
            anyhow::bail!(
                "{} instance(s) not running after {}s: {}",
                stuck.len(),
                WAIT_TIMEOUT.as_secs(),
                shown.join(", ")
            );
        }
        let by_id: BTreeMap<&str, &ObservedInstance> = verdicts
            .iter()
            .filter(|v| v.healthy)
            .filter_map(|v| v.seen.as_ref())
            .map(|o| (o.instance_id.as_str(), o))
            .collect();
        tag_volumes(aws, launched, &by_id).await?;
        let mut dns: BTreeMap<String, Reach> = BTreeMap::new();
        let mut serving: BTreeMap<String, String> = BTreeMap::new();
        let mut summaries = Vec::new();
        for (slot, d, id) in launched.members() {
            let Some(o) = by_id.get(id.as_str()) else {
                continue;
            };
            summaries.push(InstanceSummary {
                role: d.role.clone(),
                index: d.index,
                name: d.name.clone(),
                instance_id: id.clone(),
                instance_type: o.instance_type.clone(),
                state: o.state.clone(),
                dns_name: o.dns_name().map(str::to_owned),
            });
            serving.insert(slot.clone(), id.clone());
            dns.insert(slot, o.reach());
        }
        let waited = booting.iter().copied().chain(
            successor_of
                .iter()
                .map(|(id, slot)| (slot.as_str(), id.as_str())),
        );
        for (slot, id) in waited {
            if let Some(o) = by_id.get(id) {
                serving.insert(slot.to_owned(), id.to_owned());
                dns.insert(slot.to_owned(), o.reach());
            }
        }
        sort_by_slot(&mut summaries);
        for s in &summaries {
            tracing::info!(
                "instance ready: {} ({} {})",
                s.dns_name.as_deref().unwrap_or("no DNS name"),
                s.name,
                s.instance_id
            );
        }
        {
            let mut live = shared.live();
            live.launched = summaries
                .iter()
                .map(|i| {
                    let slot = namespace::slot_id(&plan.project, &plan.env, &i.role, i.index);
                    (slot, i.instance_id.clone())
                })
                .collect();
            live.dns.extend(dns);
            live.serving = serving;
            live.failed = failed
                .iter()
                .filter_map(|v| successor_of.get(&v.instance_id).cloned())
                .collect();
        }
        self.done.launched.extend(summaries);
        Ok(RoundWaited {
            failed: failed.into_iter().cloned().collect(),
            successor_of,
        })
    }

    /// Retires the old instances whose successors are healthy and hold their names; stops
    /// the rollout when a successor of the round was not healthy in time.
    async fn retire(&mut self, round: u32, shared: &Shared<'_, '_>) -> anyhow::Result<()> {
        let RoundWaited {
            mut failed,
            successor_of,
        } = self.round.take().unwrap_or_default();
        // Successors that run but did not become healthy in their target group.
        let unhealthy = std::mem::take(&mut shared.live().unhealthy);
        failed.extend(unhealthy.into_iter().map(|(_, v)| v));
        let failed_slots: BTreeSet<String> = shared.live().failed.clone();
        let failed_refs: BTreeSet<&str> = failed_slots.iter().map(String::as_str).collect();
        let (retired, kept) = self.plan.instances.after_round(round, &failed_refs);
        let retired: Vec<String> = retired.into_iter().map(str::to_owned).collect();
        let kept: Vec<String> = kept.into_iter().map(str::to_owned).collect();
        shared.drain(&retired).await?;
        self.unprotect(shared, &retired).await?;
        terminate(shared.aws, &retired, self.full, self.progress).await?;
        self.done.terminated.extend(retired);
        if failed.is_empty() {
            return Ok(());
        }
        let slots: BTreeMap<&str, &DesiredInstance> = self
            .plan
            .instances
            .changes
            .iter()
            .filter_map(InstanceChange::rollout)
            .map(|(d, _)| (d.id.as_str(), d))
            .collect();
        let ids: Vec<String> = failed.iter().map(|v| v.instance_id.clone()).collect();
        // A failed successor serves nothing, kept or not: out of its target groups.
        shared.drain(&ids).await?;
        if !self.keep_failed {
            // A successor that never served goes, launched with protection or not.
            for v in &failed {
                let protected = successor_of
                    .get(&v.instance_id)
                    .and_then(|slot| slots.get(slot.as_str()))
                    .is_some_and(|d| d.disable_api_termination);
                if protected {
                    shared
                        .aws
                        .ec2
                        .modify(&v.instance_id, Attribute::ApiTermination(false))
                        .await?;
                }
            }
            terminate(shared.aws, &ids, false, self.progress).await?;
            self.done.terminated.extend(ids);
        }
        // What this round moved is in the ledger; the rest of the rollout, and whatever its
        // old instances need, stays for a later `up`.
        Err(anyhow::Error::new(RolloutStopped {
            batch: round + 1,
            failed: failed
                .into_iter()
                .map(|v| {
                    let d = slots[successor_of[&v.instance_id].as_str()];
                    (format!("{}[{}] {}", d.role, d.index, d.name), v)
                })
                .collect(),
            kept,
            successors_kept: self.keep_failed,
        }))
    }
}

/// The records' executor: each place's record changes as one Route53 change.
struct RecordSteps<'a> {
    plan: &'a Plan,
    /// The project's zone, once it exists.
    zone: Option<Zone>,
    /// Names not written because their instance has no DNS name or address at all.
    unresolved: Vec<String>,
}

impl Steps for RecordSteps<'_> {
    fn run<'s>(
        &'s mut self,
        at: At,
        shared: &'s Shared<'_, '_>,
    ) -> LocalBoxFuture<'s, anyhow::Result<()>> {
        async move {
            let changes: Vec<&RecordChange> = self
                .plan
                .dns
                .changes
                .iter()
                .filter(|c| shared.now(*c, at))
                .collect();
            if changes.is_empty() {
                return Ok(());
            }
            let (dns, balancers) = {
                let live = shared.live();
                (live.dns.clone(), live.balancers.clone())
            };
            let unresolved = records_in(
                shared,
                self.plan,
                &mut self.zone,
                &dns,
                &balancers,
                &changes,
            )
            .await?;
            self.unresolved.extend(unresolved);
            Ok(())
        }
        .boxed_local()
    }
}

/// Stores `changes` in the ledger: the pages entries move to before the pages they leave.
async fn book(
    aws: &Aws,
    ledger: &Books<'_>,
    changes: Vec<(String, Option<ledger::Entry>)>,
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    // Held until the pages are written: the next write stages against pages as stored.
    let mut ledger = ledger.lock().await;
    let write = ledger.stage(changes);
    for step in write.steps() {
        let results: Vec<anyhow::Result<()>> = stream::iter(step)
            .map(|(name, value)| aws.ssm.put(name, value))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
    }
    aws.ssm.delete_all(&write.delete).await
}

/// Ledger changes: an entry under its key, or the key to drop.
type Entries = Vec<(String, Option<ledger::Entry>)>;

/// A network or IAM resource's ledger entry.
fn resource_entry(resource: &str, aws_id: Option<&str>, state: ledger::State) -> Entries {
    let entry = ledger::Entry::Resource {
        resource: resource.to_owned(),
        aws_id: aws_id.map(str::to_owned),
        state,
    };
    vec![(ledger::resource_key(resource), Some(entry))]
}

/// The one write-ahead protocol, for every kind: `ahead` is in the ledger before `work`
/// runs, and what `after` makes of its result once it is done. A run killed in between
/// leaves entries the next plan resolves: what was written ahead is adopted if it happened
/// (a resource by its tags, a launch by its ClientToken, a record by its target), and an
/// entry of something that is gone is forgotten.
async fn written_ahead<T, F>(
    aws: &Aws,
    ledger: &Books<'_>,
    ahead: Entries,
    work: F,
    after: impl FnOnce(&T) -> anyhow::Result<Entries>,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    book(aws, ledger, ahead).await?;
    let made = work.await?;
    book(aws, ledger, after(&made)?).await?;
    Ok(made)
}

/// What a change's bookkeeping writes in `state`: ahead (`pending`) or once made (`done`,
/// dropping what it removed). `made` says what it made: a resource's AWS id (known once it
/// is made), a record's target (known before).
fn entries(
    bookkeeping: &Bookkeeping,
    state: ledger::State,
    made: Option<&str>,
) -> anyhow::Result<Entries> {
    let done = state == ledger::State::Done;
    Ok(match bookkeeping {
        Bookkeeping::Create(resource) => resource_entry(resource, made, state),
        Bookkeeping::Record(name) => {
            let Some(target) = made else {
                anyhow::bail!("internal: the record {name} is booked without its target");
            };
            let entry = ledger::Entry::Record {
                name: name.clone(),
                target: target.to_owned(),
                ttl: RECORD_TTL,
                state,
            };
            vec![(ledger::record_key(name), Some(entry))]
        }
        Bookkeeping::Delete(resource) if done => vec![(ledger::resource_key(resource), None)],
        Bookkeeping::Unrecord(name) if done => vec![(ledger::record_key(name), None)],
        Bookkeeping::Delete(_) | Bookkeeping::Unrecord(_) | Bookkeeping::None => Vec::new(),
    })
}

/// What makes one kind's changes: the calls behind each, and what it keeps of what it made
/// for the changes after it. The ledger is not its business: [`made_tier`] books every
/// change.
trait Executor<C: kinds::Change> {
    /// Makes one change; returns the AWS id of what it created. The changes of a tier run at
    /// once, so it takes `&self`: what it keeps of a call is kept behind a lock.
    async fn run(&self, c: &C) -> anyhow::Result<Option<String>>;
    /// After a change is made and booked: its bookkeeping and the id `run` returned.
    fn made(&mut self, bookkeeping: &Bookkeeping, id: Option<&str>);
    /// Before a tier: takes what it needs of what other families made.
    fn begin(&mut self, _live: &Live) {}
    /// After a tier: gives other families what they need of what it made.
    async fn end(&mut self, _shared: &Shared<'_, '_>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The one executor of kinds' changes made one by one, for one tier: the changes of one
/// place, which need nothing of each other. The tier is written ahead together, its changes
/// are made at once (up to [`CONCURRENCY`] in flight, each kind's calls paced by the
/// account's buckets), and the ones made are confirmed together, under [`written_ahead`]; a
/// change that failed leaves its entry written ahead for the next plan, and stops apply
/// after its tier. Returns the changes made, as the plan shows them.
async fn made_tier<C: kinds::Change, E: Executor<C>>(
    shared: &Shared<'_, '_>,
    tier: &[&C],
    executor: &mut E,
    family: &str,
) -> anyhow::Result<Vec<String>> {
    let booked: Vec<(&C, Bookkeeping)> = tier.iter().map(|c| (*c, c.bookkeeping())).collect();
    let mut ahead = Vec::new();
    for (_, b) in &booked {
        ahead.extend(entries(b, ledger::State::Pending, None)?);
    }
    let runner = &*executor;
    let runs = stream::iter(&booked)
        .map(|(c, _)| async move {
            tracing::info!("{family}: {c}");
            runner.run(c).await
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<anyhow::Result<Option<String>>>>()
        .map(anyhow::Ok);
    let results = written_ahead(shared.aws, shared.ledger, ahead, runs, |results| {
        let mut after = Vec::new();
        for ((_, b), result) in booked.iter().zip(results) {
            if let Ok(id) = result {
                after.extend(entries(b, ledger::State::Done, id.as_deref())?);
            }
        }
        Ok(after)
    })
    .await?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for ((c, b), result) in booked.iter().zip(results) {
        match result {
            Ok(id) => {
                executor.made(b, id.as_deref());
                done.push(c.to_string());
            }
            Err(e) => failed.push((c.to_string(), e)),
        }
    }
    let mut failed = failed.into_iter();
    if let Some((change, first)) = failed.next() {
        let others: Vec<String> = failed.map(|(c, e)| format!("{c}: {e:#}")).collect();
        if others.is_empty() {
            return Err(first);
        }
        // The first failure stays the error, its typed cause (and exit code) with it.
        return Err(first.context(format!(
            "{} {family} changes failed (also {}); {change}",
            others.len() + 1,
            others.join("; ")
        )));
    }
    Ok(done)
}

/// What stack changes need beyond themselves: the tags and a token per call.
struct StackApply<'a> {
    aws: &'a Aws,
    project: &'a str,
    env: &'a str,
    run_id: &'a str,
}

impl Executor<StackChange> for StackApply<'_> {
    async fn run(&self, c: &StackChange) -> anyhow::Result<Option<String>> {
        use crate::namespace::{TAG_ENV, TAG_PROJECT, TAG_RESOURCE};
        let cfn = &self.aws.cfn;
        // A retry of a call (the SDK's) is the same request; another run's is not.
        let token = |what: &str| format!("heet-{}-{}-{what}", self.run_id, c.stack());
        let tags = BTreeMap::from([
            (TAG_PROJECT.to_owned(), self.project.to_owned()),
            (TAG_ENV.to_owned(), self.env.to_owned()),
            (TAG_RESOURCE.to_owned(), kinds::stacks::resource(c.stack())),
        ]);
        match c {
            StackChange::Create {
                name,
                send,
                replaces,
                ..
            } => {
                // A create that failed leaves a stack that can only be deleted.
                if let Some(old) = replaces {
                    cfn.delete(name, old, &token("delete")).await?;
                }
                Ok(Some(cfn.create(name, send, &tags, &token("create")).await?))
            }
            StackChange::Update { name, id, send, .. } => {
                cfn.update(name, id, send, &tags, &token("update")).await?;
                Ok(None)
            }
            StackChange::Delete { name, id, .. } => {
                cfn.delete(name, id, &token("delete")).await?;
                Ok(None)
            }
        }
    }

    fn made(&mut self, _: &Bookkeeping, _: Option<&str>) {}
}

/// What load balancer changes need beyond themselves.
struct BalancerApply<'a> {
    aws: &'a Aws,
    project: &'a str,
    env: &'a str,
    /// The network resources as they are now (the balancer's group, heet's subnets).
    resources: BTreeMap<String, String>,
    /// The instance each slot of the round holds.
    serving: BTreeMap<String, String>,
    /// The default VPC and its subnets, once a balancer in it needs them.
    default_network: OnceCell<(String, Vec<String>)>,
    /// What this run made, by `kind/role`: the listener's ends.
    arns: Mutex<BTreeMap<String, String>>,
    /// The drain time of each target group made, by ARN.
    drains: Mutex<BTreeMap<String, u32>>,
    /// Each balancer made's DNS name, by role.
    made_dns: Mutex<BTreeMap<String, String>>,
    /// (target group, instance) registered.
    registered: Mutex<Vec<(String, String)>>,
    /// Target groups deleted.
    deleted: Mutex<Vec<String>>,
    unhealthy: Mutex<Vec<(String, Verdict)>>,
}

impl BalancerApply<'_> {
    async fn default_network(&self) -> anyhow::Result<&(String, Vec<String>)> {
        self.default_network
            .get_or_try_init(|| self.aws.elb.default_network())
            .await
    }

    /// The subnets a balancer of `placement` goes in, as they are now.
    async fn subnets(
        &self,
        placement: &kinds::balancers::Placement,
    ) -> anyhow::Result<Vec<String>> {
        use kinds::balancers::Placement;
        Ok(match placement {
            Placement::Default => self.default_network().await?.1.clone(),
            Placement::Given { subnets, .. } => subnets.clone(),
            Placement::Heet { subnets, .. } => subnets
                .iter()
                .map(|s| resolve(&self.resources, s).map(str::to_owned))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// A balancer's or target group's ARN: the plan's, else what this run made.
    fn arn(&self, known: &Option<String>, resource: &str) -> anyhow::Result<String> {
        match known {
            Some(arn) => Ok(arn.clone()),
            None => Ok(resolve(&locked(&self.arns), resource)?.to_owned()),
        }
    }
}

impl Executor<kinds::balancers::BalancerChange> for BalancerApply<'_> {
    fn begin(&mut self, live: &Live) {
        self.resources = live.resources.clone();
        self.serving = live.serving.clone();
    }

    async fn end(&mut self, shared: &Shared<'_, '_>) -> anyhow::Result<()> {
        let mut live = shared.live();
        live.balancers
            .extend(std::mem::take(&mut *locked(&self.made_dns)));
        let drains = locked(&self.drains).clone();
        for (group, id) in std::mem::take(&mut *locked(&self.registered)) {
            let drain = drains.get(&group).copied().unwrap_or(300);
            let entry = live
                .targets
                .entry(group)
                .or_insert((drain, BTreeSet::new()));
            entry.1.insert(id);
        }
        // A drain time made or changed this run is the one a leaving target waits out.
        for (group, drain) in drains {
            if let Some(entry) = live.targets.get_mut(&group) {
                entry.0 = drain;
            }
        }
        for group in std::mem::take(&mut *locked(&self.deleted)) {
            live.targets.remove(&group);
        }
        for (slot, verdict) in std::mem::take(&mut *locked(&self.unhealthy)) {
            live.failed.insert(slot.clone());
            live.unhealthy.push((slot, verdict));
        }
        Ok(())
    }

    fn made(&mut self, _: &Bookkeeping, _: Option<&str>) {}

    async fn run(&self, c: &kinds::balancers::BalancerChange) -> anyhow::Result<Option<String>> {
        use kinds::balancers::{self as lb, BalancerChange as B, Placement};
        let elb = &self.aws.elb;
        match c {
            B::CreateTargetGroup {
                role,
                name,
                settings,
                placement,
            } => {
                let vpc = match placement {
                    Placement::Default => self.default_network().await?.0.clone(),
                    Placement::Given { vpc, .. } => vpc.clone(),
                    Placement::Heet { vpc, .. } => resolve(&self.resources, vpc)?.to_owned(),
                };
                let resource = lb::group_resource(role);
                let tags = lb::tags(self.project, self.env, &resource);
                let arn = elb.create_group(name, settings, &vpc, &tags).await?;
                locked(&self.drains).insert(arn.clone(), settings.drain);
                locked(&self.arns).insert(resource, arn.clone());
                Ok(Some(arn))
            }
            B::CreateBalancer {
                role,
                name,
                placement,
            } => {
                let subnets = self.subnets(placement).await?;
                let group = network::group_resource(&network::balancer_group(role));
                let group = resolve(&self.resources, &group)?;
                let resource = lb::balancer_resource(role);
                let tags = lb::tags(self.project, self.env, &resource);
                let (arn, dns) = elb.create_balancer(name, subnets, group, &tags).await?;
                locked(&self.made_dns).insert(role.clone(), dns);
                locked(&self.arns).insert(resource, arn.clone());
                Ok(Some(arn))
            }
            B::CreateListener {
                role,
                listen,
                balancer,
                group,
                ..
            } => {
                let balancer = self.arn(balancer, &lb::balancer_resource(role))?;
                let group = self.arn(group, &lb::group_resource(role))?;
                elb.create_listener(&balancer, &group, *listen).await?;
                Ok(None)
            }
            B::UpdateTargetGroup { arn, settings, .. } => {
                elb.update_group(arn, settings).await?;
                locked(&self.drains).insert(arn.clone(), settings.drain);
                Ok(None)
            }
            B::UpdateListener {
                role,
                arn,
                listen,
                group,
                ..
            } => {
                let group = self.arn(group, &lb::group_resource(role))?;
                elb.update_listener(arn, *listen, &group).await?;
                Ok(None)
            }
            B::SetSubnets { arn, placement, .. } => {
                let subnets = self.subnets(placement).await?;
                elb.set_subnets(arn, subnets).await?;
                Ok(None)
            }
            B::Register {
                role,
                slot,
                instance,
                instance_id,
                port,
                group,
                wait_healthy,
                ..
            } => {
                let id = match instance_id {
                    Some(id) => id.clone(),
                    None => self.serving.get(slot).cloned().ok_or_else(|| {
                        anyhow::anyhow!("{instance}: no instance runs in its slot to register")
                    })?,
                };
                let group = self.arn(group, &lb::group_resource(role))?;
                elb.register(&group, &id, *port).await?;
                locked(&self.registered).push((group.clone(), id.clone()));
                if let Some(timeout) = wait_healthy {
                    tracing::info!("waiting for {instance} ({id}) to be healthy in {group}");
                    if let Some(state) = elb.wait_healthy(&group, &id, *timeout).await? {
                        locked(&self.unhealthy)
                            .push((slot.clone(), Verdict::unhealthy_target(&id, state)));
                    }
                }
                Ok(None)
            }
            B::DeleteBalancer { arn, .. } => {
                elb.delete_balancer(arn).await?;
                Ok(None)
            }
            B::DeleteTargetGroup { arn, .. } => {
                elb.delete_group(arn).await?;
                locked(&self.deleted).push(arn.clone());
                Ok(None)
            }
        }
    }
}

/// What IAM changes need beyond themselves.
struct IamApply<'a> {
    aws: &'a Aws,
    project: &'a str,
    env: &'a str,
    /// heet's policies' ARNs by IAM name, as they are and as they are created.
    arns: Mutex<BTreeMap<String, String>>,
    /// The entities this run created, which IAM may not know everywhere yet.
    fresh: std::collections::BTreeSet<String>,
}

impl Executor<IamChange> for IamApply<'_> {
    fn made(&mut self, bookkeeping: &Bookkeeping, _: Option<&str>) {
        if let Bookkeeping::Create(resource) = bookkeeping
            && let Some((_, name)) = IamKind::of_resource(resource)
        {
            self.fresh.insert(name.to_owned());
        }
    }

    async fn run(&self, c: &IamChange) -> anyhow::Result<Option<String>> {
        let aws = self.aws;
        let (project, env) = (self.project, self.env);
        let path = iam_kind::path(project, env);
        let tags =
            |kind: IamKind, name: &str| network::tags(project, env, &kind.resource(name), name);
        let config = |key: &str| format!("{}{key}", crate::ops::config_path(project, env));
        Ok(match c {
            IamChange::CreatePolicy { name, document } => {
                let made = aws
                    .iam
                    .create_policy(name, &path, document, &tags(IamKind::Policy, name))
                    .await?;
                locked(&self.arns).insert(name.clone(), made.arn);
                Some(made.id)
            }
            IamChange::NewPolicyVersion {
                arn,
                document,
                drop,
                ..
            } => {
                aws.iam
                    .new_policy_version(arn, document, drop.as_deref())
                    .await?;
                None
            }
            IamChange::CreateGroup { name } => Some(aws.iam.create_group(name, &path).await?.id),
            IamChange::CreateUser { name } => Some(
                aws.iam
                    .create_user(name, &path, &tags(IamKind::User, name))
                    .await?
                    .id,
            ),
            IamChange::CreateRole { name, trust } => Some(
                aws.iam
                    .create_role(name, &path, trust, &tags(IamKind::Role, name))
                    .await?
                    .id,
            ),
            IamChange::UpdateTrust { name, trust } => {
                aws.iam.update_trust(name, trust).await?;
                None
            }
            IamChange::CreateProfile { name, role, exists } => {
                let made = aws
                    .iam
                    .create_profile(name, &path, role, *exists, &tags(IamKind::Profile, name))
                    .await?;
                (!exists).then_some(made.id)
            }
            IamChange::Attach { holder, policy } => {
                let arn = match policy {
                    Attachable::Arn(a) => a.clone(),
                    Attachable::Heet(name) => {
                        locked(&self.arns).get(name).cloned().ok_or_else(|| {
                            anyhow::anyhow!(
                                "internal: iam policy {name} is neither observed nor created"
                            )
                        })?
                    }
                };
                let (_, holder_name) = holder.parts();
                let fresh = self.fresh.contains(holder_name)
                    || matches!(policy, Attachable::Heet(n) if self.fresh.contains(n));
                aws.iam.attach(holder, &arn, fresh).await?;
                None
            }
            IamChange::Detach { holder, arn } => {
                aws.iam.detach(holder, arn).await?;
                None
            }
            IamChange::Join { user, group } => {
                aws.iam.join(user, group).await?;
                None
            }
            IamChange::Leave { user, group } => {
                aws.iam.leave(user, group).await?;
                None
            }
            IamChange::CreateAccessKey {
                user,
                id_key,
                secret_key,
            } => {
                aws.iam
                    .create_access_key(user, &config(id_key), &config(secret_key))
                    .await?;
                None
            }
            IamChange::DeleteAccessKey {
                user,
                key_id,
                stored,
            } => {
                let params = stored.as_ref().map(|(a, b)| (config(a), config(b)));
                aws.iam
                    .delete_access_key(
                        user,
                        key_id,
                        params.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                    )
                    .await?;
                None
            }
            IamChange::Delete { kind, name, arn } => {
                aws.iam.delete(*kind, name, arn).await?;
                None
            }
        })
    }
}

/// What an executor keeps behind a lock: only ever held for an insert or a read, never
/// across a call, so a panic elsewhere cannot leave it half-written.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn resolve<'a>(ids: &'a BTreeMap<String, String>, resource: &str) -> anyhow::Result<&'a str> {
    ids.get(resource)
        .map(String::as_str)
        .ok_or_else(|| anyhow::anyhow!("internal: {resource} is neither observed nor created"))
}

/// What network changes need beyond themselves.
struct NetApply<'a> {
    aws: &'a Aws,
    project: &'a str,
    env: &'a str,
    /// Network resources heet owns, by `heet:resource`, as they are and as they are created.
    ids: BTreeMap<String, String>,
    /// The region's availability zones, once a subnet needs them.
    zones: OnceCell<Vec<String>>,
    /// The instance launched into each slot, once the launches are made.
    launched: BTreeMap<String, String>,
    /// Instances an address moved to (instance id → slot).
    moved: Mutex<BTreeMap<String, String>>,
}

impl NetApply<'_> {
    fn tags(&self, resource: &str, name: &str) -> BTreeMap<String, String> {
        network::tags(self.project, self.env, resource, name)
    }
}

impl Executor<NetChange> for NetApply<'_> {
    fn begin(&mut self, live: &Live) {
        self.launched = live.launched.clone();
    }

    /// Instances launch into the resources as they are now; an instance that got an address
    /// has a new public DNS name for its records.
    async fn end(&mut self, shared: &Shared<'_, '_>) -> anyhow::Result<()> {
        shared.live().resources = self.ids.clone();
        let moved = std::mem::take(&mut *locked(&self.moved));
        if moved.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = moved.keys().cloned().collect();
        for o in self.aws.ec2.by_ids(&ids).await? {
            if let Some(slot) = moved.get(&o.instance_id) {
                shared.live().dns.insert(slot.clone(), o.reach());
            }
        }
        Ok(())
    }

    fn made(&mut self, bookkeeping: &Bookkeeping, id: Option<&str>) {
        match bookkeeping {
            Bookkeeping::Create(resource) => {
                self.ids
                    .insert(resource.clone(), id.unwrap_or_default().to_owned());
            }
            Bookkeeping::Delete(resource) => {
                self.ids.remove(resource);
            }
            Bookkeeping::Record(_) | Bookkeeping::Unrecord(_) | Bookkeeping::None => {}
        }
    }

    async fn run(&self, c: &NetChange) -> anyhow::Result<Option<String>> {
        let aws = self.aws;
        let (project, env) = (self.project, self.env);
        Ok(match c {
            NetChange::CreateVpc {
                resource,
                name,
                cidr,
            } => {
                let t = self.tags(resource, name);
                Some(aws.net.create_vpc(cidr, &t).await?)
            }
            NetChange::AttachGateway {
                resource,
                gateway_id,
            } => {
                let vpc = resolve(&self.ids, "vpc/main")?.to_owned();
                let t = self.tags(resource, &format!("{project}-{env}"));
                let made = aws
                    .net
                    .attach_gateway(gateway_id.as_deref(), &vpc, &t)
                    .await?;
                // A gateway that exists is only attached: nothing new to book.
                gateway_id.is_none().then_some(made)
            }
            NetChange::CreateSubnet {
                resource,
                cidr,
                index,
            } => {
                let zones = self.zones.get_or_try_init(|| aws.net.zones()).await?;
                let zone = (!zones.is_empty()).then(|| zones[index % zones.len()].clone());
                let vpc = resolve(&self.ids, "vpc/main")?.to_owned();
                let name = format!("{project}-{env}-{}", resource.replace('/', "-"));
                let t = self.tags(resource, &name);
                Some(
                    aws.net
                        .create_subnet(&vpc, cidr, zone.as_deref(), &t)
                        .await?,
                )
            }
            NetChange::CreateGroup {
                resource,
                name,
                vpc,
                ..
            } => {
                let vpc_id = match vpc {
                    VpcRef::Default => None,
                    VpcRef::Id(id) => Some(id.clone()),
                    VpcRef::New => Some(resolve(&self.ids, "vpc/main")?.to_owned()),
                };
                let t = self.tags(resource, name);
                Some(aws.net.create_group(name, vpc_id.as_deref(), &t).await?)
            }
            NetChange::Revoke {
                group_id, rules, ..
            } => {
                aws.net.revoke(group_id, rules).await?;
                None
            }
            NetChange::Authorize {
                resource, rules, ..
            } => {
                let group = resolve(&self.ids, resource)?.to_owned();
                let mut resolved = Vec::new();
                for r in rules {
                    resolved.push((
                        r.port,
                        match &r.source {
                            Source::Cidr(c) => Ok(c.clone()),
                            Source::Role(role) => {
                                Err(resolve(&self.ids, &network::group_resource(role))?.to_owned())
                            }
                        },
                    ));
                }
                aws.net.authorize(&group, &resolved).await?;
                None
            }
            NetChange::Allocate {
                resource, instance, ..
            } => {
                let t = self.tags(resource, instance);
                Some(aws.net.allocate(&t).await?)
            }
            NetChange::Associate {
                resource,
                allocation_id,
                slot,
                instance,
                instance_id,
            } => {
                let target = instance_id
                    .clone()
                    .or_else(|| self.launched.get(slot).cloned())
                    .ok_or_else(|| {
                        anyhow::anyhow!("{instance} did not launch: no instance for {resource}")
                    })?;
                // An address allocated this run is known by its resource; one found (heet's
                // or given) by its id.
                let allocation = match allocation_id.as_str() {
                    "" => resolve(&self.ids, resource)?,
                    id => id,
                };
                aws.net.associate(allocation, &target).await?;
                locked(&self.moved).insert(target, slot.clone());
                None
            }
            NetChange::Release {
                allocation_id,
                association_id,
                ..
            } => {
                aws.net
                    .release(allocation_id, association_id.as_deref())
                    .await?;
                None
            }
            NetChange::DeleteGroup { group_id, .. } => {
                aws.net.delete_group(group_id).await?;
                None
            }
            NetChange::DeleteSubnet { subnet_id, .. } => {
                aws.net.delete_subnet(subnet_id).await?;
                None
            }
            NetChange::DeleteGateway {
                gateway_id,
                attached,
                ..
            } => {
                aws.net.delete_gateway(gateway_id, attached).await?;
                None
            }
            NetChange::DeleteVpc { vpc_id, .. } => {
                aws.net.delete_vpc(vpc_id).await?;
                None
            }
            NetChange::CreateKey {
                resource,
                role,
                name,
                public_key,
            } => {
                let t = self.tags(resource, name);
                let parameter = network::key_parameter(project, env, role);
                let make = async {
                    match public_key {
                        None => aws.net.create_key(name, &parameter, &t).await,
                        Some(key) => aws.net.import_key(name, key, &t).await,
                    }
                };
                Some(make.await?)
            }
            NetChange::DeleteKey {
                role, name, stored, ..
            } => {
                let parameter = network::key_parameter(project, env, role);
                aws.net
                    .delete_key(name.as_deref(), stored.then_some(parameter.as_str()))
                    .await?;
                None
            }
        })
    }
}

/// Makes `changes` (records of one place) as one Route53 change (which
/// `cloud::route53::change` splits only where Route53's batch limits say), under the one
/// write-ahead protocol, creating the zone first when the plan says so. `reach` says how
/// the instances that run now are reached, by slot; returns the names not written because
/// their instance has no DNS name or address at all.
async fn records_in(
    shared: &Shared<'_, '_>,
    plan: &Plan,
    zone: &mut Option<Zone>,
    reach: &BTreeMap<String, Reach>,
    balancers: &BTreeMap<String, String>,
    changes: &[&RecordChange],
) -> anyhow::Result<Vec<String>> {
    let (aws, ledger) = (shared.aws, shared.ledger);
    let mut unresolved = Vec::new();
    let (mut ops, mut ahead, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for c in changes {
        let op = match c.ops(reach, balancers) {
            Ok(op) => op,
            Err(why) => {
                // Never a record to an empty name: said, and left for when it has one.
                tracing::warn!("record not written: {why}");
                unresolved.push(why);
                continue;
            }
        };
        let bookkeeping = c.bookkeeping();
        // What the record holds once the change is made: the last operation's target.
        let target = op.last().map(|op: &RecordOp| op.target.as_str());
        ahead.extend(entries(&bookkeeping, ledger::State::Pending, target)?);
        after.extend(entries(&bookkeeping, ledger::State::Done, target)?);
        ops.extend(op);
    }
    if ops.is_empty() {
        // Only ledger entries to drop (their records, or the whole zone, gone): no call.
        book(aws, ledger, after).await?;
        return Ok(unresolved);
    }
    let zone = match (&*zone, &plan.dns.create_zone) {
        (Some(zone), _) => zone.clone(),
        (None, Some(domain)) => {
            tracing::info!("creating the hosted zone {domain}");
            let made = aws.route53.create_zone(domain, &plan.project).await?;
            *zone = Some(made.clone());
            made
        }
        (None, None) => anyhow::bail!("internal: record changes without a zone"),
    };
    let change = async {
        tracing::info!(
            "writing {} DNS record change(s) to {}",
            ops.len(),
            zone.name
        );
        aws.route53.change(&zone, &ops).await
    };
    written_ahead(aws, ledger, ahead, change, |_| Ok(after)).await?;
    Ok(unresolved)
}

/// Terminates `ids`; with `fully`, waits until they are gone, network interfaces included
/// (groups and subnets can only be deleted then). Otherwise TerminateInstances' own answer
/// (every instance `shutting-down`) is all there is to wait for.
pub async fn terminate(
    aws: &Aws,
    ids: &[String],
    fully: bool,
    progress: &Progress,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    tracing::info!("terminating {} instance(s): {}", ids.len(), ids.join(", "));
    aws.ec2.terminate(ids).await?;
    if !fully {
        return Ok(());
    }
    let bar = progress.bar(ids.len(), "terminating");
    aws.ec2
        .wait_until(
            ids,
            "terminated",
            |s| s == "terminated",
            WAIT_TIMEOUT,
            |done, _| bar.set_position(done as u64),
        )
        .await?;
    bar.finish_and_clear();
    Ok(())
}

/// A batch as launched: its ledger entry and members, by AmiLaunchIndex.
struct LaunchedBatch<'a> {
    batch: ledger::Batch,
    members: Vec<&'a DesiredInstance>,
    /// The tags its members got at launch.
    shared: BTreeMap<String, String>,
}

impl LaunchedBatch<'_> {
    /// The batch's shared tags without `heet:batch`: what a member launched with of its own.
    fn untagged_view(&self) -> BTreeMap<String, String> {
        let mut tags = self.shared.clone();
        tags.remove(namespace::TAG_BATCH);
        tags
    }

    /// The ledger entry saying which instances the batch launched, when they still need
    /// tags of their own (a batch whose members have all theirs from launch is over).
    fn confirmation(&self, instances: &[String]) -> Option<(String, Option<ledger::Entry>)> {
        let untagged = self.untagged_view();
        if self.members.iter().all(|d| d.tags == untagged) {
            return None;
        }
        let batch = ledger::Batch {
            instances: instances.to_vec(),
            state: ledger::State::Done,
            ..self.batch.clone()
        };
        Some((ledger::batch_key(&batch.batch), Some(batch.entry())))
    }
}

/// What [`launch`] did.
#[derive(Default)]
struct Launched<'a> {
    batches: Vec<LaunchedBatch<'a>>,
    failures: Vec<String>,
}

impl<'a> Launched<'a> {
    /// (slot, desired, instance id) of every instance launched.
    fn members(&self) -> Vec<(String, &'a DesiredInstance, String)> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.members
                    .iter()
                    .zip(&b.batch.instances)
                    .map(|(d, id)| (d.id.clone(), *d, id.clone()))
            })
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.batches
            .iter()
            .flat_map(|b| b.batch.instances.iter().cloned())
            .collect()
    }

    fn settled(&self) -> Vec<(String, Option<ledger::Entry>)> {
        self.batches
            .iter()
            .map(|b| (ledger::batch_key(&b.batch.batch), None))
            .collect()
    }
}

/// The tags every one of `members` has, with the same value.
fn shared_tags(members: &[&DesiredInstance]) -> BTreeMap<String, String> {
    let mut shared = members[0].tags.clone();
    for d in &members[1..] {
        shared.retain(|k, v| d.tags.get(k) == Some(v));
    }
    shared
}

/// The launches grouped into batches: one per role and launch settings, in slot order.
fn batches<'a>(launches: &[&'a DesiredInstance]) -> Vec<Vec<&'a DesiredInstance>> {
    let mut groups: BTreeMap<(&str, &str), Vec<&DesiredInstance>> = BTreeMap::new();
    for d in launches {
        groups.entry((&d.role, &d.spec)).or_default().push(d);
    }
    groups
        .into_values()
        .map(|mut g| {
            g.sort_by_key(|d| d.index);
            g
        })
        .collect()
}

/// Launches `launches` in batches, each written ahead in the ledger with its token; returns
/// the batches that launched (confirmed in the ledger when their instances still need tags
/// of their own) and why the others did not.
async fn launch<'a>(
    aws: &Aws,
    plan: &Plan,
    launches: &[&'a DesiredInstance],
    ledger: &Books<'_>,
    run_id: &str,
    ids: &BTreeMap<String, String>,
) -> anyhow::Result<Launched<'a>> {
    if launches.is_empty() {
        return Ok(Launched::default());
    }
    let (project, env) = (plan.project.as_str(), plan.env.as_str());
    let since = crate::commands::now_secs();
    let known = ledger.lock().await.batches();
    let mut planned = Vec::new();
    for members in batches(launches) {
        let first = members[0];
        let slots: Vec<u32> = members.iter().map(|d| d.index).collect();
        // A launch written ahead by a run that died: the same token gets its instances if
        // EC2 did launch them (they may not be visible yet), instead of twins.
        let batch = known
            .values()
            .find(|b| {
                b.state == ledger::State::Pending
                    && b.instances.is_empty()
                    && b.role == first.role
                    && b.spec == first.spec
                    && b.slots == slots
            })
            .cloned()
            .unwrap_or_else(|| {
                let id =
                    namespace::batch_id(project, env, &first.role, &first.spec, &slots, run_id);
                ledger::Batch {
                    client_token: namespace::batch_token(&id),
                    batch: id,
                    role: first.role.clone(),
                    spec: first.spec.clone(),
                    slots,
                    instances: Vec::new(),
                    since,
                    state: ledger::State::Pending,
                }
            });
        let mut shared = shared_tags(&members);
        shared.insert(namespace::TAG_BATCH.to_owned(), batch.batch.clone());
        planned.push(LaunchedBatch {
            batch,
            members,
            shared,
        });
    }
    let env_name = &plan.env;
    for b in &planned {
        tracing::info!(
            "provisioning {} × {} for role={} env={env_name}",
            b.members.len(),
            b.members[0].instance_type,
            b.members[0].role
        );
    }
    let mut out = Launched::default();
    let mut spent = Vec::new();
    for round in 0..2 {
        // Each batch and its token are in the ledger before RunInstances; the batches whose
        // instances still need tags of their own are confirmed with their instances after.
        let mut ahead: Vec<_> = planned
            .iter()
            .map(|b| (ledger::batch_key(&b.batch.batch), Some(b.batch.entry())))
            .collect();
        ahead.append(&mut spent);
        let runs = stream::iter(std::mem::take(&mut planned))
            .map(|b| async move {
                let result = run_batch(aws, &b, ids).await;
                (b, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<(LaunchedBatch, Result<Vec<String>, LaunchError>)>>()
            .map(anyhow::Ok);
        let results = written_ahead(aws, ledger, ahead, runs, |results| {
            Ok(results
                .iter()
                .filter_map(|(b, result)| b.confirmation(result.as_ref().ok()?))
                .collect())
        })
        .await?;
        for (mut b, result) in results {
            match result {
                Ok(instances) => {
                    b.batch.instances = instances;
                    b.batch.state = ledger::State::Done;
                    out.batches.push(b);
                }
                // EC2 will not honour the token any more (used with other settings, or its
                // instances terminated): once more under a new one. The old entry stays
                // until its instances, if any, are seen and placed, or its grace runs out.
                Err(LaunchError::TokenSpent { why, terminated }) if round == 0 => {
                    if terminated {
                        // Its instances are gone: so is the batch.
                        spent.push((ledger::batch_key(&b.batch.batch), None));
                    }
                    let id = namespace::batch_id(
                        project,
                        env,
                        &b.batch.role,
                        &b.batch.spec,
                        &b.batch.slots,
                        &format!("{run_id}/again"),
                    );
                    tracing::warn!(
                        "{why}: launching {} × {} again under a new token",
                        b.members.len(),
                        b.batch.role
                    );
                    b.shared.insert(namespace::TAG_BATCH.to_owned(), id.clone());
                    b.batch.client_token = namespace::batch_token(&id);
                    b.batch.batch = id;
                    b.batch.since = since;
                    planned.push(b);
                }
                Err(e) => out.failures.push(format!("{e:#}")),
            }
        }
        if planned.is_empty() {
            break;
        }
    }
    book(aws, ledger, spent).await?;
    Ok(out)
}

/// One batch's RunInstances, with its subnet and groups resolved to AWS ids.
async fn run_batch(
    aws: &Aws,
    b: &LaunchedBatch<'_>,
    ids: &BTreeMap<String, String>,
) -> Result<Vec<String>, LaunchError> {
    let d = b.members[0];
    let subnet = match &d.subnet {
        None => None,
        Some(SubnetRef::Id(id)) => Some(id.clone()),
        Some(SubnetRef::Heet { resource, .. }) => Some(resolve(ids, resource)?.to_owned()),
    };
    let mut groups = Vec::new();
    for role in &d.groups {
        groups.push(resolve(ids, &network::group_resource(role))?.to_owned());
    }
    groups.extend(d.security_group_ids.iter().cloned());
    aws.ec2
        .launch(&Launch {
            instance: d,
            count: b.members.len() as u32,
            tags: &b.shared,
            volume_tags: &volume_tags(&b.shared),
            client_token: &b.batch.client_token,
            subnet_id: subnet.as_deref(),
            group_ids: &groups,
        })
        .await
}

/// The tags of an instance its data volume carries too: heet's own and its name, so a kept
/// volume is found again.
fn volume_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(k, _)| k.starts_with(namespace::RESERVED_PREFIX) || *k == namespace::TAG_NAME)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Gives the data volume of each launched instance the slot tags its batch did not share,
/// once the volume is attached (an instance's volume id is known when it runs).
async fn tag_volumes(
    aws: &Aws,
    launched: &Launched<'_>,
    running: &BTreeMap<&str, &ObservedInstance>,
) -> anyhow::Result<()> {
    let mut work = Vec::new();
    for b in &launched.batches {
        for (d, id) in b.members.iter().zip(&b.batch.instances) {
            let Some(volume) = running.get(id.as_str()).and_then(|o| o.data_volume.clone()) else {
                continue;
            };
            let own: BTreeMap<String, String> = volume_tags(&d.tags)
                .into_iter()
                .filter(|(k, v)| b.shared.get(k) != Some(v))
                .collect();
            if !own.is_empty() {
                work.push((volume, own));
            }
        }
    }
    let results: Vec<anyhow::Result<()>> = stream::iter(&work)
        .map(|(volume, tags)| aws.ec2.set_tags(std::slice::from_ref(volume), tags))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Gives every instance of `batches` the tags its batch did not share: its name, index and
/// slot id (and its data volume's, once known).
async fn tag_members(aws: &Aws, batches: &[LaunchedBatch<'_>]) -> anyhow::Result<()> {
    let work: Vec<(String, BTreeMap<String, String>)> = batches
        .iter()
        .flat_map(|b| {
            b.members
                .iter()
                .zip(&b.batch.instances)
                .filter_map(|(d, id)| {
                    let own: BTreeMap<String, String> = d
                        .tags
                        .iter()
                        .filter(|(k, v)| b.shared.get(*k) != Some(v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    (!own.is_empty()).then(|| (id.clone(), own))
                })
        })
        .collect();
    if work.is_empty() {
        return Ok(());
    }
    // Right after RunInstances EC2 may not know the ids yet, and a CreateTags refused for
    // that spends a token of its bucket all the same: tag once a describe shows them.
    let ids: Vec<String> = work.iter().map(|(id, _)| id.clone()).collect();
    aws.ec2
        .wait_until(&ids, "visible", |_| true, WAIT_TIMEOUT, |_, _| {})
        .await?;
    let results: Vec<anyhow::Result<()>> = stream::iter(&work)
        .map(|(id, tags)| aws.ec2.set_tags(std::slice::from_ref(id), tags))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Turns the source/destination check off on the launched instances whose role says so:
/// RunInstances takes no such setting. A run killed before leaves it on, which the next plan
/// sees on the instance and changes in place.
async fn set_launch_attributes(aws: &Aws, batches: &[LaunchedBatch<'_>]) -> anyhow::Result<()> {
    let work: Vec<&String> = batches
        .iter()
        .filter(|b| b.members[0].source_dest_check == Some(false))
        .flat_map(|b| &b.batch.instances)
        .collect();
    if work.is_empty() {
        return Ok(());
    }
    aws.ec2
        .wait_until(
            &work.iter().map(|id| (*id).clone()).collect::<Vec<_>>(),
            "visible",
            |_| true,
            WAIT_TIMEOUT,
            |_, _| {},
        )
        .await?;
    let results: Vec<anyhow::Result<()>> = stream::iter(work)
        .map(|id| aws.ec2.modify(id, Attribute::SourceDestCheck(false)))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_families_run_at_once_the_first_failure_is_the_error_with_its_type() {
        #[derive(Debug, thiserror::Error)]
        #[error("iam refused")]
        struct Refused;
        let ok = || anyhow::Ok(());
        let refused = || Err::<(), _>(anyhow::Error::new(Refused));
        let gone = || Err::<(), _>(anyhow::anyhow!("vpc gone"));
        assert!(first_error(vec![ok(), ok()]).is_ok());
        let e = first_error(vec![ok(), refused()]).unwrap_err();
        assert!(e.downcast_ref::<Refused>().is_some(), "{e:#}");
        let e = first_error(vec![gone(), refused(), ok()]).unwrap_err();
        assert_eq!(format!("{e:#}"), "vpc gone", "the first is the error");
        let e = first_error(vec![refused(), gone()]).unwrap_err();
        assert!(
            e.downcast_ref::<Refused>().is_some(),
            "its type kept: {e:#}"
        );
    }

    use crate::desired::{
        compute,
        tests::{NoPlugins, definition},
    };

    #[test]
    fn launches_go_in_one_batch_per_role_and_settings_sharing_their_common_tags() {
        let def = definition(
            "[project]\nname = \"shop\"\n[defaults]\nami = \"ami-12c6146b\"\n[roles.www]\ncount = 3\n[roles.db]\ncount = 2\ninstance_type = \"m5.large\"\n[environments.prod]\n",
        );
        let d = compute(&def, "prod", "us-east-1", &mut NoPlugins).unwrap();
        let mut launches: Vec<&DesiredInstance> = d.instances.iter().collect();
        launches.reverse();
        let groups = batches(&launches);
        let shape: Vec<(&str, Vec<u32>)> = groups
            .iter()
            .map(|g| (g[0].role.as_str(), g.iter().map(|d| d.index).collect()))
            .collect();
        assert_eq!(shape, [("db", vec![1, 2]), ("www", vec![1, 2, 3])]);
        let shared = shared_tags(&groups[1]);
        for key in [
            namespace::TAG_PROJECT,
            namespace::TAG_ENV,
            namespace::TAG_ROLE,
            namespace::TAG_SPEC,
        ] {
            assert!(shared.contains_key(key), "{key}: {shared:?}");
        }
        for key in [namespace::TAG_INDEX, namespace::TAG_ID, namespace::TAG_NAME] {
            assert!(!shared.contains_key(key), "{key} is each instance's own");
        }
        // A batch of one shares everything: it is tagged whole at launch.
        assert_eq!(shared_tags(&groups[1][..1]), groups[1][0].tags);
    }
}
