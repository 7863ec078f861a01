//! Reference plugin: how an environment's tasks run under `heet run` (the tasks hook). Each
//! task gets the environment's variables, and the tasks named in `lock` run under a lock file
//! on their instance where `lock_envs` says, so two runs of the same scenario (two operators,
//! a retried pipeline) never migrate one database at once.
//!
//! Config (`[plugins.config.task-env]`), all optional:
//! - `[plugins.config.task-env.env."*"]`: variables for every environment, e.g.
//!   `APP_NAME = "webapp"`; `[plugins.config.task-env.env.<env>]`: that environment's, which
//!   win over `"*"`
//! - `lock = ["db.migrate", "ALL.update"]`: the tasks, as `ROLE.TASK` (`ALL` for every role),
//!   that run under `flock` on `/run/lock/heet-<project>-<task>.lock`
//! - `lock_envs = ["production"]`: where they do (default: every environment)
//! - `lock_wait = 600`: seconds a run waits for the lock before the task fails with exit 75
//!
//! Variables an earlier plugin answered are kept unless this config sets the same name.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use heet_sdk::{Configure, EnvVar, TaskContext, TaskScript, Tasks};

heet_sdk::bindings!(
    world: "package heet-plugins:task-env;
        world plugin {
            include heet:plugin/base@0.1.2;
            export heet:plugin/configure@0.1.2;
            export heet:plugin/tasks@0.1.2;
        }",
    wit: "../../wit",
);

/// Every environment, in `env`.
const EVERY: &str = "*";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEnv {
    #[serde(default)]
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub lock: Vec<String>,
    pub lock_envs: Option<Vec<String>>,
    #[serde(default = "default_wait")]
    pub lock_wait: u32,
}

fn default_wait() -> u32 {
    600
}

impl TaskEnv {
    /// What heet would refuse of an answer, found at configure time rather than mid-run.
    fn errors(&self) -> Vec<String> {
        let names = self.env.values().flat_map(|vars| vars.keys());
        let mut errors: Vec<String> = names
            .filter_map(|name| {
                let shell = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !shell {
                    Some(format!("env: {name:?} is not a shell variable name"))
                } else if name.starts_with("HEET_") {
                    Some(format!("env: {name} is heet's (HEET_* are set by heet)"))
                } else {
                    None
                }
            })
            .collect();
        errors.extend(
            self.lock
                .iter()
                .filter(|t| {
                    t.split_once('.')
                        .is_none_or(|(r, n)| r.is_empty() || n.is_empty())
                })
                .map(|t| format!("lock: {t:?} is not ROLE.TASK (ALL.TASK for every role)")),
        );
        errors
    }

    fn locks(&self, ctx: &TaskContext) -> bool {
        let here = self
            .lock_envs
            .as_ref()
            .is_none_or(|envs| envs.contains(&ctx.env));
        here && self.lock.iter().any(|t| {
            t.split_once('.')
                .is_some_and(|(role, task)| (role == "ALL" || role == ctx.role) && task == ctx.task)
        })
    }

    pub fn shape(&self, ctx: &TaskContext, current: &TaskScript) -> Option<TaskScript> {
        let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
        for scope in [EVERY, ctx.env.as_str()] {
            for (name, value) in self.env.get(scope).into_iter().flatten() {
                vars.insert(name, value);
            }
        }
        let locks = self.locks(ctx);
        if vars.is_empty() && !locks {
            return None;
        }
        // Earlier plugins' variables keep their place; ours replace a same-named one.
        let mut env: Vec<EnvVar> = current
            .env
            .iter()
            .filter(|v| !vars.contains_key(v.name.as_str()))
            .cloned()
            .collect();
        env.extend(vars.into_iter().map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        }));
        let script = if locks {
            let file = format!("/run/lock/heet-{}-{}.lock", ctx.project, ctx.task);
            format!(
                "exec 9>>{file}\n\
                 if ! flock -w {wait} 9; then\n  \
                 echo \"heet: {task} waited {wait} s for {file}, held by another run\" >&2\n  \
                 exit 75\n\
                 fi\n\
                 {script}",
                wait = self.lock_wait,
                task = ctx.task,
                script = current.script,
            )
        } else {
            current.script.clone()
        };
        Some(TaskScript { script, env })
    }
}

static CONFIG: OnceLock<TaskEnv> = OnceLock::new();

pub struct TaskEnvPlugin;

impl Configure for TaskEnvPlugin {
    fn configure(config_json: &str) -> Result<(), Vec<String>> {
        let config: TaskEnv = heet_sdk::parse_config(config_json)?;
        let errors = config.errors();
        if !errors.is_empty() {
            return Err(errors);
        }
        let _ = CONFIG.set(config);
        Ok(())
    }
}

impl Tasks for TaskEnvPlugin {
    fn shape(ctx: &TaskContext, current: &TaskScript) -> Option<TaskScript> {
        CONFIG.get_or_init(TaskEnv::default).shape(ctx, current)
    }
}

heet_sdk::export_plugin!(TaskEnvPlugin, bindings, [configure, tasks]);

#[cfg(test)]
mod tests {
    use super::*;
    use heet_sdk::testing;

    fn config(json: &str) -> TaskEnv {
        serde_json::from_str(json).unwrap()
    }

    fn vars(task: &TaskScript) -> Vec<(&str, &str)> {
        task.env
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect()
    }

    #[test]
    fn an_environments_variables_win_over_every_environments_and_earlier_ones_stay() {
        let c = config(
            r#"{"env": {"*": {"APP": "webapp", "MODE": "dev"}, "production": {"MODE": "prod"}}}"#,
        );
        let earlier = testing::script("./migrate", &[("MODE", "x"), ("KEEP", "1")]);
        let prod = c
            .shape(
                &testing::task("webapp", "production", "db", "migrate"),
                &earlier,
            )
            .unwrap();
        assert_eq!(
            vars(&prod),
            [("KEEP", "1"), ("APP", "webapp"), ("MODE", "prod")]
        );
        assert_eq!(prod.script, "./migrate");
        let staging = c
            .shape(
                &testing::task("webapp", "staging", "db", "migrate"),
                &testing::script("./migrate", &[]),
            )
            .unwrap();
        assert_eq!(vars(&staging), [("APP", "webapp"), ("MODE", "dev")]);
    }

    #[test]
    fn a_locked_task_waits_for_its_lock_only_where_lock_envs_says() {
        let c = config(
            r#"{"lock": ["db.migrate", "ALL.update"], "lock_envs": ["production"], "lock_wait": 30}"#,
        );
        let current = testing::script("./manage.py migrate", &[]);
        let prod = c
            .shape(
                &testing::task("webapp", "production", "db", "migrate"),
                &current,
            )
            .unwrap();
        assert_eq!(
            prod.script,
            "exec 9>>/run/lock/heet-webapp-migrate.lock\n\
             if ! flock -w 30 9; then\n  \
             echo \"heet: migrate waited 30 s for /run/lock/heet-webapp-migrate.lock, held by another run\" >&2\n  \
             exit 75\n\
             fi\n\
             ./manage.py migrate"
        );
        let staging = testing::task("webapp", "staging", "db", "migrate");
        assert_eq!(
            c.shape(&staging, &current),
            None,
            "no lock and no variables: no opinion"
        );
        let other_role = testing::task("webapp", "production", "www", "migrate");
        assert_eq!(c.shape(&other_role, &current), None);
        let any_role = testing::task("webapp", "production", "www", "update");
        assert!(
            c.shape(&any_role, &current)
                .unwrap()
                .script
                .contains("flock -w 30 9")
        );
    }

    #[test]
    fn variables_and_locks_heet_would_refuse_are_refused_at_configure() {
        let errors = TaskEnvPlugin::configure(
            r#"{"env": {"*": {"HEET_ENV": "x", "2FAST": "y", "OK": "z"}}, "lock": ["migrate"]}"#,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("HEET_ENV is heet's")));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("\"2FAST\" is not a shell variable name"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("\"migrate\" is not ROLE.TASK"))
        );
    }
}
