//! On-disk cache of compiled plugins, keyed by the component's sha256 and the engine's
//! compatibility hash: compiling a plugin costs ~100 ms, loading it from here well under 1 ms.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiles `bytes`, or loads the artifact an earlier run cached for the same bytes and engine.
/// The cache is an optimisation only: any trouble with it falls back to compiling.
pub fn compile(engine: &Engine, bytes: &[u8], sha256: &str) -> anyhow::Result<Component> {
    let Some(path) = artifact_path(engine, sha256) else {
        return Ok(Component::new(engine, bytes)?);
    };
    if path.is_file() {
        // SAFETY: the artifact was written by `Component::serialize` of this same engine
        // configuration (the compatibility hash is in the file name) into the user's own cache
        // folder, which heet trusts like its own binary. wasmtime still checks the header.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::debug!("ignoring unusable cache entry {}: {e:#}", path.display()),
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&path, &component) {
        tracing::debug!("cannot cache compiled plugin at {}: {e:#}", path.display());
    }
    Ok(component)
}

fn artifact_path(engine: &Engine, sha256: &str) -> Option<PathBuf> {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let dir = super::cache_dir()?;
    Some(dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish())))
}

fn store(path: &std::path::Path, component: &Component) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache path has a folder");
    std::fs::create_dir_all(dir)?;
    // Write then rename, so a concurrent run never reads a half-written artifact.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &component.serialize()?)?;
    tmp.persist(path)?;
    Ok(())
}
