//! Resource kinds, one module each: what the definition asks of the kind, its desired and
//! observed forms, the pure diff between them as a list of changes, each with the stage and
//! order apply makes it in and the ledger entry written ahead of it.
//!
//! IAM is the first family written this way ([`iam`]); instances, records and the network
//! kinds still live in `plan.rs` and `network.rs` (see ARCHITECTURE.md).

pub mod iam;

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

/// The ledger bookkeeping a change needs, which the executor does around it: a create is
/// written ahead (`pending`, no id), made, then confirmed with the id AWS gave it; a delete
/// leaves the ledger once it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bookkeeping {
    Create(String),
    Delete(String),
    None,
}
