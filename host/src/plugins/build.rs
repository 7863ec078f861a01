//! `heet plugins build`: find plugin crates in a cargo workspace, build them for
//! wasm32-unknown-unknown and wrap each core module into a component.
//!
//! A crate is a plugin when its manifest says `[package.metadata.heet] plugin = true`.
//! Plugin crates stay plain libraries, so they build and unit-test natively; the cdylib is
//! asked for only here, for wasm (`cargo rustc --crate-type cdylib`): a native cdylib would
//! not even link, as the component export names contain ':'.
//! `plugin = "fixture"` marks test fixtures, built only when named with `-p`.
//! A folder with a `heet-plugin.toml` is a JavaScript or Python plugin (`languages`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use cargo_metadata::{MetadataCommand, Package};

pub const TARGET: &str = "wasm32-unknown-unknown";
pub const PROFILE: &str = "plugin";

#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// `Cargo.toml` of the workspace holding the plugin crates.
    pub manifest_path: Option<PathBuf>,
    /// Crates to build; empty means every crate marked `plugin = true`.
    pub packages: Vec<String>,
    /// Where the components go; default `<target dir>/heet-plugins`.
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub name: String,
    pub path: PathBuf,
    pub bytes: usize,
    pub sha256: String,
}

pub fn build(req: &BuildRequest) -> anyhow::Result<Vec<Built>> {
    // A JavaScript or Python plugin's folder: its heet-plugin.toml, named or found here.
    let folder = match &req.manifest_path {
        Some(p)
            if p.file_name()
                .is_some_and(|n| n == super::languages::MANIFEST) =>
        {
            Some(
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_owned(),
            )
        }
        Some(_) => None,
        None => Some(PathBuf::from(".")),
    };
    if let Some(dir) = folder
        && let Some(manifest) = super::languages::Manifest::load(&dir)?
    {
        if !req.packages.is_empty() {
            bail!(
                "-p names crates of a cargo workspace; {} is a {:?} plugin",
                dir.display(),
                manifest.lang
            );
        }
        let out_dir = req
            .out_dir
            .clone()
            .unwrap_or_else(|| dir.join("target/heet-plugins"));
        return Ok(vec![super::languages::build(&dir, &manifest, &out_dir)?]);
    }
    let mut cmd = MetadataCommand::new();
    if let Some(path) = &req.manifest_path {
        cmd.manifest_path(path);
    }
    let metadata = cmd
        .no_deps()
        .exec()
        .context("cannot read the cargo workspace")?;
    let members: Vec<&Package> = metadata.workspace_packages();

    let chosen: Vec<&Package> = if req.packages.is_empty() {
        members
            .iter()
            .copied()
            .filter(|p| plugin_kind(p) == Some(PluginKind::Plugin))
            .collect()
    } else {
        req.packages
            .iter()
            .map(|name| {
                let p = members
                    .iter()
                    .find(|p| p.name.as_str() == name)
                    .with_context(|| format!("no crate {name:?} in the workspace"))?;
                if plugin_kind(p).is_none() {
                    bail!("crate {name:?} is not a plugin: its Cargo.toml lacks [package.metadata.heet] plugin = true");
                }
                Ok(*p)
            })
            .collect::<anyhow::Result<_>>()?
    };
    if chosen.is_empty() {
        bail!("no plugin crates found in {}", metadata.workspace_root);
    }

    tracing::info!(
        "building {} plugin(s) for {TARGET}: {}",
        chosen.len(),
        chosen
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Plugin artifacts carry no hash in their file names, so two checkouts sharing one target
    // dir (a CI clone and a working copy, say) would overwrite each other's `.wasm` and each
    // could read the other's build. Each workspace gets its own build folder.
    let target_dir = metadata.target_directory.as_std_path();
    let build_dir = target_dir
        .join("heet-plugin-builds")
        .join(&super::sha256_hex(metadata.workspace_root.as_str().as_bytes())[..16]);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for p in &chosen {
        let status = Command::new(&cargo)
            .args(["rustc", "--lib", "--crate-type", "cdylib"])
            .args([
                "--profile",
                PROFILE,
                "--target",
                TARGET,
                "-p",
                p.name.as_str(),
            ])
            .arg("--manifest-path")
            .arg(metadata.workspace_root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&build_dir)
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!(
                "cargo build of plugin {} failed ({status}); is the target installed? `rustup target add {TARGET}`",
                p.name
            );
        }
    }

    let out_dir = req
        .out_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("heet-plugins"));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    chosen
        .iter()
        .map(|p| {
            let lib = p
                .targets
                .iter()
                .find(|t| t.is_lib())
                .with_context(|| format!("plugin crate {} has no library target", p.name))?;
            let core = build_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", lib.name.replace('-', "_")));
            let out = out_dir.join(format!("{}.wasm", p.name));
            componentize_file(&core, &out)?;
            let bytes = std::fs::read(&out)?;
            Ok(Built {
                name: p.name.to_string(),
                path: out,
                bytes: bytes.len(),
                sha256: super::sha256_hex(&bytes),
            })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum PluginKind {
    Plugin,
    Fixture,
}

fn plugin_kind(p: &Package) -> Option<PluginKind> {
    match p.metadata.get("heet")?.get("plugin")? {
        serde_json::Value::Bool(true) => Some(PluginKind::Plugin),
        serde_json::Value::String(s) if s == "fixture" => Some(PluginKind::Fixture),
        _ => None,
    }
}

/// Wraps the core module at `core` into a component at `out`, using the WIT metadata
/// wit-bindgen embedded in it. No adapter: plugins import no WASI.
pub fn componentize_file(core: &Path, out: &Path) -> anyhow::Result<()> {
    let module = std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let component = componentize(&module)
        .with_context(|| format!("cannot make a component of {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("cannot write {}", out.display()))
}

pub fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .encode()
}
