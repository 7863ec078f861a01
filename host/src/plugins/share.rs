//! Sharing plugins across orgs: `heet plugins add`, `update`, `remove`, `publish` and
//! `keygen`, and the reports they print. A plugin from a registry is written into the plugin
//! folder and pinned in heet.lock with its source, manifest digest, sha256, signer and
//! signature; everything after that (`plan`, `up`) runs offline from the folder.
//!
//! Nothing is written before everything is checked: the artifact's digest, that it is a
//! component heet can load (no WASI), and the trust policy. A registry that is down, a digest
//! that does not match or a signature the policy refuses leaves folder and lock as they were.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::lock::{self, Lock, TrustError};
use super::registry::{Pulled, Registry, Source};
use super::signing::{self, Signed};
use super::{Hook, PluginFile, Runtime};
use crate::commands::UsageError;
use crate::definition::Definition;

/// A plugin pulled and checked, not yet written.
struct Checked {
    name: String,
    source: Source,
    pulled: Pulled,
    hooks: Vec<Hook>,
    /// The trusted key that signed it, when the definition has a trust policy.
    signer: Option<String>,
    /// The checked bytes, in a temporary file in the plugin folder, moved into place last.
    staged: tempfile::NamedTempFile,
}

/// Pulls `source`, and checks it is a loadable component and (under a trust policy) signed
/// by a key trusted for it.
async fn fetch(
    def: &Definition,
    runtime: &Runtime,
    source: &Source,
    name: &str,
) -> anyhow::Result<Checked> {
    let pulled = Registry::new(source).pull().await?;
    // The signature first: bytes the policy refuses are never compiled or written.
    let signer = match &def.plugins.trust {
        None => None,
        Some(policy) => {
            let wanted = Signed::of(source, &pulled.sha256);
            match policy.verify(&wanted, &pulled.bytes, pulled.signature.as_deref()) {
                Ok(signer) => Some(signer),
                Err(refusal) => {
                    return Err(TrustError {
                        file: def.file.clone(),
                        refused: vec![(name.to_owned(), format!("{source}: {refusal}"))],
                    }
                    .into());
                }
            }
        }
    };
    let dir = &def.plugins.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut staged = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".wasm.part")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    std::io::Write::write_all(&mut staged, &pulled.bytes)?;
    let info = runtime
        .inspect(&PluginFile {
            name: name.to_owned(),
            path: staged.path().to_owned(),
        })
        .with_context(|| format!("{source} is not a plugin heet can load"))?;
    Ok(Checked {
        name: name.to_owned(),
        source: source.clone(),
        pulled,
        hooks: info.hooks,
        signer,
        staged,
    })
}

impl Checked {
    fn entry(&self) -> lock::Entry {
        lock::Entry {
            sha256: self.pulled.sha256.clone(),
            source: Some(self.source.to_string()),
            manifest: Some(self.pulled.manifest.clone()),
            signer: self.signer.clone(),
            signature: self.pulled.signature.clone(),
        }
    }

    /// The grant a reviewer would write for what it exports.
    fn proposed_grant(&self) -> String {
        let hooks: Vec<String> = self
            .hooks
            .iter()
            .filter(|h| **h != Hook::Configure)
            .map(|h| format!("{:?}", h.interface()))
            .collect();
        format!(
            "[plugins.grants.{}]\nhooks = [{}]",
            self.name,
            hooks.join(", ")
        )
    }
}

/// Appends `grant` (a `[plugins.grants.NAME]` table) to heet.toml, keeping every byte that is
/// there; refused, and nothing written, unless the result is a definition heet accepts.
/// Returns heet.toml as it was, to put back if what follows fails.
fn write_grant(def: &Definition, grant: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&def.file)
        .with_context(|| format!("cannot read {}", def.file.display()))?;
    let sep = if text.ends_with('\n') { "\n" } else { "\n\n" };
    let written = format!("{text}{sep}{grant}\n");
    Definition::parse(&def.file, &written).with_context(|| {
        format!(
            "--grant: heet.toml would not read with the grant appended; add it by hand:\n{grant}"
        )
    })?;
    crate::commands::write_atomically(&def.file, written.as_bytes())
        .with_context(|| format!("cannot write {}", def.file.display()))?;
    Ok(text)
}

fn plugin_path(def: &Definition, name: &str) -> PathBuf {
    def.plugins.dir.join(format!("{name}.wasm"))
}

/// Moves each checked plugin into place, then writes the lock: a run killed in between
/// leaves a plugin the lock does not pin, which `plan` refuses.
fn install(def: &Definition, mut lock: Lock, checked: Vec<Checked>) -> anyhow::Result<()> {
    for c in checked {
        let path = plugin_path(def, &c.name);
        lock.plugins.insert(c.name.clone(), c.entry());
        c.staged
            .persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    write_lock(def, &lock)
}

fn write_lock(def: &Definition, lock: &Lock) -> anyhow::Result<()> {
    let file = lock::path(def);
    crate::commands::write_atomically(&file, lock.to_toml().as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))
}

/// What `heet plugins add` wrote.
#[derive(Debug, Serialize)]
pub struct AddReport {
    pub name: String,
    pub file: PathBuf,
    pub source: String,
    pub manifest: String,
    pub sha256: String,
    /// The trusted key that signed it; `null` without a trust policy.
    pub signer: Option<String>,
    pub signed: bool,
    pub hooks: Vec<Hook>,
    /// The `[plugins.grants.NAME]` table that allows exactly what it exports.
    pub proposed_grant: String,
    /// Whether the definition has a grant for it (already, or written by `--grant`).
    pub granted: bool,
    /// Whether `--grant` wrote the proposed grant into heet.toml.
    pub grant_written: bool,
}

impl fmt::Display for AddReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hooks: Vec<&str> = self.hooks.iter().map(|h| h.interface()).collect();
        write!(
            f,
            "added plugin {} from {}\n  file {}\n  manifest {}\n  sha256 {}\n  hooks {}\n  ",
            self.name,
            self.source,
            self.file.display(),
            self.manifest,
            self.sha256,
            hooks.join(", ")
        )?;
        match (&self.signer, self.signed) {
            (Some(k), _) => write!(f, "signed by {k}, trusted by plugins.trust")?,
            (None, true) => write!(
                f,
                "signed, but not checked: the definition has no [plugins.trust]"
            )?,
            (None, false) => write!(f, "unsigned")?,
        }
        if self.grant_written {
            write!(f, "\ngranted in heet.toml:\n{}", self.proposed_grant)?;
        } else if !self.granted {
            write!(
                f,
                "\nto allow it exactly what it exports, add to heet.toml (or add with --grant):\n{}",
                self.proposed_grant
            )?;
        }
        Ok(())
    }
}

pub async fn add(
    def: &Definition,
    runtime: &Runtime,
    source: &Source,
    name: Option<&str>,
    grant: bool,
) -> anyhow::Result<AddReport> {
    let name = name.unwrap_or(source.plugin_name());
    crate::namespace::check_name("plugin", name).map_err(UsageError)?;
    let lock = Lock::load(def)?;
    let path = plugin_path(def, name);
    if lock.plugins.contains_key(name) || path.exists() {
        return Err(UsageError(format!(
            "plugin {name} is in the project already ({}); `heet plugins update {name}` updates it, `--as OTHER` adds this one under another name",
            path.display()
        ))
        .into());
    }
    let checked = fetch(def, runtime, source, name).await?;
    let existing = def.plugins.grants.get(name);
    if let Some(g) = existing {
        let refused = g.refused(&checked.hooks);
        if !refused.is_empty() {
            let hooks: Vec<&str> = refused.iter().map(|h| h.interface()).collect();
            let message = format!(
                "plugins.grants.{name} (hooks = {}) does not allow {}, which {source} exports; plan would refuse it, so it was not added",
                g.hooks_written(),
                hooks.join(", ")
            );
            return Err(def.error_at(g.at, message).into());
        }
    }
    let granted = existing.is_some();
    let grant_written = grant && !granted;
    // Before the plugin: a grant for a plugin not yet in the folder stops `plan`, where a
    // plugin without its grant would run every hook it exports.
    let original = if grant_written {
        Some(write_grant(def, &checked.proposed_grant())?)
    } else {
        None
    };
    let report = AddReport {
        name: name.to_owned(),
        file: path,
        source: source.to_string(),
        manifest: checked.pulled.manifest.clone(),
        sha256: checked.pulled.sha256.clone(),
        signer: checked.signer.clone(),
        signed: checked.pulled.signature.is_some(),
        hooks: checked.hooks.clone(),
        proposed_grant: checked.proposed_grant(),
        granted: granted || grant_written,
        grant_written,
    };
    if let Err(e) = install(def, lock, vec![checked]) {
        if let Some(text) = &original {
            // Nothing of a failed add stays: heet.toml as it was.
            let _ = crate::commands::write_atomically(&def.file, text.as_bytes());
        }
        return Err(e);
    }
    Ok(report)
}

/// One plugin's update, as `heet plugins update` shows it.
#[derive(Debug, Serialize)]
pub struct Update {
    pub name: String,
    pub source: String,
    pub old_manifest: Option<String>,
    pub new_manifest: String,
    pub old_sha256: String,
    pub new_sha256: String,
    pub old_signer: Option<String>,
    pub new_signer: Option<String>,
}

impl fmt::Display for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signer = |s: &Option<String>| s.clone().unwrap_or_else(|| "unchecked".into());
        write!(
            f,
            "{} ({}): sha256 {} -> {}, manifest {} -> {}, signer {} -> {}",
            self.name,
            self.source,
            short(&self.old_sha256),
            short(&self.new_sha256),
            self.old_manifest.as_deref().map_or("?", short_digest),
            short_digest(&self.new_manifest),
            signer(&self.old_signer),
            signer(&self.new_signer)
        )
    }
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

fn short_digest(s: &str) -> &str {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    short(hex)
}

/// What `heet plugins update` did.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    pub updated: Vec<Update>,
    /// Plugins whose tag still points at the manifest in the lock.
    pub unchanged: Vec<String>,
}

impl fmt::Display for UpdateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.updated.is_empty() {
            return write!(
                f,
                "plugins up to date: {}",
                if self.unchanged.is_empty() {
                    "none comes from a registry".to_owned()
                } else {
                    self.unchanged.join(", ")
                }
            );
        }
        write!(f, "updated {} plugin(s):", self.updated.len())?;
        for u in &self.updated {
            write!(f, "\n  {u}")?;
        }
        if !self.unchanged.is_empty() {
            write!(f, "\nunchanged: {}", self.unchanged.join(", "))?;
        }
        Ok(())
    }
}

pub async fn update(
    def: &Definition,
    runtime: &Runtime,
    only: Option<&str>,
    yes: bool,
) -> anyhow::Result<UpdateReport> {
    let lock = Lock::load(def)?;
    if let Some(name) = only {
        match lock.plugins.get(name) {
            None => {
                return Err(UsageError(format!("plugin {name} is not in heet.lock")).into());
            }
            Some(e) if e.source.is_none() => {
                return Err(UsageError(format!(
                    "plugin {name} was not added from a registry: there is nothing to update it from"
                ))
                .into());
            }
            Some(_) => {}
        }
    }
    let mut checked = Vec::new();
    let mut report = UpdateReport {
        updated: Vec::new(),
        unchanged: Vec::new(),
    };
    for (name, entry) in &lock.plugins {
        let Some(source) = &entry.source else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let source: Source = source
            .parse()
            .map_err(|e| UsageError(format!("heet.lock: plugin {name}: {e}")))?;
        let manifest = Registry::new(&source).resolve().await?;
        if entry.manifest.as_deref() == Some(manifest.as_str()) {
            report.unchanged.push(name.clone());
            continue;
        }
        let c = fetch(def, runtime, &source, name).await?;
        report.updated.push(Update {
            name: name.clone(),
            source: source.to_string(),
            old_manifest: entry.manifest.clone(),
            new_manifest: c.pulled.manifest.clone(),
            old_sha256: entry.sha256.clone(),
            new_sha256: c.pulled.sha256.clone(),
            old_signer: entry.signer.clone(),
            new_signer: c.signer.clone(),
        });
        checked.push(c);
    }
    if checked.is_empty() {
        return Ok(report);
    }
    if !yes {
        let shown: Vec<String> = report.updated.iter().map(|u| format!("  {u}")).collect();
        eprintln!("plugins update would change:\n{}", shown.join("\n"));
        crate::commands::confirm(&format!("write {} updated plugin(s)", checked.len()), None)?;
    }
    install(def, lock, checked)?;
    Ok(report)
}

/// What `heet plugins remove` did.
#[derive(Debug, Serialize)]
pub struct RemoveReport {
    pub name: String,
    pub file: Option<PathBuf>,
    pub locked: bool,
}

impl fmt::Display for RemoveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "removed plugin {}", self.name)?;
        if let Some(file) = &self.file {
            write!(f, ": deleted {}", file.display())?;
        }
        if self.locked {
            write!(f, "; dropped from heet.lock")?;
        }
        Ok(())
    }
}

pub fn remove(def: &Definition, name: &str) -> anyhow::Result<RemoveReport> {
    crate::namespace::check_name("plugin", name).map_err(UsageError)?;
    let mut lock = Lock::load(def)?;
    let path = plugin_path(def, name);
    let locked = lock.plugins.remove(name).is_some();
    let exists = path.is_file();
    if !locked && !exists {
        return Err(UsageError(format!(
            "no plugin {name}: neither {} nor an entry in heet.lock",
            path.display()
        ))
        .into());
    }
    // The lock first: a run killed in between leaves a file the lock does not pin, which
    // `plan` refuses, rather than a lock pinning a plugin that is gone.
    if locked {
        write_lock(def, &lock)?;
    }
    if exists {
        std::fs::remove_file(&path).with_context(|| format!("cannot delete {}", path.display()))?;
    }
    Ok(RemoveReport {
        name: name.to_owned(),
        file: exists.then_some(path),
        locked,
    })
}

/// What `heet plugins publish` pushed.
#[derive(Debug, Serialize)]
pub struct PublishReport {
    pub source: String,
    pub manifest: String,
    pub sha256: String,
    pub signer: String,
    pub signature_tag: String,
    pub size: usize,
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published {} ({} bytes)\n  manifest {}\n  sha256 {}\n  signed by {} (tag {})",
            self.source, self.size, self.manifest, self.sha256, self.signer, self.signature_tag
        )
    }
}

pub async fn publish(
    runtime: &Runtime,
    file: &Path,
    source: &Source,
    key: &Path,
    password: Option<String>,
) -> anyhow::Result<PublishReport> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let plugin = PluginFile {
        name: source.plugin_name().to_owned(),
        path: file.to_owned(),
    };
    let (exports, imports) = runtime
        .interfaces(&plugin)
        .with_context(|| format!("{} is not a plugin heet can load", file.display()))?;
    let sha256 = super::sha256_hex(&bytes);
    let what = Signed::of(source, &sha256);
    let signature = signing::sign(key, password, &what, &bytes)?;
    let signer = signing::signer_of(&signature).unwrap_or_default();
    let config = serde_json::json!({
        "created": aws_smithy_types::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [format!("sha256:{sha256}")],
        "component": {
            "exports": exports,
            "imports": imports,
            "target": null,
        },
    });
    let size = bytes.len();
    let manifest = Registry::new(source)
        .push(bytes, serde_json::to_vec(&config)?, &signature)
        .await?;
    Ok(PublishReport {
        source: source.to_string(),
        signature_tag: super::registry::signature_tag(&manifest),
        manifest,
        sha256,
        signer,
        size,
    })
}

/// What `heet plugins keygen` wrote.
#[derive(Debug, Serialize)]
pub struct KeygenReport {
    pub secret_key: PathBuf,
    pub public_key_file: PathBuf,
    pub key_id: String,
    /// The public key line, as `plugins.trust` takes it.
    pub public_key: String,
    pub encrypted: bool,
}

impl fmt::Display for KeygenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} (secret, mode 0600{}) and {}\nkey id {}\nprojects that trust this key add to heet.toml:\n[[plugins.trust.keys]]\npublic_key = \"{}\"\nscope = \"NAMESPACE/*\"",
            self.secret_key.display(),
            if self.encrypted {
                ", password-protected"
            } else {
                ""
            },
            self.public_key_file.display(),
            self.key_id,
            self.public_key
        )
    }
}

pub fn keygen(base: &Path, password: Option<String>) -> anyhow::Result<KeygenReport> {
    let encrypted = password.is_some();
    let (key_id, public_key) = signing::keygen(base, password)?;
    Ok(KeygenReport {
        secret_key: signing::key_files(base).0,
        public_key_file: signing::key_files(base).1,
        key_id,
        public_key,
        encrypted,
    })
}
