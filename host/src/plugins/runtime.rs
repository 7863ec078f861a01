//! The wasmtime side of plugins: engine, linker with only `host.log`, limits, and typed calls.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{
    Component, HasSelf, Instance, InstancePre, Linker, types::ComponentItem,
};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

use super::{
    Hook, Limits, LoadError, PluginError, PluginFile, PluginInfo, cache, read_plugin, sha256_hex,
};

mod bindings {
    wasmtime::component::bindgen!({
        world: "full",
        path: "../wit",
    });
}

/// The WIT records as Rust types: the whole vocabulary shared with plugins.
pub mod api {
    pub use super::bindings::heet::plugin::types::*;
}

use bindings::exports::heet::plugin as ex;

/// The WIT package a plugin must be built against; only `host` and `types` may be imported.
const WIT_PACKAGE: &str = "heet:plugin";
const WIT_VERSION: &str = "0.1.2";
/// How often the epoch ticks: the granularity of `timeout_ms`.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// A plugin's log line is cut here, and a call may log this many lines: a hostile plugin must
/// not be able to flood the host's output.
const MAX_LOG_LINE: usize = 4096;
const MAX_LOG_LINES_PER_CALL: u32 = 200;

/// One engine and linker for all plugins of a process, and the thread that ticks the epoch.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasm engine")?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("heet-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the epoch thread")?;
        let mut linker = Linker::new(&engine);
        bindings::heet::plugin::host::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
        })
    }

    fn compile(&self, file: &PluginFile) -> Result<(Component, String), LoadError> {
        let bytes = read_plugin(&file.path, &file.name)?;
        let sha = sha256_hex(&bytes);
        let component = cache::compile(&self.engine, &bytes, &sha).map_err(|e| LoadError {
            plugin: file.name.clone(),
            file: file.path.clone(),
            reason: format!("not a valid component: {e:#}"),
        })?;
        Ok((component, sha))
    }

    /// Refuses a component that imports anything but heet's host interface, naming every
    /// offending import (instantiation would name only the first).
    fn check_imports(&self, file: &PluginFile, component: &Component) -> Result<(), LoadError> {
        let ty = component.component_type();
        // An earlier compatible version's imports link to this one's (wasmtime matches names
        // semver-compatibly), so a plugin built against 0.1.0 imports `host@0.1.0`.
        let ours = |name: &str| {
            let Some(rest) = name.strip_prefix(WIT_PACKAGE) else {
                return false;
            };
            match rest.split_once('@') {
                Some(("/host" | "/types", version)) => compatible(version),
                _ => false,
            }
        };
        let foreign: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| !ours(name))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        Err(LoadError {
            plugin: file.name.clone(),
            file: file.path.clone(),
            reason: format!(
                "imports {}, which heet does not provide (plugins get {WIT_PACKAGE}/host@{WIT_VERSION} only: no WASI, files, clock or network)",
                foreign.join(", ")
            ),
        })
    }

    /// Exports that look like heet hooks but of another WIT version.
    fn wit_versions(&self, component: &Component) -> Vec<String> {
        let mut versions: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .filter_map(|(name, item)| {
                matches!(item.ty, ComponentItem::ComponentInstance(_)).then_some(name)?;
                let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
                Some(rest.split_once('@').map_or("", |(_, v)| v).to_owned())
            })
            .collect();
        versions.sort();
        versions.dedup();
        versions
    }

    fn check_version(&self, file: &PluginFile, component: &Component) -> Result<(), LoadError> {
        let other: Vec<String> = self
            .wit_versions(component)
            .into_iter()
            .filter(|v| !compatible(v))
            .collect();
        if other.is_empty() {
            return Ok(());
        }
        Err(LoadError {
            plugin: file.name.clone(),
            file: file.path.clone(),
            reason: format!(
                "built against {WIT_PACKAGE}@{}, but this heet speaks {WIT_PACKAGE}@{WIT_VERSION}",
                other.join(", ")
            ),
        })
    }

    pub fn inspect(&self, file: &PluginFile) -> anyhow::Result<PluginInfo> {
        let (component, sha256) = self.compile(file)?;
        let pre = self.pre(file, &component)?;
        Ok(PluginInfo {
            name: file.name.clone(),
            file: file.path.clone(),
            sha256,
            hooks: exports(&pre),
            wit: self.wit_versions(&component),
            lock: super::LockState::Unlocked,
            grant: None,
        })
    }

    fn pre(
        &self,
        file: &PluginFile,
        component: &Component,
    ) -> Result<InstancePre<HostState>, LoadError> {
        self.check_imports(file, component)?;
        self.check_version(file, component)?;
        self.linker
            .instantiate_pre(component)
            .map_err(|e| LoadError {
                plugin: file.name.clone(),
                file: file.path.clone(),
                reason: format!("cannot be linked: {e:#}"),
            })
    }

    /// Compiles (or takes from the cache) and instantiates one plugin in its own store.
    /// `pinned` is the sha256 from heet.lock: the bytes compiled are checked against it, so a
    /// file swapped after the lock was verified is refused too.
    pub fn instantiate(
        &self,
        file: &PluginFile,
        limits: Limits,
        pinned: &str,
    ) -> anyhow::Result<Plugin> {
        self.prepare(file, pinned)?.instantiate(limits)
    }

    /// The names of everything the component exports and imports, as its Wasm OCI config
    /// lists them.
    pub fn interfaces(&self, file: &PluginFile) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (component, _) = self.compile(file)?;
        // Linking it as a plan would refuses a component that imports WASI.
        self.pre(file, &component)?;
        let ty = component.component_type();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        Ok((exports, imports))
    }

    /// Compiles (or takes from the cache), checks and links one plugin, ready to be
    /// instantiated.
    pub fn prepare(&self, file: &PluginFile, pinned: &str) -> anyhow::Result<Prepared> {
        let (component, sha) = self.compile(file)?;
        if sha != pinned {
            return Err(LoadError {
                plugin: file.name.clone(),
                file: file.path.clone(),
                reason: format!(
                    "changed while heet was loading it: sha256 {sha} is not the locked {pinned}"
                ),
            }
            .into());
        }
        Ok(Prepared {
            pre: self.pre(file, &component)?,
            file: file.clone(),
            engine: self.engine.clone(),
        })
    }
}

/// A plugin compiled, checked and linked: what instantiating it needs.
pub struct Prepared {
    pre: InstancePre<HostState>,
    file: PluginFile,
    engine: Engine,
}

impl Prepared {
    /// The hooks the plugin exports, known before it is instantiated.
    pub fn exports(&self) -> Vec<Hook> {
        exports(&self.pre)
    }

    /// A fresh instance in a store of its own, under `limits`.
    pub fn instantiate(&self, limits: Limits) -> anyhow::Result<Plugin> {
        let (file, pre) = (&self.file, &self.pre);
        let state = HostState {
            plugin: file.name.clone(),
            memory_cap: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            memory_breach: None,
            last_error_log: None,
            log_lines: 0,
            outputs: Arc::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        let mut plugin = Plugin {
            name: file.name.clone(),
            limits,
            store,
            hooks: Exports::default(),
        };
        let instance = plugin
            .guarded(Hook::Configure, |store| pre.instantiate(store))
            .map_err(|e| PluginError {
                reason: format!("cannot be instantiated: {}", e.reason),
                ..e
            })?;
        plugin.hooks = Exports::load(pre, &mut plugin.store, &instance).map_err(|e| LoadError {
            plugin: file.name.clone(),
            file: file.path.clone(),
            reason: format!("exports do not match {WIT_PACKAGE}@{WIT_VERSION}: {e:#}"),
        })?;
        Ok(plugin)
    }
}

/// Versions of the same major (or, before 1.0, the same minor) are compatible.
fn compatible(version: &str) -> bool {
    let key = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        let (major, minor) = (parts.next()??, parts.next()??);
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    key(version).is_some() && key(version) == key(WIT_VERSION)
}

fn exports(pre: &InstancePre<HostState>) -> Vec<Hook> {
    Hook::ALL
        .into_iter()
        .filter(|h| exports_hook(pre, *h))
        .collect()
}

fn exports_hook(pre: &InstancePre<HostState>, hook: Hook) -> bool {
    match hook {
        Hook::Configure => ex::configure::GuestIndices::new(pre).is_ok(),
        Hook::Sizing => ex::sizing::GuestIndices::new(pre).is_ok(),
        Hook::Naming => ex::naming::GuestIndices::new(pre).is_ok(),
        Hook::Tags => ex::tags::GuestIndices::new(pre).is_ok(),
        Hook::Cnames => ex::cnames::GuestIndices::new(pre).is_ok(),
        Hook::UserData => ex::user_data::GuestIndices::new(pre).is_ok(),
        Hook::Guard => ex::guard::GuestIndices::new(pre).is_ok(),
        Hook::Tasks => ex::tasks::GuestIndices::new(pre).is_ok(),
    }
}

/// The hook interfaces one plugin exports; `None` where it has no opinion at all.
#[derive(Default)]
struct Exports {
    configure: Option<ex::configure::Guest>,
    sizing: Option<ex::sizing::Guest>,
    naming: Option<ex::naming::Guest>,
    tags: Option<ex::tags::Guest>,
    cnames: Option<ex::cnames::Guest>,
    user_data: Option<ex::user_data::Guest>,
    guard: Option<ex::guard::Guest>,
    tasks: Option<ex::tasks::Guest>,
}

impl Exports {
    fn load(
        pre: &InstancePre<HostState>,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> anyhow::Result<Exports> {
        macro_rules! load {
            ($iface:ident) => {
                match ex::$iface::GuestIndices::new(pre) {
                    Ok(indices) => Some(indices.load(&mut *store, instance)?),
                    Err(_) => None,
                }
            };
        }
        Ok(Exports {
            configure: load!(configure),
            sizing: load!(sizing),
            naming: load!(naming),
            tags: load!(tags),
            cnames: load!(cnames),
            user_data: load!(user_data),
            guard: load!(guard),
            tasks: load!(tasks),
        })
    }
}

/// Per-store host state: which plugin this is, and what it did that the host must report.
pub struct HostState {
    plugin: String,
    memory_cap: usize,
    memory_breach: Option<String>,
    /// The plugin SDK logs a panic's message at error level just before the trap.
    last_error_log: Option<String>,
    log_lines: u32,
    /// The stacks' outputs `host.stack-output` answers from.
    outputs: Arc<crate::kinds::stacks::Outputs>,
}

impl bindings::heet::plugin::types::Host for HostState {}

impl bindings::heet::plugin::host::Host for HostState {
    fn stack_output(&mut self, stack: String, output: String) -> Option<String> {
        self.outputs.get(&stack)?.get(&output).cloned()
    }

    fn log(&mut self, level: api::Level, mut message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            return;
        }
        // Bounded here, as the panic message a trap reports it; escaped wherever printed.
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.as_str();
        let shown = crate::text::shown(&message);
        match level {
            api::Level::Trace => tracing::trace!(target: "heet::plugin", plugin, "{shown}"),
            api::Level::Debug => tracing::debug!(target: "heet::plugin", plugin, "{shown}"),
            api::Level::Info => tracing::info!(target: "heet::plugin", plugin, "{shown}"),
            api::Level::Warn => tracing::warn!(target: "heet::plugin", plugin, "{shown}"),
            api::Level::Error => {
                tracing::debug!(target: "heet::plugin", plugin, "{shown}");
                self.last_error_log = Some(message);
            }
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            let why = format!(
                "tried to grow its memory to {} MiB, over its limit of {} MiB (plugins.limits.memory_mb)",
                desired >> 20,
                self.memory_cap >> 20
            );
            self.memory_breach = Some(why.clone());
            return Err(wasmtime::Error::msg(why));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// One instantiated plugin with its own store.
pub struct Plugin {
    pub name: String,
    limits: Limits,
    store: Store<HostState>,
    hooks: Exports,
}

impl Plugin {
    /// What `host.stack-output` answers from now on.
    pub fn set_outputs(&mut self, outputs: Arc<crate::kinds::stacks::Outputs>) {
        self.store.data_mut().outputs = outputs;
    }

    /// Runs `f` under this plugin's limits and turns any failure into a [`PluginError`].
    fn guarded<R>(
        &mut self,
        hook: Hook,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let ticks = self
            .limits
            .timeout_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            .max(1);
        let prepared = self
            .store
            .set_fuel(self.limits.fuel)
            .map(|()| self.store.set_epoch_deadline(ticks));
        let state = self.store.data_mut();
        state.log_lines = 0;
        state.last_error_log = None;
        let result = prepared.and_then(|()| f(&mut self.store));
        result.map_err(|err| PluginError {
            plugin: self.name.clone(),
            hook,
            reason: self.reason(&err),
        })
    }

    fn reason(&mut self, err: &wasmtime::Error) -> String {
        let state = self.store.data_mut();
        if let Some(breach) = state.memory_breach.take() {
            return breach;
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!(
                "ran out of fuel ({} units, plugins.limits.fuel)",
                self.limits.fuel
            ),
            Some(Trap::Interrupt) => format!(
                "did not finish within {} ms (plugins.limits.timeout_ms)",
                self.limits.timeout_ms
            ),
            Some(Trap::StackOverflow) => "overflowed its stack".to_owned(),
            Some(Trap::UnreachableCodeReached) => match state.last_error_log.take() {
                Some(message) => message.replace('\n', " "),
                None => "trapped: unreachable code reached".to_owned(),
            },
            Some(trap) => format!("trapped: {trap}"),
            None => format!("{err:#}"),
        }
    }

    /// Hands the plugin its config. The outer error is the plugin failing; the inner one is
    /// the plugin refusing the config, which is the definition's fault.
    pub fn configure(&mut self, config_json: &str) -> Result<Result<(), Vec<String>>, PluginError> {
        let Some(guest) = self.hooks.configure.take() else {
            if config_json != "{}" {
                return Err(PluginError {
                    plugin: self.name.clone(),
                    hook: Hook::Configure,
                    reason: "has config in heet.toml but does not export the configure hook".into(),
                });
            }
            return Ok(Ok(()));
        };
        self.guarded(Hook::Configure, |s| guest.call_configure(s, config_json))
    }

    pub fn size(
        &mut self,
        ctx: &api::RoleContext,
        current: &api::RoleSize,
    ) -> Option<Result<Option<api::RoleSize>, PluginError>> {
        let guest = self.hooks.sizing.clone()?;
        Some(self.guarded(Hook::Sizing, |s| guest.call_size(s, ctx, current)))
    }

    pub fn name(
        &mut self,
        ctx: &api::InstanceContext,
        current: &str,
    ) -> Option<Result<Option<String>, PluginError>> {
        let guest = self.hooks.naming.clone()?;
        Some(self.guarded(Hook::Naming, |s| guest.call_name(s, ctx, current)))
    }

    pub fn tags(
        &mut self,
        ctx: &api::InstanceContext,
        current: &[api::Tag],
    ) -> Option<Result<Option<Vec<api::Tag>>, PluginError>> {
        let guest = self.hooks.tags.clone()?;
        Some(self.guarded(Hook::Tags, |s| guest.call_tags(s, ctx, current)))
    }

    pub fn cnames(
        &mut self,
        ctx: &api::InstanceContext,
        current: &[String],
    ) -> Option<Result<Option<Vec<String>>, PluginError>> {
        let guest = self.hooks.cnames.clone()?;
        Some(self.guarded(Hook::Cnames, |s| guest.call_cnames(s, ctx, current)))
    }

    pub fn user_data(
        &mut self,
        ctx: &api::InstanceContext,
        current: &str,
    ) -> Option<Result<Option<String>, PluginError>> {
        let guest = self.hooks.user_data.clone()?;
        Some(self.guarded(Hook::UserData, |s| guest.call_user_data(s, ctx, current)))
    }

    pub fn validate(
        &mut self,
        state: &api::DesiredState,
    ) -> Option<Result<Vec<api::Violation>, PluginError>> {
        let guest = self.hooks.guard.clone()?;
        Some(self.guarded(Hook::Guard, |s| guest.call_validate(s, state)))
    }

    pub fn shape(
        &mut self,
        ctx: &api::TaskContext,
        current: &api::TaskScript,
    ) -> Option<Result<Option<api::TaskScript>, PluginError>> {
        let guest = self.hooks.tasks.clone()?;
        Some(self.guarded(Hook::Tasks, |s| guest.call_shape(s, ctx, current)))
    }
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn wit_versions_are_compatible_within_a_minor_before_1_0() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.1"));
        assert!(compatible("0.1.2"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
        assert!(!compatible(""));
    }
}
