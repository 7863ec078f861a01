//! Plugins written in JavaScript or Python: a folder with a `heet-plugin.toml`, its source
//! and `wit/world.wit` (the world it exports), built into a component by the language's own
//! component toolchain with stub WASI, so the component imports nothing but heet's
//! interfaces and the sandbox is the same as for Rust.
//!
//! - JavaScript: `jco componentize` with the QuickJS backend (npm `@bytecodealliance/jco`).
//! - Python: `componentize-py componentize --stub-wasi` (PyPI `componentize-py`).
//!
//! heet's own WIT is written under `wit/deps/heet/` of a copy of the plugin's `wit/`, so a
//! plugin always builds against the contract of the heet that builds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::build::Built;

/// The manifest of a plugin folder that is not a Rust crate.
pub const MANIFEST: &str = "heet-plugin.toml";

const WIT: &str = include_str!("../../../wit/heet.wit");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Js,
    Python,
}

/// `heet-plugin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The component's file name: `<name>.wasm`.
    pub name: String,
    pub lang: Lang,
    /// The module: `guard.js`, or `app.py` (imported as `app`).
    pub source: String,
    /// The world of `wit/world.wit` it implements, e.g. `guard-plugin`.
    pub world: String,
}

impl Manifest {
    pub fn load(dir: &Path) -> anyhow::Result<Option<Manifest>> {
        let file = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        // Its place as heet.toml's errors give it; exit 1 as for any build failure.
        let manifest: Manifest = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                crate::definition::DefinitionError::from_toml(&file, &text, &e)
            )
        })?;
        crate::namespace::check_name("plugin", &manifest.name)
            .map_err(|m| anyhow::anyhow!("{}: name: {m}", file.display()))?;
        Ok(Some(manifest))
    }
}

/// The toolchain program for `lang`: `HEET_JCO` / `HEET_COMPONENTIZE_PY`, else the one
/// heet's setup installs under `~/.cache/heet`, else the one on the PATH.
fn toolchain(lang: Lang) -> PathBuf {
    let (var, cached, program) = match lang {
        Lang::Js => ("HEET_JCO", "jco/node_modules/.bin/jco", "jco"),
        Lang::Python => (
            "HEET_COMPONENTIZE_PY",
            "py-venv/bin/componentize-py",
            "componentize-py",
        ),
    };
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    let cached = dirs::cache_dir().map(|d| d.join("heet").join(cached));
    cached
        .filter(|p| p.is_file())
        .unwrap_or_else(|| program.into())
}

fn install_hint(lang: Lang) -> &'static str {
    match lang {
        Lang::Js => "npm install -g @bytecodealliance/jco (or set HEET_JCO)",
        Lang::Python => "pip install componentize-py (or set HEET_COMPONENTIZE_PY)",
    }
}

/// Builds the plugin in `dir` into `out_dir/<name>.wasm`.
pub fn build(dir: &Path, manifest: &Manifest, out_dir: &Path) -> anyhow::Result<Built> {
    // The toolchain runs in the plugin's folder: every path it is given is absolute.
    let dir = &std::path::absolute(dir)?;
    let out_dir = &std::path::absolute(out_dir)?;
    let world = dir.join("wit").join("world.wit");
    if !world.is_file() {
        bail!(
            "{}: a {} plugin needs wit/world.wit, the world it exports (`world {} {{ include heet:plugin/base@0.1.2; export heet:plugin/guard@0.1.2; }}`)",
            dir.display(),
            match manifest.lang {
                Lang::Js => "JavaScript",
                Lang::Python => "Python",
            },
            manifest.world
        );
    }
    let source = dir.join(&manifest.source);
    if !source.is_file() {
        bail!(
            "{}: source {} does not exist",
            dir.join(MANIFEST).display(),
            source.display()
        );
    }
    // The plugin's WIT with heet's beside it, in a folder of its own.
    let wit = tempfile::tempdir()?;
    std::fs::copy(&world, wit.path().join("world.wit"))?;
    std::fs::create_dir_all(wit.path().join("deps/heet"))?;
    std::fs::write(wit.path().join("deps/heet/heet.wit"), WIT)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let out = out_dir.join(format!("{}.wasm", manifest.name));
    let program = toolchain(manifest.lang);
    let mut cmd = Command::new(&program);
    match manifest.lang {
        Lang::Js => {
            cmd.arg("componentize")
                .arg(&source)
                .arg("-w")
                .arg(wit.path())
                .args(["-n", &manifest.world])
                .args([
                    "--backend",
                    "qjs",
                    "--backend-qjs-stub-wasi",
                    "--backend-qjs-disable-async",
                ])
                .arg("-o")
                .arg(&out);
        }
        Lang::Python => {
            let module = manifest
                .source
                .strip_suffix(".py")
                .with_context(|| format!("{}: a Python source ends in .py", manifest.name))?;
            cmd.arg("-d")
                .arg(wit.path())
                .args(["-w", &manifest.world, "componentize", "--stub-wasi"])
                .args(["-p", "."])
                .arg(module)
                .arg("-o")
                .arg(&out);
        }
    }
    tracing::info!("building plugin {} ({:?})", manifest.name, manifest.lang);
    let output = cmd.current_dir(dir).output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {}: {e}; install it: {}",
            program.display(),
            install_hint(manifest.lang)
        )
    })?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            program.display(),
            output.status,
            crate::text::shown(String::from_utf8_lossy(&output.stderr).trim())
        );
    }
    let bytes = std::fs::read(&out).with_context(|| format!("cannot read {}", out.display()))?;
    Ok(Built {
        name: manifest.name.clone(),
        path: out,
        bytes: bytes.len(),
        sha256: super::sha256_hex(&bytes),
    })
}
