//! `heet run`: a scenario's steps, or one task, on an environment's instances through SSM Run
//! Command (AWS-RunShellScript), no SSH and no open port. Each step is sent to heet's own
//! running instances of its role, by id (never by tags a look-alike could copy), and waited
//! for on every one of them before the next; the first step that fails stops the scenario,
//! and the report names each failed instance with its exit code and the tail of its output.
//! A scenario that succeeds leaves `heet:scenario/<name>` on the instances it ran on.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::cli::Global;
use crate::cloud::{Aws, CallSummary, Invocation, ShellCommand};
use crate::commands::{Outcome, UsageError, connection, emit_in, emit_stats};
use crate::definition::Definition;
use crate::plugins::{PluginSet, Runtime, api::TaskContext};
use crate::progress::Progress;
use crate::tasks::{self, Selection, Step, Target};
use crate::text::shown;

/// How long SSM may not know an invocation after SendCommand before heet gives up on it: its
/// eventual consistency is seconds; a minute is far beyond it.
const UNKNOWN_FOR: Duration = Duration::from_secs(60);
/// Beyond a task's own timeout, how long an invocation may take to be delivered and end.
const DELIVERY: Duration = Duration::from_secs(120);
/// GetCommandInvocation calls in flight at once.
const POLLS: usize = 8;
/// Lines of an instance's output a text report shows.
const TAIL_LINES: usize = 10;

/// What `heet run` did.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub project: String,
    pub env: String,
    /// The scenario run, or none for `--task`.
    pub scenario: Option<String>,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    pub steps: Vec<StepReport>,
    pub aws_calls: CallSummary,
}

/// One step: its task on each of its instances.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// `ROLE.TASK`.
    pub task: String,
    /// `succeeded`, `failed` or `not run`.
    pub status: &'static str,
    /// The SSM command ids it was sent as (one per role and 50 instances).
    pub commands: Vec<String>,
    pub invocations: Vec<InvocationReport>,
}

/// One instance's run of a step.
#[derive(Debug, Serialize)]
pub struct InvocationReport {
    pub instance_id: String,
    pub role: String,
    pub index: u32,
    pub name: String,
    pub command_id: String,
    /// As SSM says: `Success`, `Failed`, `TimedOut`, `Cancelled`, ... (`Unknown` when SSM
    /// never knew it).
    pub status: String,
    /// The script's exit code (-1 when it did not end).
    pub response_code: i32,
    /// The last lines of its output and errors (SSM keeps their first 24,000 and 8,000
    /// characters).
    pub output: String,
    pub error: String,
}

impl InvocationReport {
    fn succeeded(&self) -> bool {
        self.status == "Success"
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.scenario {
            Some(s) => format!("scenario {s}"),
            None => format!("task {}", self.steps[0].task),
        };
        write!(
            f,
            "{what} on {}/{}: {}",
            self.project, self.env, self.status
        )?;
        let n = self.steps.len();
        for (i, step) in self.steps.iter().enumerate() {
            let failed: Vec<&InvocationReport> =
                step.invocations.iter().filter(|i| !i.succeeded()).collect();
            match step.status {
                "not run" => write!(f, "\n  {}/{n} {}: not run", i + 1, step.task)?,
                status => write!(
                    f,
                    "\n  {}/{n} {}: {status} on {} of {} instance(s)",
                    i + 1,
                    step.task,
                    if status == "succeeded" {
                        step.invocations.len() - failed.len()
                    } else {
                        failed.len()
                    },
                    step.invocations.len()
                )?,
            }
            if step.status == "succeeded" {
                continue;
            }
            for inv in failed {
                write!(
                    f,
                    "\n    {}[{}] {} {}: {}, exit {}",
                    inv.role,
                    inv.index,
                    shown(&inv.name),
                    inv.instance_id,
                    inv.status,
                    inv.response_code
                )?;
                for line in inv.error.lines().chain(inv.output.lines()) {
                    write!(f, "\n      | {}", shown(line))?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `selection` on `env`; exit 1 when a step fails (after the report).
pub async fn run(
    global: &Global,
    env: &str,
    selection: &Selection,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let def = Definition::load(&global.file)?;
    def.environment(env)?;
    let steps = def.tasks.steps(selection).map_err(UsageError)?;
    let runtime = Runtime::new()?;
    let mut plugins = PluginSet::load(&runtime, &def)?;
    let aws = Aws::connect(&connection(global, &def, env)).await?;
    let observed = aws.ec2.instances(&def.project, env).await?;
    let scenario = match selection {
        Selection::Scenario(s) => Some(s.clone()),
        Selection::Task(_) => None,
    };
    // Every step's targets and scripts before the first is sent: a step with no instance or
    // a plugin that fails stops the run with nothing sent.
    let mut sends = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let targets = tasks::targets(step, &observed, &def.project, env);
        if targets.is_empty() {
            anyhow::bail!(
                "step {} ({step}): no running instance of {} in {}/{env}: `heet up --env {env}` first",
                i + 1,
                if step.role == tasks::ALL {
                    "any role".to_owned()
                } else {
                    format!("role {}", step.role)
                },
                def.project
            );
        }
        sends.push(shape(
            &def,
            (env, &aws.region),
            scenario.as_deref(),
            step,
            targets,
            &mut plugins,
        )?);
    }

    let mut reports = Vec::new();
    let mut stopped: Option<String> = None;
    for (i, (step, send)) in steps.iter().zip(&sends).enumerate() {
        if stopped.is_some() {
            reports.push(StepReport {
                task: step.id(),
                status: "not run",
                commands: Vec::new(),
                invocations: Vec::new(),
            });
            continue;
        }
        tracing::info!(
            "step {}/{}: {step} on {} instance(s)",
            i + 1,
            steps.len(),
            send.iter().map(|r| r.targets.len()).sum::<usize>()
        );
        let report = run_step(&aws, &def, env, scenario.as_deref(), step, send, progress).await?;
        let failed = report.invocations.iter().filter(|i| !i.succeeded()).count();
        if step.fails(failed, report.invocations.len()) {
            stopped = Some(format!(
                "{} stopped at step {} of {} ({step}): {failed} of {} instance(s) failed",
                scenario
                    .as_deref()
                    .map_or_else(|| "the task".to_owned(), |s| format!("scenario {s}")),
                i + 1,
                steps.len(),
                report.invocations.len()
            ));
            reports.push(StepReport {
                status: "failed",
                ..report
            });
        } else {
            reports.push(report);
        }
    }
    if stopped.is_none()
        && let Some(name) = &scenario
    {
        record_run(&aws, &def, name, &reports).await;
    }
    let report = RunReport {
        project: def.project.clone(),
        env: env.to_owned(),
        scenario,
        status: if stopped.is_some() {
            "failed"
        } else {
            "succeeded"
        },
        steps: reports,
        aws_calls: aws.stats.summary(),
    };
    emit_in(global, &aws, &report)?;
    emit_stats(global, &report.aws_calls);
    match stopped {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(Outcome::Done),
    }
}

/// One role's part of a step: its instances, and the command lines its task is sent as.
struct RoleSend {
    role: String,
    targets: Vec<Target>,
    commands: Vec<String>,
}

/// `step`'s task for each role among `targets`, as the plugins shape it for that role.
fn shape(
    def: &Definition,
    (env, region): (&str, &str),
    scenario: Option<&str>,
    step: &Step,
    targets: Vec<Target>,
    plugins: &mut PluginSet,
) -> anyhow::Result<Vec<RoleSend>> {
    let task = def.tasks.task(step);
    let mut by_role: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for t in targets {
        by_role.entry(t.role.clone()).or_default().push(t);
    }
    by_role
        .into_iter()
        .map(|(role, targets)| {
            let ctx = TaskContext {
                project: def.project.clone(),
                env: env.to_owned(),
                region: region.to_owned(),
                role: role.clone(),
                task: task.name.clone(),
                scenario: scenario.map(str::to_owned),
                version: def.version.clone(),
            };
            let shaped = plugins.task(&ctx, tasks::script_of(task))?;
            let commands = tasks::commands(task, &shaped, &def.project, env, &role, scenario);
            Ok(RoleSend {
                role,
                targets,
                commands,
            })
        })
        .collect()
}

/// Sends `step` to its roles' instances (one command per role, as the script says its role,
/// and per 50 instances, SendCommand's limit) and waits until SSM is done on every one.
async fn run_step(
    aws: &Aws,
    def: &Definition,
    env: &str,
    scenario: Option<&str>,
    step: &Step,
    send: &[RoleSend],
    progress: &Progress,
) -> anyhow::Result<StepReport> {
    let task = def.tasks.task(step);
    let mut sent: Vec<(String, &Target)> = Vec::new();
    let mut commands = Vec::new();
    for RoleSend {
        role,
        targets,
        commands: lines,
    } in send
    {
        for chunk in targets.chunks(tasks::MAX_TARGETS) {
            let command = ShellCommand {
                instance_ids: chunk.iter().map(|t| t.instance_id.clone()).collect(),
                commands: lines.clone(),
                timeout_secs: task.timeout.as_secs(),
                working_dir: task.working_dir.clone(),
                comment: format!(
                    "heet {}/{env} {}{step}",
                    def.project,
                    scenario.map_or_else(String::new, |s| format!("{s}: "))
                ),
                max_concurrency: step.max_concurrency.map(|a| a.to_string()),
                max_errors: step.max_errors.map(|a| a.to_string()),
            };
            let id = aws.ssm.send_command(&command).await?;
            tracing::info!("{step}: sent {id} to {} instance(s) of {role}", chunk.len());
            sent.extend(chunk.iter().map(|t| (id.clone(), t)));
            commands.push(id);
        }
    }

    let bar = progress.bar(sent.len(), &step.id());
    let started = Instant::now();
    let deadline = task.timeout + DELIVERY;
    let mut results: BTreeMap<usize, Invocation> = BTreeMap::new();
    let mut pause = Duration::from_millis(500);
    while results.len() < sent.len() {
        let waiting: Vec<(usize, &(String, &Target))> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| !results.contains_key(i))
            .collect();
        let seen: Vec<(usize, anyhow::Result<Option<Invocation>>)> = stream::iter(waiting)
            .map(|(i, (command, target))| async move {
                (i, aws.ssm.invocation(command, &target.instance_id).await)
            })
            .buffer_unordered(POLLS)
            .collect()
            .await;
        let elapsed = started.elapsed();
        for (i, seen) in seen {
            match seen? {
                Some(inv) if inv.is_over() => {
                    results.insert(i, inv);
                }
                None if elapsed > UNKNOWN_FOR => {
                    results.insert(i, unknown("SSM never knew this invocation"));
                }
                Some(_) | None if elapsed > deadline => {
                    results.insert(
                        i,
                        unknown(&format!(
                            "not over after {} s (the task's timeout and {} s)",
                            elapsed.as_secs(),
                            DELIVERY.as_secs()
                        )),
                    );
                }
                Some(_) | None => {}
            }
        }
        bar.set_position(results.len() as u64);
        if results.len() < sent.len() {
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
    }
    bar.finish_and_clear();

    let invocations = sent
        .iter()
        .enumerate()
        .map(|(i, (command, t))| {
            let inv = &results[&i];
            InvocationReport {
                instance_id: t.instance_id.clone(),
                role: t.role.clone(),
                index: t.index,
                name: t.name.clone(),
                command_id: command.clone(),
                status: inv.status.clone(),
                response_code: inv.response_code,
                output: tasks::tail(&inv.output, TAIL_LINES),
                error: tasks::tail(&inv.error, TAIL_LINES),
            }
        })
        .collect();
    Ok(StepReport {
        task: step.id(),
        status: "succeeded",
        commands,
        invocations,
    })
}

/// Leaves `heet:scenario/<name>` = when and the definition's version on every instance the
/// scenario ran on (fabcloudkit's build tags; `status` shows each role's last run). The
/// scenario has run whatever this says: a failure to tag is a warning, not the run's.
async fn record_run(aws: &Aws, def: &Definition, name: &str, steps: &[StepReport]) {
    let mut ids: Vec<String> = steps
        .iter()
        .flat_map(|s| &s.invocations)
        .map(|i| i.instance_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    let now = crate::commands::now_secs();
    let tag = BTreeMap::from([(
        format!("{}{name}", crate::namespace::TAG_SCENARIO),
        tasks::run_tag_value(now, def.version.as_deref()),
    )]);
    if let Err(e) = aws.ec2.set_tags(&ids, &tag).await {
        tracing::warn!("scenario {name} ran; recording it in its instances' tags failed: {e:#}");
    }
}

/// An invocation heet stopped waiting for.
fn unknown(why: &str) -> Invocation {
    Invocation {
        status: "Unknown".to_owned(),
        response_code: -1,
        output: String::new(),
        error: why.to_owned(),
    }
}
