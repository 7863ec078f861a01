//! Resource kinds, one module each: what the definition asks of the kind, its desired and
//! observed forms, the pure diff between them as a list of changes, each with the stage and
//! order apply makes it in and the ledger entry written ahead of it.
//!
//! Instances ([`instances`]), the network kinds ([`network`]: VPC, gateway, subnets, groups,
//! addresses, key pairs), IAM ([`iam`]), DNS records ([`records`]), CloudFormation stacks
//! ([`stacks`]) and load balancers ([`balancers`]) are written this way:
//! their changes implement [`Change`], their part of a plan [`Family`], and apply makes them
//! stage by stage under one write-ahead protocol.
//!
//! A family's part of a plan implements [`Family`], and `Plan::families` lists each family
//! once: the plan's summary and lines, `status`'s drift, and `down`'s list, confirmation and
//! report come from that list, not from code per family.

use std::collections::BTreeMap;
use std::fmt;

pub mod balancers;
pub mod iam;
pub mod instances;
pub mod network;
pub mod records;
pub mod stacks;

/// When apply makes a change, relative to the instances. Within a stage, a change's place
/// (see [`Change::stage`]) is shared by every kind: apply makes a stage place by place, every
/// kind's changes of one place at once, so a kind's place says what it comes after in every
/// other kind too (ARCHITECTURE.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Before any instance is launched or terminated: what instances need.
    Before,
    /// Once the new instances run.
    Running,
    /// Once the old instances are gone: what they needed.
    After,
}

impl Stage {
    /// In apply's order.
    pub const ALL: [Stage; 3] = [Stage::Before, Stage::Running, Stage::After];

    /// The band of `place` in this stage. Bands are made one after another; within one,
    /// each family makes its changes place by place without waiting for the others. Before
    /// and after the instances a band is a decade of places (the network's and IAM's chains
    /// side by side in 0–9, IAM's new access keys at 10, records at 20, the instances at 30);
    /// while they run, every place is a band of its own (a launch, the addresses moved to it,
    /// the names, the retirements).
    pub fn band(self, place: u8) -> u8 {
        match self {
            Stage::Before | Stage::After => place / 10,
            Stage::Running => place,
        }
    }
}

/// The ledger bookkeeping a change needs, which apply does around it: what it makes is
/// written ahead (`pending`), made, then confirmed (`done`); what it removes leaves the
/// ledger once it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bookkeeping {
    /// A resource, by its `kind/name`: written ahead without an id, confirmed with the id AWS
    /// gave it.
    Create(String),
    /// A resource removed, by its `kind/name`.
    Delete(String),
    /// A record, by its name: written ahead and confirmed with the target it is written with.
    Record(String),
    /// A record removed (or found gone already), by its name.
    Unrecord(String),
    None,
}

/// What a kind's change says to the executor. The executor orders changes by [`stage`],
/// writes the [`bookkeeping`] around each, and shows each by `Display`; a kind says nothing
/// else about how it is applied.
///
/// [`stage`]: Change::stage
/// [`bookkeeping`]: Change::bookkeeping
pub trait Change: fmt::Display {
    /// When apply makes this change, and its place among that stage's changes. Changes of
    /// the same place are made at once: none may need another of its place.
    fn stage(&self) -> (Stage, u8);
    /// The ledger entry written around it.
    fn bookkeeping(&self) -> Bookkeeping;
    /// Whether it makes something that did not exist (`status` reports it as missing).
    fn creates(&self) -> bool;
    /// Whether it removes something (`status` reports it as unexpected).
    fn is_delete(&self) -> bool;
    /// Whether it can only be made once the instances terminated before it are fully gone,
    /// their network interfaces with them (a security group, a subnet).
    fn needs_instances_gone(&self) -> bool {
        false
    }
    /// Whether it removes something `down` lists: a resource the ledger lists, not the rules,
    /// attachments and memberships undone on the way, nor a record found gone already.
    fn removes(&self) -> bool {
        self.is_delete() && !matches!(self.bookkeeping(), Bookkeeping::None)
    }
    /// Whether `status` reports it as drift (a record already gone is only bookkeeping).
    fn is_drift(&self) -> bool {
        true
    }
    /// The instance slot it points at what runs in (an address, a name), if any: it moves
    /// in that slot's rollout round, and while that rollout is under way it is not drift.
    fn slot(&self) -> Option<&str> {
        None
    }
    /// A kept instance still booting that it waits for before it is made: (slot, id).
    fn waits_for(&self) -> Option<(&str, &str)> {
        None
    }
    /// Whether it takes something away (a delete, a rule revoked): a plan limited to some
    /// roles leaves what they share and it takes away for a full `up`.
    fn narrows(&self) -> bool {
        self.is_delete()
    }
    /// Whose it is, for `--role`: shared by default (what roles use together).
    fn scope(&self) -> Scope<'_> {
        Scope::Shared
    }
    /// Whether it is a rollout under way (its successor runs): `status` reports it as
    /// rolling, and what points at its slot as part of it.
    fn rolls(&self) -> bool {
        false
    }
    /// How `status` names it; the plan's line unless the kind says it shorter.
    fn drift_line(&self) -> String {
        self.to_string()
    }
}

/// Whose a change is, for a command limited to some roles (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One role's: its instances, their Elastic IPs.
    Role(&'a str),
    /// One instance slot's: what points at its instance (a name, an address's association).
    Slot(&'a str),
    /// What roles use together: the network, IAM.
    Shared,
}

/// A family of kinds as a plan holds it: its changes, and what it found but leaves alone.
/// Registered once, in `Plan::families`; what reads a plan's families reads only this.
pub trait Family {
    /// The family's word in the plan's summary and `down`'s list: `network`, `iam`.
    fn label(&self) -> &'static str;
    /// What `down`'s confirmation counts of it: `network resource(s)`.
    fn deleted_noun(&self) -> &'static str;
    /// Its changes, in the plan's order.
    fn changes(&self) -> Vec<&dyn Change>;
    /// Its part of the plan's first line; by default its count of changes, when it has any.
    fn summary(&self) -> Option<String> {
        match self.changes().len() {
            0 => None,
            n => Some(format!("{n} {} change(s)", self.label())),
        }
    }
    /// Lines the plan shows after every family's changes: what a change line does not say
    /// (a rollout's batches, a zone made first, what was found and how it is taken).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Names heet would make that something it did not make holds: while any exist, nothing
    /// of the plan is applied.
    fn conflicts(&self) -> &[String] {
        &[]
    }
    /// What the plan would do but must not, each with why (an instance with termination
    /// protection): while any exist, nothing of the plan is applied.
    fn refused(&self) -> Vec<String> {
        Vec::new()
    }
    /// What looks like heet's but is not: never touched.
    fn foreign(&self) -> &[String] {
        &[]
    }
    /// The places at which it has changes to make in `stage` and rollout round `round`
    /// (`rounds`: the round of each replaced slot).
    fn places(&self, stage: Stage, round: u32, rounds: &BTreeMap<&str, u32>) -> Vec<u8> {
        self.changes()
            .into_iter()
            .filter(|c| due(*c, stage, round, rounds))
            .map(|c| c.stage().1)
            .collect()
    }
    /// Keeps only the changes `keep` says (a plan limited to some roles).
    fn retain(&mut self, keep: &dyn Fn(&dyn Change) -> bool);
    /// Whether applying the plan has nothing to do for this family: no change, conflict or
    /// ledger bookkeeping.
    fn is_empty(&self) -> bool;
    /// Ledger bookkeeping without a change, written before any change is made, each as it is
    /// once done: entries of what is gone, forgotten (`Delete`, `Unrecord`), and of what a
    /// killed run made after writing it ahead, confirmed with its id (`Create`).
    fn settled(&self) -> Vec<(Bookkeeping, Option<&str>)> {
        Vec::new()
    }
}

/// The bookkeeping of a family whose ledger entries are resources: `forgotten` (gone) dropped,
/// `adopted` (resource, id) confirmed.
pub fn settled<'a>(
    forgotten: &[String],
    adopted: &'a [(String, String)],
) -> Vec<(Bookkeeping, Option<&'a str>)> {
    let gone = forgotten
        .iter()
        .map(|r| (Bookkeeping::Delete(r.clone()), None));
    let made = adopted
        .iter()
        .map(|(r, id)| (Bookkeeping::Create(r.clone()), Some(id.as_str())));
    gone.chain(made).collect()
}

/// The changes of a family `down`'s list names ([`Change::removes`]).
pub fn deleted(family: &dyn Family) -> impl Iterator<Item = &dyn Change> {
    family.changes().into_iter().filter(|c| c.removes())
}

/// How `status` calls a change: something missing, something not wanted, or something to
/// repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    Missing,
    Unexpected,
    Changed,
    /// A rollout under way: not drift, `up` finishes it.
    Rolling,
}

/// A change that makes something says it is missing, one that removes it that it is not
/// wanted, a rollout under way that it is rolling; the rest repair it.
pub fn drift(change: &dyn Change) -> Drift {
    if change.rolls() {
        Drift::Rolling
    } else if change.creates() {
        Drift::Missing
    } else if change.is_delete() {
        Drift::Unexpected
    } else {
        Drift::Changed
    }
}

/// Whether `change` is made at `stage` in rollout round `round`: outside the rounds, in
/// round 0; what points at a replaced slot moves in its slot's round (`rounds`), everything
/// else in round 0.
pub fn due(change: &dyn Change, stage: Stage, round: u32, rounds: &BTreeMap<&str, u32>) -> bool {
    let (at, _) = change.stage();
    let of = change
        .slot()
        .and_then(|s| rounds.get(s).copied())
        .unwrap_or(0);
    at == stage && (stage != Stage::Running || of == round)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change that is only its stage, place and slot, named by a letter.
    struct At(char, Stage, u8, Option<&'static str>);

    impl fmt::Display for At {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl Change for At {
        fn stage(&self) -> (Stage, u8) {
            (self.1, self.2)
        }
        fn bookkeeping(&self) -> Bookkeeping {
            Bookkeeping::None
        }
        fn creates(&self) -> bool {
            false
        }
        fn is_delete(&self) -> bool {
            false
        }
        fn slot(&self) -> Option<&str> {
            self.3
        }
    }

    #[test]
    fn a_change_is_due_in_its_stage_and_what_points_at_a_replaced_slot_in_its_round() {
        let rounds = BTreeMap::from([("www-1", 2)]);
        let due = |c: &At, stage, round| due(c, stage, round, &rounds);
        let before = At('a', Stage::Before, 3, None);
        assert!(due(&before, Stage::Before, 0));
        assert!(!due(&before, Stage::After, 0));
        let to_new = At('b', Stage::Running, 4, Some("www-0"));
        assert!(
            due(&to_new, Stage::Running, 0),
            "a slot not replaced: round 0"
        );
        assert!(!due(&to_new, Stage::Running, 2));
        let to_replaced = At('c', Stage::Running, 4, Some("www-1"));
        assert!(!due(&to_replaced, Stage::Running, 0));
        assert!(
            due(&to_replaced, Stage::Running, 2),
            "moves in its slot's round"
        );
    }
}
