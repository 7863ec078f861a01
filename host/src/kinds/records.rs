//! DNS records, the names heet points at its instances (a CNAME to an instance's public DNS
//! name, or an A record to its address): observed per zone, planned against the ledger's own
//! records (a name someone else holds is a conflict, never overwritten), and written as one
//! Route53 change batch per place.

use std::collections::BTreeMap;
use std::fmt;

use crate::desired::Desired;
use crate::kinds::{Bookkeeping, Change, Family, Stage};
use crate::ledger;
use crate::text;

/// The project's hosted zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub id: String,
    /// Lower case, no trailing dot.
    pub name: String,
}

/// What a zone holds at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRecord {
    /// `CNAME`, `A`, ...; `A+TXT` when a name holds several types.
    pub kind: String,
    /// Lower case, no trailing dot.
    pub values: Vec<String>,
    pub ttl: Option<i64>,
}

impl ObservedRecord {
    /// What it points at, if it is one CNAME or one A record: heet's kind of record.
    pub fn points_at(&self) -> Option<&str> {
        match (self.kind.as_str(), self.values.as_slice()) {
            ("CNAME" | "A", [target]) => Some(target),
            _ => None,
        }
    }

    /// Whether it is exactly the record heet writes for `target`.
    pub fn holds(&self, target: &str) -> bool {
        self.points_at() == Some(target) && self.kind == record_type(target)
    }
}

/// The type of the record heet writes for `target`: an IPv4 address is an A record, a name
/// a CNAME.
pub fn record_type(target: &str) -> &'static str {
    if target.parse::<std::net::Ipv4Addr>().is_ok() {
        "A"
    } else {
        "CNAME"
    }
}

/// How an instance is reached by name: what a record to it may point at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    pub public_dns: Option<String>,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
}

impl Reach {
    /// What a record to it points at: its public DNS name (a CNAME), or, without one or with
    /// `a` (`record = "a"`), its address (an A record), public else private, as AWSHeet's
    /// NickNameHelper did. `None` when it has none of them.
    pub fn target(&self, a: bool) -> Option<String> {
        let given = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
        let name = if a { None } else { given(&self.public_dns) };
        name.map(|n| n.to_ascii_lowercase())
            .or_else(|| given(&self.public_ip))
            .or_else(|| given(&self.private_ip))
    }
}

/// Everything DNS that the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct DnsState {
    /// The project's domain, when it has one.
    pub domain: Option<String>,
    /// `None` when the zone does not exist (yet).
    pub zone: Option<Zone>,
    pub records: BTreeMap<String, ObservedRecord>,
    /// The records heet created, from the ledger; `None` when the ledger was not read (a
    /// first, optimistic plan: it cannot tell heet's stale records, or foreign ones, apart).
    pub owned: Option<BTreeMap<String, ledger::OwnedRecord>>,
    /// The DNS name of each role's load balancer that exists: what its names point at.
    pub balancers: BTreeMap<String, String>,
}

/// TTL of the records heet writes.
pub const RECORD_TTL: i64 = 300;

/// One record change in Route53, as planned.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    /// Point `name` at the instance of `slot` (see [`Reach::target`]; `a`: its address
    /// whatever its DNS name), known now when that instance runs and stays, or once it runs
    /// (`instance_id` when it stays but is still pending, or none when it is launched).
    Upsert {
        name: String,
        slot: String,
        instance: String,
        instance_id: Option<String>,
        target: Option<String>,
        a: bool,
        /// What heet's record at the name holds now.
        was: Option<ObservedRecord>,
    },
    /// Point `name` at `role`'s load balancer: its DNS name, known now when it exists, else
    /// once it is made.
    Balancer {
        name: String,
        role: String,
        target: Option<String>,
        was: Option<ObservedRecord>,
    },
    /// Remove a record heet created that nothing wants any more (`present`: still in the
    /// zone; otherwise only its ledger entry is left to drop).
    Delete {
        name: String,
        target: String,
        ttl: i64,
        present: bool,
        /// The slot of the instance it points at, when one of heet's does.
        slot: Option<String>,
    },
}

/// A record operation with its target resolved, as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOp {
    pub action: RecordAction,
    pub name: String,
    pub target: String,
    pub ttl: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordAction {
    /// A name that holds nothing: Route53 counts it once against a batch's limit, and refuses
    /// it if the name was taken meanwhile.
    Create,
    /// A name heet's record holds: counts twice.
    Upsert,
    Delete,
}

impl fmt::Display for RecordChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordChange::Upsert {
                name,
                instance,
                target,
                was,
                ..
            } => {
                let mark = if was.is_some() { "~" } else { "+" };
                write!(
                    f,
                    "{mark} record   {name} → {}",
                    target
                        .clone()
                        .unwrap_or_else(|| format!("(new instance {instance})"))
                )?;
                if let Some(was) = was {
                    write!(f, " (was {})", text::shown(&was.values.join(",")))?;
                }
                Ok(())
            }
            RecordChange::Balancer {
                name,
                role,
                target,
                was,
            } => {
                let mark = if was.is_some() { "~" } else { "+" };
                let to = target
                    .clone()
                    .unwrap_or_else(|| format!("(new balancer of {role})"));
                write!(f, "{mark} record   {name} → {to}")?;
                if let Some(was) = was {
                    write!(f, " (was {})", text::shown(&was.values.join(",")))?;
                }
                Ok(())
            }
            RecordChange::Delete {
                name,
                target,
                present,
                ..
            } => {
                write!(f, "- record   {name} → {}", text::shown(target))?;
                if !present {
                    write!(f, " (already gone: forget it)")?;
                }
                Ok(())
            }
        }
    }
}

impl Change for RecordChange {
    /// The kept instance still booting whose name this record waits for: (slot, id).
    fn waits_for(&self) -> Option<(&str, &str)> {
        match self {
            RecordChange::Upsert {
                slot,
                instance_id: Some(id),
                ..
            } => Some((slot, id)),
            RecordChange::Upsert {
                instance_id: None, ..
            }
            | RecordChange::Balancer { .. }
            | RecordChange::Delete { .. } => None,
        }
    }

    fn stage(&self) -> (Stage, u8) {
        match self {
            // Ahead of their instances' termination (`apply` says why).
            RecordChange::Delete { .. } => (Stage::Before, 20),
            // A new instance's name is known once it runs (and has its address).
            RecordChange::Upsert { .. } => (Stage::Running, 4),
            // Once the balancers are made (before the instances): a balancer's name does
            // not wait for its targets.
            RecordChange::Balancer { .. } => (Stage::Before, 24),
        }
    }

    fn bookkeeping(&self) -> Bookkeeping {
        match self {
            RecordChange::Upsert { name, .. } | RecordChange::Balancer { name, .. } => {
                Bookkeeping::Record(name.clone())
            }
            RecordChange::Delete { name, .. } => Bookkeeping::Unrecord(name.clone()),
        }
    }

    fn creates(&self) -> bool {
        matches!(
            self,
            RecordChange::Upsert { was: None, .. } | RecordChange::Balancer { was: None, .. }
        )
    }

    fn is_delete(&self) -> bool {
        matches!(self, RecordChange::Delete { present: true, .. })
    }

    fn is_drift(&self) -> bool {
        // A record already gone is only the ledger's to forget.
        !matches!(self, RecordChange::Delete { present: false, .. })
    }

    fn slot(&self) -> Option<&str> {
        match self {
            RecordChange::Upsert { slot, .. } => Some(slot),
            RecordChange::Delete { slot, .. } => slot.as_deref(),
            RecordChange::Balancer { .. } => None,
        }
    }

    fn scope(&self) -> super::Scope<'_> {
        match self {
            RecordChange::Balancer { role, .. } => super::Scope::Role(role),
            _ => self.slot().map_or(super::Scope::Shared, super::Scope::Slot),
        }
    }
}

impl RecordChange {
    /// The Route53 operations that make it, once its target is known (`reach`: how the
    /// instances that run now are reached, by slot): none when nothing is left to call (a
    /// record already gone), two when a record changes type (the old one deleted in the same
    /// batch: a CNAME shares its name with no other record), `Err` with why when its
    /// instance has neither a DNS name nor an address.
    pub fn ops(
        &self,
        reach: &BTreeMap<String, Reach>,
        balancers: &BTreeMap<String, String>,
    ) -> Result<Vec<RecordOp>, String> {
        match self {
            RecordChange::Balancer {
                name,
                role,
                target,
                was,
            } => {
                let Some(target) = target.clone().or_else(|| balancers.get(role).cloned()) else {
                    return Err(format!("{name}: the balancer of {role} has no DNS name"));
                };
                let op = |action, target: &str, ttl| RecordOp {
                    action,
                    name: name.clone(),
                    target: target.to_owned(),
                    ttl,
                };
                Ok(match was.as_ref().and_then(ObservedRecord::points_at) {
                    None => vec![op(RecordAction::Create, &target, RECORD_TTL)],
                    Some(old) if record_type(old) != "CNAME" => vec![
                        op(
                            RecordAction::Delete,
                            old,
                            was.as_ref().and_then(|w| w.ttl).unwrap_or(RECORD_TTL),
                        ),
                        op(RecordAction::Create, &target, RECORD_TTL),
                    ],
                    Some(_) => vec![op(RecordAction::Upsert, &target, RECORD_TTL)],
                })
            }
            RecordChange::Upsert {
                name,
                slot,
                target,
                instance,
                a,
                was,
                ..
            } => {
                let found = || reach.get(slot).and_then(|r| r.target(*a));
                let Some(target) = target.clone().or_else(found) else {
                    return Err(format!(
                        "{name}: {instance} has no DNS name or address (public or private)"
                    ));
                };
                let op = |action, target: &str, ttl| RecordOp {
                    action,
                    name: name.clone(),
                    target: target.to_owned(),
                    ttl,
                };
                Ok(match was {
                    None => vec![op(RecordAction::Create, &target, RECORD_TTL)],
                    Some(old) => match old.points_at() {
                        Some(old_target) if record_type(old_target) != record_type(&target) => {
                            let ttl = old.ttl.unwrap_or(RECORD_TTL);
                            vec![
                                op(RecordAction::Delete, old_target, ttl),
                                op(RecordAction::Create, &target, RECORD_TTL),
                            ]
                        }
                        _ => vec![op(RecordAction::Upsert, &target, RECORD_TTL)],
                    },
                })
            }
            RecordChange::Delete {
                name,
                target,
                ttl,
                present,
                ..
            } => Ok(present
                .then(|| RecordOp {
                    action: RecordAction::Delete,
                    name: name.clone(),
                    target: target.clone(),
                    ttl: *ttl,
                })
                .into_iter()
                .collect()),
        }
    }
}

/// The DNS family's part of a plan: what [`plan_records`] finds. Registered in
/// `Plan::families` as `record`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsPlan {
    pub changes: Vec<RecordChange>,
    /// The zone to create first, when the definition asks for one that does not exist.
    pub create_zone: Option<String>,
    /// Names heet would write but someone else holds: nothing is applied while any exist.
    pub conflicts: Vec<String>,
    /// Records heet created that someone has since changed: dropped from the ledger, left
    /// alone.
    pub forgotten: Vec<String>,
}

impl Family for DnsPlan {
    fn label(&self) -> &'static str {
        "record"
    }

    fn deleted_noun(&self) -> &'static str {
        "record(s)"
    }

    fn changes(&self) -> Vec<&dyn Change> {
        self.changes.iter().map(|c| c as &dyn Change).collect()
    }

    fn notes(&self) -> Vec<String> {
        let zone = self.create_zone.iter().map(|z| format!("+ zone     {z}"));
        let forgotten = self.forgotten.iter().map(|name| {
            format!(
                "record {}: changed by someone else since heet made it; forgotten, left alone",
                crate::text::shown(name)
            )
        });
        zone.chain(forgotten).collect()
    }

    fn conflicts(&self) -> &[String] {
        &self.conflicts
    }

    fn retain(&mut self, keep: &dyn Fn(&dyn Change) -> bool) {
        self.changes.retain(|c| keep(c));
        if self.changes.is_empty() {
            self.create_zone = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.create_zone.is_none()
            && self.conflicts.is_empty()
            && self.forgotten.is_empty()
    }

    fn settled(&self) -> Vec<(Bookkeeping, Option<&str>)> {
        let forgotten = self.forgotten.iter();
        forgotten
            .map(|n| (Bookkeeping::Unrecord(n.clone()), None))
            .collect()
    }
}

/// The record changes that point every name of `desired` at its instance: `targets` are what
/// the records of the instances that stay point at ([`Reach::target`]; none when it is only
/// known once the instance runs), `booting` the ids of kept instances still pending.
pub fn plan_records(
    desired: &Desired,
    targets: &BTreeMap<&str, Option<String>>,
    booting: &BTreeMap<&str, String>,
    dns: &DnsState,
) -> DnsPlan {
    let mut out = DnsPlan::default();
    let Some(domain) = &dns.domain else {
        return out;
    };
    let mut wanted = std::collections::BTreeSet::new();
    // What the record at `name` holds now, when heet is to write it with `target`: not when
    // it holds it already, nor when someone else holds the name (a conflict).
    let mut needs = |name: &str, target: &Option<String>| {
        let current = dns.records.get(name);
        if let (Some(t), Some(r)) = (target, current)
            && r.holds(t)
        {
            return None;
        }
        let ours = dns.owned.as_ref().map(|o| o.contains_key(name));
        if let (Some(r), Some(false)) = (current, ours) {
            out.conflicts.push(format!(
                "{name} exists ({} {}) and heet did not create it",
                r.kind,
                r.values.join(",")
            ));
            return None;
        }
        Some(current.cloned())
    };
    let mut changes = Vec::new();
    for d in &desired.instances {
        for cname in &d.cnames {
            let name = format!("{}.{domain}", cname.to_ascii_lowercase());
            wanted.insert(name.clone());
            let target = targets.get(d.id.as_str()).cloned().flatten();
            let Some(current) = needs(&name, &target) else {
                continue;
            };
            changes.push(RecordChange::Upsert {
                name,
                slot: d.id.clone(),
                instance: d.name.clone(),
                instance_id: booting.get(d.id.as_str()).cloned(),
                target,
                a: d.record_a,
                was: current,
            });
        }
    }
    for b in &desired.balancers {
        for cname in &b.cnames {
            let name = format!("{}.{domain}", cname.to_ascii_lowercase());
            wanted.insert(name.clone());
            let target = dns.balancers.get(&b.role).cloned();
            let Some(current) = needs(&name, &target) else {
                continue;
            };
            changes.push(RecordChange::Balancer {
                name,
                role: b.role.clone(),
                target,
                was: current,
            });
        }
    }
    out.changes = changes;
    if dns.zone.is_none() && !wanted.is_empty() {
        out.create_zone = Some(domain.clone());
    }
    for (name, owned) in dns.owned.iter().flatten() {
        if wanted.contains(name) {
            continue;
        }
        match dns.records.get(name) {
            Some(r) if r.holds(&owned.target) => {
                out.changes.push(RecordChange::Delete {
                    name: name.clone(),
                    target: owned.target.clone(),
                    ttl: r.ttl.unwrap_or(owned.ttl),
                    present: true,
                    slot: None,
                });
            }
            None => out.changes.push(RecordChange::Delete {
                name: name.clone(),
                target: owned.target.clone(),
                ttl: owned.ttl,
                present: false,
                slot: None,
            }),
            Some(_) => out.forgotten.push(name.clone()),
        }
    }
    out
}
