//! The ledger: what heet created for a project and environment, kept in SSM Parameter Store
//! as numbered pages `/heet/<project>/<env>/ledger/<n>`, each a JSON object of entries by key
//! and at most 4 KB (a standard parameter), so one call writes a dozen entries and the ledger
//! scales with the estate. Entries are written before each mutation (`pending`) and confirmed
//! after (`done`); `down`, `plan` and `status` read them, together with the instances' tags.
//!
//! Route53 records carry no tags, so the ledger is the only proof that heet created a record:
//! a record it does not list is never changed or deleted.
//!
//! Which pages a change rewrites is decided here, without I/O ([`Ledger::stage`]); the
//! caller puts and deletes the pages the returned [`Write`] names, in its order.

use std::collections::{BTreeMap, BTreeSet};

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

/// The most a page may hold: the value limit of a standard SSM parameter.
pub const PAGE_LIMIT: usize = 4096;

/// The ledger of one project/env: the entries by key, and the pages that store them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// Where the pages live, e.g. `/heet/shop/prod/ledger/`.
    prefix: String,
    /// Each entry as its newest copy says.
    pub entries: BTreeMap<String, Entry>,
    /// What each page holds, by page number. A run killed while moving an entry to a new
    /// page leaves two copies; the higher page, written first, is the newer.
    pages: BTreeMap<u32, BTreeMap<String, Entry>>,
    /// Pages heet could not read: their numbers are never reused, their contents left alone.
    unreadable: BTreeSet<u32>,
}

/// The parameter writes that store a staged change, in two steps: `first` (new pages,
/// which entries may be moving to) before `then` and `delete` (the pages they leave), so a
/// run killed in between loses no entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Write {
    pub first: Vec<(String, String)>,
    pub then: Vec<(String, String)>,
    pub delete: Vec<String>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.then.is_empty() && self.delete.is_empty()
    }

    /// How many parameters it writes or deletes.
    pub fn len(&self) -> usize {
        self.first.len() + self.then.len() + self.delete.len()
    }
}

pub fn prefix(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/ledger/")
}

pub fn instance_key(slot: &str) -> String {
    format!("instance/{slot}")
}

pub fn record_key(name: &str) -> String {
    format!("record/{name}")
}

pub fn resource_key(resource: &str) -> String {
    format!("resource/{resource}")
}

fn page_size(page: &BTreeMap<String, Entry>) -> usize {
    serde_json::to_string(page).map_or(usize::MAX, |s| s.len())
}

fn entry_size(key: &str, entry: &Entry) -> usize {
    // `"key":{...},`
    key.len() + 4 + serde_json::to_string(entry).map_or(usize::MAX, |s| s.len())
}

impl Ledger {
    /// An empty ledger stored under `prefix`.
    pub fn new(prefix: String) -> Ledger {
        Ledger {
            prefix,
            ..Ledger::default()
        }
    }

    /// Builds the ledger from the parameters under `prefix`, as (name, value) pairs. Names
    /// of parameters heet cannot read are returned so they can be looked at, never guessed at.
    pub fn parse(prefix: String, params: Vec<(String, String)>) -> (Ledger, Vec<String>) {
        let mut ledger = Ledger::new(prefix);
        let mut unreadable = Vec::new();
        for (name, value) in params {
            let number = name
                .strip_prefix(&ledger.prefix)
                .and_then(|n| n.parse::<u32>().ok());
            match (
                number,
                serde_json::from_str::<BTreeMap<String, Entry>>(&value),
            ) {
                (Some(n), Ok(page)) => {
                    ledger.pages.insert(n, page);
                }
                (n, _) => {
                    ledger.unreadable.extend(n);
                    unreadable.push(name);
                }
            }
        }
        for page in ledger.pages.values() {
            for (key, entry) in page {
                ledger.entries.insert(key.clone(), entry.clone());
            }
        }
        (ledger, unreadable)
    }

    fn page_name(&self, n: u32) -> String {
        format!("{}{n}", self.prefix)
    }

    /// The names of the pages heet can read.
    pub fn page_names(&self) -> Vec<String> {
        self.pages.keys().map(|&n| self.page_name(n)).collect()
    }

    fn next_page(&self) -> u32 {
        let last = self.pages.keys().chain(&self.unreadable).max();
        last.map_or(1, |n| n + 1)
    }

    /// Applies `changes` (an entry to write, or `None` to forget the key) to the ledger and
    /// returns the parameter writes that store them. An entry stays on its page while it
    /// fits; new entries fill the last page, then new ones.
    pub fn stage(&mut self, changes: impl IntoIterator<Item = (String, Option<Entry>)>) -> Write {
        let mut touched = BTreeSet::new();
        // Pages written in the first step: new ones, and those taking an entry that leaves
        // its page (which is rewritten only once the entry is safe elsewhere).
        let mut early = BTreeSet::new();
        for (key, entry) in changes {
            // Every copy but the newest goes; a forgotten key goes from every page.
            let homes: Vec<u32> = self
                .pages
                .iter()
                .filter(|(_, page)| page.contains_key(&key))
                .map(|(&n, _)| n)
                .collect();
            for &n in &homes {
                touched.insert(n);
                self.pages.get_mut(&n).map(|page| page.remove(&key));
            }
            let Some(entry) = entry else {
                self.entries.remove(&key);
                continue;
            };
            self.entries.insert(key.clone(), entry.clone());
            if let Some(&n) = homes.last() {
                let page = self.pages.entry(n).or_default();
                page.insert(key.clone(), entry.clone());
                if page_size(page) <= PAGE_LIMIT {
                    continue;
                }
                page.remove(&key);
            }
            // The last page takes it if it fits; it is above any page the entry leaves, so
            // its copy is the one read should a run die between the two writes.
            let size = entry_size(&key, &entry);
            let n = match self.pages.keys().next_back().copied() {
                Some(n) if page_size(&self.pages[&n]) + size <= PAGE_LIMIT => n,
                _ => {
                    let n = self.next_page();
                    early.insert(n);
                    n
                }
            };
            if !homes.is_empty() {
                early.insert(n);
            }
            touched.insert(n);
            self.pages.entry(n).or_default().insert(key, entry);
        }

        let mut write = Write::default();
        for n in touched {
            let name = self.page_name(n);
            match self.pages.get(&n) {
                Some(page) if !page.is_empty() => {
                    let value = serde_json::to_string(page).unwrap_or_default();
                    if early.contains(&n) {
                        write.first.push((name, value));
                    } else {
                        write.then.push((name, value));
                    }
                }
                _ => {
                    self.pages.remove(&n);
                    write.delete.push(name);
                }
            }
        }
        write
    }

    /// The kinds of network resource (`vpc`, `group`, ...) the ledger lists.
    pub fn resource_kinds(&self) -> BTreeSet<&str> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Resource { resource, .. } => resource.split('/').next(),
                _ => None,
            })
            .collect()
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

    fn instance(slot: &str, id: Option<&str>, state: State) -> Entry {
        Entry::Instance {
            slot: slot.into(),
            role: "www".into(),
            index: 1,
            spec: "0123456789abcdef".into(),
            client_token: format!("heet-{slot}-0123456789abcdef"),
            instance_id: id.map(Into::into),
            state,
        }
    }

    const PREFIX: &str = "/heet/p/e/ledger/";

    /// Parameter Store, as far as the ledger sees it.
    type Store = BTreeMap<String, String>;

    fn store(params: &mut Store, write: &Write, crash_after_first: bool) {
        params.extend(write.first.iter().cloned());
        if crash_after_first {
            return;
        }
        params.extend(write.then.iter().cloned());
        for name in &write.delete {
            params.remove(name);
        }
    }

    fn read(params: &Store) -> Ledger {
        let (ledger, junk) = Ledger::parse(PREFIX.into(), params.clone().into_iter().collect());
        assert_eq!(junk, Vec::<String>::new());
        ledger
    }

    #[test]
    fn entries_round_trip_and_junk_is_named() {
        let mut ledger = Ledger::new(PREFIX.into());
        let write = ledger.stage([(
            instance_key("ab12"),
            Some(instance("ab12", None, State::Pending)),
        )]);
        let mut params: Vec<(String, String)> = write.then.clone();
        params.extend(write.first.clone());
        params.push((format!("{PREFIX}7"), "not json".into()));
        params.push((format!("{PREFIX}instance/old"), "{}".into()));
        let (mut read, junk) = Ledger::parse(PREFIX.into(), params);
        assert_eq!(read.entries, ledger.entries);
        assert_eq!(
            junk,
            [format!("{PREFIX}7"), format!("{PREFIX}instance/old")]
        );
        assert_eq!(
            read.pending_token("ab12", "0123456789abcdef"),
            Some("heet-ab12-0123456789abcdef")
        );
        assert_eq!(
            read.pending_token("ab12", "s2"),
            None,
            "another spec is another launch"
        );
        let next = read.stage([("record/x".into(), Some(record("x", "y")))]);
        assert!(
            next.then
                .iter()
                .all(|(name, _)| name == &format!("{PREFIX}1")),
            "the open page takes it, and the unreadable page is left alone: {next:?}"
        );
    }

    #[test]
    fn a_large_estate_takes_a_page_per_dozen_entries_and_confirming_rewrites_the_same_pages() {
        let slots: Vec<String> = (0..300).map(|i| format!("{i:016x}")).collect();
        let records: Vec<String> = (0..600)
            .map(|i| format!("prod-www-{i:03}.shop.example.com"))
            .collect();
        let entries = |state| {
            let mut all: Vec<(String, Option<Entry>)> = slots
                .iter()
                .map(|s| {
                    let id = (state == State::Done).then_some("i-0123456789abcdef0");
                    (instance_key(s), Some(instance(s, id, state)))
                })
                .collect();
            all.extend(records.iter().map(|r| {
                (
                    record_key(r),
                    Some(Entry::Record {
                        name: r.clone(),
                        target: "ec2-10-0-0-1.compute-1.amazonaws.com".into(),
                        ttl: 300,
                        state,
                    }),
                )
            }));
            all
        };
        let mut params = Store::new();
        let mut ledger = Ledger::new(PREFIX.into());
        let pending = ledger.stage(entries(State::Pending));
        store(&mut params, &pending, false);
        let size: usize = params.values().map(String::len).sum();
        assert!(
            params.values().all(|v| v.len() <= PAGE_LIMIT),
            "every page fits a standard parameter"
        );
        assert!(
            pending.len() <= size / PAGE_LIMIT + 2,
            "{} pages for {size} bytes",
            pending.len()
        );
        assert!(pending.len() < 900 / 10, "{} writes", pending.len());

        let done = ledger.stage(entries(State::Done));
        store(&mut params, &done, false);
        assert!(
            params.values().all(|v| v.len() <= PAGE_LIMIT),
            "grown entries that no longer fit moved"
        );
        assert!(
            done.len() <= pending.len() + 2,
            "confirming rewrites {} pages after {} were written",
            done.len(),
            pending.len()
        );
        assert_eq!(read(&params).entries, ledger.entries);
        assert_eq!(ledger.entries.len(), 900);

        let gone = ledger.stage(
            ledger
                .entries
                .keys()
                .cloned()
                .map(|k| (k, None))
                .collect::<Vec<_>>(),
        );
        store(&mut params, &gone, false);
        assert_eq!(
            params,
            Store::new(),
            "forgetting everything deletes every page"
        );
        assert_eq!(ledger.page_names(), Vec::<String>::new());
    }

    #[test]
    fn an_entry_that_outgrows_its_page_moves_and_a_crash_in_between_keeps_the_newer_copy() {
        let mut params = Store::new();
        let mut ledger = Ledger::new(PREFIX.into());
        // Fill page 1 with pending records, to the brim.
        let mut i = 0;
        loop {
            let name = format!("r{i}.example.com");
            let write = ledger.stage([(record_key(&name), Some(record(&name, "t")))]);
            if write
                .first
                .iter()
                .any(|(page, _)| page != &format!("{PREFIX}1"))
            {
                ledger.stage([(record_key(&name), None)]);
                break;
            }
            store(&mut params, &write, false);
            i += 1;
        }
        assert_eq!(params.len(), 1);
        // r0 grows: it no longer fits and goes to page 2, written before page 1 drops it.
        let grown = record("r0.example.com", &"t".repeat(200));
        let write = ledger.stage([(record_key("r0.example.com"), Some(grown.clone()))]);
        assert_eq!(write.first.len(), 1, "{write:?}");
        assert_eq!(write.first[0].0, format!("{PREFIX}2"));
        assert_eq!(write.then.len(), 1);
        assert_eq!(write.then[0].0, format!("{PREFIX}1"));

        let mut crashed = params.clone();
        store(&mut crashed, &write, true);
        let after_crash = read(&crashed);
        assert_eq!(after_crash.entries, ledger.entries, "the higher page wins");
        // The next run forgets r0: both copies go, and the old one cannot come back.
        let mut next = after_crash;
        let forget = next.stage([(record_key("r0.example.com"), None)]);
        store(&mut crashed, &forget, false);
        assert!(!read(&crashed).entries.contains_key("record/r0.example.com"));
        assert!(
            !crashed.contains_key(&format!("{PREFIX}2")),
            "the empty page is deleted"
        );

        store(&mut params, &write, false);
        assert_eq!(read(&params).entries, ledger.entries);
        assert!(params.values().all(|v| v.len() <= PAGE_LIMIT));
    }

    #[test]
    fn records_are_listed_by_name() {
        let mut ledger = Ledger::new(PREFIX.into());
        ledger.stage([(
            record_key("www-01.example.com"),
            Some(record("www-01.example.com", "ec2-1.example")),
        )]);
        assert_eq!(
            ledger.records()["www-01.example.com"].target,
            "ec2-1.example"
        );
        assert_eq!(
            record_key("www-01.example.com"),
            "record/www-01.example.com"
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever runs write, and wherever one dies, the pages fit, every entry a run
            /// finished writing reads back as written, and a killed run's entries read back
            /// either as they were or as they were going to be.
            #[test]
            fn pages_read_back_what_was_written(
                runs in proptest::collection::vec(
                    (proptest::collection::vec((0u8..60, 0usize..300, any::<bool>()), 1..40), any::<bool>()),
                    1..12,
                ),
            ) {
                let mut params = Store::new();
                for (changes, crash) in runs {
                    let mut ledger = read(&params);
                    let before = ledger.entries.clone();
                    let changes: Vec<(String, Option<Entry>)> = changes
                        .into_iter()
                        .map(|(k, len, keep)| {
                            let name = format!("r{k}.example.com");
                            (record_key(&name), keep.then(|| record(&name, &"t".repeat(len))))
                        })
                        .collect();
                    let write = ledger.stage(changes);
                    store(&mut params, &write, crash);
                    prop_assert!(params.values().all(|v| v.len() <= PAGE_LIMIT));
                    let now = read(&params).entries;
                    if crash {
                        for (key, entry) in &now {
                            prop_assert!(
                                before.get(key) == Some(entry) || ledger.entries.get(key) == Some(entry),
                                "{key} reads back as neither its old nor its new self"
                            );
                        }
                        for key in before.keys().filter(|k| ledger.entries.contains_key(*k)) {
                            prop_assert!(now.contains_key(key), "{key} was lost");
                        }
                    } else {
                        prop_assert_eq!(&now, &ledger.entries);
                    }
                }
            }
        }
    }
}
