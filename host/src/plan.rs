//! The plan: desired state ⊕ observed state → the changes that make them equal. A value,
//! computed without I/O; only `apply` acts on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::{Desired, DesiredInstance};
use crate::kinds::Family;
use crate::kinds::iam::IamPlan;
use crate::kinds::network::{self, NetChange, ObservedResource};
use crate::kinds::records::{DnsPlan, DnsState, RecordChange, plan_records};
use crate::launch::{self, Fit, Setting};
use crate::ledger;
use crate::namespace::{
    self, TAG_BATCH, TAG_ENV, TAG_ID, TAG_INDEX, TAG_PROJECT, TAG_ROLE, TAG_SETTINGS, TAG_SPEC,
};
use crate::rolling::Step;
use crate::text;

/// How long a batch launch written ahead may show no instance before its ledger entry is
/// dropped: far beyond any eventual-consistency window, so a launch that did happen is never
/// forgotten while its instances are still invisible.
pub const BATCH_GRACE_SECS: i64 = 600;

/// An instance as AWS reports it, in heet's terms (no SDK types past `cloud`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedInstance {
    pub instance_id: String,
    pub state: String,
    pub instance_type: String,
    pub ami: String,
    /// Seconds since the epoch.
    pub launch_time: Option<i64>,
    pub public_dns: Option<String>,
    pub private_dns: Option<String>,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    /// Its place in the RunInstances call that launched it (AmiLaunchIndex).
    pub launch_index: Option<u32>,
    /// The data volume's id, once attached.
    pub data_volume: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl ObservedInstance {
    /// The slot id, if heet created this instance for `project`/`env`: its tags must name them
    /// and carry the id heet derives for the tagged role and index. Anything else, even with
    /// look-alike tags, is not heet's to touch.
    pub fn slot_id(&self, project: &str, env: &str) -> Option<&str> {
        let tag = |k: &str| self.tags.get(k).map(String::as_str);
        if tag(TAG_PROJECT)? != project || tag(TAG_ENV)? != env {
            return None;
        }
        let role = tag(TAG_ROLE)?;
        let index: u32 = tag(TAG_INDEX)?.parse().ok()?;
        let id = tag(TAG_ID)?;
        (id == namespace::slot_id(project, env, role, index)).then_some(id)
    }

    pub fn name(&self) -> &str {
        self.tags
            .get(namespace::TAG_NAME)
            .map_or("", String::as_str)
    }

    /// The role and index its tags give it (`heet:role`, `heet:index`), whoever made it.
    pub fn role_index(&self) -> (Option<&str>, Option<u32>) {
        (
            self.tags.get(TAG_ROLE).map(String::as_str),
            self.tags.get(TAG_INDEX).and_then(|i| i.parse().ok()),
        )
    }

    /// The batch launch this instance came from, when it is tagged for `project`/`env` but
    /// not (yet) with a slot of its own: a run was killed between its launch and its tags.
    fn unadopted_batch(&self, project: &str, env: &str) -> Option<&str> {
        let tag = |k: &str| self.tags.get(k).map(String::as_str);
        (tag(TAG_PROJECT)? == project
            && tag(TAG_ENV)? == env
            && self.slot_id(project, env).is_none())
        .then(|| tag(TAG_BATCH))
        .flatten()
    }

    /// The slot the ledger's `batch` puts this instance in: its role and settings must be
    /// the batch's, its launch index one of the batch's, and, once the launch was confirmed,
    /// its id the one confirmed.
    fn adopted_index(&self, batch: &ledger::Batch) -> Option<u32> {
        let k = self.launch_index? as usize;
        let tag = |key: &str| self.tags.get(key).map(String::as_str);
        let confirmed =
            batch.instances.is_empty() || batch.instances.get(k) == Some(&self.instance_id);
        (tag(TAG_ROLE)? == batch.role && tag(TAG_SPEC)? == batch.spec && confirmed)
            .then(|| batch.slots.get(k).copied())
            .flatten()
    }

    /// Running or on its way to: an instance that can serve.
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "running" | "pending")
    }

    pub fn dns_name(&self) -> Option<&str> {
        self.public_dns
            .as_deref()
            .filter(|d| !d.is_empty())
            .or(self.private_dns.as_deref().filter(|d| !d.is_empty()))
    }

    /// Which of two instances of one slot to keep: running before pending before stopped,
    /// then the oldest, then the lowest id. Deterministic, so every run keeps the same one.
    fn keep_rank(&self) -> (u8, i64, &str) {
        let state = match self.state.as_str() {
            "running" => 0,
            "pending" => 1,
            "stopping" | "stopped" => 2,
            _ => 3,
        };
        (
            state,
            self.launch_time.unwrap_or(i64::MAX),
            &self.instance_id,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub project: String,
    pub env: String,
    pub changes: Vec<Change>,
    /// VPC, subnets, security groups and Elastic IPs.
    pub network: Vec<NetChange>,
    /// IAM policies, groups, users, roles and instance profiles (`kinds::iam`).
    pub iam: IamPlan,
    /// DNS records (`kinds::records`): Route53 changes, the zone to create, names others
    /// hold, records others changed.
    pub dns: DnsPlan,
    /// Instances already as desired.
    pub unchanged: usize,
    /// Instances that stay with settings their role's `replace_on` leaves out, as they were
    /// launched (counted in `unchanged` when nothing else changes).
    pub as_launched: Vec<AsLaunched>,
    /// Instances tagged for this project/env that heet did not create: never touched.
    pub foreign: Vec<String>,
    /// Instances of a batch launch that have no slot tags yet, seen without the ledger: the
    /// ledger, read under the lock, says which slot each is in (or that it is not heet's).
    pub unadopted: Vec<String>,
    /// Names whose instance runs without any DNS name to point them at: not written.
    pub unresolved: Vec<String>,
    /// Nothing is desired (`down`): what goes may go in any order, as no instance is kept
    /// whose records a later no-op `up` could miss.
    pub teardown: bool,
    /// Ledger entries of batch launches that are over (their instances carry their slot tags,
    /// or never came), dropped once this plan's retags are made. Bookkeeping, not a change.
    pub settled: Vec<String>,
}

/// A running instance that keeps settings its role's `replace_on` leaves out: a change of
/// them is for the instances launched from now on.
#[derive(Debug, Clone, PartialEq)]
pub struct AsLaunched {
    pub instance_id: String,
    pub role: String,
    pub index: u32,
    pub name: String,
    /// The settings in which it differs from the definition.
    pub settings: Vec<Setting>,
}

impl fmt::Display for AsLaunched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] {} {}: keeps its {} (not in its role's replace_on)",
            self.role,
            self.index,
            self.name,
            self.instance_id,
            launch::names(&self.settings)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create {
        instance: DesiredInstance,
    },
    /// Launch settings changed: a successor is launched with the new ones, in its role's
    /// rollout ([`Step`]), and `instance_id` goes (before it, or once it is healthy and
    /// what pointed at the old one points at it).
    Replace {
        instance_id: String,
        reasons: Vec<String>,
        instance: DesiredInstance,
        step: Step,
        /// The successor a rollout under way launched already: it is not launched again,
        /// only waited for.
        successor: Option<String>,
    },
    UpdateTags {
        instance_id: String,
        role: String,
        index: u32,
        name: String,
        /// Tags to add or overwrite.
        set: BTreeMap<String, String>,
    },
    Delete {
        instance_id: String,
        role: String,
        index: u32,
        name: String,
        reason: String,
        /// A second instance in a slot whose first one stays: the slot stays in the ledger.
        twin: bool,
    },
}

impl Plan {
    /// The families of kinds planned beside the instances and records, in the order the
    /// plan shows them: the one place a family is registered for what reads a plan.
    pub fn families(&self) -> [&dyn Family; 3] {
        [&self.dns, &self.network, &self.iam]
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.families().iter().all(|f| f.is_empty())
            && self.unadopted.is_empty()
    }

    /// The instances applying the plan terminates: deletes, and the old half of replacements.
    pub fn terminated_ids(&self) -> impl Iterator<Item = &str> {
        self.changes
            .iter()
            .filter_map(|c| c.terminates().map(|(id, _)| id))
    }

    /// How many rollout rounds applying the plan takes: at least one, where new instances
    /// are launched and every name not bound to a replaced slot is written.
    pub fn rounds(&self) -> u32 {
        self.changes
            .iter()
            .filter_map(|c| c.rollout().map(|(_, s)| s.round + 1))
            .max()
            .unwrap_or(1)
    }

    /// The round in which what points at each replaced slot's instance (names, an address)
    /// is moved; every other slot's moves in round 0.
    pub fn slot_rounds(&self) -> BTreeMap<&str, u32> {
        self.changes
            .iter()
            .filter_map(Change::rollout)
            .map(|(d, s)| (d.id.as_str(), s.round))
            .collect()
    }

    /// Once round `round` of the rollout is over, with the successors of the `failed` slots
    /// not healthy: the old instances that go now (their successors are healthy and hold
    /// their names), and those that keep serving (this round's failed slots, later rounds).
    pub fn after_round<'a>(
        &'a self,
        round: u32,
        failed: &BTreeSet<&str>,
    ) -> (Vec<&'a str>, Vec<&'a str>) {
        let (mut retired, mut kept) = (Vec::new(), Vec::new());
        for c in &self.changes {
            let (Some((id, ending)), Some((d, _))) = (c.terminates(), c.rollout()) else {
                continue;
            };
            let failed_here = failed.contains(d.id.as_str());
            match ending {
                Ending::AfterRound(r) if r == round && !failed_here => retired.push(id),
                Ending::AfterRound(r) if r >= round => kept.push(id),
                Ending::BeforeRound(r) if r > round => kept.push(id),
                Ending::AfterRound(_) | Ending::BeforeRound(_) | Ending::First => {}
            }
        }
        (retired, kept)
    }

    /// Whether applying the plan terminates anything.
    pub fn is_destructive(&self) -> bool {
        self.terminated_ids().next().is_some()
    }

    pub fn count(&self, f: impl Fn(&Change) -> bool) -> usize {
        self.changes.iter().filter(|c| f(c)).count()
    }
}

/// When apply terminates an instance (see [`Change::terminates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Before anything is launched: deletes, twins, and the old instances of the first
    /// round that may go before their successors are healthy.
    First,
    /// In a later round, before its launches (within `max_unavailable`).
    BeforeRound(u32),
    /// In its round, once its successor is healthy and what pointed at it points there.
    AfterRound(u32),
}

/// Whose an observed instance is: the slot it is in.
struct Owner<'a> {
    slot: String,
    role: String,
    index: u32,
    o: &'a ObservedInstance,
}

/// Computes the changes that turn `observed` (instances, network resources and DNS) into
/// `desired`. `batches` are the ledger's batch launches, when the ledger was read; `now` is
/// the time in seconds since the epoch, for ledger entries that are over.
pub fn plan(
    desired: &Desired,
    observed: &[ObservedInstance],
    resources: &[ObservedResource],
    dns: &DnsState,
    batches: Option<&BTreeMap<String, ledger::Batch>>,
    now: i64,
) -> Plan {
    let (project, env) = (desired.project.as_str(), desired.env.as_str());
    let mut slots: BTreeMap<String, Vec<Owner>> = BTreeMap::new();
    let mut foreign = Vec::new();
    let mut unadopted = Vec::new();
    for o in observed {
        let owner = match (o.slot_id(project, env), o.unadopted_batch(project, env)) {
            (Some(id), _) => Some(Owner {
                slot: id.to_owned(),
                role: o.tags.get(TAG_ROLE).cloned().unwrap_or_default(),
                index: o
                    .tags
                    .get(TAG_INDEX)
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0),
                o,
            }),
            (None, Some(batch)) => match batches {
                None => {
                    unadopted.push(o.instance_id.clone());
                    continue;
                }
                Some(batches) => batches.get(batch).and_then(|b| {
                    let index = o.adopted_index(b)?;
                    Some(Owner {
                        slot: namespace::slot_id(project, env, &b.role, index),
                        role: b.role.clone(),
                        index,
                        o,
                    })
                }),
            },
            (None, None) => None,
        };
        match owner {
            Some(owner) => slots.entry(owner.slot.clone()).or_default().push(owner),
            None => foreign.push(o.instance_id.clone()),
        }
    }

    let mut changes = Vec::new();
    let delete = |w: &Owner, reason: String, twin: bool| Change::Delete {
        instance_id: w.o.instance_id.clone(),
        role: w.role.clone(),
        index: w.index,
        name: w.o.name().to_owned(),
        reason,
        twin,
    };

    // Twins (two live instances in one slot, e.g. after a crash mid-launch): keep one. A
    // rollout under way leaves two on purpose: the successor, live with the settings the
    // definition asks for, and the instance it replaces, which stays until the successor is
    // healthy; every other one is a twin.
    let wanted_in: BTreeMap<&str, &DesiredInstance> = desired
        .instances
        .iter()
        .map(|d| (d.id.as_str(), d))
        .collect();
    let mut kept: BTreeMap<String, Owner> = BTreeMap::new();
    let mut successors: BTreeMap<String, &ObservedInstance> = BTreeMap::new();
    for (id, mut group) in std::mem::take(&mut slots) {
        group.sort_by(|a, b| a.o.keep_rank().cmp(&b.o.keep_rank()));
        let wanted = wanted_in.get(id.as_str()).copied();
        let is_new = |w: &Owner| wanted.is_some_and(|d| fit(d, w.o).stays());
        let old = group.iter().position(|w| !is_new(w));
        // A successor is launched after the instance it replaces; an older one with the
        // wanted settings is the slot's instance, and the newer one a twin.
        let since = old.and_then(|o| group[o].o.launch_time);
        let new = group.iter().position(|w| {
            is_new(w) && w.o.is_live() && w.o.launch_time.is_some_and(|t| Some(t) > since)
        });
        let (first, successor) = match (new, old) {
            (Some(n), Some(o)) => {
                let successor = group[n].o;
                let first = group.remove(o);
                group.retain(|w| w.o.instance_id != successor.instance_id);
                (first, Some(successor))
            }
            _ => (group.remove(0), None),
        };
        for twin in &group {
            let of = successor.unwrap_or(first.o);
            changes.push(delete(twin, format!("twin of {}", of.instance_id), true));
        }
        if let Some(s) = successor {
            successors.insert(id.clone(), s);
        }
        kept.insert(id, first);
    }

    let mut unchanged = 0;
    // The DNS name each desired slot will have, where it is known before applying, and the
    // instance that stays in it while still booting.
    let mut targets: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut booting: BTreeMap<&str, String> = BTreeMap::new();
    let mut unresolved = Vec::new();
    // The instance that stays in each slot (none when one is launched), for Elastic IPs.
    let mut staying: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut as_launched = Vec::new();
    for d in &desired.instances {
        let Some(w) = kept.remove(d.id.as_str()) else {
            staying.insert(d.id.clone(), None);
            targets.insert(&d.id, None);
            changes.push(Change::Create {
                instance: d.clone(),
            });
            continue;
        };
        let o = w.o;
        let fits = fit(d, o);
        if let Fit::Replace(differing) = fits {
            let successor = successors.get(d.id.as_str());
            // The names move to a successor once it is healthy: to the name it has then.
            match successor {
                Some(s) if s.state == "running" => {
                    targets.insert(&d.id, s.dns_name().map(str::to_ascii_lowercase));
                }
                Some(s) => {
                    targets.insert(&d.id, None);
                    booting.insert(&d.id, s.instance_id.clone());
                }
                None => {
                    targets.insert(&d.id, None);
                }
            }
            staying.insert(d.id.clone(), successor.map(|s| s.instance_id.clone()));
            // A successor a killed run launched in a batch may lack its own tags yet: it gets
            // them before its names move, as any instance placed from the ledger does.
            if let Some(s) = successor {
                let set = missing_tags(d, s);
                if !set.is_empty() {
                    changes.push(Change::UpdateTags {
                        instance_id: s.instance_id.clone(),
                        role: d.role.clone(),
                        index: d.index,
                        name: d.name.clone(),
                        set,
                    });
                }
            }
            changes.push(Change::Replace {
                instance_id: o.instance_id.clone(),
                reasons: replace_reasons(d, o, &differing),
                instance: d.clone(),
                step: Step {
                    round: 0,
                    rounds: 1,
                    overlap: true,
                },
                successor: successor.map(|s| s.instance_id.clone()),
            });
            continue;
        }
        staying.insert(d.id.clone(), Some(o.instance_id.clone()));
        // Kept as launched, its spec and settings tags keep saying what it runs.
        let mut set = missing_tags(d, o);
        if let Fit::AsLaunched(settings) = fits {
            set.retain(|k, _| k != TAG_SPEC && k != TAG_SETTINGS);
            as_launched.push(AsLaunched {
                instance_id: o.instance_id.clone(),
                role: d.role.clone(),
                index: d.index,
                name: d.name.clone(),
                settings,
            });
        }
        // A booting instance has no public name yet: its records wait until it runs, rather
        // than point at the private name it has meanwhile. (A stopped one keeps the names it
        // has: heet does not start it.)
        if o.state != "pending" {
            let name = o.dns_name().map(str::to_ascii_lowercase);
            if name.is_none() && !d.cnames.is_empty() {
                unresolved.push(format!(
                    "{} {}: the instance has no DNS name (public or private) for {}",
                    d.name,
                    o.instance_id,
                    d.cnames.join(", ")
                ));
            }
            targets.insert(&d.id, name);
        } else {
            targets.insert(&d.id, None);
            booting.insert(&d.id, o.instance_id.clone());
        }
        if set.is_empty() {
            unchanged += 1;
        } else {
            changes.push(Change::UpdateTags {
                instance_id: o.instance_id.clone(),
                role: d.role.clone(),
                index: d.index,
                name: d.name.clone(),
                set,
            });
        }
    }
    for w in kept.into_values() {
        changes.push(delete(&w, "no longer in the definition".into(), false));
    }
    roll_out(desired, &mut changes);

    let network = network::plan(project, env, &desired.network, resources, &staying);
    // An instance that gets an Elastic IP gets a new public DNS name: its records are
    // pointed at it once the address is associated.
    for c in &network {
        if let NetChange::Associate { slot, .. } = c {
            targets.insert(slot.as_str(), None);
        }
    }

    let mut dns_plan = plan_records(desired, &targets, &booting, dns);
    // Names of instances without any DNS name are not written (and said so).
    dns_plan.changes.retain(|r| match r {
        RecordChange::Upsert {
            slot,
            target: None,
            instance_id: None,
            ..
        } => !unresolved_slot(desired, slot, &unresolved),
        _ => true,
    });
    let settled = batches
        .map(|b| settled_batches(project, env, b, observed, &changes, now))
        .unwrap_or_default();
    Plan {
        project: project.to_owned(),
        env: env.to_owned(),
        changes,
        network,
        iam: IamPlan::default(),
        dns: dns_plan,
        unchanged,
        as_launched,
        foreign,
        unadopted,
        unresolved,
        settled,
        teardown: desired.instances.is_empty(),
    }
}

/// The tags `d` wants that `o` lacks or holds with another value.
fn missing_tags(d: &DesiredInstance, o: &ObservedInstance) -> BTreeMap<String, String> {
    d.tags
        .iter()
        .filter(|(k, v)| o.tags.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Places each replacement in its role's rollout: successors found launched finish first
/// (round 0), the others follow batch by batch as the role's `rolling` says.
fn roll_out(desired: &Desired, changes: &mut [Change]) {
    let mut by_role: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        if let Change::Replace { instance, .. } = c {
            by_role.entry(instance.role.clone()).or_default().push(i);
        }
    }
    for (role, at) in by_role {
        let of_role: Vec<&DesiredInstance> = desired
            .instances
            .iter()
            .filter(|d| d.role == role)
            .collect();
        let rolling = of_role.first().map(|d| d.rolling).unwrap_or_default();
        let (found, fresh): (Vec<usize>, Vec<usize>) = at
            .into_iter()
            .partition(|&i| changes[i].successor().is_some());
        let steps = crate::rolling::steps(
            &rolling,
            of_role.len() as u32,
            fresh.len(),
            !found.is_empty(),
        );
        let rounds = steps.first().map_or(1, |s| s.rounds);
        let finishing = Step {
            round: 0,
            rounds,
            overlap: true,
        };
        let placed = fresh
            .into_iter()
            .zip(steps)
            .chain(found.into_iter().map(|i| (i, finishing)));
        for (i, s) in placed {
            if let Change::Replace { step, .. } = &mut changes[i] {
                *step = s;
            }
        }
    }
}

/// Whether `slot`'s instance was found to have no DNS name at all.
fn unresolved_slot(desired: &Desired, slot: &str, unresolved: &[String]) -> bool {
    desired
        .instances
        .iter()
        .find(|d| d.id == slot)
        .is_some_and(|d| {
            unresolved
                .iter()
                .any(|u| u.starts_with(&format!("{} ", d.name)))
        })
}

/// The ledger keys of batch launches that are over once `changes` are applied: every
/// instance they launched carries its slot's tags (or gets them in `changes`), or none came
/// within [`BATCH_GRACE_SECS`].
fn settled_batches(
    project: &str,
    env: &str,
    batches: &BTreeMap<String, ledger::Batch>,
    observed: &[ObservedInstance],
    changes: &[Change],
    now: i64,
) -> Vec<String> {
    let retagged: std::collections::BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::UpdateTags {
                instance_id, set, ..
            } if set.contains_key(TAG_ID) => Some(instance_id.as_str()),
            _ => None,
        })
        .collect();
    let mut settled = Vec::new();
    for b in batches.values() {
        let members: Vec<&ObservedInstance> = observed
            .iter()
            .filter(|o| {
                o.tags.get(TAG_PROJECT).map(String::as_str) == Some(project)
                    && o.tags.get(TAG_ENV).map(String::as_str) == Some(env)
                    && o.tags.get(TAG_BATCH) == Some(&b.batch)
            })
            .collect();
        let placed = |o: &&ObservedInstance| {
            o.slot_id(project, env).is_some() || retagged.contains(o.instance_id.as_str())
        };
        let expected = if b.instances.is_empty() {
            b.slots.len()
        } else {
            b.instances.len()
        };
        let over = if members.len() >= expected {
            members.iter().all(placed)
        } else {
            // Some not seen: gone, or not visible yet; only time tells them apart.
            now - b.since > BATCH_GRACE_SECS && members.iter().all(placed)
        };
        if over {
            settled.push(ledger::batch_key(&b.batch));
        }
    }
    settled
}

/// How `o` fits the launch settings `d` wants (see [`launch::fit`]).
fn fit(d: &DesiredInstance, o: &ObservedInstance) -> Fit {
    let tag = |k: &str| o.tags.get(k).map(String::as_str);
    launch::fit(
        &d.spec,
        &d.settings,
        &d.replace_on,
        tag(TAG_SPEC),
        tag(TAG_SETTINGS),
    )
}

/// Why `o` is replaced: the type and AMI it has and gets, and the other settings that
/// differ, as far as its tags say.
fn replace_reasons(
    d: &DesiredInstance,
    o: &ObservedInstance,
    differing: &[Setting],
) -> Vec<String> {
    let mut reasons = Vec::new();
    if d.instance_type != o.instance_type {
        reasons.push(format!(
            "instance type {} → {}",
            o.instance_type, d.instance_type
        ));
    }
    if d.ami != o.ami {
        reasons.push(format!("ami {} → {}", o.ami, d.ami));
    }
    let others: Vec<Setting> = differing
        .iter()
        .copied()
        .filter(|s| !matches!(s, Setting::Ami | Setting::InstanceType))
        .collect();
    if !others.is_empty() {
        reasons.push(format!("{} changed", launch::names(&others)));
    }
    if reasons.is_empty() {
        reasons.push("user_data or launch settings changed".into());
    }
    reasons
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = format!("{}/{}", self.project, self.env);
        if self.is_empty() {
            write!(
                f,
                "no changes: {target} is up to date ({} instance(s))",
                self.unchanged
            )?;
        } else {
            write!(
                f,
                "plan for {target}: {} to create, {} to replace, {} to update, {} to delete",
                self.count(|c| matches!(c, Change::Create { .. })),
                self.count(|c| matches!(c, Change::Replace { .. })),
                self.count(|c| matches!(c, Change::UpdateTags { .. })),
                self.count(|c| matches!(c, Change::Delete { .. })),
            )?;
            for family in self.families() {
                match family.changes().len() {
                    0 => {}
                    n => write!(f, ", {n} {} change(s)", family.label())?,
                }
            }
            for change in &self.changes {
                write!(f, "\n  {change}")?;
            }
            let mut rollouts: BTreeMap<&str, (u32, &crate::rolling::Rolling)> = BTreeMap::new();
            for (d, step) in self.changes.iter().filter_map(Change::rollout) {
                rollouts.insert(&d.role, (step.rounds, &d.rolling));
            }
            for (role, (rounds, r)) in rollouts {
                write!(
                    f,
                    "\n  rollout  {role}: {rounds} batch(es) of {} (max_unavailable {}), each healthy when {} within {} s, then its names move",
                    r.batch,
                    r.max_unavailable,
                    r.health.name(),
                    r.timeout.as_secs()
                )?;
            }
            if let Some(zone) = &self.dns.create_zone {
                write!(f, "\n  + zone     {zone}")?;
            }
            for change in self.families().iter().flat_map(|f| f.changes()) {
                write!(f, "\n  {change}")?;
            }
        }
        for c in self.families().iter().flat_map(|f| f.conflicts()) {
            write!(f, "\n  conflict: {}", text::shown(c))?;
        }
        for n in self.families().iter().flat_map(|f| f.foreign()) {
            write!(f, "\n  not heet's, left alone: {}", text::shown(n))?;
        }
        for name in &self.dns.forgotten {
            write!(
                f,
                "\n  record {}: changed by someone else since heet made it; forgotten, left alone",
                text::shown(name)
            )?;
        }
        if !self.unadopted.is_empty() {
            write!(
                f,
                "\n  adopt: {} instance(s) of an interrupted batch launch, placed from the ledger: {}",
                self.unadopted.len(),
                self.unadopted.join(", ")
            )?;
        }
        for u in &self.unresolved {
            write!(f, "\n  no record: {u}")?;
        }
        for a in &self.as_launched {
            write!(f, "\n  as launched: {a}")?;
        }
        if !self.foreign.is_empty() {
            write!(
                f,
                "\nleft alone (tagged for {target} but not created by heet): {}",
                text::shown_all(&self.foreign)
            )?;
        }
        Ok(())
    }
}

impl Change {
    /// The instance this change terminates, if it terminates one, and when.
    pub fn terminates(&self) -> Option<(&str, Ending)> {
        match self {
            Change::Delete { instance_id, .. } => Some((instance_id, Ending::First)),
            Change::Replace {
                instance_id, step, ..
            } => Some((
                instance_id,
                match (step.overlap, step.round) {
                    (false, 0) => Ending::First,
                    (false, round) => Ending::BeforeRound(round),
                    (true, round) => Ending::AfterRound(round),
                },
            )),
            Change::Create { .. } | Change::UpdateTags { .. } => None,
        }
    }

    /// The instance this change launches, if it launches one, and the rollout round it is
    /// launched in (new slots in the first).
    pub fn launches(&self) -> Option<(&DesiredInstance, u32)> {
        match self {
            Change::Create { instance } => Some((instance, 0)),
            Change::Replace {
                instance,
                step,
                successor: None,
                ..
            } => Some((instance, step.round)),
            Change::Replace {
                successor: Some(_), ..
            }
            | Change::UpdateTags { .. }
            | Change::Delete { .. } => None,
        }
    }

    /// A replacement's successor, when a rollout under way launched it already.
    pub fn successor(&self) -> Option<&str> {
        match self {
            Change::Replace { successor, .. } => successor.as_deref(),
            Change::Create { .. } | Change::UpdateTags { .. } | Change::Delete { .. } => None,
        }
    }

    /// A replacement's slot, settings and place in its role's rollout.
    pub fn rollout(&self) -> Option<(&DesiredInstance, Step)> {
        match self {
            Change::Replace { instance, step, .. } => Some((instance, *step)),
            Change::Create { .. } | Change::UpdateTags { .. } | Change::Delete { .. } => None,
        }
    }

    /// The tags this change sets on an instance it keeps: (instance id, name, tags).
    pub fn retags(&self) -> Option<(&str, &str, &BTreeMap<String, String>)> {
        match self {
            Change::UpdateTags {
                instance_id,
                name,
                set,
                ..
            } => Some((instance_id, name, set)),
            Change::Create { .. } | Change::Replace { .. } | Change::Delete { .. } => None,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create { instance: d } => {
                write!(
                    f,
                    "+ create   {}[{}] {} ({}, {})",
                    d.role, d.index, d.name, d.instance_type, d.ami
                )?;
                if let Some(v) = d.volume {
                    let keep = if v.keep { ", kept" } else { "" };
                    write!(f, " volume: {} GiB{keep}", v.gb)?;
                }
                if d.eip {
                    write!(f, " elastic ip")?;
                }
                if !d.cnames.is_empty() {
                    write!(f, " cnames: {}", d.cnames.join(", "))?;
                }
                Ok(())
            }
            Change::Replace {
                instance_id,
                reasons,
                instance: d,
                step,
                successor,
            } => {
                write!(
                    f,
                    "± replace  {}[{}] {} {instance_id}: {}; ",
                    d.role,
                    d.index,
                    d.name,
                    reasons.join(", ")
                )?;
                match successor {
                    Some(s) => write!(
                        f,
                        "rolling: its successor {s} is launched, the names move to it once it is {}",
                        d.rolling.health.name()
                    ),
                    None if step.overlap => write!(
                        f,
                        "batch {} of {}, the new instance first",
                        step.round + 1,
                        step.rounds
                    ),
                    None => write!(
                        f,
                        "batch {} of {}, the old instance goes first",
                        step.round + 1,
                        step.rounds
                    ),
                }
            }
            Change::UpdateTags {
                instance_id,
                role,
                index,
                name,
                set,
            } => {
                let tags: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "~ retag    {role}[{index}] {name} {instance_id}: {}",
                    tags.join(", ")
                )
            }
            Change::Delete {
                instance_id,
                role,
                index,
                name,
                reason,
                ..
            } => {
                write!(
                    f,
                    "- delete   {role}[{index}] {name} {instance_id}: {reason}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        compute,
        tests::{NoPlugins, definition},
    };

    const DEF: &str = r#"
[project]
name = "shop"
[defaults]
ami = "ami-12c6146b"
[roles.www]
count = 2
[environments.staging]
[environments.production]
"#;

    pub(super) fn desired(env: &str) -> Desired {
        compute(&definition(DEF), env, "us-east-1", &mut NoPlugins).unwrap()
    }

    fn running(d: &DesiredInstance, id: &str, launched: i64) -> ObservedInstance {
        ObservedInstance {
            instance_id: id.into(),
            state: "running".into(),
            instance_type: d.instance_type.clone(),
            ami: d.ami.clone(),
            launch_time: Some(launched),
            public_dns: Some(format!("{id}.compute.example")),
            private_dns: None,
            public_ip: None,
            private_ip: None,
            launch_index: Some(0),
            data_volume: None,
            tags: d.tags.clone(),
        }
    }

    /// Every desired instance running as desired, ids `i-0`, `i-1`, ...
    pub(super) fn all_running(d: &Desired) -> Vec<ObservedInstance> {
        d.instances
            .iter()
            .enumerate()
            .map(|(i, x)| running(x, &format!("i-{i}"), 1))
            .collect()
    }

    #[test]
    fn empty_account_means_create_everything() {
        let p = plan(&desired("staging"), &[], &[], &DnsState::default(), None, 0);
        assert_eq!(p.changes.len(), 2);
        assert!(p.changes.iter().all(|c| matches!(c, Change::Create { .. })));
        assert!(!p.is_destructive());
        assert_eq!(
            p.to_string(),
            "plan for shop/staging: 2 to create, 0 to replace, 0 to update, 0 to delete\n  \
             + create   www[1] shop-staging-www-01 (t3.micro, ami-12c6146b)\n  \
             + create   www[2] shop-staging-www-02 (t3.micro, ami-12c6146b)"
        );
    }

    #[test]
    fn matching_state_means_no_changes() {
        let d = desired("staging");
        let observed = all_running(&d);
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert!(p.is_empty());
        assert_eq!(p.unchanged, 2);
        assert_eq!(
            p.to_string(),
            "no changes: shop/staging is up to date (2 instance(s))"
        );
    }

    #[test]
    fn each_registered_family_is_counted_shown_and_kept_from_an_empty_plan() {
        use crate::kinds::iam::IamChange;
        let d = desired("staging");
        let mut p = plan(&d, &all_running(&d), &[], &DnsState::default(), None, 0);
        assert!(p.is_empty());
        // A conflict alone stops apply: the plan is not empty, and says why.
        p.iam.conflicts = vec!["iam group shop-staging-ops".into()];
        assert!(!p.is_empty());
        assert!(
            p.to_string()
                .ends_with("\n  conflict: iam group shop-staging-ops"),
            "{p}"
        );
        p.iam.conflicts.clear();
        p.network = vec![NetChange::DeleteVpc {
            resource: "vpc/main".into(),
            vpc_id: "vpc-1".into(),
        }];
        p.iam.changes = vec![IamChange::CreateGroup {
            name: "shop-staging-ops".into(),
        }];
        let shown = p.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[0],
            "plan for shop/staging: 0 to create, 0 to replace, 0 to update, 0 to delete, 1 network change(s), 1 iam change(s)"
        );
        // In the order of `families`, each change as its kind shows it.
        assert_eq!(lines.len(), 3, "{shown}");
        assert_eq!(lines[1], format!("  {}", p.network[0]));
        assert_eq!(lines[2], format!("  {}", p.iam.changes[0]));
        assert_eq!(
            p.families()
                .iter()
                .filter_map(|f| f.changes().first().map(|c| crate::kinds::drift(*c)))
                .collect::<Vec<_>>(),
            [
                crate::kinds::Drift::Unexpected,
                crate::kinds::Drift::Missing
            ]
        );
        // `down` lists what a family deletes, not what it undoes on the way.
        p.iam.changes = vec![
            IamChange::Leave {
                user: "shop-staging-ci".into(),
                group: "shop-staging-ops".into(),
            },
            IamChange::Delete {
                kind: crate::kinds::iam::Kind::Group,
                name: "shop-staging-ops".into(),
                arn: "arn:aws:iam::123456789012:group/shop-staging-ops".into(),
            },
        ];
        let deleted = |f: &dyn crate::kinds::Family| -> Vec<String> {
            crate::kinds::deleted(f).map(|c| c.to_string()).collect()
        };
        assert_eq!(deleted(&p.network), [p.network[0].to_string()]);
        assert_eq!(deleted(&p.iam), [p.iam.changes[1].to_string()]);
        assert_eq!(
            crate::kinds::drift(p.iam.changes()[0]),
            crate::kinds::Drift::Unexpected
        );
    }

    #[test]
    fn lowering_the_count_deletes_the_extra_slot() {
        let d = desired("staging");
        let observed = all_running(&d);
        let mut fewer = d.clone();
        fewer.instances.pop();
        let p = plan(&fewer, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.changes.len(), 1);
        assert!(
            matches!(&p.changes[0], Change::Delete { instance_id, reason, .. } if instance_id == "i-1" && reason == "no longer in the definition")
        );
    }

    #[test]
    fn twins_keep_the_oldest_running_one() {
        let d = desired("staging");
        let a = running(&d.instances[0], "i-young", 20);
        let b = running(&d.instances[0], "i-old", 10);
        let c = running(&d.instances[1], "i-c", 10);
        let p = plan(&d, &[a, b, c], &[], &DnsState::default(), None, 0);
        assert_eq!(p.changes.len(), 1, "{p}");
        assert!(
            matches!(&p.changes[0], Change::Delete { instance_id, reason, .. } if instance_id == "i-young" && reason == "twin of i-old")
        );
    }

    #[test]
    fn changed_type_replaces_and_changed_name_retags() {
        let d = desired("staging");
        let mut old_type = running(&d.instances[0], "i-a", 1);
        old_type.tags.insert(TAG_SPEC.into(), "stale".into());
        // Tagged before heet:settings: only the spec tells.
        old_type.tags.remove(TAG_SETTINGS);
        old_type.instance_type = "t2.nano".into();
        let mut renamed = running(&d.instances[1], "i-b", 1);
        renamed.tags.insert("Name".into(), "old-name".into());
        let p = plan(&d, &[old_type, renamed], &[], &DnsState::default(), None, 0);
        assert!(
            matches!(&p.changes[0], Change::Replace { instance_id, reasons, .. } if instance_id == "i-a" && reasons == &["instance type t2.nano → t3.micro"])
        );
        assert!(
            matches!(&p.changes[1], Change::UpdateTags { set, .. } if set.len() == 1 && set["Name"] == "shop-staging-www-02")
        );
        assert!(p.is_destructive());
    }

    #[test]
    fn a_user_data_change_replaces_unless_replace_on_leaves_it_out() {
        let d = desired("staging");
        let launched = all_running(&d);
        let new_user_data = |replace_on: &str| {
            let def = DEF.replace(
                "count = 2",
                &format!("count = 2\nuser_data = \"#!/bin/sh\\necho v2\"\n{replace_on}"),
            );
            compute(&definition(&def), "staging", "us-east-1", &mut NoPlugins).unwrap()
        };

        // As today by default: every instance replaced, and the plan says for what.
        let p = plan(
            &new_user_data(""),
            &launched,
            &[],
            &DnsState::default(),
            None,
            0,
        );
        assert_eq!(p.count(|c| matches!(c, Change::Replace { .. })), 2, "{p}");
        assert!(
            matches!(&p.changes[0], Change::Replace { reasons, .. } if reasons == &["user_data changed"]),
            "{p}"
        );
        assert!(p.as_launched.is_empty());

        // Left out of replace_on: both stay, their spec and settings tags keep saying what
        // they run, and the next plan over them is the same no-op.
        let keep = new_user_data(r#"replace_on = ["ami", "instance_type"]"#);
        let p = plan(&keep, &launched, &[], &DnsState::default(), None, 0);
        assert!(p.is_empty(), "{p}");
        assert_eq!(p.unchanged, 2);
        let kept: Vec<(&str, &[Setting])> = p
            .as_launched
            .iter()
            .map(|a| (a.instance_id.as_str(), a.settings.as_slice()))
            .collect();
        assert_eq!(
            kept,
            [
                ("i-0", &[Setting::UserData][..]),
                ("i-1", &[Setting::UserData][..])
            ]
        );
        assert!(
            p.to_string().contains(
                "as launched: www[1] shop-staging-www-01 i-0: keeps its user_data (not in its role's replace_on)"
            ),
            "{p}"
        );

        // A tag change still reaches them, but never over their spec and settings.
        let mut renamed = launched.clone();
        renamed[0].tags.insert("Name".into(), "old".into());
        let p = plan(&keep, &renamed, &[], &DnsState::default(), None, 0);
        assert!(
            matches!(&p.changes[..], [Change::UpdateTags { set, .. }] if set.keys().eq(["Name"])),
            "{p}"
        );

        // A setting replace_on lists still replaces them, user_data along with it.
        let both = DEF.replace(
            "count = 2",
            "count = 2\ninstance_type = \"t3.small\"\nuser_data = \"v2\"\nreplace_on = [\"instance_type\"]",
        );
        let both = compute(&definition(&both), "staging", "us-east-1", &mut NoPlugins).unwrap();
        let p = plan(&both, &launched, &[], &DnsState::default(), None, 0);
        assert!(
            matches!(&p.changes[0], Change::Replace { reasons, instance, .. }
                if reasons == &["instance type t3.micro → t3.small", "user_data changed"]
                    && instance.user_data == "v2"),
            "{p}"
        );

        // Launched before heet:settings existed: only the spec tells, so it is replaced.
        let mut old = launched.clone();
        for o in &mut old {
            o.tags.remove(TAG_SETTINGS);
        }
        let p = plan(&keep, &old, &[], &DnsState::default(), None, 0);
        assert_eq!(p.count(|c| matches!(c, Change::Replace { .. })), 2, "{p}");
        // And one as wanted gets the tag, not a replacement.
        let p = plan(&d, &old, &[], &DnsState::default(), None, 0);
        assert!(
            p.changes.iter().all(
                |c| matches!(c, Change::UpdateTags { set, .. } if set.keys().eq([TAG_SETTINGS]))
            ),
            "{p}"
        );
    }

    /// `d`'s instances running with other launch settings than it asks for.
    fn all_stale(d: &Desired) -> Vec<ObservedInstance> {
        let mut observed = all_running(d);
        for o in &mut observed {
            o.tags.insert(TAG_SPEC.into(), "stale".into());
            // Tagged before heet:settings: only the spec tells.
            o.tags.remove(TAG_SETTINGS);
            o.instance_type = "t2.nano".into();
        }
        observed
    }

    #[test]
    fn a_replacement_rolls_batch_by_batch_each_new_instance_before_its_old_one_goes() {
        let d = desired("staging");
        let p = plan(&d, &all_stale(&d), &[], &DnsState::default(), None, 0);
        let steps: Vec<(u32, Option<(&str, Ending)>)> = p
            .changes
            .iter()
            .map(|c| (c.launches().unwrap().1, c.terminates()))
            .collect();
        assert_eq!(
            steps,
            [
                (0, Some(("i-0", Ending::AfterRound(0)))),
                (1, Some(("i-1", Ending::AfterRound(1))))
            ]
        );
        assert_eq!(p.rounds(), 2);
        assert_eq!(p.slot_rounds()[d.instances[1].id.as_str()], 1);
        // Round 0 over: i-0's successor is healthy and it goes; i-1 serves until round 1.
        let none = BTreeSet::new();
        assert_eq!(p.after_round(0, &none), (vec!["i-0"], vec!["i-1"]));
        // Its successor failed: i-0 keeps serving too.
        let failed = BTreeSet::from([d.instances[0].id.as_str()]);
        assert_eq!(p.after_round(0, &failed), (vec![], vec!["i-0", "i-1"]));
        assert_eq!(p.after_round(1, &none), (vec!["i-1"], vec![]));
        let text = p.to_string();
        assert!(
            text.contains("± replace  www[2] shop-staging-www-02 i-1: instance type t2.nano → t3.micro; batch 2 of 2, the new instance first"),
            "{text}"
        );
        assert!(
            text.contains("rollout  www: 2 batch(es) of 25% (max_unavailable 0), each healthy when running within 600 s"),
            "{text}"
        );
    }

    #[test]
    fn all_at_once_terminates_first_as_replacement_always_did() {
        let mut d = desired("staging");
        for i in &mut d.instances {
            i.rolling.batch = crate::rolling::Amount::Percent(100);
            i.rolling.max_unavailable = crate::rolling::Amount::Percent(100);
        }
        let p = plan(&d, &all_stale(&d), &[], &DnsState::default(), None, 0);
        assert_eq!(p.rounds(), 1);
        assert!(
            p.changes
                .iter()
                .all(|c| matches!(c.terminates(), Some((_, Ending::First)))
                    && c.launches().unwrap().1 == 0)
        );
    }

    #[test]
    fn a_rollout_under_way_keeps_its_successor_and_retires_the_old_instance_once_it_is_healthy() {
        let d = desired("staging");
        let mut observed = all_stale(&d);
        // A killed run launched www[1]'s successor: it has the slot's tags and the new spec.
        let mut successor = running(&d.instances[0], "i-new", 50);
        successor.state = "pending".into();
        observed.push(successor);
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert!(
            !p.changes.iter().any(|c| matches!(c, Change::Delete { .. })),
            "the successor is no twin: {p}"
        );
        let first = &p.changes[0];
        assert_eq!(first.successor(), Some("i-new"));
        assert_eq!(first.launches(), None, "not launched again");
        assert_eq!(first.terminates(), Some(("i-0", Ending::AfterRound(0))));
        // The other slot's batch waits for the one in flight.
        assert_eq!(p.changes[1].launches().unwrap().1, 1);
        assert!(
            p.to_string().contains("its successor i-new is launched"),
            "{p}"
        );

        // Once the successor runs, the old one and the successor are still one slot.
        let mut observed = all_stale(&d);
        observed.push(running(&d.instances[0], "i-new", 50));
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.changes[0].successor(), Some("i-new"));
    }

    #[test]
    fn a_successor_placed_from_the_ledger_gets_its_own_tags_before_its_names_move() {
        let d = desired("staging");
        let observed = {
            let mut o = all_stale(&d);
            // Killed after the launch of a batch of two (www[1]'s successor and a new slot),
            // before the instances got their own tags.
            let mut s = untagged(&d.instances[0], "i-new", "b1", 0);
            s.launch_time = Some(50);
            o.push(s);
            o
        };
        let ledger = batch(&d, "b1", &[], 100);
        let p = plan(&d, &observed, &[], &DnsState::default(), Some(&ledger), 100);
        let retag = p.changes.iter().find_map(Change::retags);
        assert!(
            matches!(retag, Some(("i-new", _, set)) if set.contains_key(TAG_ID) && set.contains_key(TAG_INDEX)),
            "{p}"
        );
        assert!(p.changes.iter().any(|c| c.successor() == Some("i-new")
            && c.terminates() == Some(("i-0", Ending::AfterRound(0)))));
    }

    #[test]
    fn a_failed_successor_of_settings_given_up_is_a_twin_and_the_old_instance_stays() {
        let d = desired("staging");
        let mut observed = all_running(&d);
        // i-bad was the successor of settings the definition no longer asks for.
        let mut bad = running(&d.instances[0], "i-bad", 50);
        bad.tags.insert(TAG_SPEC.into(), "given-up".into());
        // Tagged before heet:settings: only the spec tells.
        bad.tags.remove(TAG_SETTINGS);
        observed.push(bad);
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.changes.len(), 1, "{p}");
        assert!(
            matches!(&p.changes[0], Change::Delete { instance_id, twin: true, .. } if instance_id == "i-bad"),
            "{p}"
        );
    }

    #[test]
    fn other_envs_and_look_alikes_are_never_touched() {
        let staging = desired("staging");
        let production = desired("production");
        let theirs = running(&production.instances[0], "i-prod", 1);
        let mut look_alike = running(&staging.instances[0], "i-fake", 1);
        look_alike
            .tags
            .insert(TAG_ID.into(), "0000000000000000".into());
        let p = plan(
            &staging,
            &[theirs, look_alike],
            &[],
            &DnsState::default(),
            None,
            0,
        );
        assert_eq!(p.foreign, ["i-prod", "i-fake"]);
        assert!(!p.is_destructive());
        assert_eq!(p.count(|c| matches!(c, Change::Create { .. })), 2);
    }

    /// `d`'s instance as a batch launch leaves it before its own tags: only the tags its
    /// batch shares, and `heet:batch`.
    fn untagged(d: &DesiredInstance, id: &str, batch: &str, launch_index: u32) -> ObservedInstance {
        let mut o = running(d, id, 1);
        o.tags
            .retain(|k, _| [TAG_PROJECT, TAG_ENV, TAG_ROLE, TAG_SPEC].contains(&k.as_str()));
        o.tags.insert(TAG_BATCH.into(), batch.into());
        o.launch_index = Some(launch_index);
        o
    }

    fn batch(
        d: &Desired,
        id: &str,
        instances: &[&str],
        since: i64,
    ) -> BTreeMap<String, ledger::Batch> {
        BTreeMap::from([(
            id.to_owned(),
            ledger::Batch {
                batch: id.into(),
                role: "www".into(),
                spec: d.instances[0].spec.clone(),
                slots: vec![1, 2],
                client_token: "heet-t".into(),
                instances: instances.iter().map(|s| (*s).to_owned()).collect(),
                since,
                state: if instances.is_empty() {
                    ledger::State::Pending
                } else {
                    ledger::State::Done
                },
            },
        )])
    }

    #[test]
    fn instances_of_an_interrupted_batch_are_placed_by_the_ledger_and_only_by_it() {
        let d = desired("staging");
        // A kill after RunInstances, before the instances got their own tags; the second
        // launched first in the answer's order, which is AmiLaunchIndex's to decide.
        let observed = [
            untagged(&d.instances[1], "i-b", "b1", 1),
            untagged(&d.instances[0], "i-a", "b1", 0),
        ];
        // Without the ledger: not converged, and nothing is touched yet.
        let first = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(first.unadopted, ["i-b", "i-a"]);
        assert!(!first.is_empty());
        assert!(
            first
                .changes
                .iter()
                .all(|c| matches!(c, Change::Create { .. }))
        );

        let ledger = batch(&d, "b1", &[], 100);
        let p = plan(&d, &observed, &[], &DnsState::default(), Some(&ledger), 100);
        assert!(p.unadopted.is_empty() && p.foreign.is_empty(), "{p:?}");
        let retags: Vec<(&str, &str)> = p
            .changes
            .iter()
            .map(|c| match c {
                Change::UpdateTags {
                    instance_id, set, ..
                } => (instance_id.as_str(), set[TAG_INDEX].as_str()),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(retags, [("i-a", "1"), ("i-b", "2")], "no launch, no twin");
        assert_eq!(p.settled, ["batch/b1"], "over once they are retagged");

        // Once confirmed, only the instances the ledger names are the batch's.
        let confirmed = batch(&d, "b1", &["i-a", "i-other"], 100);
        let p = plan(
            &d,
            &observed,
            &[],
            &DnsState::default(),
            Some(&confirmed),
            100,
        );
        assert_eq!(p.foreign, ["i-b"], "a look-alike copying the batch tag");
        assert!(p.settled.is_empty(), "i-other is not seen yet");

        // A batch the ledger does not list is nobody heet knows.
        let p = plan(
            &d,
            &observed,
            &[],
            &DnsState::default(),
            Some(&BTreeMap::new()),
            100,
        );
        assert_eq!(p.foreign, ["i-b", "i-a"]);
        assert_eq!(p.count(|c| matches!(c, Change::Create { .. })), 2);
    }

    #[test]
    fn a_batch_written_ahead_that_never_launched_is_dropped_only_after_its_grace() {
        let d = desired("staging");
        let ledger = batch(&d, "b1", &[], 1_000);
        let soon = plan(&d, &[], &[], &DnsState::default(), Some(&ledger), 1_010);
        assert!(
            soon.settled.is_empty(),
            "its instances may not be visible yet"
        );
        let later = plan(
            &d,
            &[],
            &[],
            &DnsState::default(),
            Some(&ledger),
            1_000 + BATCH_GRACE_SECS + 1,
        );
        assert_eq!(later.settled, ["batch/b1"]);
    }

    #[test]
    fn json_never_contains_user_data() {
        let mut d = desired("staging");
        d.instances[0].user_data = "password=hunter2".into();
        let p = plan(&d, &[], &[], &DnsState::default(), None, 0);
        let mut out = Vec::new();
        crate::report::plan(&p, &mut serde_json::Serializer::new(&mut out)).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains(r#""action":"create""#), "{json}");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use crate::kinds::records::{ObservedRecord, Zone};
    use crate::ledger::OwnedRecord;

    /// Two www instances with the indexed CNAMEs, both running as `i-0`, `i-1`.
    fn setup() -> (Desired, Vec<ObservedInstance>) {
        let mut d = super::tests::desired("staging");
        for i in &mut d.instances {
            i.cnames = vec![format!("www-{:02}", i.index)];
            i.tags
                .insert(namespace::TAG_DNS.into(), namespace::dns_hash(&i.cnames));
        }
        let observed = super::tests::all_running(&d);
        (d, observed)
    }

    fn cname(target: &str) -> ObservedRecord {
        ObservedRecord {
            kind: "CNAME".into(),
            values: vec![target.into()],
            ttl: Some(300),
        }
    }

    fn dns(records: &[(&str, ObservedRecord)], owned: Option<&[(&str, &str)]>) -> DnsState {
        DnsState {
            domain: Some("example.com".into()),
            zone: Some(Zone {
                id: "Z1".into(),
                name: "example.com".into(),
            }),
            records: records
                .iter()
                .map(|(n, r)| ((*n).to_owned(), r.clone()))
                .collect(),
            owned: owned.map(|o| {
                o.iter()
                    .map(|(n, t)| {
                        (
                            (*n).to_owned(),
                            OwnedRecord {
                                target: (*t).to_owned(),
                                ttl: 300,
                            },
                        )
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn missing_records_point_at_running_instances() {
        let (d, observed) = setup();
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        let targets: Vec<(&str, Option<&str>)> = p
            .dns
            .changes
            .iter()
            .map(|r| match r {
                RecordChange::Upsert { name, target, .. } => (name.as_str(), target.as_deref()),
                RecordChange::Delete { .. } => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("www-01.example.com", Some("i-0.compute.example")),
                ("www-02.example.com", Some("i-1.compute.example"))
            ]
        );
    }

    #[test]
    fn correct_records_are_a_no_op_even_without_the_ledger() {
        let (d, observed) = setup();
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("i-1.compute.example")),
        ];
        assert!(plan(&d, &observed, &[], &dns(&records, None), None, 0).is_empty());
    }

    #[test]
    fn a_new_instance_gets_its_record_after_launch() {
        let (d, observed) = setup();
        let p = plan(&d, &observed[..1], &[], &dns(&[], Some(&[])), None, 0);
        assert!(matches!(
            &p.dns.changes[1],
            RecordChange::Upsert { name, target: None, .. } if name == "www-02.example.com"
        ));
    }

    #[test]
    fn a_foreign_record_on_a_wanted_name_is_a_conflict_never_overwritten() {
        let (d, observed) = setup();
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("someone-else.example")),
        ];
        let p = plan(
            &d,
            &observed,
            &[],
            &dns(
                &records,
                Some(&[("www-01.example.com", "i-0.compute.example")]),
            ),
            None,
            0,
        );
        assert!(p.dns.changes.is_empty(), "{:?}", p.dns.changes);
        assert_eq!(p.dns.conflicts.len(), 1);
        assert!(
            p.dns.conflicts[0]
                .starts_with("www-02.example.com exists (CNAME someone-else.example)")
        );
        assert!(!p.is_empty());
    }

    #[test]
    fn stale_records_are_deleted_only_when_heet_made_them_and_nobody_changed_them() {
        let (mut d, observed) = setup();
        for i in &mut d.instances {
            i.cnames.clear();
        }
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("changed-by-hand.example")),
            ("www-03.example.com", cname("not-ours.example")),
        ];
        let owned = [
            ("www-01.example.com", "i-0.compute.example"),
            ("www-02.example.com", "i-1.compute.example"),
            ("www-09.example.com", "i-9.compute.example"),
        ];
        let p = plan(&d, &observed, &[], &dns(&records, Some(&owned)), None, 0);
        let deletes: Vec<(&str, bool)> = p
            .dns
            .changes
            .iter()
            .map(|r| match r {
                RecordChange::Delete { name, present, .. } => (name.as_str(), *present),
                RecordChange::Upsert { .. } => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            deletes,
            [("www-01.example.com", true), ("www-09.example.com", false)]
        );
        assert_eq!(p.dns.forgotten, ["www-02.example.com"]);
    }

    #[test]
    fn dropping_every_cname_is_seen_without_the_ledger() {
        let (mut d, observed) = setup();
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("i-1.compute.example")),
        ];
        d = {
            let mut def_less = d.clone();
            for i in &mut def_less.instances {
                i.cnames.clear();
                i.tags
                    .insert(namespace::TAG_DNS.into(), namespace::dns_hash(&[]));
            }
            def_less
        };
        // The optimistic plan (no ledger) must not call this converged: the instances' tags
        // say their records changed, so `up` goes on to read the ledger and delete them.
        let p = plan(&d, &observed, &[], &dns(&records, None), None, 0);
        assert_eq!(
            p.count(|c| matches!(c, Change::UpdateTags { .. })),
            2,
            "{p}"
        );
    }

    #[test]
    fn a_booting_instance_gets_its_records_once_it_runs_not_its_private_name_now() {
        let (d, mut observed) = setup();
        observed[1].state = "pending".into();
        observed[1].public_dns = None;
        observed[1].private_dns = Some("ip-10-0-0-9.ec2.internal".into());
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        assert!(
            matches!(
                &p.dns.changes[1],
                RecordChange::Upsert { target: None, instance_id: Some(id), .. } if id == "i-1"
            ),
            "{:?}",
            p.dns.changes
        );
    }

    #[test]
    fn a_running_instance_without_any_dns_name_gets_no_record_and_the_plan_says_so() {
        let (d, mut observed) = setup();
        observed[0].public_dns = None;
        observed[0].private_dns = None;
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        assert_eq!(p.dns.changes.len(), 1, "{:?}", p.dns.changes);
        assert_eq!(p.unresolved.len(), 1);
        assert!(
            p.to_string()
                .contains("no record: shop-staging-www-01 i-0: the instance has no DNS name"),
            "{p}"
        );
    }

    #[test]
    fn a_missing_zone_is_planned_when_records_are_wanted() {
        let (d, observed) = setup();
        let mut state = dns(&[], Some(&[]));
        state.zone = None;
        let p = plan(&d, &observed, &[], &state, None, 0);
        assert_eq!(p.dns.create_zone.as_deref(), Some("example.com"));
        assert!(p.to_string().contains("+ zone     example.com"), "{p}");
    }
}
