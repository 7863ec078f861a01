//! Plugins: load the `*.wasm` components of the plugin folder into a sandbox and chain their
//! hooks.
//!
//! The sandbox is wasmtime's component model with nothing linked but `host.log`: no WASI, so
//! no files, clock, network or environment. Each call runs under a fuel budget, an epoch
//! deadline and a memory cap ([`Limits`]); any breach or trap becomes a [`PluginError`] naming
//! the plugin and the hook, and the run stops before AWS is touched.

pub mod build;
mod cache;
pub mod grants;
pub mod harness;
pub mod languages;
pub mod lock;
pub mod registry;
mod runtime;
pub mod scaffold;
pub mod share;
pub mod signing;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::definition::{Definition, DefinitionError};
use crate::validate;
pub use runtime::{Plugin, Prepared, Runtime, api};

use api::{
    DesiredState, InstanceContext, RoleContext, RoleSize, Tag, TaskContext, TaskScript, Violation,
};

/// Per-call limits of a plugin. Defaults are documented in docs/plugins.md and overridable
/// in `[plugins.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one hook call may burn.
    pub fuel: u64,
    /// Linear memory one plugin instance may grow to.
    pub memory_bytes: u64,
    /// Wall-clock budget of one hook call.
    pub timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: 100_000_000,
            memory_bytes: 64 << 20,
            timeout_ms: 1_000,
        }
    }
}

/// The hooks of the WIT contract, in the order heet calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Configure,
    Sizing,
    Naming,
    Tags,
    Cnames,
    UserData,
    Guard,
    /// Called by `heet run`, not by a plan.
    Tasks,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::Configure,
        Hook::Sizing,
        Hook::Naming,
        Hook::Tags,
        Hook::Cnames,
        Hook::UserData,
        Hook::Guard,
        Hook::Tasks,
    ];

    /// The WIT interface name, as in `heet:plugin/<name>@0.1.2`.
    pub fn interface(self) -> &'static str {
        match self {
            Hook::Configure => "configure",
            Hook::Sizing => "sizing",
            Hook::Naming => "naming",
            Hook::Tags => "tags",
            Hook::Cnames => "cnames",
            Hook::UserData => "user-data",
            Hook::Guard => "guard",
            Hook::Tasks => "tasks",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.interface())
    }
}

/// A plugin that failed: trapped, broke a limit, or answered something heet refuses.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin}: hook {hook}: {}", crate::text::shown(.reason))]
pub struct PluginError {
    pub plugin: String,
    pub hook: Hook,
    pub reason: String,
}

/// A plugin file that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin} ({}): {}", file.display(), crate::text::shown(.reason))]
pub struct LoadError {
    pub plugin: String,
    pub file: PathBuf,
    pub reason: String,
}

/// What the host asks the plugins, in chain order. [`PluginSet`] answers through wasm; code
/// that computes desired state depends only on this trait, so it is tested without wasm.
pub trait Hooks {
    fn size(&mut self, ctx: &RoleContext, current: RoleSize) -> Result<RoleSize, PluginError>;
    fn name(&mut self, ctx: &InstanceContext, current: String) -> Result<String, PluginError>;
    fn tags(&mut self, ctx: &InstanceContext, current: Vec<Tag>) -> Result<Vec<Tag>, PluginError>;
    fn cnames(
        &mut self,
        ctx: &InstanceContext,
        current: Vec<String>,
    ) -> Result<Vec<String>, PluginError>;
    fn user_data(&mut self, ctx: &InstanceContext, current: String) -> Result<String, PluginError>;
    /// Every violation of every guard plugin, each with the plugin that found it.
    fn guard(&mut self, state: &DesiredState) -> Result<Vec<(String, Violation)>, PluginError>;
}

fn list_wasm(def: &Definition, dir: &Path) -> Result<Vec<PluginFile>, DefinitionError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DefinitionError {
        file: def.file.clone(),
        at: None,
        message: format!("plugins.dir: cannot list {}: {e}", dir.display()),
    })?;
    let mut found: Vec<PluginFile> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            Some(PluginFile { name, path })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A plugin file found in the plugin folder.
#[derive(Debug, Clone)]
pub struct PluginFile {
    pub name: String,
    pub path: PathBuf,
}

/// Lists `*.wasm` in `dir` in chain order: the names in `order` first, the rest by file name.
pub fn discover(def: &Definition) -> Result<Vec<PluginFile>, DefinitionError> {
    let dir = &def.plugins.dir;
    let mut found = if dir.is_dir() {
        list_wasm(def, dir)?
    } else if def.plugins.dir_explicit {
        return Err(DefinitionError {
            file: def.file.clone(),
            at: None,
            message: format!("plugins.dir: {} is not a folder", dir.display()),
        });
    } else {
        // No default folder just means no plugins; order and config are still checked.
        Vec::new()
    };

    let mut ordered = Vec::new();
    for (name, at) in &def.plugins.order {
        let Some(i) = found.iter().position(|p| &p.name == name) else {
            return Err(def.error_at(
                *at,
                format!("plugins.order: no plugin {name:?} in {}", dir.display()),
            ));
        };
        ordered.push(found.remove(i));
    }
    ordered.extend(found);

    let names: BTreeSet<&str> = ordered.iter().map(|p| p.name.as_str()).collect();
    for (name, (_, at)) in &def.plugins.config {
        if !names.contains(name.as_str()) {
            return Err(def.error_at(
                *at,
                format!(
                    "plugins.config.{name}: no plugin {name:?} in {}",
                    dir.display()
                ),
            ));
        }
    }
    for (name, grant) in &def.plugins.grants {
        if !names.contains(name.as_str()) {
            return Err(def.error_at(
                grant.at,
                format!(
                    "plugins.grants.{name}: no plugin {name:?} in {}",
                    dir.display()
                ),
            ));
        }
    }
    Ok(ordered)
}

/// The grant `plugin` loads under, checked against what it exports: `None` when it has none
/// and none is required. A hook exported but not granted, or a missing grant where
/// `require_grants` is set, refuses the plugin (a definition error at the grant).
pub fn granted<'d>(
    def: &'d Definition,
    plugin: &str,
    exports: &[Hook],
) -> Result<Option<&'d grants::Grant>, DefinitionError> {
    let exported = || {
        let names: Vec<&str> = exports.iter().map(|h| h.interface()).collect();
        names.join(", ")
    };
    let Some(grant) = def.plugins.grants.get(plugin) else {
        return match def.plugins.require_grants {
            Some(at) => Err(def.error_at(
                at,
                format!(
                    "plugins.require_grants: plugin {plugin} has no grant; add [plugins.grants.{plugin}] with the hooks it may answer (it exports {})",
                    exported()
                ),
            )),
            None => Ok(None),
        };
    };
    let refused = grant.refused(exports);
    if !refused.is_empty() {
        let names: Vec<&str> = refused.iter().map(|h| h.interface()).collect();
        return Err(def.error_at(
            grant.at,
            format!(
                "plugins.grants.{plugin}: plugin {plugin} exports {}, which its grant (hooks = {}) does not allow; it was not loaded",
                names.join(", "),
                grant.hooks_written()
            ),
        ));
    }
    Ok(Some(grant))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The loaded plugins of one run, in chain order, each with its grant.
pub struct PluginSet {
    plugins: Vec<(runtime::Plugin, Option<grants::Grant>)>,
}

impl PluginSet {
    /// The stacks' outputs the plugins' `host.stack-output` answers from: those of the
    /// stacks as they are when the plan is made.
    pub fn set_outputs(&mut self, outputs: crate::kinds::stacks::Outputs) {
        let outputs = std::sync::Arc::new(outputs);
        for (plugin, _) in &mut self.plugins {
            plugin.set_outputs(outputs.clone());
        }
    }

    /// Loads, instantiates and configures every plugin of the definition, each only if
    /// heet.lock pins its bytes.
    pub fn load(runtime: &Runtime, def: &Definition) -> anyhow::Result<PluginSet> {
        let files = discover(def)?;
        let lock = lock::Lock::load(def)?;
        lock::verify(def, &lock, &files)?;
        lock::trusted(def, &lock, &files)?;
        let mut plugins = Vec::new();
        for file in files {
            let config = def.plugins.config.get(&file.name);
            let pinned = lock.pinned(&file.name).unwrap_or_default();
            let prepared = runtime.prepare(&file, pinned)?;
            // Before it is instantiated: a plugin refused runs no code at all.
            let grant = granted(def, &file.name, &prepared.exports())?.cloned();
            let mut plugin = prepared.instantiate(def.plugins.limits)?;
            let json = config.map_or("{}", |(json, _)| json.as_str());
            if let Err(errors) = plugin.configure(json)? {
                let message = format!(
                    "plugins.config.{}: plugin {} rejected its config: {}",
                    file.name,
                    file.name,
                    crate::text::shown(&errors.join("; "))
                );
                return Err(match config {
                    Some((_, at)) => def.error_at(*at, message),
                    None => DefinitionError {
                        file: def.file.clone(),
                        at: None,
                        message,
                    },
                }
                .into());
            }
            plugins.push((plugin, grant));
        }
        Ok(PluginSet { plugins })
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Passes `current` through every plugin that exports `hook` and whose grant covers
    /// `role` in `env`; each answer is checked by `check` before the next plugin sees it.
    fn chain<T>(
        &mut self,
        hook: Hook,
        (role, env): (&str, &str),
        mut current: T,
        call: impl Fn(&mut runtime::Plugin, &T) -> Option<Result<Option<T>, PluginError>>,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> Result<T, PluginError> {
        for (plugin, grant) in &mut self.plugins {
            if grant.as_ref().is_some_and(|g| !g.covers(role, env)) {
                continue;
            }
            let Some(answer) = call(plugin, &current) else {
                continue;
            };
            if let Some(value) = answer? {
                check(&value).map_err(|reason| PluginError {
                    plugin: plugin.name.clone(),
                    hook,
                    reason: format!("invalid answer: {reason}"),
                })?;
                current = value;
            }
        }
        Ok(current)
    }

    /// A task's script and environment for one role, through every plugin that exports
    /// `tasks` and whose grant covers the role in the environment (`heet run`).
    pub fn task(
        &mut self,
        ctx: &TaskContext,
        current: TaskScript,
    ) -> Result<TaskScript, PluginError> {
        self.chain(
            Hook::Tasks,
            (&ctx.role, &ctx.env),
            current,
            |p, cur| p.shape(ctx, cur),
            check_task,
        )
    }
}

impl Hooks for PluginSet {
    fn size(&mut self, ctx: &RoleContext, current: RoleSize) -> Result<RoleSize, PluginError> {
        self.chain(
            Hook::Sizing,
            (&ctx.role, &ctx.env),
            current,
            |p, cur| p.size(ctx, cur),
            check_size,
        )
    }

    fn name(&mut self, ctx: &InstanceContext, current: String) -> Result<String, PluginError> {
        self.chain(
            Hook::Naming,
            (&ctx.role, &ctx.env),
            current,
            |p, cur| p.name(ctx, cur),
            |name| check_name(name),
        )
    }

    fn tags(&mut self, ctx: &InstanceContext, current: Vec<Tag>) -> Result<Vec<Tag>, PluginError> {
        self.chain(
            Hook::Tags,
            (&ctx.role, &ctx.env),
            current,
            |p, cur| p.tags(ctx, cur),
            |tags| check_tags(tags),
        )
    }

    fn cnames(
        &mut self,
        ctx: &InstanceContext,
        current: Vec<String>,
    ) -> Result<Vec<String>, PluginError> {
        self.chain(
            Hook::Cnames,
            (&ctx.role, &ctx.env),
            current,
            |p, cur| p.cnames(ctx, cur),
            |names| check_cnames(ctx.domain.as_deref(), names),
        )
    }

    fn user_data(&mut self, ctx: &InstanceContext, current: String) -> Result<String, PluginError> {
        self.chain(
            Hook::UserData,
            (&ctx.role, &ctx.env),
            current,
            |p, cur| p.user_data(ctx, cur),
            |data| validate::check_user_data(data),
        )
    }

    fn guard(&mut self, state: &DesiredState) -> Result<Vec<(String, Violation)>, PluginError> {
        let mut all = Vec::new();
        for (plugin, grant) in &mut self.plugins {
            let found = match grant {
                None => plugin.validate(state),
                Some(g) if !g.in_env(&state.env) => None,
                Some(g) => plugin.validate(&scoped(state, g)),
            };
            if let Some(found) = found {
                all.extend(found?.into_iter().map(|v| (plugin.name.clone(), v)));
            }
        }
        Ok(all)
    }
}

/// What heet accepts of a sizing answer (in every chain, and in `heet plugins test`).
pub(crate) fn check_size(size: &RoleSize) -> Result<(), String> {
    validate::check_instance_type(&size.instance_type)?;
    if size.count > crate::definition::MAX_COUNT {
        return Err(format!(
            "count {} is more than {}",
            size.count,
            crate::definition::MAX_COUNT
        ));
    }
    match size.volume_gb {
        Some(gb) if !(1..=16_384).contains(&gb) => {
            Err(format!("volume of {gb} GiB is outside 1..=16384"))
        }
        _ => Ok(()),
    }
}

/// The largest script a tasks answer may hold: SSM takes it as a command parameter, and
/// a script far beyond this belongs in a file on the instance.
pub const MAX_TASK_SCRIPT: usize = 64 * 1024;

/// What heet accepts of a tasks answer: a script that is not empty, and variables with
/// shell names of their own (`HEET_*` is heet's), each once, with no NUL in a value.
pub(crate) fn check_task(task: &TaskScript) -> Result<(), String> {
    if task.script.trim().is_empty() {
        return Err("empty script".into());
    }
    if task.script.len() > MAX_TASK_SCRIPT {
        return Err(format!(
            "script of {} bytes, more than {MAX_TASK_SCRIPT}",
            task.script.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for var in &task.env {
        let name = var.name.as_str();
        let shell_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !shell_name {
            return Err(format!(
                "variable {name:?} is not a shell name (letters, digits and _, not first a digit)"
            ));
        }
        if name.starts_with("HEET_") {
            return Err(format!(
                "variable {name} is heet's (HEET_* are set by heet)"
            ));
        }
        if var.value.contains('\0') {
            return Err(format!("variable {name} holds a NUL"));
        }
        if !seen.insert(name) {
            return Err(format!("variable {name} appears twice"));
        }
    }
    Ok(())
}

/// What heet accepts of a naming answer.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    validate::check_tag("Name", name)
}

/// What heet accepts of a tags answer.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<(), String> {
    let room = validate::MAX_TAGS - crate::namespace::OWN_TAGS;
    if tags.len() > room {
        return Err(format!(
            "{} tags, more than the {room} left by heet's own",
            tags.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for tag in tags {
        validate::check_tag(&tag.key, &tag.value)?;
        if tag.key == crate::namespace::TAG_NAME {
            return Err("tag Name belongs to the naming hook".into());
        }
        if !seen.insert(tag.key.as_str()) {
            return Err(format!("tag {:?} appears twice", tag.key));
        }
    }
    Ok(())
}

/// What heet accepts of a cnames answer, in a project with `domain`.
pub(crate) fn check_cnames(domain: Option<&str>, names: &[String]) -> Result<(), String> {
    let Some(domain) = domain else {
        return match names.first() {
            Some(n) => Err(format!(
                "CNAME {n:?} needs a zone, and the project has no domain"
            )),
            None => Ok(()),
        };
    };
    let mut seen = BTreeSet::new();
    for name in names {
        validate::check_dns_name(name)?;
        validate::check_dns_name(&format!("{name}.{domain}"))?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!("CNAME {name:?} appears twice"));
        }
    }
    Ok(())
}

/// What a guard limited to some roles sees of `state`: only those roles' instances, and the
/// rules of their groups.
fn scoped(state: &DesiredState, grant: &grants::Grant) -> DesiredState {
    let Some(roles) = &grant.roles else {
        return state.clone();
    };
    DesiredState {
        instances: state
            .instances
            .iter()
            .filter(|i| roles.contains(&i.role))
            .cloned()
            .collect(),
        firewall: state
            .firewall
            .iter()
            .filter(|r| roles.contains(&r.role))
            .cloned()
            .collect(),
        ..state.clone()
    }
}

/// What `heet plugins list` shows of one plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    pub hooks: Vec<Hook>,
    /// WIT package versions the plugin's exports were built against.
    pub wit: Vec<String>,
    /// Whether heet.lock pins these bytes.
    pub lock: LockState,
    /// Its grant, when it has one.
    pub grant: Option<GrantInfo>,
}

/// A plugin's grant as `heet plugins list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrantInfo {
    pub hooks: Vec<Hook>,
    /// `null`: every role.
    pub roles: Option<Vec<String>>,
    /// `null`: every environment.
    pub envs: Option<Vec<String>>,
    /// Hooks the plugin exports that the grant does not allow: it would be refused at load.
    pub refused: Vec<Hook>,
}

impl std::fmt::Display for GrantInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hooks: Vec<&str> = self.hooks.iter().map(|h| h.interface()).collect();
        write!(f, "{}", hooks.join(","))?;
        let all = |v: &Option<Vec<String>>| v.as_ref().map_or("*".to_owned(), |v| v.join(","));
        write!(f, " roles={} envs={}", all(&self.roles), all(&self.envs))?;
        if !self.refused.is_empty() {
            let refused: Vec<&str> = self.refused.iter().map(|h| h.interface()).collect();
            write!(f, " (refused: exports {})", refused.join(","))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    Locked,
    Unlocked,
    Differs,
}

impl std::fmt::Display for LockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockState::Locked => "locked",
            LockState::Unlocked => "unlocked",
            LockState::Differs => "differs from heet.lock",
        })
    }
}

/// Describes each plugin file without configuring or calling it. A plugin that is not a
/// loadable component is an error, so a lock is never written for one.
pub fn inspect(runtime: &Runtime, def: &Definition) -> anyhow::Result<Vec<PluginInfo>> {
    let lock = lock::Lock::load(def)?;
    discover(def)?
        .iter()
        .map(|file| {
            let mut info = runtime.inspect(file)?;
            info.grant = def.plugins.grants.get(&file.name).map(|g| GrantInfo {
                hooks: g.hooks.iter().copied().collect(),
                roles: g.roles.as_ref().map(|r| r.iter().cloned().collect()),
                envs: g.envs.as_ref().map(|e| e.iter().cloned().collect()),
                refused: g.refused(&info.hooks),
            });
            info.lock = match lock.pinned(&file.name) {
                None => LockState::Unlocked,
                Some(sha) if sha == info.sha256 => LockState::Locked,
                Some(_) => LockState::Differs,
            };
            Ok(info)
        })
        .collect()
}

/// Where compiled plugins are cached: `HEET_CACHE_DIR`, else the user's cache folder.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HEET_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("heet")))
        .map(|d| d.join("plugins"))
}

pub(crate) fn read_plugin(path: &Path, name: &str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError {
        plugin: name.to_owned(),
        file: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })
}
