//! The instances kind: slots from the definition, the instances found in them (by their tags,
//! or by the ledger's batch launches a killed run left), and the changes that launch, retag,
//! replace (in each role's rollout) and terminate them. Pure: `apply` makes the changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::{Desired, DesiredInstance};
use crate::kinds::{Bookkeeping, Family, Stage};
use crate::launch::{self, Fit, Setting};
use crate::ledger;
use crate::namespace::{
    self, TAG_BATCH, TAG_ENV, TAG_ID, TAG_INDEX, TAG_PROJECT, TAG_ROLE, TAG_SETTINGS, TAG_SPEC,
};
use crate::rolling::Step;

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
    /// Detailed monitoring on (or being turned on).
    pub monitoring: bool,
    /// EC2's source/destination check, when the describe says.
    pub source_dest_check: Option<bool>,
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

    /// Every DNS name and address a record may point at it by, lower case.
    pub fn record_targets(&self) -> Vec<String> {
        [
            &self.public_dns,
            &self.private_dns,
            &self.public_ip,
            &self.private_ip,
        ]
        .into_iter()
        .flatten()
        .filter(|v| !v.is_empty())
        .map(|v| v.to_ascii_lowercase())
        .collect()
    }

    /// How records reach it.
    pub fn reach(&self) -> crate::kinds::records::Reach {
        crate::kinds::records::Reach {
            public_dns: self.public_dns.clone(),
            public_ip: self.public_ip.clone(),
            private_ip: self.private_ip.clone(),
        }
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

/// The instances' part of a plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstancePlan {
    pub changes: Vec<InstanceChange>,
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
    /// Ledger entries of batch launches that are over (their instances carry their slot tags,
    /// or never came), dropped once this plan's retags are made. Bookkeeping, not a change.
    pub settled: Vec<String>,
    /// Kept instances still booting that other kinds' changes wait for (their records):
    /// (slot, instance id), waited for in the first round.
    pub awaited: Vec<(String, String)>,
    /// Instances with termination protection that the plan would terminate, while their slot
    /// keeps `disable_api_termination` on (or is gone): nothing is applied while any exist.
    pub protected: Vec<String>,
    /// Instances whose termination protection is turned off right before they are
    /// terminated: the definition turned it off for their slot.
    pub unprotect: Vec<String>,
}

/// Whether `o` runs with termination protection, as its launch settings say (EC2's describe
/// does not).
fn is_protected(o: &ObservedInstance) -> bool {
    o.tags
        .get(TAG_SETTINGS)
        .and_then(|t| launch::Settings::from_tag(t))
        .is_some_and(|s| s.holds(Setting::ApiTermination, "true"))
}

/// An attribute EC2 changes on a running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Monitoring(bool),
    SourceDestCheck(bool),
    ApiTermination(bool),
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, on) = match self {
            Attribute::Monitoring(on) => ("monitoring", on),
            Attribute::SourceDestCheck(on) => ("source_dest_check", on),
            Attribute::ApiTermination(on) => ("disable_api_termination", on),
        };
        write!(f, "{name} {}", if *on { "on" } else { "off" })
    }
}

/// The attribute a setting changed in place sets to what `d` wants; `None` for a setting
/// that is not changed in place.
fn attribute(setting: Setting, d: &DesiredInstance) -> Option<Attribute> {
    match setting {
        Setting::ApiTermination => Some(Attribute::ApiTermination(d.disable_api_termination)),
        Setting::Ami
        | Setting::InstanceType
        | Setting::UserData
        | Setting::KeyName
        | Setting::Subnet
        | Setting::SecurityGroups
        | Setting::Volume
        | Setting::InstanceProfile
        | Setting::Placement
        | Setting::EbsOptimized => None,
    }
}

/// The attributes `o` has other than `d` says, of those EC2's describe shows (monitoring,
/// the source/destination check): a hand change is drift, put back in place.
fn observed_attributes(d: &DesiredInstance, o: &ObservedInstance) -> Vec<Attribute> {
    let mut out = Vec::new();
    if let Some(on) = d.monitoring
        && on != o.monitoring
    {
        out.push(Attribute::Monitoring(on));
    }
    if let (Some(on), Some(has)) = (d.source_dest_check, o.source_dest_check)
        && on != has
    {
        out.push(Attribute::SourceDestCheck(on));
    }
    out
}

/// What the instances' plan tells the kinds that point at instances, by slot id.
#[derive(Debug, Default)]
pub struct Slots<'a> {
    /// The DNS name each desired slot will have, where it is known before applying.
    pub targets: BTreeMap<&'a str, Option<String>>,
    /// The instance that stays in a slot while still booting: its names wait until it runs.
    pub booting: BTreeMap<&'a str, String>,
    /// The instance that stays in each slot (none when one is launched), for Elastic IPs.
    pub staying: BTreeMap<String, Option<String>>,
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
pub enum InstanceChange {
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
    /// Attributes EC2 changes on the running instance, then its tags (`set`) saying so.
    Modify {
        instance_id: String,
        role: String,
        index: u32,
        name: String,
        attributes: Vec<Attribute>,
        set: BTreeMap<String, String>,
    },
}

impl InstancePlan {
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
            .filter_map(InstanceChange::rollout)
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

    /// Whether `phase` has anything to do in rollout round `round` (outside the rounds: 0).
    pub fn has_work(&self, phase: Phase, round: u32) -> bool {
        let changes = &self.changes;
        let ends = |e: Ending| {
            changes
                .iter()
                .any(|c| c.terminates().map(|(_, x)| x) == Some(e))
        };
        match phase {
            Phase::Terminate => ends(Ending::First),
            Phase::Retag => {
                changes.iter().any(|c| c.retags().is_some()) || !self.settled.is_empty()
            }
            Phase::RetireFirst => ends(Ending::BeforeRound(round)),
            Phase::Launch => {
                changes.iter().any(|c| {
                    c.launches().is_some_and(|(_, r)| r == round)
                        || (c.successor().is_some()
                            && c.rollout().is_some_and(|(_, s)| s.round == round))
                }) || (round == 0 && !self.awaited.is_empty())
            }
            Phase::Retire => changes
                .iter()
                .any(|c| c.rollout().is_some_and(|(_, s)| s.round == round)),
        }
    }

    /// Whether applying the plan terminates anything.
    pub fn is_destructive(&self) -> bool {
        self.terminated_ids().next().is_some()
    }

    pub fn count(&self, f: impl Fn(&InstanceChange) -> bool) -> usize {
        self.changes.iter().filter(|c| f(c)).count()
    }
}

/// When apply terminates an instance (see [`InstanceChange::terminates`]).
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

/// Computes the instance changes that turn `observed` into `desired`'s slots. `batches`
/// are the ledger's batch launches, when the ledger was read; `now` is the time in seconds
/// since the epoch, for ledger entries that are over.
pub fn plan<'a>(
    desired: &'a Desired,
    observed: &[ObservedInstance],
    batches: Option<&BTreeMap<String, ledger::Batch>>,
    now: i64,
) -> (InstancePlan, Slots<'a>) {
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
    let delete = |w: &Owner, reason: String, twin: bool| InstanceChange::Delete {
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
            changes.push(InstanceChange::Create {
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
                    targets.insert(&d.id, s.reach().target(d.record_a));
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
            // Likewise what a killed run left to change on it in place (a NAT's check).
            if let Some(s) = successor {
                let set = missing_tags(d, s);
                let attributes = observed_attributes(d, s);
                if !attributes.is_empty() {
                    changes.push(InstanceChange::Modify {
                        instance_id: s.instance_id.clone(),
                        role: d.role.clone(),
                        index: d.index,
                        name: d.name.clone(),
                        attributes,
                        set,
                    });
                } else if !set.is_empty() {
                    changes.push(InstanceChange::UpdateTags {
                        instance_id: s.instance_id.clone(),
                        role: d.role.clone(),
                        index: d.index,
                        name: d.name.clone(),
                        set,
                    });
                }
            }
            changes.push(InstanceChange::Replace {
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
        // Kept as launched, its spec and settings tags keep saying what it runs; what is
        // changed in place, its settings tag says once it is.
        let mut set = missing_tags(d, o);
        let (modify, kept_as_launched) = match fits {
            Fit::Exact => (Vec::new(), Vec::new()),
            Fit::AsLaunched(settings) => (Vec::new(), settings),
            Fit::Modify {
                modify,
                as_launched,
            } => (modify, as_launched),
            Fit::Replace(_) => unreachable!("a replaced instance does not stay"),
        };
        if !kept_as_launched.is_empty() {
            set.retain(|k, _| k != TAG_SPEC && k != TAG_SETTINGS);
            let has = o
                .tags
                .get(TAG_SETTINGS)
                .and_then(|t| launch::Settings::from_tag(t));
            if let (false, Some(has)) = (modify.is_empty(), has) {
                set.insert(TAG_SETTINGS.into(), has.with(&d.settings, &modify).tag());
            }
            as_launched.push(AsLaunched {
                instance_id: o.instance_id.clone(),
                role: d.role.clone(),
                index: d.index,
                name: d.name.clone(),
                settings: kept_as_launched,
            });
        }
        let mut attributes = observed_attributes(d, o);
        attributes.extend(modify.iter().filter_map(|s| attribute(*s, d)));
        // A booting instance has no public name or address yet: its records wait until it
        // runs, rather than point at the private address it has meanwhile. (A stopped one keeps the names it
        // has: heet does not start it.)
        if o.state != "pending" {
            let name = o.reach().target(d.record_a);
            if name.is_none() && !d.cnames.is_empty() {
                unresolved.push(format!(
                    "{} {}: the instance has no DNS name or address (public or private) for {}",
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
        if !attributes.is_empty() {
            changes.push(InstanceChange::Modify {
                instance_id: o.instance_id.clone(),
                role: d.role.clone(),
                index: d.index,
                name: d.name.clone(),
                attributes,
                set,
            });
        } else if set.is_empty() {
            unchanged += 1;
        } else {
            changes.push(InstanceChange::UpdateTags {
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
    // Termination protection: an instance the plan terminates goes only if its slot's
    // definition turned protection off (it is turned off first); otherwise nothing goes.
    let (mut protected, mut unprotect) = (Vec::new(), Vec::new());
    let by_id: BTreeMap<&str, &ObservedInstance> = observed
        .iter()
        .map(|o| (o.instance_id.as_str(), o))
        .collect();
    for c in &changes {
        let Some((id, _)) = c.terminates() else {
            continue;
        };
        if !by_id.get(id).is_some_and(|o| is_protected(o)) {
            continue;
        }
        // A twin is heet's own accident, not the slot's instance: it goes. An instance of a
        // slot that goes (a lower count) goes when its role turned protection off.
        let slot_off = match c {
            InstanceChange::Replace { instance, .. } => !instance.disable_api_termination,
            InstanceChange::Delete { twin: true, .. } => true,
            InstanceChange::Delete { role, .. } => wanted_in
                .values()
                .any(|d| d.role == *role && !d.disable_api_termination),
            InstanceChange::Create { .. }
            | InstanceChange::UpdateTags { .. }
            | InstanceChange::Modify { .. } => false,
        };
        if slot_off {
            unprotect.push(id.to_owned());
        } else {
            protected.push(super::Change::drift_line(c));
        }
    }
    let settled = batches
        .map(|b| settled_batches(project, env, b, observed, &changes, now))
        .unwrap_or_default();
    let plan = InstancePlan {
        changes,
        unchanged,
        as_launched,
        foreign,
        unadopted,
        unresolved,
        settled,
        awaited: Vec::new(),
        protected,
        unprotect,
    };
    let slots = Slots {
        targets,
        booting,
        staying,
    };
    (plan, slots)
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
fn roll_out(desired: &Desired, changes: &mut [InstanceChange]) {
    let mut by_role: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        if let InstanceChange::Replace { instance, .. } = c {
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
            if let InstanceChange::Replace { step, .. } = &mut changes[i] {
                *step = s;
            }
        }
    }
}

/// The ledger keys of batch launches that are over once `changes` are applied: every
/// instance they launched carries its slot's tags (or gets them in `changes`), or none came
/// within [`BATCH_GRACE_SECS`].
fn settled_batches(
    project: &str,
    env: &str,
    batches: &BTreeMap<String, ledger::Batch>,
    observed: &[ObservedInstance],
    changes: &[InstanceChange],
    now: i64,
) -> Vec<String> {
    let retagged: std::collections::BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| match c {
            InstanceChange::UpdateTags {
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
impl InstanceChange {
    /// The instance this change terminates, if it terminates one, and when.
    pub fn terminates(&self) -> Option<(&str, Ending)> {
        match self {
            InstanceChange::Delete { instance_id, .. } => Some((instance_id, Ending::First)),
            InstanceChange::Replace {
                instance_id, step, ..
            } => Some((
                instance_id,
                match (step.overlap, step.round) {
                    (false, 0) => Ending::First,
                    (false, round) => Ending::BeforeRound(round),
                    (true, round) => Ending::AfterRound(round),
                },
            )),
            InstanceChange::Create { .. }
            | InstanceChange::UpdateTags { .. }
            | InstanceChange::Modify { .. } => None,
        }
    }

    /// The instance this change launches, if it launches one, and the rollout round it is
    /// launched in (new slots in the first).
    pub fn launches(&self) -> Option<(&DesiredInstance, u32)> {
        match self {
            InstanceChange::Create { instance } => Some((instance, 0)),
            InstanceChange::Replace {
                instance,
                step,
                successor: None,
                ..
            } => Some((instance, step.round)),
            InstanceChange::Replace {
                successor: Some(_), ..
            }
            | InstanceChange::UpdateTags { .. }
            | InstanceChange::Modify { .. }
            | InstanceChange::Delete { .. } => None,
        }
    }

    /// A replacement's successor, when a rollout under way launched it already.
    pub fn successor(&self) -> Option<&str> {
        match self {
            InstanceChange::Replace { successor, .. } => successor.as_deref(),
            InstanceChange::Create { .. }
            | InstanceChange::UpdateTags { .. }
            | InstanceChange::Modify { .. }
            | InstanceChange::Delete { .. } => None,
        }
    }

    /// A replacement's slot, settings and place in its role's rollout.
    pub fn rollout(&self) -> Option<(&DesiredInstance, Step)> {
        match self {
            InstanceChange::Replace { instance, step, .. } => Some((instance, *step)),
            InstanceChange::Create { .. }
            | InstanceChange::UpdateTags { .. }
            | InstanceChange::Modify { .. }
            | InstanceChange::Delete { .. } => None,
        }
    }

    /// The tags this change sets on an instance it keeps: (instance id, name, tags); none
    /// to set is an empty map.
    pub fn retags(&self) -> Option<(&str, &str, &BTreeMap<String, String>)> {
        match self {
            InstanceChange::UpdateTags {
                instance_id,
                name,
                set,
                ..
            }
            | InstanceChange::Modify {
                instance_id,
                name,
                set,
                ..
            } => Some((instance_id, name, set)),
            InstanceChange::Create { .. }
            | InstanceChange::Replace { .. }
            | InstanceChange::Delete { .. } => None,
        }
    }

    /// The attributes this change sets on an instance it keeps, before its tags.
    pub fn modifies(&self) -> &[Attribute] {
        match self {
            InstanceChange::Modify { attributes, .. } => attributes,
            InstanceChange::Create { .. }
            | InstanceChange::Replace { .. }
            | InstanceChange::UpdateTags { .. }
            | InstanceChange::Delete { .. } => &[],
        }
    }
}

impl fmt::Display for InstanceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceChange::Create { instance: d } => {
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
            InstanceChange::Replace {
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
            InstanceChange::UpdateTags {
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
            InstanceChange::Modify { .. } => {
                write!(f, "~ modify   {}", super::Change::drift_line(self))
            }
            InstanceChange::Delete {
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

/// The instances' steps in apply's order, each at its place among every kind's changes
/// (see [`Stage`]): the terminations that come first go after the records that point at
/// them, the retags after; in a rollout round, the old instances that may go first, then
/// the launches and the wait until they are healthy, then (once the addresses and names
/// moved to them) the old instances they replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Terminate,
    Retag,
    RetireFirst,
    Launch,
    Retire,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Terminate,
        Phase::Retag,
        Phase::RetireFirst,
        Phase::Launch,
        Phase::Retire,
    ];

    /// Its stage and place.
    pub fn at(self) -> (Stage, u8) {
        match self {
            Phase::Terminate => (Stage::Before, 30),
            Phase::Retag => (Stage::Before, 31),
            Phase::RetireFirst => (Stage::Running, 0),
            Phase::Launch => (Stage::Running, 1),
            Phase::Retire => (Stage::Running, 5),
        }
    }

    /// The phase at `stage` and `place`, if any.
    pub fn of(stage: Stage, place: u8) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.at() == (stage, place))
    }
}

impl super::Change for InstanceChange {
    /// A change's own step: a launch (a replacement's successor) in its round; a delete
    /// first; a retag before the rounds. A replacement's old instance goes in its round too,
    /// before or after the launch as [`InstanceChange::terminates`] says.
    fn stage(&self) -> (Stage, u8) {
        match self {
            InstanceChange::Create { .. } | InstanceChange::Replace { .. } => Phase::Launch.at(),
            InstanceChange::UpdateTags { .. } | InstanceChange::Modify { .. } => Phase::Retag.at(),
            InstanceChange::Delete { .. } => Phase::Terminate.at(),
        }
    }

    /// Instances are found by their tags, not by the ledger: what the ledger keeps of them
    /// is each batch launch, written ahead of its RunInstances by the launch step, not per
    /// change.
    fn bookkeeping(&self) -> Bookkeeping {
        Bookkeeping::None
    }

    fn creates(&self) -> bool {
        matches!(self, InstanceChange::Create { .. })
    }

    fn is_delete(&self) -> bool {
        matches!(self, InstanceChange::Delete { .. })
    }

    /// An instance is found by its tags, not listed in the ledger: `down` lists each it
    /// terminates.
    fn removes(&self) -> bool {
        self.is_delete()
    }

    fn slot(&self) -> Option<&str> {
        match self {
            InstanceChange::Create { instance } | InstanceChange::Replace { instance, .. } => {
                Some(&instance.id)
            }
            InstanceChange::UpdateTags { .. }
            | InstanceChange::Modify { .. }
            | InstanceChange::Delete { .. } => None,
        }
    }

    fn rolls(&self) -> bool {
        self.successor().is_some()
    }

    fn scope(&self) -> super::Scope<'_> {
        super::Scope::Role(match self {
            InstanceChange::Create { instance } | InstanceChange::Replace { instance, .. } => {
                &instance.role
            }
            InstanceChange::UpdateTags { role, .. }
            | InstanceChange::Delete { role, .. }
            | InstanceChange::Modify { role, .. } => role,
        })
    }

    fn drift_line(&self) -> String {
        match self {
            InstanceChange::Create { instance: d } => format!("{}[{}] {}", d.role, d.index, d.name),
            InstanceChange::Replace {
                instance_id,
                instance: d,
                successor: Some(successor),
                ..
            } => format!(
                "{}[{}] {} {instance_id}: its successor {successor} runs with the new settings",
                d.role, d.index, d.name
            ),
            InstanceChange::Replace {
                instance_id,
                reasons,
                instance: d,
                successor: None,
                ..
            } => format!(
                "{}[{}] {} {instance_id}: {}",
                d.role,
                d.index,
                d.name,
                reasons.join(", ")
            ),
            InstanceChange::UpdateTags {
                instance_id,
                role,
                index,
                name,
                set,
            } => format!(
                "{role}[{index}] {name} {instance_id}: tags {}",
                set.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            InstanceChange::Modify {
                instance_id,
                role,
                index,
                name,
                attributes,
                ..
            } => {
                let shown: Vec<String> = attributes.iter().map(ToString::to_string).collect();
                format!("{role}[{index}] {name} {instance_id}: {}", shown.join(", "))
            }
            InstanceChange::Delete {
                instance_id,
                role,
                index,
                name,
                reason,
                ..
            } => format!("{role}[{index}] {name} {instance_id}: {reason}"),
        }
    }
}

impl Family for InstancePlan {
    fn label(&self) -> &'static str {
        "instance"
    }

    fn deleted_noun(&self) -> &'static str {
        "instance(s)"
    }

    fn changes(&self) -> Vec<&dyn super::Change> {
        self.changes
            .iter()
            .map(|c| c as &dyn super::Change)
            .collect()
    }

    /// Its phases, not its changes: a replacement launches and retires in different places.
    fn places(&self, stage: Stage, round: u32, _: &BTreeMap<&str, u32>) -> Vec<u8> {
        Phase::ALL
            .into_iter()
            .filter(|p| p.at().0 == stage && self.has_work(*p, round))
            .map(|p| p.at().1)
            .collect()
    }

    /// Always shown, as what the plan is mostly about.
    fn summary(&self) -> Option<String> {
        let count = |f: fn(&InstanceChange) -> bool| self.count(f);
        Some(format!(
            "{} to create, {} to replace, {} to update, {} to delete",
            count(|c| matches!(c, InstanceChange::Create { .. })),
            count(|c| matches!(c, InstanceChange::Replace { .. })),
            count(|c| {
                matches!(
                    c,
                    InstanceChange::UpdateTags { .. } | InstanceChange::Modify { .. }
                )
            }),
            count(|c| matches!(c, InstanceChange::Delete { .. })),
        ))
    }

    fn notes(&self) -> Vec<String> {
        let mut rollouts: BTreeMap<&str, (u32, &crate::rolling::Rolling)> = BTreeMap::new();
        for (d, step) in self.changes.iter().filter_map(InstanceChange::rollout) {
            rollouts.insert(&d.role, (step.rounds, &d.rolling));
        }
        let mut notes: Vec<String> = rollouts
            .into_iter()
            .map(|(role, (rounds, r))| {
                format!(
                                        "rollout  {role}: {rounds} batch(es) of {} (max_unavailable {}), each healthy {} within {} s, then its names move",
                    r.batch,
                    r.max_unavailable,
                    match r.health {
                        crate::rolling::Health::TargetGroup => "in its target group".to_owned(),
                        h => format!("when {}", h.name()),
                    },
                    r.timeout.as_secs()
                )
            })
            .collect();
        if !self.unadopted.is_empty() {
            notes.push(format!(
                "adopt: {} instance(s) of an interrupted batch launch, placed from the ledger: {}",
                self.unadopted.len(),
                self.unadopted.join(", ")
            ));
        }
        notes.extend(self.unresolved.iter().map(|u| format!("no record: {u}")));
        notes.extend(self.as_launched.iter().map(|a| format!("as launched: {a}")));
        notes
    }

    fn foreign(&self) -> &[String] {
        &self.foreign
    }

    fn retain(&mut self, keep: &dyn Fn(&dyn super::Change) -> bool) {
        self.changes.retain(|c| keep(c));
        let ids: BTreeSet<&str> = self
            .changes
            .iter()
            .filter_map(|c| c.terminates().map(|(id, _)| id))
            .collect();
        self.unprotect.retain(|id| ids.contains(id.as_str()));
        // A refusal names its instance as a change's line does.
        let lines: BTreeSet<String> = self.changes.iter().map(super::Change::drift_line).collect();
        self.protected.retain(|p| lines.contains(p));
    }

    fn refused(&self) -> Vec<String> {
        self.protected
            .iter()
            .map(|p| {
                format!(
                    "{p}: termination protection is on; set disable_api_termination = false for its role (keep the role until then) and run up first"
                )
            })
            .collect()
    }

    fn is_empty(&self) -> bool {
        // Settled batches alone are no reason to apply: the next apply drops them.
        self.changes.is_empty() && self.unadopted.is_empty() && self.protected.is_empty()
    }
}
