//! Resource kinds, one module each: what the definition asks of the kind, its desired and
//! observed forms, the pure diff between them as a list of changes, each with the stage and
//! order apply makes it in and the ledger entry written ahead of it.
//!
//! The network kinds ([`network`]: VPC, gateway, subnets, groups, addresses, key pairs), IAM
//! ([`iam`]) and DNS records ([`records`]) are written this way: their changes implement
//! [`Change`], their part of a plan [`Family`], and apply makes them stage by stage under one
//! write-ahead protocol. Instances keep their own planning in `plan.rs` (see
//! ARCHITECTURE.md).
//!
//! A family's part of a plan implements [`Family`], and `Plan::families` lists each family
//! once: the plan's summary and lines, `status`'s drift, and `down`'s list, confirmation and
//! report come from that list, not from code per family.

use std::fmt;

pub mod iam;
pub mod network;
pub mod records;

/// When apply makes a change, relative to the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Before any instance is launched or terminated: what instances need.
    Before,
    /// Once the new instances run.
    Running,
    /// Once the old instances are gone: what they needed.
    After,
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
    /// Whether it removes something (`status` reports it as unexpected; a network delete
    /// makes apply wait until terminated instances are fully gone).
    fn is_delete(&self) -> bool;
    /// Whether `status` reports it as drift (a record already gone is only bookkeeping).
    fn is_drift(&self) -> bool {
        true
    }
    /// The instance slot it points at what runs in (an address, a name), if any: it moves
    /// in that slot's rollout round, and while that rollout is under way it is not drift.
    fn slot(&self) -> Option<&str> {
        None
    }
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
    /// Names heet would make that something it did not make holds: while any exist, nothing
    /// of the plan is applied.
    fn conflicts(&self) -> &[String] {
        &[]
    }
    /// What looks like heet's but is not: never touched.
    fn foreign(&self) -> &[String] {
        &[]
    }
    /// Whether applying the plan has nothing to do for this family: no change, conflict or
    /// ledger bookkeeping.
    fn is_empty(&self) -> bool;
}

/// The changes of a family `down`'s list names: the resources it deletes and the ledger
/// lists (not the rules, attachments and memberships undone on the way, nor a record found
/// gone already).
pub fn deleted(family: &dyn Family) -> impl Iterator<Item = &dyn Change> {
    family
        .changes()
        .into_iter()
        .filter(|c| c.is_delete() && !matches!(c.bookkeeping(), Bookkeeping::None))
}

/// How `status` calls a change: something missing, something not wanted, or something to
/// repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    Missing,
    Unexpected,
    Changed,
}

/// A change that makes something says it is missing, one that removes it that it is not
/// wanted; the rest repair it.
pub fn drift(change: &dyn Change) -> Drift {
    if change.creates() {
        Drift::Missing
    } else if change.is_delete() {
        Drift::Unexpected
    } else {
        Drift::Changed
    }
}

/// The changes of `stage` in the order they are made there.
pub fn in_stage<C: Change>(changes: &[C], stage: Stage) -> Vec<&C> {
    let mut of_stage: Vec<&C> = changes.iter().filter(|c| c.stage().0 == stage).collect();
    of_stage.sort_by_key(|c| c.stage().1);
    of_stage
}

/// The changes of `stage` in tiers: the changes of one place in the stage, which need
/// nothing of each other and are made at once, tier after tier (the plan's order within).
pub fn tiers<C: Change>(changes: &[C], stage: Stage) -> Vec<Vec<&C>> {
    in_stage(changes, stage)
        .chunk_by(|a, b| a.stage().1 == b.stage().1)
        .map(<[&C]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change that is only its stage and place, named by a letter.
    struct At(char, Stage, u8);

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
    }

    #[test]
    fn tiers_are_the_places_of_a_stage_in_order_each_in_the_plans_order() {
        let changes = [
            At('a', Stage::Before, 3),
            At('b', Stage::After, 0),
            At('c', Stage::Before, 1),
            At('d', Stage::Before, 3),
            At('e', Stage::Before, 1),
            At('f', Stage::Before, 2),
        ];
        let shown = |stage| -> Vec<String> {
            tiers(&changes, stage)
                .iter()
                .map(|t| t.iter().map(|c| c.to_string()).collect())
                .collect()
        };
        assert_eq!(shown(Stage::Before), ["ce", "f", "ad"]);
        assert_eq!(shown(Stage::After), ["b"]);
        assert!(shown(Stage::Running).is_empty());
    }
}
