//! `heet.lock`: the sha256 of every plugin a project runs, so a plugin shared across teams
//! runs only as the bytes someone reviewed. `plan` and `up` refuse a plugin missing from the
//! lock or differing from it; `heet plugins lock` rewrites the lock from the plugin folder.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PluginFile, read_plugin, sha256_hex};
use crate::definition::{Definition, DefinitionError};

pub const FILE_NAME: &str = "heet.lock";
const VERSION: u32 = 1;
const HEADER: &str = "\
# heet.lock: the sha256 of every plugin this project runs. heet refuses a plugin that is not
# listed here or whose bytes differ. Review a plugin, then update with `heet plugins lock`.
";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    version: u32,
    #[serde(default)]
    pub plugins: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub sha256: String,
    /// Where `heet plugins add` got it: `oci://REGISTRY/NAMESPACE/NAME:TAG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The manifest digest the tag resolved to when it was added or updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The minisign key id of its signer, as shown when it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Its minisign signature, so `plan` checks it against the trust policy offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Plugins that do not match the lock. Exit code 2, like any other input to fix.
#[derive(Debug, thiserror::Error)]
pub struct LockError {
    pub file: PathBuf,
    pub problems: Vec<(String, Problem)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// In the plugin folder, not in the lock.
    Unlocked,
    /// Its bytes are not the ones locked.
    Differs { locked: String, actual: String },
    /// In the lock, not in the plugin folder.
    Missing,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unlocked => f.write_str("not in the lock"),
            Problem::Differs { locked, actual } => write!(
                f,
                "sha256 {} differs from the locked {}",
                short(actual),
                short(locked)
            ),
            Problem::Missing => f.write_str("locked, but not in the plugin folder"),
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} plugin(s) do not match the lock; review them, then run `heet plugins lock`",
            self.file.display(),
            self.problems.len()
        )?;
        for (plugin, problem) in &self.problems {
            write!(f, "\n  plugin {plugin}: {problem}")?;
        }
        Ok(())
    }
}

/// Where the lock of a definition lives: next to it.
pub fn path(def: &Definition) -> PathBuf {
    def.file.parent().unwrap_or(Path::new(".")).join(FILE_NAME)
}

impl Lock {
    /// Reads the lock next to `def`; no file is an empty lock.
    pub fn load(def: &Definition) -> Result<Lock, DefinitionError> {
        let file = path(def);
        let source = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::empty()),
            Err(e) => {
                return Err(DefinitionError {
                    file,
                    at: None,
                    message: format!("cannot read: {e}"),
                });
            }
        };
        Lock::parse(&file, &source)
    }

    pub fn parse(file: &Path, source: &str) -> Result<Lock, DefinitionError> {
        let lock: Lock =
            toml::from_str(source).map_err(|e| DefinitionError::from_toml(file, source, &e))?;
        for name in lock.plugins.keys() {
            // A name becomes a file name in the plugin folder (`update`, `remove`).
            // Only what would leave the plugin folder is refused: `plugins lock` writes any
            // file stem the folder has.
            let file_name =
                !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
            if !file_name {
                return Err(DefinitionError {
                    file: file.to_owned(),
                    at: None,
                    message: format!("plugins.{name:?}: not a plugin file name"),
                });
            }
        }
        if lock.version != VERSION {
            return Err(DefinitionError {
                file: file.to_owned(),
                at: None,
                message: format!(
                    "lock version {} is not {VERSION}: written by another heet",
                    lock.version
                ),
            });
        }
        Ok(lock)
    }

    pub fn empty() -> Lock {
        Lock {
            version: VERSION,
            plugins: BTreeMap::new(),
        }
    }

    /// A lock pinning exactly `hashes` (plugin name → sha256).
    pub fn of(hashes: impl IntoIterator<Item = (String, String)>) -> Lock {
        Lock {
            version: VERSION,
            plugins: hashes
                .into_iter()
                .map(|(name, sha256)| {
                    (
                        name,
                        Entry {
                            sha256,
                            ..Entry::default()
                        },
                    )
                })
                .collect(),
        }
    }

    /// This lock, each entry keeping where it came from in `old` while its bytes are the
    /// ones it came with (a plugin rebuilt in place is no longer the one its source signed).
    pub fn with_provenance_of(mut self, old: &Lock) -> Lock {
        for (name, entry) in &mut self.plugins {
            if let Some(was) = old.plugins.get(name).filter(|w| w.sha256 == entry.sha256) {
                *entry = was.clone();
            }
        }
        self
    }

    pub fn to_toml(&self) -> String {
        format!(
            "{HEADER}{}",
            toml::to_string(self).expect("a lock is plain strings")
        )
    }

    pub fn pinned(&self, plugin: &str) -> Option<&str> {
        self.plugins.get(plugin).map(|e| e.sha256.as_str())
    }

    /// Every way `found` (plugin name → actual sha256) departs from the lock.
    pub fn problems(&self, found: &BTreeMap<String, String>) -> Vec<(String, Problem)> {
        let mut problems = Vec::new();
        for (name, actual) in found {
            match self.pinned(name) {
                None => problems.push((name.clone(), Problem::Unlocked)),
                Some(locked) if locked != actual => problems.push((
                    name.clone(),
                    Problem::Differs {
                        locked: locked.to_owned(),
                        actual: actual.clone(),
                    },
                )),
                Some(_) => {}
            }
        }
        for name in self.plugins.keys() {
            if !found.contains_key(name) {
                problems.push((name.clone(), Problem::Missing));
            }
        }
        problems
    }
}

/// The sha256 of each plugin file, by plugin name.
pub fn hash_files(files: &[PluginFile]) -> anyhow::Result<BTreeMap<String, String>> {
    files
        .iter()
        .map(|f| Ok((f.name.clone(), sha256_hex(&read_plugin(&f.path, &f.name)?))))
        .collect()
}

/// Refuses the run unless every plugin in `files` is locked with its current bytes and the
/// lock names no other plugin. Each plugin's bytes are checked again when it is compiled, so
/// a file swapped after this check is still caught.
pub fn verify(def: &Definition, lock: &Lock, files: &[PluginFile]) -> anyhow::Result<()> {
    let problems = lock.problems(&hash_files(files)?);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LockError {
            file: path(def),
            problems,
        }
        .into())
    }
}

/// Plugins the trust policy refuses. Exit code 2: a plugin to replace or a policy to fix.
#[derive(Debug, thiserror::Error)]
pub struct TrustError {
    pub file: PathBuf,
    pub refused: Vec<(String, String)>,
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: plugins.trust refuses {} plugin(s); nothing ran",
            self.file.display(),
            self.refused.len()
        )?;
        for (plugin, why) in &self.refused {
            write!(f, "\n  plugin {plugin}: {why}")?;
        }
        Ok(())
    }
}

/// Under a trust policy, refuses the run unless every plugin in `files` carries, in the
/// lock, a signature by a trusted key whose scope covers its source and that is over its
/// bytes, its name and its version. Offline: the signature was stored when it was added.
pub fn trusted(def: &Definition, lock: &Lock, files: &[PluginFile]) -> anyhow::Result<()> {
    let Some(policy) = &def.plugins.trust else {
        return Ok(());
    };
    let mut refused = Vec::new();
    for f in files {
        let entry = lock.plugins.get(&f.name).cloned().unwrap_or_default();
        let why = match entry
            .source
            .as_deref()
            .map(str::parse::<super::registry::Source>)
        {
            None => Some(
                "it is not signed: it was not added from a registry (`heet plugins add`)"
                    .to_owned(),
            ),
            Some(Err(e)) => Some(format!("heet.lock's source for it is not valid: {e}")),
            Some(Ok(source)) => {
                let bytes = read_plugin(&f.path, &f.name)?;
                let wanted = super::signing::Signed::of(&source, &sha256_hex(&bytes));
                policy
                    .verify(&wanted, &bytes, entry.signature.as_deref())
                    .err()
                    .map(|r| format!("{source}: {r}"))
            }
        };
        if let Some(why) = why {
            refused.push((f.name.clone(), why));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(TrustError {
            file: def.file.clone(),
            refused,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn every_departure_is_named() {
        let lock = Lock::of([
            ("naming".to_owned(), "aaaa".to_owned()),
            ("guard".to_owned(), "bbbb".to_owned()),
            ("gone".to_owned(), "cccc".to_owned()),
        ]);
        let problems = lock.problems(&found(&[
            ("naming", "aaaa"),
            ("guard", "dddd"),
            ("new", "eeee"),
        ]));
        assert_eq!(
            problems,
            [
                (
                    "guard".to_owned(),
                    Problem::Differs {
                        locked: "bbbb".into(),
                        actual: "dddd".into()
                    }
                ),
                ("new".to_owned(), Problem::Unlocked),
                ("gone".to_owned(), Problem::Missing),
            ]
        );
        assert!(
            lock.problems(&found(&[
                ("naming", "aaaa"),
                ("guard", "bbbb"),
                ("gone", "cccc")
            ]))
            .is_empty()
        );
    }

    #[test]
    fn the_file_round_trips_and_says_what_it_is() {
        let lock = Lock::of([("naming".to_owned(), "ab".repeat(32))]);
        let text = lock.to_toml();
        assert!(text.starts_with("# heet.lock:"));
        assert!(text.contains(&format!(
            "[plugins.naming]\nsha256 = \"{}\"",
            "ab".repeat(32)
        )));
        assert_eq!(Lock::parse(Path::new("heet.lock"), &text).unwrap(), lock);
    }

    #[test]
    fn relocking_keeps_where_a_plugin_came_from_only_while_its_bytes_are_the_same() {
        let added = Entry {
            sha256: "aa".repeat(32),
            source: Some("oci://ghcr.io/acme/naming:1.0.0".into()),
            manifest: Some("sha256:0123".into()),
            signer: Some("E3620E9AC26E4FA7".into()),
            signature: Some("untrusted comment: x\nRUQ…".into()),
        };
        let old = Lock {
            version: VERSION,
            plugins: [
                ("naming".to_owned(), added.clone()),
                (
                    "guard".to_owned(),
                    Entry {
                        sha256: "bb".repeat(32),
                        ..added.clone()
                    },
                ),
            ]
            .into(),
        };
        // naming is as it was added; guard was rebuilt in place.
        let new = Lock::of([
            ("naming".to_owned(), "aa".repeat(32)),
            ("guard".to_owned(), "cc".repeat(32)),
        ])
        .with_provenance_of(&old);
        assert_eq!(new.plugins["naming"], added);
        assert_eq!(new.plugins["guard"].sha256, "cc".repeat(32));
        assert_eq!(
            new.plugins["guard"].source, None,
            "its source signed other bytes"
        );
        assert_eq!(new.plugins["guard"].signature, None);
    }

    #[test]
    fn a_lock_naming_a_path_is_refused() {
        let err = Lock::parse(
            Path::new("heet.lock"),
            "version = 1\n[plugins.\"../evil\"]\nsha256 = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a plugin file name"), "{err}");
    }

    #[test]
    fn a_bad_lock_points_at_the_line() {
        let err = Lock::parse(
            Path::new("heet.lock"),
            "version = 1\n[plugins.naming]\nsha = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(err.at, Some((3, 1)), "{err}");
        let err = Lock::parse(Path::new("heet.lock"), "version = 9\n").unwrap_err();
        assert!(err.to_string().contains("lock version 9"), "{err}");
    }
}
