//! `heet plugins test`: a plugin author's harness. Fixture files (`tests/*.toml` of a plugin
//! folder) give the plugin's config and cases, each a hook call with its context and the
//! answer or violations expected; every case runs against the built component in the real
//! sandbox, under the default limits, in a fresh instance configured as heet would. No AWS.
//!
//! ```toml
//! config = { max_instances = 1 }     # the plugin's [plugins.config.NAME] table
//!
//! [[case]]
//! name = "two instances are one too many"
//! hook = "guard"
//! instances = [{ role = "www", index = 1 }, { role = "www", index = 2 }]
//! expect = { violations = ["max-instances"] }
//!
//! [[case]]
//! name = "the second www"
//! hook = "naming"
//! role = "www"
//! index = 2
//! expect = { answer = "staging-www-02" }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api::{
    DesiredInstance, DesiredState, IngressRule, InstanceContext, RoleContext, RoleSize, Tag,
};
use super::{Hook, Limits, PluginFile, Runtime};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    config: Option<toml::Table>,
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    hook: String,
    project: Option<String>,
    env: Option<String>,
    region: Option<String>,
    domain: Option<String>,
    role: Option<String>,
    index: Option<u32>,
    count: Option<u32>,
    /// What the chain hands the plugin: a string (naming, user-data), a list (cnames), a
    /// table of tags (tags) or a size (sizing).
    current: Option<toml::Value>,
    /// The guard's desired state.
    #[serde(default)]
    instances: Vec<RawInstance>,
    #[serde(default)]
    firewall: Vec<RawRule>,
    /// A case's own config, instead of the fixture's.
    config: Option<toml::Table>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    role: String,
    index: u32,
    name: Option<String>,
    instance_type: Option<String>,
    ami: Option<String>,
    #[serde(default)]
    tags: toml::Table,
    #[serde(default)]
    cnames: Vec<String>,
    #[serde(default)]
    user_data: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    role: String,
    port: u16,
    cidr: Option<String>,
    from_role: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The hook's answer (as `current` is written).
    answer: Option<toml::Value>,
    /// `none = true`: no opinion.
    none: Option<bool>,
    /// The guard's violations, by rule, in order.
    violations: Option<Vec<String>>,
    /// The plugin refuses its config with an error containing this.
    config_error: Option<String>,
}

/// One case's outcome.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub fixture: PathBuf,
    pub name: String,
    pub hook: String,
    pub passed: bool,
    /// What went wrong, when it did not pass.
    pub failure: Option<String>,
}

/// What `heet plugins test` ran.
#[derive(Debug, Serialize)]
pub struct TestReport {
    pub component: PathBuf,
    pub cases: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "running {} case(s) against {}",
            self.cases.len(),
            self.component.display()
        )?;
        for c in &self.cases {
            writeln!(
                f,
                "test {}: {} ... {}",
                c.fixture.display(),
                c.name,
                if c.passed { "ok" } else { "FAILED" }
            )?;
        }
        if self.failed > 0 {
            writeln!(f, "\nfailures:")?;
            for c in self.cases.iter().filter(|c| !c.passed) {
                writeln!(
                    f,
                    "  {}: {}: {}",
                    c.fixture.display(),
                    c.name,
                    c.failure.as_deref().unwrap_or("")
                )?;
            }
        }
        write!(
            f,
            "\ntest result: {}. {} passed; {} failed",
            if self.failed == 0 { "ok" } else { "FAILED" },
            self.passed,
            self.failed
        )
    }
}

/// A fixture file that cannot be read as one: the author's input to fix (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}", file = .file.display())]
pub struct FixtureError {
    pub file: PathBuf,
    pub message: String,
}

fn json(table: Option<&toml::Table>) -> String {
    table.map_or_else(
        || "{}".to_owned(),
        |t| serde_json::to_string(t).unwrap_or_default(),
    )
}

/// Runs every case of `fixtures` against `component`.
pub fn run(
    runtime: &Runtime,
    component: &Path,
    fixtures: &[PathBuf],
) -> anyhow::Result<TestReport> {
    let name = component
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    let file = PluginFile {
        name,
        path: component.to_owned(),
    };
    let bytes = super::read_plugin(&file.path, &file.name)?;
    let prepared = runtime.prepare(&file, &super::sha256_hex(&bytes))?;
    let mut cases = Vec::new();
    for path in fixtures {
        let text = std::fs::read_to_string(path).map_err(|e| FixtureError {
            file: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let fixture: Fixture = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| crate::definition::Location::of(&text, s.start));
            FixtureError {
                file: path.clone(),
                message: match at {
                    Some(at) => format!("{}:{}: {}", at.line, at.col, e.message()),
                    None => e.message().to_owned(),
                },
            }
        })?;
        if fixture.cases.is_empty() {
            return Err(FixtureError {
                file: path.clone(),
                message: "no [[case]]: a fixture without cases proves nothing".into(),
            }
            .into());
        }
        for case in &fixture.cases {
            let mut plugin = prepared.instantiate(Limits::default())?;
            let config = json(case.config.as_ref().or(fixture.config.as_ref()));
            let failure = check(&mut plugin, case, &config).err();
            cases.push(CaseResult {
                fixture: path.clone(),
                name: case.name.clone(),
                hook: case.hook.clone(),
                passed: failure.is_none(),
                failure,
            });
        }
    }
    let failed = cases.iter().filter(|c| !c.passed).count();
    Ok(TestReport {
        component: component.to_owned(),
        passed: cases.len() - failed,
        failed,
        cases,
    })
}

/// The case's call and its check against what it expects; `Err` says what differed.
fn check(plugin: &mut super::Plugin, case: &Case, config: &str) -> Result<(), String> {
    let configured = plugin.configure(config).map_err(|e| e.to_string())?;
    if let Some(wanted) = &case.expect.config_error {
        return match configured {
            Err(errors) if errors.iter().any(|e| e.contains(wanted.as_str())) => Ok(()),
            Err(errors) => Err(format!(
                "expected a config error containing {wanted:?}, got {errors:?}"
            )),
            Ok(()) => Err(format!(
                "expected a config error containing {wanted:?}, the config was accepted"
            )),
        };
    }
    if let Err(errors) = configured {
        return Err(format!(
            "the plugin rejected its config: {}",
            errors.join("; ")
        ));
    }
    let hook = super::grants::hook_named(&case.hook).ok_or_else(|| {
        format!(
            "hook {:?} is not one of {}",
            case.hook,
            Hook::ALL.map(|h| h.interface()).join(", ")
        )
    })?;
    let project = case.project.clone().unwrap_or_else(|| "demo".into());
    let env = case.env.clone().unwrap_or_else(|| "staging".into());
    let region = case.region.clone().unwrap_or_else(|| "us-east-1".into());
    let role = case.role.clone().unwrap_or_else(|| "www".into());
    let ictx = InstanceContext {
        project: project.clone(),
        env: env.clone(),
        role: role.clone(),
        index: case.index.unwrap_or(1),
        count: case.count.unwrap_or(1),
        region: region.clone(),
        domain: case.domain.clone(),
    };
    let current_str = || match &case.current {
        None => Ok(String::new()),
        Some(toml::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "current must be a string for {}, not {other}",
            case.hook
        )),
    };
    let not_exported = || format!("the plugin does not export {}", case.hook);
    let answer: Option<toml::Value> = match hook {
        Hook::Configure => {
            return if case.expect.answer.is_none() && case.expect.none.is_none() {
                Ok(())
            } else {
                Err("a configure case expects only config_error (or nothing)".into())
            };
        }
        Hook::Naming => plugin
            .name(&ictx, &current_str()?)
            .ok_or_else(not_exported)?
            .map_err(|e| e.to_string())?
            .map(toml::Value::String),
        Hook::UserData => plugin
            .user_data(&ictx, &current_str()?)
            .ok_or_else(not_exported)?
            .map_err(|e| e.to_string())?
            .map(toml::Value::String),
        Hook::Cnames => {
            let current: Vec<String> = match &case.current {
                None => Vec::new(),
                Some(v) => v.clone().try_into().map_err(|e| format!("current: {e}"))?,
            };
            plugin
                .cnames(&ictx, &current)
                .ok_or_else(not_exported)?
                .map_err(|e| e.to_string())?
                .map(|l| toml::Value::Array(l.into_iter().map(toml::Value::String).collect()))
        }
        Hook::Tags => {
            let current = match &case.current {
                None => Vec::new(),
                Some(toml::Value::Table(t)) => tags_of(t)?,
                Some(other) => return Err(format!("current must be a table of tags, not {other}")),
            };
            plugin
                .tags(&ictx, &current)
                .ok_or_else(not_exported)?
                .map_err(|e| e.to_string())?
                .map(|tags| {
                    toml::Value::Table(
                        tags.into_iter()
                            .map(|t| (t.key, toml::Value::String(t.value)))
                            .collect(),
                    )
                })
        }
        Hook::Sizing => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Size {
                instance_type: String,
                count: u32,
                volume_gb: Option<u32>,
            }
            let current = match &case.current {
                None => Size {
                    instance_type: "t3.micro".into(),
                    count: 1,
                    volume_gb: None,
                },
                Some(v) => v.clone().try_into().map_err(|e| format!("current: {e}"))?,
            };
            let rctx = RoleContext {
                project,
                env,
                role,
                region,
                domain: case.domain.clone(),
            };
            let size = RoleSize {
                instance_type: current.instance_type,
                count: current.count,
                volume_gb: current.volume_gb,
            };
            plugin
                .size(&rctx, &size)
                .ok_or_else(not_exported)?
                .map_err(|e| e.to_string())?
                .map(|s| {
                    let mut t = toml::Table::new();
                    t.insert("instance_type".into(), s.instance_type.into());
                    t.insert("count".into(), i64::from(s.count).into());
                    if let Some(v) = s.volume_gb {
                        t.insert("volume_gb".into(), i64::from(v).into());
                    }
                    toml::Value::Table(t)
                })
        }
        Hook::Guard => {
            let state = DesiredState {
                project,
                env: env.clone(),
                region,
                domain: case.domain.clone(),
                instances: case
                    .instances
                    .iter()
                    .map(|i| {
                        Ok(DesiredInstance {
                            role: i.role.clone(),
                            index: i.index,
                            name: i
                                .name
                                .clone()
                                .unwrap_or_else(|| format!("{env}-{}-{:02}", i.role, i.index)),
                            instance_type: i
                                .instance_type
                                .clone()
                                .unwrap_or_else(|| "t3.micro".into()),
                            ami: i.ami.clone().unwrap_or_else(|| "ami-12c6146b".into()),
                            tags: tags_of(&i.tags)?,
                            cnames: i.cnames.clone(),
                            user_data: i.user_data.clone(),
                        })
                    })
                    .collect::<Result<_, String>>()?,
                firewall: case
                    .firewall
                    .iter()
                    .map(|r| IngressRule {
                        role: r.role.clone(),
                        port: r.port,
                        cidr: r.cidr.clone(),
                        from_role: r.from_role.clone(),
                    })
                    .collect(),
            };
            let violations = plugin
                .validate(&state)
                .ok_or_else(not_exported)?
                .map_err(|e| e.to_string())?;
            let got: Vec<String> = violations.iter().map(|v| v.rule.clone()).collect();
            let Some(wanted) = &case.expect.violations else {
                return Err("a guard case says which violations it expects: expect = { violations = [...] }".into());
            };
            return if &got == wanted {
                Ok(())
            } else {
                let shown: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.rule, v.message))
                    .collect();
                Err(format!(
                    "expected violations {wanted:?}, got {got:?} ({})",
                    shown.join("; ")
                ))
            };
        }
    };
    match (&case.expect.answer, case.expect.none) {
        (Some(wanted), _) if answer.as_ref() == Some(wanted) => Ok(()),
        (Some(wanted), _) => Err(format!(
            "expected {wanted}, got {}",
            answer.map_or("none (no opinion)".to_owned(), |a| a.to_string())
        )),
        (None, Some(true)) if answer.is_none() => Ok(()),
        (None, Some(true)) => Err(format!(
            "expected none (no opinion), got {}",
            answer.map_or_else(String::new, |a| a.to_string())
        )),
        _ => {
            Err("a case says what it expects: expect = { answer = ... } or { none = true }".into())
        }
    }
}

fn tags_of(t: &toml::Table) -> Result<Vec<Tag>, String> {
    t.iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok(Tag {
                key: k.clone(),
                value: s.clone(),
            }),
            other => Err(format!("tag {k:?} must be a string, not {other}")),
        })
        .collect()
}

/// The fixtures of a plugin folder: `tests/*.toml`, by name.
pub fn fixtures_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let tests = dir.join("tests");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}; put fixtures in tests/*.toml or name them",
                tests.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    found.sort();
    if found.is_empty() {
        anyhow::bail!(
            "no fixtures in {}: write tests/NAME.toml (docs/plugins.md)",
            tests.display()
        );
    }
    Ok(found)
}
