//! `heet plugins new NAME [--lang rust|js|python]`: a plugin that builds and passes its own
//! tests as written, in each language the same policy (a guard with `max_instances`).
//!
//! A Rust crate is self-contained: it vendors the WIT contract and the SDK this heet was built
//! with, so it builds outside this repository and keeps building against the contract it
//! was made for. A JavaScript or Python folder builds with `heet plugins build`, which adds
//! the WIT of the heet building it. Every scaffold ships a `heet plugins test` fixture.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

const WIT: &str = include_str!("../../../wit/heet.wit");
const SDK_LIB: &str = include_str!("../../../plugins/heet-sdk/src/lib.rs");
const SDK_PATTERN: &str = include_str!("../../../plugins/heet-sdk/src/pattern.rs");
const SDK_TESTING: &str = include_str!("../../../plugins/heet-sdk/src/testing.rs");
const SDK_MANIFEST: &str = include_str!("scaffold/sdk-Cargo.toml.tmpl");
const MANIFEST: &str = include_str!("scaffold/Cargo.toml.tmpl");
const LIB: &str = include_str!("scaffold/lib.rs.tmpl");
const README: &str = include_str!("scaffold/README.md.tmpl");
const GITIGNORE: &str = include_str!("scaffold/gitignore.tmpl");
const FIXTURE: &str = include_str!("scaffold/fixture.toml.tmpl");
const WORLD: &str = include_str!("scaffold/world.wit.tmpl");
const JS_MANIFEST: &str = include_str!("scaffold/js-plugin.toml.tmpl");
const JS_SOURCE: &str = include_str!("scaffold/plugin.js.tmpl");
const PY_MANIFEST: &str = include_str!("scaffold/py-plugin.toml.tmpl");
const PY_SOURCE: &str = include_str!("scaffold/app.py.tmpl");
const README_OTHER: &str = include_str!("scaffold/README-other.md.tmpl");
const NAMING_LIB: &str = include_str!("../../../plugins/naming/src/lib.rs");
const NAMING_FIXTURE: &str = include_str!("../init/names.toml.tmpl");

/// Where a reference plugin finds the WIT in this repository, and where it is in a crate.
const PLUGIN_WIT_HERE: &str = r#"wit: "../../wit","#;
const PLUGIN_WIT_THERE: &str = r#"wit: "wit","#;

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// Where the SDK finds the WIT in this repository, and where it is in a scaffolded crate.
const SDK_WIT_HERE: &str = r#"path: "../../wit","#;
const SDK_WIT_THERE: &str = r#"path: "../wit","#;

/// The files of a new plugin `name` in `lang`, relative to its folder.
pub fn files(name: &str, lang: Lang) -> anyhow::Result<Vec<(PathBuf, String)>> {
    check_crate_name(name)?;
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{heet_version}}", env!("CARGO_PKG_VERSION"))
    };
    let other = |manifest: &str, source: (&str, &str), lang: &str, lang_name: &str, tool: &str| {
        let readme = fill(README_OTHER)
            .replace("{{lang_name}}", lang_name)
            .replace("{{lang}}", lang)
            .replace("{{source}}", source.0)
            .replace("{{toolchain}}", tool);
        vec![
            ("heet-plugin.toml".into(), fill(manifest)),
            (source.0.into(), fill(source.1)),
            ("wit/world.wit".into(), fill(WORLD)),
            ("tests/limits.toml".into(), fill(FIXTURE)),
            ("README.md".into(), readme),
            (".gitignore".into(), GITIGNORE.to_owned()),
        ]
    };
    match lang {
        Lang::Rust => {}
        Lang::Js => {
            return Ok(other(
                JS_MANIFEST,
                ("plugin.js", JS_SOURCE),
                "js",
                "JavaScript",
                "jco with QuickJS",
            ));
        }
        Lang::Python => {
            return Ok(other(
                PY_MANIFEST,
                ("app.py", PY_SOURCE),
                "python",
                "Python",
                "componentize-py",
            ));
        }
    }
    if !SDK_LIB.contains(SDK_WIT_HERE) {
        // The SDK moved its WIT: the vendored copy would not build.
        bail!("internal: the SDK no longer reads its WIT from {SDK_WIT_HERE}");
    }
    Ok(vec![
        ("Cargo.toml".into(), fill(MANIFEST)),
        ("tests/limits.toml".into(), fill(FIXTURE)),
        ("README.md".into(), fill(README)),
        (".gitignore".into(), GITIGNORE.to_owned()),
        ("src/lib.rs".into(), fill(LIB)),
        ("wit/heet.wit".into(), WIT.to_owned()),
        ("heet-sdk/Cargo.toml".into(), fill(SDK_MANIFEST)),
        (
            "heet-sdk/src/lib.rs".into(),
            SDK_LIB.replace(SDK_WIT_HERE, SDK_WIT_THERE),
        ),
        ("heet-sdk/src/pattern.rs".into(), SDK_PATTERN.to_owned()),
        ("heet-sdk/src/testing.rs".into(), SDK_TESTING.to_owned()),
    ])
}

/// The reference naming plugin as a crate of its own (`heet init`): the Rust scaffold, with
/// the naming plugin's source and a fixture of its own instead of the policy example.
pub fn naming_files() -> anyhow::Result<Vec<(PathBuf, String)>> {
    if !NAMING_LIB.contains(PLUGIN_WIT_HERE) {
        bail!("internal: the naming plugin no longer reads its WIT from {PLUGIN_WIT_HERE}");
    }
    let mut files = files("naming", Lang::Rust)?;
    files.retain(|(path, _)| path != Path::new("tests/limits.toml"));
    for (path, text) in &mut files {
        if path == Path::new("src/lib.rs") {
            *text = NAMING_LIB.replace(PLUGIN_WIT_HERE, PLUGIN_WIT_THERE);
        }
    }
    files.push(("tests/names.toml".into(), NAMING_FIXTURE.to_owned()));
    Ok(files)
}

/// Writes the crate into `dir`, which must not exist or be empty: nothing is overwritten.
pub fn create(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    write_new(&files(name, lang)?, dir)
}

/// Writes `files` into `dir`, which must not exist or be empty: nothing is overwritten.
pub fn write_new(files: &[(PathBuf, String)], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        bail!(
            "{} exists and is not empty: heet never overwrites it",
            dir.display()
        );
    }
    write_files(files, dir)
}

/// Writes `files` (paths relative to `dir`), making their folders; the caller has made sure
/// none is there.
pub fn write_files(files: &[(PathBuf, String)], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (rel, contents) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A name that is a crate name, a plugin file stem and a WIT package name at once.
fn check_crate_name(name: &str) -> anyhow::Result<()> {
    // WIT's kebab-case is the strictest of the three: words of [a-z][a-z0-9]*.
    let ok = name.len() <= 64
        && name.split('-').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(crate::commands::UsageError(format!(
            "invalid plugin name {name:?}: use words of lowercase letters and digits, each starting with a letter, joined by '-'"
        ))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_filled_in() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let files = files("no-big-boxes", lang).unwrap();
            for (path, text) in &files {
                for placeholder in [
                    "{{name}}",
                    "{{heet_version}}",
                    "{{lang}}",
                    "{{lang_name}}",
                    "{{source}}",
                    "{{toolchain}}",
                ] {
                    assert!(
                        !text.contains(placeholder),
                        "{lang:?}: {} keeps {placeholder}",
                        path.display()
                    );
                }
            }
            assert!(
                files
                    .iter()
                    .any(|(p, _)| p == Path::new("tests/limits.toml")),
                "{lang:?} ships a fixture"
            );
        }
        let files = files("no-big-boxes", Lang::Rust).unwrap();
        let sdk = &files
            .iter()
            .find(|(p, _)| p == Path::new("heet-sdk/src/lib.rs"))
            .unwrap()
            .1;
        assert!(sdk.contains(SDK_WIT_THERE) && !sdk.contains(SDK_WIT_HERE));
        let manifest = &files[0].1;
        assert!(manifest.contains("name = \"no-big-boxes\""));
    }

    #[test]
    fn names_must_work_as_crate_file_and_package_names() {
        for bad in [
            "",
            "Caps",
            "1st",
            "a_b",
            "trailing-",
            "two--dashes",
            "a.b",
            "policy-2",
        ] {
            assert!(files(bad, Lang::Rust).is_err(), "{bad:?} accepted");
        }
        assert!(files("policy2-v", Lang::Js).is_ok());
    }

    #[test]
    fn an_occupied_folder_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = create("policy", Lang::Python, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
