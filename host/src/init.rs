//! `heet init [--name N]`: a new project in the current folder: a commented heet.toml (its
//! name from the folder, its region from the AWS config chain) and the naming plugin's source
//! in `plugins/naming`, then what to run next. Nothing that exists is overwritten.

use std::path::{Path, PathBuf};

use crate::commands::UsageError;
use crate::plugins::scaffold;

const TEMPLATE: &str = include_str!("init/heet.toml.tmpl");
/// The region written when the AWS config chain names none.
const FALLBACK_REGION: &str = "us-east-1";

/// Where the region written comes from, said in the file beside it.
pub struct Region {
    pub name: String,
    pub source: &'static str,
}

/// The region of the AWS config chain (`AWS_REGION`, the profile's `region`), else
/// us-east-1. No call is made.
pub async fn region(profile: Option<&str>) -> Region {
    let mut chain = aws_config::default_provider::region::DefaultRegionChain::builder();
    if let Some(p) = profile {
        chain = chain.profile_name(p);
    }
    match chain.build().region().await {
        Some(r) => Region {
            name: r.to_string(),
            source: "from your AWS config",
        },
        None => Region {
            name: FALLBACK_REGION.to_owned(),
            source: "your AWS config names no region: check this one",
        },
    }
}

/// The project name for `dir`: `name` when given (checked), else the folder's name made a
/// valid one (lowercase; other characters become `-`).
pub fn project_name(name: Option<&str>, dir: &Path) -> anyhow::Result<String> {
    let name = match name {
        Some(n) => n.to_owned(),
        None => {
            let folder = dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut name = String::new();
            for c in folder.to_ascii_lowercase().chars() {
                let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                };
                if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
                    name.push(c);
                }
            }
            let name = name.trim_matches(|c: char| c == '-' || c.is_ascii_digit());
            name.chars()
                .take(32)
                .collect::<String>()
                .trim_end_matches('-')
                .to_owned()
        }
    };
    crate::namespace::check_name("project", &name).map_err(|m| {
        UsageError(format!(
            "{m}: pass a project name with `heet init --name NAME`"
        ))
    })?;
    Ok(name)
}

/// The files of a new project named `name` in `region`, relative to its folder.
pub fn files(name: &str, region: &Region) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let toml = TEMPLATE
        .replace("{{name}}", name)
        .replace("{{region}}", &region.name)
        .replace("{{region_source}}", region.source);
    let mut files = vec![(PathBuf::from("heet.toml"), toml)];
    for (path, text) in scaffold::naming_files()? {
        files.push((Path::new("plugins/naming").join(path), text));
    }
    Ok(files)
}

/// Writes the project into `dir`: refused, with nothing written, when heet.toml or
/// `plugins/naming` is there already.
pub fn create(dir: &Path, files: &[(PathBuf, String)]) -> anyhow::Result<Vec<PathBuf>> {
    for taken in ["heet.toml", "plugins/naming"] {
        let path = dir.join(taken);
        if path.exists() {
            return Err(UsageError(format!(
                "{} exists: heet init never overwrites (edit it, or run heet init in an empty folder)",
                path.display()
            ))
            .into());
        }
    }
    scaffold::write_files(files, dir)
}

/// What to run next, as `heet init` prints it.
pub fn next_steps(name: &str, region: &Region) -> String {
    format!(
        "created {name} in {}: heet.toml and plugins/naming (the naming plugin's source)\n\
         next:\n  \
         1. set [defaults] ami in heet.toml to an image of {} (the one written is moto's)\n  \
         2. heet plan --env staging\n  \
         3. heet up --env staging\n\
         to name instances by a pattern: (cd plugins/naming && heet plugins build --out ..) && heet plugins lock,\n\
         then uncomment [plugins.config.naming] in heet.toml",
        region.name, region.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_name_becomes_a_valid_project_name() {
        let name = |folder: &str| project_name(None, Path::new("/tmp").join(folder).as_path());
        assert_eq!(name("My Shop").unwrap(), "my-shop");
        assert_eq!(name("2024_web--app_").unwrap(), "web-app");
        assert!(name("___").is_err(), "nothing valid is left");
        assert_eq!(project_name(Some("shop"), Path::new("/")).unwrap(), "shop");
        assert!(project_name(Some("Shop"), Path::new("/")).is_err());
    }

    #[test]
    fn the_definition_names_the_project_and_region_and_parses() {
        let region = Region {
            name: "eu-west-1".into(),
            source: "from your AWS config",
        };
        let files = files("shop", &region).unwrap();
        let toml = &files[0].1;
        assert!(toml.contains("name = \"shop\""));
        assert!(toml.contains("region = \"eu-west-1\"          # from your AWS config"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("heet.toml"), toml).unwrap();
        let def = crate::definition::Definition::load(&dir.path().join("heet.toml")).unwrap();
        assert_eq!(def.project, "shop");
        assert_eq!(def.region.as_deref(), Some("eu-west-1"));
        assert!(files.iter().any(
            |(p, t)| p == Path::new("plugins/naming/src/lib.rs") && t.contains("wit: \"wit\",")
        ));
    }
}
