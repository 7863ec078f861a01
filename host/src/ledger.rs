//! The ledger: what heet created for a project and environment, kept in SSM Parameter Store
//! as numbered pages `/heet/<project>/<env>/ledger/<n>`, each a deflated JSON object of
//! entries by key that fits a standard parameter (4 KB), so one call writes dozens of
//! entries and the ledger scales with the estate at SSM's few writes per second. Entries are
//! written before each mutation (`pending`) and confirmed after (`done`); `down`, `plan` and
//! `status` read them, together with the resources' tags.
//!
//! Route53 records carry no tags, so the ledger is the only proof that heet created a record:
//! a record it does not list is never changed or deleted. A batch launch is in the ledger from
//! before its RunInstances until its instances carry their slot tags: it is what lets a run
//! adopt the instances of a batch whose tagging a crash interrupted.
//!
//! Which pages a change rewrites, and in which order, is decided here without I/O
//! ([`Ledger::stage`]); the caller writes the pages of each step of the returned [`Write`]
//! before those of the next. A run killed between any two writes leaves every entry either as
//! it was or as it was going to be: an entry only ever moves to a new page, above every
//! existing one, and the highest copy of a key is the one read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write as _};

use base64::Engine as _;
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
    /// One RunInstances launching the instances of some slots of a role at once; the instance
    /// with AmiLaunchIndex `k` belongs to `slots[k]`. From before the call until every
    /// instance carries its slot's tags.
    Batch {
        /// The `heet:batch` tag its instances carry from launch.
        batch: String,
        role: String,
        spec: String,
        slots: Vec<u32>,
        client_token: String,
        /// By AmiLaunchIndex, once RunInstances answered.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instances: Vec<String>,
        /// Seconds since the epoch when it was written ahead.
        since: i64,
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
    /// A launch of one instance, as heet before batch launches wrote it: read so old ledgers
    /// still parse, never written; the instances carry their slot tags from launch.
    Instance {
        slot: String,
        role: String,
        index: u32,
        spec: String,
        client_token: String,
        instance_id: Option<String>,
        state: State,
    },
}

/// A batch launch, as the ledger remembers it (see [`Entry::Batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch: String,
    pub role: String,
    pub spec: String,
    pub slots: Vec<u32>,
    pub client_token: String,
    pub instances: Vec<String>,
    pub since: i64,
    pub state: State,
}

impl Batch {
    pub fn entry(&self) -> Entry {
        Entry::Batch {
            batch: self.batch.clone(),
            role: self.role.clone(),
            spec: self.spec.clone(),
            slots: self.slots.clone(),
            client_token: self.client_token.clone(),
            instances: self.instances.clone(),
            since: self.since,
            state: self.state,
        }
    }
}

/// A record heet created, as the ledger remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub target: String,
    pub ttl: i64,
}

/// The most a page may hold: the value limit of a standard SSM parameter.
pub const PAGE_LIMIT: usize = 4096;

/// Marks a deflated page; pages without it are plain JSON (as heet wrote them before).
const DEFLATED: &str = "z:";

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

/// The parameter writes that store a staged change, in steps: every page of a step is
/// written before any of the next. `repair` drops stale copies a killed run left below the
/// newest copy of a key that is now forgotten (so the stale one cannot be read once the newest
/// goes); `first` writes new pages, which entries may be moving to; `then` rewrites existing
/// pages, which entries may be leaving; `delete` removes emptied pages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Write {
    pub repair: Vec<(String, String)>,
    pub first: Vec<(String, String)>,
    pub then: Vec<(String, String)>,
    pub delete: Vec<String>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many parameters it writes or deletes.
    pub fn len(&self) -> usize {
        self.repair.len() + self.first.len() + self.then.len() + self.delete.len()
    }

    /// The puts of each step, in order.
    pub fn steps(&self) -> [&[(String, String)]; 3] {
        [&self.repair, &self.first, &self.then]
    }
}

pub fn prefix(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/ledger/")
}

pub fn batch_key(batch: &str) -> String {
    format!("batch/{batch}")
}

pub fn record_key(name: &str) -> String {
    format!("record/{name}")
}

pub fn resource_key(resource: &str) -> String {
    format!("resource/{resource}")
}

/// A page as stored: its entries as JSON, deflated and in base64 behind [`DEFLATED`].
fn encode(page: &BTreeMap<String, Entry>) -> String {
    let json = serde_json::to_vec(page).unwrap_or_default();
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(&json);
    let bytes = z.finish().unwrap_or_default();
    format!(
        "{DEFLATED}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn decode(value: &str) -> Option<BTreeMap<String, Entry>> {
    let Some(packed) = value.strip_prefix(DEFLATED) else {
        return serde_json::from_str(value).ok();
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed)
        .ok()?;
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(bytes.as_slice())
        .take(16 << 20)
        .read_to_end(&mut json)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

fn fits(page: &BTreeMap<String, Entry>) -> bool {
    encode(page).len() <= PAGE_LIMIT
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
            match (number, decode(&value)) {
                (Some(n), Some(page)) => {
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
    /// fits; new entries fill the last page while it fits; anything else goes to new pages.
    pub fn stage(&mut self, changes: impl IntoIterator<Item = (String, Option<Entry>)>) -> Write {
        let stored = self.pages.clone();
        let existing: BTreeSet<u32> = stored.keys().copied().collect();
        let mut touched = BTreeSet::new();
        let mut repair: BTreeMap<u32, BTreeMap<String, Entry>> = BTreeMap::new();
        // New pages, filled in the order entries come.
        let mut fresh: Vec<u32> = Vec::new();
        for (key, entry) in changes {
            let homes: Vec<u32> = self
                .pages
                .iter()
                .filter(|(_, page)| page.contains_key(&key))
                .map(|(&n, _)| n)
                .collect();
            // A forgotten key with stale copies below its newest: those go first, from the
            // pages as stored and nothing else changed, or the stale one would be read once
            // the newest is gone.
            if entry.is_none() && homes.len() > 1 {
                for &n in &homes[..homes.len() - 1] {
                    if let Some(page) = stored.get(&n) {
                        repair.entry(n).or_insert_with(|| page.clone()).remove(&key);
                    }
                }
            }
            for &n in &homes {
                touched.insert(n);
                self.pages.get_mut(&n).map(|page| page.remove(&key));
            }
            let Some(entry) = entry else {
                self.entries.remove(&key);
                continue;
            };
            self.entries.insert(key.clone(), entry.clone());
            // In place, when it still fits there.
            if let Some(&n) = homes.last() {
                let page = self.pages.entry(n).or_default();
                page.insert(key.clone(), entry.clone());
                if fits(page) {
                    continue;
                }
                page.remove(&key);
            }
            // A new key may join the last existing page (its one copy, written in one go);
            // a moving one goes to a new page, written before the page it leaves.
            let last_existing = existing.iter().next_back().copied();
            let candidates = fresh
                .last()
                .copied()
                .into_iter()
                .chain(last_existing.filter(|_| homes.is_empty() && fresh.is_empty()));
            let mut placed = false;
            for n in candidates {
                let page = self.pages.entry(n).or_default();
                page.insert(key.clone(), entry.clone());
                if fits(page) {
                    touched.insert(n);
                    placed = true;
                    break;
                }
                page.remove(&key);
            }
            if !placed {
                let n = self.next_page().max(fresh.last().map_or(0, |n| n + 1));
                fresh.push(n);
                touched.insert(n);
                self.pages.entry(n).or_default().insert(key, entry);
            }
        }

        let mut write = Write::default();
        for (n, page) in repair {
            // Only where the page stays (otherwise its delete comes after the newest anyway).
            if !page.is_empty() {
                write.repair.push((self.page_name(n), encode(&page)));
            }
        }
        for n in touched {
            let name = self.page_name(n);
            match self.pages.get(&n) {
                Some(page) if !page.is_empty() => {
                    let value = encode(page);
                    if existing.contains(&n) {
                        write.then.push((name, value));
                    } else {
                        write.first.push((name, value));
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
                Entry::Batch { .. } | Entry::Resource { .. } | Entry::Instance { .. } => None,
            })
            .collect()
    }

    /// The batch launches the ledger lists, by batch id.
    pub fn batches(&self) -> BTreeMap<String, Batch> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Batch {
                    batch,
                    role,
                    spec,
                    slots,
                    client_token,
                    instances,
                    since,
                    state,
                } => Some((
                    batch.clone(),
                    Batch {
                        batch: batch.clone(),
                        role: role.clone(),
                        spec: spec.clone(),
                        slots: slots.clone(),
                        client_token: client_token.clone(),
                        instances: instances.clone(),
                        since: *since,
                        state: *state,
                    },
                )),
                Entry::Record { .. } | Entry::Resource { .. } | Entry::Instance { .. } => None,
            })
            .collect()
    }

    /// The keys of entries of launches before batch launches: superseded by the instances'
    /// own tags, dropped the next time the ledger is written.
    pub fn legacy(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Instance { .. }))
            .map(|(k, _)| k.clone())
            .collect()
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

    fn batch(id: &str, slots: u32, launched: bool) -> Entry {
        Entry::Batch {
            batch: id.into(),
            role: "www".into(),
            spec: "0123456789abcdef".into(),
            slots: (1..=slots).collect(),
            client_token: format!("heet-{id}"),
            instances: if launched {
                // As EC2 makes them: 17 hex digits that deflate cannot shrink much.
                (0..slots)
                    .map(|i| {
                        let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 4;
                        format!("i-{h:017x}")
                    })
                    .collect()
            } else {
                Vec::new()
            },
            since: 1_800_000_000,
            state: if launched {
                State::Done
            } else {
                State::Pending
            },
        }
    }

    const PREFIX: &str = "/heet/p/e/ledger/";

    /// Parameter Store, as far as the ledger sees it.
    type Store = BTreeMap<String, String>;

    /// Writes `write`'s steps in order. `crash`: a kill during step `.0`, when only the puts
    /// of that step picked by the bits of `.1` were made (a step's puts run concurrently).
    fn store(params: &mut Store, write: &Write, crash: Option<(usize, u64)>) {
        for (i, step) in write.steps().iter().enumerate() {
            for (j, (name, value)) in step.iter().enumerate() {
                if let Some((at, mask)) = crash
                    && at == i
                    && mask & (1 << (j % 64)) == 0
                {
                    continue;
                }
                params.insert(name.clone(), value.clone());
            }
            if crash.is_some_and(|(at, _)| at == i) {
                return;
            }
        }
        if crash.is_some() {
            return;
        }
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
    fn entries_round_trip_deflated_and_plain_pages_and_junk_is_named() {
        let mut ledger = Ledger::new(PREFIX.into());
        let write = ledger.stage([(batch_key("b1"), Some(batch("b1", 3, false)))]);
        assert!(write.first[0].1.starts_with(DEFLATED), "{write:?}");
        let mut params: Vec<(String, String)> = write.first.clone();
        // A page as heet wrote them before they were deflated.
        params.push((
            format!("{PREFIX}2"),
            r#"{"record/a.x":{"kind":"record","name":"a.x","target":"t","ttl":300,"state":"done"},"instance/ab":{"kind":"instance","slot":"ab","role":"www","index":1,"spec":"s","client_token":"c","instance_id":null,"state":"pending"}}"#.into(),
        ));
        params.push((format!("{PREFIX}7"), "not json".into()));
        params.push((format!("{PREFIX}instance/old"), "{}".into()));
        let (mut read, junk) = Ledger::parse(PREFIX.into(), params);
        assert_eq!(read.batches()["b1"].slots, [1, 2, 3]);
        assert_eq!(read.records()["a.x"].target, "t");
        assert_eq!(read.legacy(), ["instance/ab"]);
        assert_eq!(
            junk,
            [format!("{PREFIX}7"), format!("{PREFIX}instance/old")]
        );
        let next = read.stage([("record/x".into(), Some(record("x", "y")))]);
        assert!(
            next.then
                .iter()
                .all(|(name, _)| name == &format!("{PREFIX}2")),
            "the last page takes it, and the unreadable page is left alone: {next:?}"
        );
    }

    #[test]
    fn six_hundred_records_take_a_few_pages_and_confirming_rewrites_the_same_pages() {
        let records: Vec<String> = (0..600)
            .map(|i| format!("prod-www-{i:03}.shop.example.com"))
            .collect();
        let entries = |state| {
            records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        record_key(r),
                        Some(Entry::Record {
                            name: r.clone(),
                            target: format!(
                                "ec2-54-214-{}-{}.compute-1.amazonaws.com",
                                i / 200,
                                i % 200
                            ),
                            ttl: 300,
                            state,
                        }),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut params = Store::new();
        let mut ledger = Ledger::new(PREFIX.into());
        let pending = ledger.stage(entries(State::Pending));
        store(&mut params, &pending, None);
        assert!(params.values().all(|v| v.len() <= PAGE_LIMIT));
        // Deflated, 600 records of ~150 bytes of JSON each take a handful of pages.
        assert!(pending.len() <= 12, "{} pages", pending.len());

        let done = ledger.stage(entries(State::Done));
        store(&mut params, &done, None);
        assert!(params.values().all(|v| v.len() <= PAGE_LIMIT));
        assert!(
            done.len() <= pending.len() + 2,
            "confirming rewrites {} pages after {} were written",
            done.len(),
            pending.len()
        );
        assert_eq!(read(&params).entries, ledger.entries);
        assert_eq!(ledger.entries.len(), 600);

        let gone = ledger.stage(
            ledger
                .entries
                .keys()
                .cloned()
                .map(|k| (k, None))
                .collect::<Vec<_>>(),
        );
        store(&mut params, &gone, None);
        assert_eq!(
            params,
            Store::new(),
            "forgetting everything deletes every page"
        );
        assert_eq!(ledger.page_names(), Vec::<String>::new());
    }

    #[test]
    fn a_batch_that_outgrows_its_page_moves_to_a_new_page_written_first() {
        let mut params = Store::new();
        let mut ledger = Ledger::new(PREFIX.into());
        let w = ledger.stage([(batch_key("b"), Some(batch("b", 300, false)))]);
        store(&mut params, &w, None);
        // 300 instance ids no longer fit the page it shares: it moves to a new page, written
        // first; its old page is rewritten after.
        let w = ledger.stage([
            ("record/a.x".into(), Some(record("a.x", "t"))),
            (batch_key("b"), Some(batch("b", 300, true))),
        ]);
        assert_eq!(w.first.len(), 1, "{w:?}");
        assert_eq!(w.first[0].0, format!("{PREFIX}2"));
        assert_eq!(w.then.len(), 1, "{w:?}");
        let mut crashed = params.clone();
        store(&mut crashed, &w, Some((1, u64::MAX)));
        assert_eq!(
            read(&crashed).entries[&batch_key("b")],
            batch("b", 300, true)
        );
        store(&mut params, &w, None);
        assert_eq!(read(&params).entries, ledger.entries);
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
                    (proptest::collection::vec((0u8..60, 0usize..900, any::<bool>()), 1..40), proptest::option::of((0usize..3, any::<u64>()))),
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
                            // Targets of random bytes, so that deflate cannot hide the size.
                            let target: String = (0..len).map(|i| char::from(b'a' + ((i * 7 + k as usize * 13) % 26) as u8)).collect();
                            (record_key(&name), keep.then(|| record(&name, &target)))
                        })
                        .collect();
                    let write = ledger.stage(changes);
                    store(&mut params, &write, crash);
                    prop_assert!(params.values().all(|v| v.len() <= PAGE_LIMIT));
                    let now = read(&params).entries;
                    if crash.is_some() {
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
