//! The ledger: what heet created for a project and environment, one SSM parameter per
//! resource under `/heet/<project>/<env>/ledger/` (so it scales past a parameter's 4 KB).
//! Entries are written before each mutation (`pending`) and confirmed after (`done`);
//! `down` and `status` read them, together with the instances' tags.
//!
//! Route53 records carry no tags, so the ledger is the only proof that heet created a record:
//! a record it does not list is never changed or deleted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Written before the mutation: it may or may not have happened.
    Pending,
    /// Confirmed after the mutation.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    Instance {
        slot: String,
        role: String,
        index: u32,
        spec: String,
        /// The RunInstances token: a launch retried after a crash reuses it.
        client_token: String,
        instance_id: Option<String>,
        state: State,
    },
    Record {
        /// Fully qualified, lower case, no trailing dot.
        name: String,
        target: String,
        ttl: i64,
        state: State,
    },
    /// A network resource: VPC, subnet, internet gateway, security group, Elastic IP.
    Resource {
        /// `kind/name`, as in the `heet:resource` tag, e.g. `group/www`.
        resource: String,
        aws_id: Option<String>,
        state: State,
    },
}

/// A record heet created, as the ledger remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub target: String,
    pub ttl: i64,
}

/// The ledger of one project/env: parameter name → entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    pub entries: BTreeMap<String, Entry>,
}

pub fn prefix(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/ledger/")
}

pub fn instance_key(project: &str, env: &str, slot: &str) -> String {
    format!("{}instance/{slot}", prefix(project, env))
}

pub fn record_key(project: &str, env: &str, name: &str) -> String {
    format!("{}record/{name}", prefix(project, env))
}

pub fn resource_key(project: &str, env: &str, resource: &str) -> String {
    format!("{}resource/{resource}", prefix(project, env))
}

impl Ledger {
    /// The kinds of network resource (`vpc`, `group`, ...) the ledger lists.
    pub fn resource_kinds(&self) -> std::collections::BTreeSet<&str> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Resource { resource, .. } => resource.split('/').next(),
                _ => None,
            })
            .collect()
    }

    /// Builds the ledger from parameter (name, value) pairs; values heet cannot read are
    /// reported by name so they can be looked at, never guessed at.
    pub fn parse(params: Vec<(String, String)>) -> (Ledger, Vec<String>) {
        let mut ledger = Ledger::default();
        let mut unreadable = Vec::new();
        for (name, value) in params {
            match serde_json::from_str(&value) {
                Ok(entry) => {
                    ledger.entries.insert(name, entry);
                }
                Err(_) => unreadable.push(name),
            }
        }
        (ledger, unreadable)
    }

    /// The records heet created, by name.
    pub fn records(&self) -> BTreeMap<String, OwnedRecord> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Record {
                    name, target, ttl, ..
                } => Some((
                    name.clone(),
                    OwnedRecord {
                        target: target.clone(),
                        ttl: *ttl,
                    },
                )),
                Entry::Instance { .. } | Entry::Resource { .. } => None,
            })
            .collect()
    }

    /// The token of a launch of `slot` with `spec` that was written but never confirmed: a
    /// crash may have launched it, and reusing the token lets EC2 return that instance
    /// instead of starting a twin.
    pub fn pending_token(&self, slot: &str, spec: &str) -> Option<&str> {
        self.entries.values().find_map(|e| match e {
            Entry::Instance {
                slot: s,
                spec: sp,
                client_token,
                state: State::Pending,
                ..
            } if s == slot && sp == spec => Some(client_token.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, target: &str) -> Entry {
        Entry::Record {
            name: name.into(),
            target: target.into(),
            ttl: 300,
            state: State::Done,
        }
    }

    #[test]
    fn entries_round_trip_and_junk_is_named() {
        let entry = Entry::Instance {
            slot: "ab12".into(),
            role: "www".into(),
            index: 1,
            spec: "s1".into(),
            client_token: "heet-t".into(),
            instance_id: None,
            state: State::Pending,
        };
        let (ledger, junk) = Ledger::parse(vec![
            (
                "/heet/p/e/ledger/instance/ab12".into(),
                serde_json::to_string(&entry).unwrap(),
            ),
            ("/heet/p/e/ledger/record/x".into(), "not json".into()),
        ]);
        assert_eq!(ledger.entries.len(), 1);
        assert_eq!(junk, ["/heet/p/e/ledger/record/x"]);
        assert_eq!(ledger.pending_token("ab12", "s1"), Some("heet-t"));
        assert_eq!(
            ledger.pending_token("ab12", "s2"),
            None,
            "another spec is another launch"
        );
    }

    #[test]
    fn records_are_listed_by_name() {
        let ledger = Ledger {
            entries: [(
                record_key("p", "e", "www-01.example.com"),
                record("www-01.example.com", "ec2-1.example"),
            )]
            .into(),
        };
        assert_eq!(
            ledger.records()["www-01.example.com"].target,
            "ec2-1.example"
        );
        assert_eq!(
            record_key("p", "e", "www-01.example.com"),
            "/heet/p/e/ledger/record/www-01.example.com"
        );
    }
}
