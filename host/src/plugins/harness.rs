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
    DesiredInstance, DesiredState, EnvVar, IngressRule, InstanceContext, RoleContext, RoleSize,
    Tag, TaskContext, TaskScript,
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
    /// The tasks hook's task, scenario and definition version.
    task: Option<String>,
    scenario: Option<String>,
    version: Option<String>,
    /// What the chain hands the plugin: a string (naming, user-data), a list (cnames), a
    /// table of tags (tags), a size (sizing) or a script with its env (tasks).
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
        let fixture_error = |message: String| FixtureError {
            file: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fixture_error(format!("cannot read: {e}")))?;
        let fixture: Fixture = toml::from_str(&text)
            .map_err(|e| crate::definition::DefinitionError::from_toml(path, &text, &e))?;
        if fixture.cases.is_empty() {
            return Err(fixture_error(
                "no [[case]]: a fixture without cases proves nothing".into(),
            )
            .into());
        }
        for case in &fixture.cases {
            // What the case asks and expects is checked before anything runs: a fixture
            // that cannot fail is the author's to fix, not a pass.
            let call =
                Call::of(case).map_err(|m| fixture_error(format!("case {:?}: {m}", case.name)))?;
            let mut plugin = prepared.instantiate(Limits::default())?;
            let config = json(case.config.as_ref().or(fixture.config.as_ref()));
            let failure = check(&mut plugin, &call, &config).err();
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

/// What a case hands the hook.
enum Current {
    Text(String),
    Names(Vec<String>),
    Tags(Vec<Tag>),
    Size(RoleSize),
    Task(TaskContext, TaskScript),
    State(DesiredState),
    Config,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// configure accepts the config.
    Accepted,
    ConfigError(String),
    Violations(Vec<String>),
    Answer(Answer),
    NoOpinion,
}

/// A hook's answer, in the form it is compared in: tags as sorted pairs (heet refuses a
/// tag answered twice before comparing).
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Text(String),
    Names(Vec<String>),
    Tags(Vec<(String, String)>),
    Size(String, u32, Option<u32>),
    /// A script and its variables, sorted.
    Task(String, Vec<(String, String)>),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Text(t) => write!(f, "{t:?}"),
            Answer::Names(n) => write!(f, "{n:?}"),
            Answer::Tags(t) => {
                let shown: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
                write!(f, "{{ {} }}", shown.join(", "))
            }
            Answer::Size(t, c, v) => match v {
                Some(v) => write!(f, "{c} × {t} with {v} GiB"),
                None => write!(f, "{c} × {t}"),
            },
            Answer::Task(script, env) => {
                let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
                write!(
                    f,
                    "{{ script = {script:?}, env = {{ {} }} }}",
                    shown.join(", ")
                )
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    instance_type: String,
    count: u32,
    volume_gb: Option<u32>,
}

/// A tasks hook's script as a fixture writes it: `{ script = "...", env = { K = "v" } }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    script: String,
    #[serde(default)]
    env: toml::Table,
}

impl Script {
    fn into_task(self) -> Result<TaskScript, String> {
        let env = self
            .env
            .into_iter()
            .map(|(name, value)| match value {
                toml::Value::String(value) => Ok(EnvVar { name, value }),
                other => Err(format!("env {name:?} must be a string, not {other}")),
            })
            .collect::<Result<_, String>>()?;
        Ok(TaskScript {
            script: self.script,
            env,
        })
    }
}

/// A tasks answer as it is compared: its script, and its variables sorted (a fixture's table
/// has no order).
fn task_answer(task: &TaskScript) -> Answer {
    let mut env: Vec<(String, String)> = task
        .env
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    env.sort();
    Answer::Task(task.script.clone(), env)
}

impl From<Size> for RoleSize {
    fn from(s: Size) -> RoleSize {
        RoleSize {
            instance_type: s.instance_type,
            count: s.count,
            volume_gb: s.volume_gb,
        }
    }
}

fn answer_of(hook: Hook, value: &toml::Value) -> Result<Answer, String> {
    let typed = |e: toml::de::Error| format!("{} answers {}", hook, e.message());
    Ok(match hook {
        Hook::Naming | Hook::UserData => match value {
            toml::Value::String(s) => Answer::Text(s.clone()),
            other => return Err(format!("{hook} answers a string, not {other}")),
        },
        Hook::Cnames => Answer::Names(value.clone().try_into().map_err(typed)?),
        Hook::Tags => match value {
            toml::Value::Table(t) => Answer::Tags(pairs(&tags_of(t)?)),
            other => return Err(format!("tags answers a table of tags, not {other}")),
        },
        Hook::Sizing => {
            let s: Size = value.clone().try_into().map_err(typed)?;
            Answer::Size(s.instance_type, s.count, s.volume_gb)
        }
        Hook::Tasks => {
            let s: Script = value.clone().try_into().map_err(typed)?;
            task_answer(&s.into_task()?)
        }
        Hook::Configure | Hook::Guard => {
            return Err(format!("{hook} has no answer to expect"));
        }
    })
}

fn pairs(tags: &[Tag]) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    p.sort();
    p
}

/// One case, read and checked: the hook, its context, what it is handed and what it must
/// answer.
struct Call {
    hook: Hook,
    ctx: InstanceContext,
    current: Current,
    want: Want,
}

impl Call {
    fn of(case: &Case) -> Result<Call, String> {
        let hook = super::grants::hook_named(&case.hook).ok_or_else(|| {
            format!(
                "hook {:?} is not one of {}",
                case.hook,
                Hook::ALL.map(|h| h.interface()).join(", ")
            )
        })?;
        let ctx = InstanceContext {
            project: case.project.clone().unwrap_or_else(|| "demo".into()),
            env: case.env.clone().unwrap_or_else(|| "staging".into()),
            role: case.role.clone().unwrap_or_else(|| "www".into()),
            index: case.index.unwrap_or(1),
            count: case.count.unwrap_or(1),
            region: case.region.clone().unwrap_or_else(|| "us-east-1".into()),
            domain: case.domain.clone(),
        };
        let e = &case.expect;
        let only = |what: &str, others: bool| {
            if others {
                Err(format!("a {hook} case expects {what} only"))
            } else {
                Ok(())
            }
        };
        let want = match hook {
            Hook::Configure => {
                only(
                    "config_error (or nothing: the config is accepted)",
                    e.answer.is_some() || e.none.is_some() || e.violations.is_some(),
                )?;
                match &e.config_error {
                    Some(c) if c.trim().is_empty() => {
                        return Err("config_error names what the error says; it is empty".into());
                    }
                    Some(c) => Want::ConfigError(c.clone()),
                    None => Want::Accepted,
                }
            }
            Hook::Guard => {
                only(
                    "violations = [...]",
                    e.answer.is_some() || e.none.is_some() || e.config_error.is_some(),
                )?;
                Want::Violations(e.violations.clone().ok_or(
                    "a guard case says which violations it expects: expect = { violations = [...] }",
                )?)
            }
            _ => {
                only(
                    "answer = ... or none = true",
                    e.violations.is_some() || e.config_error.is_some(),
                )?;
                match (&e.answer, e.none) {
                    (Some(a), None) => Want::Answer(answer_of(hook, a)?),
                    (None, Some(true)) => Want::NoOpinion,
                    _ => {
                        return Err("expect exactly one of answer = ... and none = true".into());
                    }
                }
            }
        };
        let default_name =
            crate::namespace::default_name(&ctx.project, &ctx.env, &ctx.role, ctx.index);
        let text = |default: String| match &case.current {
            None => Ok(default),
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("current is a string for {hook}, not {other}")),
        };
        let current = match hook {
            Hook::Configure => Current::Config,
            Hook::Naming => Current::Text(text(default_name)?),
            Hook::UserData => Current::Text(text(String::new())?),
            Hook::Cnames => Current::Names(match &case.current {
                None => Vec::new(),
                Some(v) => v
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| format!("current: {}", e.message()))?,
            }),
            Hook::Tags => Current::Tags(match &case.current {
                None => Vec::new(),
                Some(toml::Value::Table(t)) => tags_of(t)?,
                Some(other) => return Err(format!("current is a table of tags, not {other}")),
            }),
            Hook::Sizing => Current::Size(match &case.current {
                None => RoleSize {
                    instance_type: "t3.micro".into(),
                    count: 1,
                    volume_gb: None,
                },
                Some(v) => v
                    .clone()
                    .try_into::<Size>()
                    .map_err(|e| format!("current: {}", e.message()))?
                    .into(),
            }),
            Hook::Tasks => Current::Task(
                TaskContext {
                    project: ctx.project.clone(),
                    env: ctx.env.clone(),
                    region: ctx.region.clone(),
                    role: ctx.role.clone(),
                    task: case.task.clone().unwrap_or_else(|| "deploy".into()),
                    scenario: case.scenario.clone(),
                    version: case.version.clone(),
                },
                match &case.current {
                    None => TaskScript {
                        script: "true".into(),
                        env: Vec::new(),
                    },
                    Some(v) => v
                        .clone()
                        .try_into::<Script>()
                        .map_err(|e| format!("current: {}", e.message()))?
                        .into_task()?,
                },
            ),
            Hook::Guard => Current::State(DesiredState {
                project: ctx.project.clone(),
                env: ctx.env.clone(),
                region: ctx.region.clone(),
                domain: ctx.domain.clone(),
                instances: case
                    .instances
                    .iter()
                    .map(|i| {
                        Ok(DesiredInstance {
                            role: i.role.clone(),
                            index: i.index,
                            name: i.name.clone().unwrap_or_else(|| {
                                crate::namespace::default_name(
                                    &ctx.project,
                                    &ctx.env,
                                    &i.role,
                                    i.index,
                                )
                            }),
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
            }),
        };
        Ok(Call {
            hook,
            ctx,
            current,
            want,
        })
    }
}

/// The case's call and its check against what it expects; `Err` says what differed. An
/// answer goes through the checks heet makes of it in a plan before it is compared.
fn check(plugin: &mut super::Plugin, call: &Call, config: &str) -> Result<(), String> {
    let configured = plugin.configure(config).map_err(|e| e.to_string())?;
    match (&call.want, configured) {
        (Want::ConfigError(wanted), Err(errors)) => {
            return if errors.iter().any(|e| e.contains(wanted.as_str())) {
                Ok(())
            } else {
                Err(format!(
                    "expected a config error containing {wanted:?}, got {errors:?}"
                ))
            };
        }
        (Want::ConfigError(wanted), Ok(())) => {
            return Err(format!(
                "expected a config error containing {wanted:?}, the config was accepted"
            ));
        }
        (Want::Accepted, Ok(())) => return Ok(()),
        (_, Err(errors)) => {
            return Err(format!(
                "the plugin rejected its config: {}",
                errors.join("; ")
            ));
        }
        _ => {}
    }
    // The hook's answer, if it exports the hook, once heet's checks of it pass.
    fn answered<T>(
        got: Option<Result<Option<T>, super::PluginError>>,
        hook: Hook,
        check: impl FnOnce(&T) -> Result<(), String>,
    ) -> Result<Option<T>, String> {
        let got = got
            .ok_or_else(|| format!("the plugin does not export {hook}"))?
            .map_err(|e| e.to_string())?;
        if let Some(value) = &got {
            check(value).map_err(|reason| format!("heet refuses its answer: {reason}"))?;
        }
        Ok(got)
    }
    let (ctx, hook) = (&call.ctx, call.hook);
    let answer: Option<Answer> = match &call.current {
        Current::Config => None,
        Current::Text(current) if hook == Hook::Naming => {
            answered(plugin.name(ctx, current), hook, |n| super::check_name(n))?.map(Answer::Text)
        }
        Current::Text(current) => answered(plugin.user_data(ctx, current), hook, |d| {
            crate::validate::check_user_data(d)
        })?
        .map(Answer::Text),
        Current::Names(current) => answered(plugin.cnames(ctx, current), hook, |n| {
            super::check_cnames(ctx.domain.as_deref(), n)
        })?
        .map(Answer::Names),
        Current::Tags(current) => {
            answered(plugin.tags(ctx, current), hook, |t| super::check_tags(t))?
                .map(|t| Answer::Tags(pairs(&t)))
        }
        Current::Size(current) => {
            let rctx = RoleContext {
                project: ctx.project.clone(),
                env: ctx.env.clone(),
                role: ctx.role.clone(),
                region: ctx.region.clone(),
                domain: ctx.domain.clone(),
            };
            answered(plugin.size(&rctx, current), hook, super::check_size)?
                .map(|s| Answer::Size(s.instance_type, s.count, s.volume_gb))
        }
        Current::Task(tctx, current) => {
            answered(plugin.shape(tctx, current), hook, super::check_task)?.map(|t| task_answer(&t))
        }
        Current::State(state) => {
            let violations = plugin
                .validate(state)
                .ok_or_else(|| format!("the plugin does not export {hook}"))?
                .map_err(|e| e.to_string())?;
            let got: Vec<String> = violations.iter().map(|v| v.rule.clone()).collect();
            let Want::Violations(wanted) = &call.want else {
                return Err("internal: a guard case without violations".into());
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
    let shown = |a: &Option<Answer>| {
        a.as_ref()
            .map_or("none (no opinion)".to_owned(), ToString::to_string)
    };
    match &call.want {
        Want::Answer(wanted) if answer.as_ref() == Some(wanted) => Ok(()),
        Want::Answer(wanted) => Err(format!("expected {wanted}, got {}", shown(&answer))),
        Want::NoOpinion if answer.is_none() => Ok(()),
        Want::NoOpinion => Err(format!(
            "expected none (no opinion), got {}",
            shown(&answer)
        )),
        Want::Accepted | Want::ConfigError(_) | Want::Violations(_) => {
            Err("internal: an expectation that does not fit its hook".into())
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
        .map_err(|e| FixtureError {
            file: tests.clone(),
            message: format!("cannot read: {e}; put fixtures in tests/*.toml or name them"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(FixtureError {
            file: tests,
            message: "no fixtures: write tests/NAME.toml (docs/plugins.md)".into(),
        }
        .into());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(text: &str) -> Case {
        let fixture: Fixture = toml::from_str(text).unwrap();
        fixture.cases.into_iter().next().unwrap()
    }

    fn refused(text: &str) -> String {
        match Call::of(&case(text)) {
            Ok(_) => panic!("accepted: {text}"),
            Err(m) => m,
        }
    }

    #[test]
    fn a_case_expects_exactly_what_fits_its_hook() {
        let m = refused("[[case]]\nname = \"x\"\nhook = \"guard\"\nexpect = { answer = \"a\" }\n");
        assert!(m.contains("a guard case expects violations"), "{m}");
        let m = refused("[[case]]\nname = \"x\"\nhook = \"guard\"\nexpect = {}\n");
        assert!(m.contains("which violations it expects"), "{m}");
        let m = refused(
            "[[case]]\nname = \"x\"\nhook = \"naming\"\nexpect = { answer = \"a\", none = true }\n",
        );
        assert!(m.contains("exactly one of"), "{m}");
        let m =
            refused("[[case]]\nname = \"x\"\nhook = \"naming\"\nexpect = { violations = [] }\n");
        assert!(m.contains("answer = ... or none = true only"), "{m}");
        let m = refused(
            "[[case]]\nname = \"x\"\nhook = \"configure\"\nexpect = { config_error = \" \" }\n",
        );
        assert!(m.contains("it is empty"), "{m}");
        let m = refused("[[case]]\nname = \"x\"\nhook = \"user_data\"\nexpect = { none = true }\n");
        assert!(m.contains("is not one of"), "{m}");
        let m = refused(
            "[[case]]\nname = \"x\"\nhook = \"naming\"\ncurrent = 3\nexpect = { none = true }\n",
        );
        assert!(m.contains("current is a string"), "{m}");
    }

    #[test]
    fn defaults_are_heets_own_and_tags_compare_as_pairs() {
        let call = Call::of(&case(
            "[[case]]\nname = \"x\"\nhook = \"naming\"\nindex = 2\nexpect = { none = true }\n",
        ))
        .unwrap();
        assert!(matches!(&call.current, Current::Text(n) if n == "demo-staging-www-02"));
        let call = Call::of(&case(
            "[[case]]\nname = \"x\"\nhook = \"tags\"\nexpect = { answer = { b = \"2\", a = \"1\" } }\n",
        ))
        .unwrap();
        let answered = [
            Tag {
                key: "a".into(),
                value: "1".into(),
            },
            Tag {
                key: "b".into(),
                value: "2".into(),
            },
        ];
        assert_eq!(call.want, Want::Answer(Answer::Tags(pairs(&answered))));
        let call = Call::of(&case(
            "[[case]]\nname = \"x\"\nhook = \"configure\"\nexpect = {}\n",
        ))
        .unwrap();
        assert_eq!(call.want, Want::Accepted);
    }
}
