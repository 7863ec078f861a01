//! Tasks and scenarios (Knitting's deploy, fabcloudkit's provision/build/activate): a task is a
//! shell script run on every instance of a role through SSM Run Command; a scenario is an
//! ordered list of tasks across roles, each step waited for on every instance before the next.
//!
//! Everything here is pure: the definition's `[tasks]` and `[scenarios]` tables, checked with
//! their place in heet.toml, which instances a step runs on (heet's own, never a look-alike),
//! the script each instance is sent, and whether a step's failures stop the scenario.
//! `cloud::ssm` sends and watches the commands; `run.rs` is the command.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::definition::DefinitionError;
use crate::kinds::iam::ErrorAt;
use crate::kinds::instances::ObservedInstance;
use crate::plugins::api::TaskScript;
use crate::rolling::Amount;

/// The role name that stands for every role.
pub const ALL: &str = "ALL";
/// A task's default time on an instance (AWS-RunShellScript's own default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest a task may run: AWS-RunShellScript's `executionTimeout` limit (48 h).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(172_800);
/// SendCommand takes at most this many instance ids.
pub const MAX_TARGETS: usize = 50;

/// `[tasks.ROLE.NAME]`, as written.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Task")]
pub(crate) struct RawTask {
    #[schemars(with = "Option<String>")]
    run: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    script: Option<Spanned<String>>,
    #[schemars(with = "Option<serde_json::Value>")]
    timeout: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<String>")]
    user: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    working_dir: Option<Spanned<String>>,
}

/// `[scenarios.NAME]`, as written.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Scenario")]
pub(crate) struct RawScenario {
    #[schemars(with = "Vec<RawStep>")]
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

/// A step: `"ROLE.TASK"`, or `{ task = "ROLE.TASK", max_concurrency = 1, max_errors = "10%" }`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Step")]
enum RawStep {
    Task(String),
    Table(RawStepTable),
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StepTable")]
struct RawStepTable {
    task: String,
    #[schemars(with = "Option<serde_json::Value>")]
    max_concurrency: Option<toml::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    max_errors: Option<toml::Value>,
}

pub(crate) type RawTasks = BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<RawTask>>>;
pub(crate) type RawScenarios = BTreeMap<Spanned<String>, Spanned<RawScenario>>;

/// A task: what runs on each instance of its role.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// A role of the definition, or [`ALL`].
    pub role: String,
    pub name: String,
    /// The script, read from `script`'s file when the task names one.
    pub script: String,
    /// The file it was read from, when it was.
    pub file: Option<String>,
    pub timeout: Duration,
    /// Run as this user (`runuser`) instead of root, the SSM agent's user.
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub role: String,
    pub task: String,
    /// How many instances run it at once (SSM's MaxConcurrency); all at once when unset.
    pub max_concurrency: Option<Amount>,
    /// How many instances may fail before the step fails (and SSM stops sending it); none
    /// when unset.
    pub max_errors: Option<Amount>,
}

impl Step {
    /// `ROLE.TASK`, as the scenario names it.
    pub fn id(&self) -> String {
        format!("{}.{}", self.role, self.task)
    }

    /// Whether `failed` of `total` instances failing fails the step.
    pub fn fails(&self, failed: usize, total: usize) -> bool {
        let allowed = match self.max_errors {
            None => 0,
            Some(Amount::Count(n)) => n as usize,
            Some(Amount::Percent(p)) => total * p as usize / 100,
        };
        failed > allowed
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.role, self.task)
    }
}

/// The definition's tasks and scenarios.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tasks {
    /// By (role, name).
    pub tasks: BTreeMap<(String, String), Task>,
    pub scenarios: BTreeMap<String, Vec<Step>>,
}

/// What the tables need to know of the rest of the definition.
pub(crate) struct Context<'a> {
    pub roles: Vec<&'a str>,
    /// Where `script` files are read from.
    pub base: &'a Path,
    pub error: &'a ErrorAt<'a>,
}

impl Context<'_> {
    fn at<T>(&self, s: &Spanned<T>, message: String) -> DefinitionError {
        (self.error)(s.span().start, message)
    }
}

pub(crate) fn build(
    cx: &Context<'_>,
    raw_tasks: RawTasks,
    raw_scenarios: RawScenarios,
) -> Result<Tasks, DefinitionError> {
    let mut out = Tasks::default();
    for (role, tasks) in &raw_tasks {
        let role_name = role.get_ref();
        if role_name != ALL && !cx.roles.contains(&role_name.as_str()) {
            return Err(cx.at(
                role,
                format!(
                    "tasks.{role_name}: there is no role {role_name:?} (the roles are {}; {ALL} is every role)",
                    cx.roles.join(", ")
                ),
            ));
        }
        for (name, raw) in tasks {
            check_ident("task", name.get_ref()).map_err(|m| cx.at(name, m))?;
            let what = format!("tasks.{role_name}.{}", name.get_ref());
            let task = task(cx, &what, role_name, name.get_ref(), raw)?;
            out.tasks
                .insert((role_name.clone(), name.get_ref().clone()), task);
        }
    }
    for (name, raw) in &raw_scenarios {
        check_ident("scenario", name.get_ref()).map_err(|m| cx.at(name, m))?;
        let what = format!("scenarios.{}", name.get_ref());
        let steps = &raw.get_ref().steps;
        if steps.get_ref().is_empty() {
            return Err(cx.at(steps, format!("{what}.steps: a scenario needs a step")));
        }
        let mut out_steps = Vec::new();
        for step in steps.get_ref() {
            out_steps.push(self::step(cx, &what, step, &out)?);
        }
        out.scenarios.insert(name.get_ref().clone(), out_steps);
    }
    Ok(out)
}

/// A task's or scenario's name: Knitting's `site_down` as well as `site-down`.
fn check_ident(kind: &str, name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {name:?}: a lowercase letter, then a-z, 0-9, '_' or '-', at most 64"
        ))
    }
}

fn task(
    cx: &Context<'_>,
    what: &str,
    role: &str,
    name: &str,
    raw: &Spanned<RawTask>,
) -> Result<Task, DefinitionError> {
    let r = raw.get_ref();
    let (script, file) = match (&r.run, &r.script) {
        (Some(run), None) => (run.get_ref().clone(), None),
        (None, Some(file)) => {
            let path = cx.base.join(file.get_ref());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                cx.at(
                    file,
                    format!("{what}.script: cannot read {}: {e}", path.display()),
                )
            })?;
            (text, Some(file.get_ref().clone()))
        }
        (Some(run), Some(_)) => {
            return Err(cx.at(run, format!("{what}: set run or script, not both")));
        }
        (None, None) => {
            return Err(cx.at(
                raw,
                format!("{what}: set run (a script) or script (a file next to heet.toml)"),
            ));
        }
    };
    if script.trim().is_empty() {
        let place = r.run.as_ref().or(r.script.as_ref()).expect("one is set");
        return Err(cx.at(place, format!("{what}: the script is empty")));
    }
    let timeout = match &r.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => crate::rolling::duration(t.get_ref())
            .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
            .ok_or_else(|| {
                cx.at(
                    t,
                    format!(
                        "{what}.timeout is seconds or a duration up to 48h, e.g. 600 or \"10m\""
                    ),
                )
            })?,
    };
    if let Some(user) = &r.user {
        let u = user.get_ref();
        let ok = (1..=32).contains(&u.len())
            && u.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && u.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(cx.at(
                user,
                format!("{what}.user: {u:?} is not a Unix user name (a-z, 0-9, '_' and '-')"),
            ));
        }
    }
    if let Some(dir) = &r.working_dir
        && (!dir.get_ref().starts_with('/') || dir.get_ref().contains('\n'))
    {
        return Err(cx.at(
            dir,
            format!("{what}.working_dir is an absolute path on the instance, e.g. \"/srv/app\""),
        ));
    }
    Ok(Task {
        role: role.to_owned(),
        name: name.to_owned(),
        script,
        file,
        timeout,
        user: r.user.as_ref().map(|u| u.get_ref().clone()),
        working_dir: r.working_dir.as_ref().map(|d| d.get_ref().clone()),
    })
}

fn step(
    cx: &Context<'_>,
    what: &str,
    raw: &Spanned<RawStep>,
    tasks: &Tasks,
) -> Result<Step, DefinitionError> {
    let (spec, concurrency, errors) = match raw.get_ref() {
        RawStep::Task(t) => (t, None, None),
        RawStep::Table(t) => (&t.task, t.max_concurrency.as_ref(), t.max_errors.as_ref()),
    };
    let Some((role, task)) = spec.split_once('.') else {
        return Err(cx.at(
            raw,
            format!("{what}.steps: {spec:?} is not ROLE.TASK, e.g. \"www.update\""),
        ));
    };
    if !tasks
        .tasks
        .contains_key(&(role.to_owned(), task.to_owned()))
    {
        return Err(cx.at(raw, format!("{what}.steps: {}", tasks.no_task(spec))));
    }
    let amount = |v: Option<&toml::Value>, key: &str, least: u32| {
        let Some(v) = v else {
            return Ok(None);
        };
        let why = format!(
            "{what}.steps: {spec}: {key} is a number of instances (at least {least}) or a share, e.g. 1 or \"25%\""
        );
        crate::rolling::amount(v)
            .filter(|a| !matches!(a, Amount::Count(n) if *n < least))
            .map(Some)
            .ok_or_else(|| cx.at(raw, why))
    };
    Ok(Step {
        role: role.to_owned(),
        task: task.to_owned(),
        max_concurrency: amount(concurrency, "max_concurrency", 1)?,
        max_errors: amount(errors, "max_errors", 0)?,
    })
}

/// What `heet run` runs: a scenario's steps, or one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Scenario(String),
    Task(String),
}

impl Tasks {
    /// The steps `selection` runs, or why there are none.
    pub fn steps(&self, selection: &Selection) -> Result<Vec<Step>, String> {
        match selection {
            Selection::Scenario(name) => self.scenarios.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.scenarios.keys().map(String::as_str).collect();
                format!(
                    "there is no scenario {name:?} (the scenarios are {})",
                    if known.is_empty() {
                        "none: add a [scenarios.NAME] table".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            }),
            Selection::Task(spec) => {
                let (role, task) = spec
                    .split_once('.')
                    .ok_or_else(|| format!("--task {spec:?} is not ROLE.TASK, e.g. www.update"))?;
                if !self.tasks.contains_key(&(role.to_owned(), task.to_owned())) {
                    return Err(self.no_task(spec));
                }
                Ok(vec![Step {
                    role: role.to_owned(),
                    task: task.to_owned(),
                    max_concurrency: None,
                    max_errors: None,
                }])
            }
        }
    }

    /// Why `spec` names no task, with the tasks there are.
    fn no_task(&self, spec: &str) -> String {
        let known: Vec<String> = self.tasks.keys().map(|(r, t)| format!("{r}.{t}")).collect();
        format!(
            "there is no task {spec:?} (the tasks are {})",
            if known.is_empty() {
                "none: add a [tasks.ROLE.NAME] table".to_owned()
            } else {
                known.join(", ")
            }
        )
    }

    pub fn task(&self, step: &Step) -> &Task {
        &self.tasks[&(step.role.clone(), step.task.clone())]
    }
}

/// An instance a step runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub instance_id: String,
    pub role: String,
    pub index: u32,
    pub name: String,
}

/// The instances `step` runs on: heet's own running instances of its role (of every role
/// for [`ALL`]) in `project`/`env`, by role and index. An instance with heet's tags but not
/// heet's derived id is never one of them.
pub fn targets(
    step: &Step,
    observed: &[ObservedInstance],
    project: &str,
    env: &str,
) -> Vec<Target> {
    let mut out: Vec<Target> = observed
        .iter()
        .filter(|o| o.state == "running" && o.slot_id(project, env).is_some())
        .filter_map(|o| {
            // A slot id is derived from both: heet's own instance has them.
            let (Some(role), Some(index)) = o.role_index() else {
                return None;
            };
            (step.role == ALL || role == step.role).then(|| Target {
                instance_id: o.instance_id.clone(),
                role: role.to_owned(),
                index,
                name: o.name().to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.role, a.index).cmp(&(&b.role, b.index)));
    out
}

/// What the tasks hook is first handed for `task`: the definition's script, no variables.
pub fn script_of(task: &Task) -> TaskScript {
    TaskScript {
        script: task.script.clone(),
        env: Vec::new(),
    }
}

/// The lines of AWS-RunShellScript's `commands` for `task` on an instance of `role`, as the
/// plugins `shaped` it: the script, after the variables saying where it runs and then the
/// plugins' variables; under `runuser` when the task has a user.
pub fn commands(
    task: &Task,
    shaped: &TaskScript,
    project: &str,
    env: &str,
    role: &str,
    scenario: Option<&str>,
) -> Vec<String> {
    let mut script = format!(
        "export HEET_PROJECT={} HEET_ENV={} HEET_ROLE={} HEET_TASK={}\n",
        quoted(project),
        quoted(env),
        quoted(role),
        quoted(&task.name)
    );
    if let Some(s) = scenario {
        script.push_str(&format!("export HEET_SCENARIO={}\n", quoted(s)));
    }
    for var in &shaped.env {
        script.push_str(&format!("export {}={}\n", var.name, quoted(&var.value)));
    }
    script.push_str(&shaped.script);
    match &task.user {
        Some(user) => vec![format!(
            "runuser -u {user} -- /bin/bash -c {}",
            quoted(&script)
        )],
        None => script.lines().map(str::to_owned).collect(),
    }
}

/// `s` as one shell word: in single quotes, each `'` closed, escaped and reopened.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The value of the tag a successful scenario leaves on its instances: when it ended
/// (RFC 3339, so values sort by time), then the definition's version, if it has one.
pub fn run_tag_value(now_secs: i64, version: Option<&str>) -> String {
    let now = crate::text::rfc3339(now_secs);
    match version {
        Some(v) => format!("{now} {v}"),
        None => now,
    }
}

/// The last scenario run on each role's instances (heet's own), as `status` shows it:
/// `www: deploy at 2026-12-07T01:56:10Z 1.4.2`, by role.
pub fn last_runs(observed: &[ObservedInstance], project: &str, env: &str) -> Vec<String> {
    let mut last: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for o in observed
        .iter()
        .filter(|o| o.slot_id(project, env).is_some())
    {
        let Some(role) = o.tags.get(crate::namespace::TAG_ROLE) else {
            continue;
        };
        for (key, value) in &o.tags {
            let Some(scenario) = key.strip_prefix(crate::namespace::TAG_SCENARIO) else {
                continue;
            };
            let newer = last
                .get(role.as_str())
                .is_none_or(|(_, v)| value.as_str() > *v);
            if newer {
                last.insert(role, (scenario, value));
            }
        }
    }
    last.into_iter()
        .map(|(role, (scenario, value))| format!("{role}: {scenario} at {value}"))
        .collect()
}

/// The last `lines` lines of `text`: what a report shows of an instance's output.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Definition;

    fn parse(src: &str) -> Result<Definition, String> {
        Definition::parse(Path::new("heet.toml"), src).map_err(|e| e.to_string())
    }

    const BASE: &str = "[project]\nname = \"shop\"\n[defaults]\nami = \"ami-1\"\n[roles.www]\n[roles.db]\n[environments.staging]\n";

    #[test]
    fn tasks_and_scenarios_are_read_with_their_settings() {
        let def = parse(&format!(
            "{BASE}[tasks.ALL.update]\nrun = \"apt-get update\"\n[tasks.db.migrate]\nrun = \"./migrate\"\ntimeout = \"10m\"\nuser = \"app\"\nworking_dir = \"/srv/app\"\n[scenarios.deploy]\nsteps = [\"ALL.update\", {{ task = \"db.migrate\", max_concurrency = 1, max_errors = \"50%\" }}]\n"
        ))
        .unwrap();
        let migrate = &def.tasks.tasks[&("db".to_owned(), "migrate".to_owned())];
        assert_eq!(migrate.timeout, Duration::from_secs(600));
        assert_eq!(migrate.user.as_deref(), Some("app"));
        assert_eq!(migrate.working_dir.as_deref(), Some("/srv/app"));
        let steps = &def.tasks.scenarios["deploy"];
        assert_eq!(
            steps.iter().map(Step::id).collect::<Vec<_>>(),
            ["ALL.update", "db.migrate"]
        );
        assert_eq!(steps[1].max_concurrency, Some(Amount::Count(1)));
        assert_eq!(steps[1].max_errors, Some(Amount::Percent(50)));
        assert_eq!(steps[0].max_errors, None);
    }

    #[test]
    fn a_bad_task_or_step_is_refused_at_its_place() {
        for (extra, line, says) in [
            (
                "[tasks.web.x]\nrun = \"true\"\n",
                8,
                "there is no role \"web\"",
            ),
            ("[tasks.www.x]\n", 8, "set run (a script) or script"),
            (
                "[tasks.www.x]\nrun = \"a\"\nscript = \"b\"\n",
                9,
                "set run or script, not both",
            ),
            ("[tasks.www.x]\nscript = \"missing.sh\"\n", 9, "cannot read"),
            (
                "[tasks.www.x]\nrun = \"true\"\ntimeout = \"3d\"\n",
                10,
                "timeout is seconds or a duration up to 48h",
            ),
            (
                "[tasks.www.x]\nrun = \"true\"\nuser = \"Root!\"\n",
                10,
                "is not a Unix user name",
            ),
            (
                "[tasks.www.x]\nrun = \"true\"\nworking_dir = \"srv\"\n",
                10,
                "working_dir is an absolute path",
            ),
            (
                "[tasks.www.x]\nrun = \"true\"\n[scenarios.deploy]\nsteps = [\"www.y\"]\n",
                11,
                "there is no task \"www.y\" (the tasks are www.x)",
            ),
            (
                "[tasks.www.x]\nrun = \"true\"\n[scenarios.deploy]\nsteps = [\"x\"]\n",
                11,
                "\"x\" is not ROLE.TASK",
            ),
            (
                "[tasks.www.x]\nrun = \"true\"\n[scenarios.deploy]\nsteps = [{ task = \"www.x\", max_concurrency = 0 }]\n",
                11,
                "max_concurrency is a number of instances (at least 1)",
            ),
            (
                "[scenarios.deploy]\nsteps = []\n",
                9,
                "a scenario needs a step",
            ),
        ] {
            let err = parse(&format!("{BASE}{extra}")).unwrap_err();
            assert!(
                err.starts_with(&format!("heet.toml:{line}:")) && err.contains(says),
                "{extra}: {err}"
            );
        }
    }

    fn observed(id: &str, role: &str, index: u32, heets: bool, state: &str) -> ObservedInstance {
        let mut tags = BTreeMap::new();
        for (k, v) in [
            (crate::namespace::TAG_PROJECT, "shop"),
            (crate::namespace::TAG_ENV, "staging"),
            (crate::namespace::TAG_ROLE, role),
        ] {
            tags.insert(k.to_owned(), v.to_owned());
        }
        tags.insert(crate::namespace::TAG_INDEX.to_owned(), index.to_string());
        let id_tag = if heets {
            crate::namespace::slot_id("shop", "staging", role, index)
        } else {
            "0000000000000000".to_owned()
        };
        tags.insert(crate::namespace::TAG_ID.to_owned(), id_tag);
        ObservedInstance {
            instance_id: id.into(),
            state: state.into(),
            instance_type: "t3.micro".into(),
            ami: "ami-1".into(),
            launch_time: None,
            public_dns: None,
            private_dns: None,
            public_ip: None,
            private_ip: None,
            launch_index: None,
            data_volume: None,
            monitoring: false,
            source_dest_check: Some(true),
            tags,
        }
    }

    #[test]
    fn a_step_runs_on_heets_running_instances_of_its_role_only() {
        let seen = [
            observed("i-2", "www", 2, true, "running"),
            observed("i-1", "www", 1, true, "running"),
            observed("i-db", "db", 1, true, "running"),
            observed("i-fake", "www", 3, false, "running"),
            observed("i-gone", "www", 4, true, "terminated"),
        ];
        let step = |role: &str| Step {
            role: role.into(),
            task: "t".into(),
            max_concurrency: None,
            max_errors: None,
        };
        let ids = |role: &str| -> Vec<String> {
            targets(&step(role), &seen, "shop", "staging")
                .into_iter()
                .map(|t| t.instance_id)
                .collect()
        };
        assert_eq!(ids("www"), ["i-1", "i-2"]);
        assert_eq!(ids(ALL), ["i-db", "i-1", "i-2"]);
        assert!(targets(&step("www"), &seen, "shop", "production").is_empty());
    }

    #[test]
    fn the_script_says_where_it_runs_and_a_user_gets_it_quoted_whole() {
        let mut task = Task {
            role: "db".into(),
            name: "migrate".into(),
            script: "echo 'it''s'\n./migrate\n".into(),
            file: None,
            timeout: DEFAULT_TIMEOUT,
            user: None,
            working_dir: None,
        };
        assert_eq!(
            commands(
                &task,
                &script_of(&task),
                "shop",
                "staging",
                "db",
                Some("deploy")
            ),
            [
                "export HEET_PROJECT='shop' HEET_ENV='staging' HEET_ROLE='db' HEET_TASK='migrate'",
                "export HEET_SCENARIO='deploy'",
                "echo 'it''s'",
                "./migrate"
            ]
        );
        let shaped = TaskScript {
            script: "flock /run/lock/migrate ./migrate".into(),
            env: vec![crate::plugins::api::EnvVar {
                name: "RAILS_ENV".into(),
                value: "it's production".into(),
            }],
        };
        assert_eq!(
            commands(&task, &shaped, "shop", "production", "db", None),
            [
                "export HEET_PROJECT='shop' HEET_ENV='production' HEET_ROLE='db' HEET_TASK='migrate'",
                "export RAILS_ENV='it'\\''s production'",
                "flock /run/lock/migrate ./migrate"
            ],
            "the plugins' variables come after heet's, quoted, and their script replaces the definition's"
        );
        task.user = Some("app".into());
        let wrapped = commands(&task, &script_of(&task), "shop", "staging", "db", None);
        assert_eq!(wrapped.len(), 1);
        assert!(
            wrapped[0].starts_with(
                "runuser -u app -- /bin/bash -c 'export HEET_PROJECT='\\''shop'\\'' HEET_ENV="
            ),
            "{}",
            wrapped[0]
        );
        assert!(wrapped[0].ends_with("./migrate\n'"), "{}", wrapped[0]);
    }

    #[test]
    fn max_errors_says_how_many_failures_a_step_takes() {
        let mut step = Step {
            role: "www".into(),
            task: "t".into(),
            max_concurrency: None,
            max_errors: None,
        };
        assert!(!step.fails(0, 4));
        assert!(step.fails(1, 4));
        step.max_errors = Some(Amount::Count(1));
        assert!(!step.fails(1, 4) && step.fails(2, 4));
        step.max_errors = Some(Amount::Percent(50));
        assert!(!step.fails(2, 4) && step.fails(3, 4));
    }

    #[test]
    fn each_role_shows_its_latest_scenario_run_on_heets_instances() {
        let mut www = observed("i-1", "www", 1, true, "running");
        www.tags.insert(
            "heet:scenario/deploy".into(),
            run_tag_value(1_765_000_000, Some("1.4.2")),
        );
        www.tags.insert(
            "heet:scenario/hotfix".into(),
            run_tag_value(1_765_000_600, None),
        );
        let mut fake = observed("i-fake", "db", 1, false, "running");
        fake.tags.insert(
            "heet:scenario/deploy".into(),
            run_tag_value(1_765_999_999, None),
        );
        let db = observed("i-db", "db", 1, true, "running");
        assert_eq!(
            run_tag_value(1_765_000_000, Some("1.4.2")),
            "2025-12-06T05:46:40Z 1.4.2"
        );
        assert_eq!(
            last_runs(&[www, fake, db], "shop", "staging"),
            ["www: hotfix at 2025-12-06T05:56:40Z"]
        );
    }

    #[test]
    fn a_tail_is_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
