//! SSM Parameter Store: the per-environment lock, `/heet/<project>/<env>/lock`, and the
//! ledger's parameters (see `crate::ledger`); SSM Run Command for `heet run`'s tasks.
//!
//! The lock is a parameter created with `Overwrite=false`, so creating it is atomic: of two
//! runs, exactly one creates it and the other reads who holds it. No extra service.

use aws_sdk_ssm::types::ParameterType;
use serde::{Deserialize, Serialize};

use super::sdk_error;

#[derive(Clone)]
pub struct Ssm {
    client: aws_sdk_ssm::Client,
}

/// Who holds an environment's lock, as stored in the parameter's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// `user@host`.
    pub holder: String,
    pub pid: u32,
    /// The heet command holding it, e.g. `up`.
    pub command: String,
    /// Seconds since the epoch.
    pub since: i64,
    /// Tells this run's lock from a later one, so a run never releases a lock it lost to
    /// `heet unlock` and someone else's run.
    pub token: String,
    /// The account the run acts in (empty in locks of heet before it said).
    #[serde(default)]
    pub account: String,
}

impl LockHolder {
    /// The holder this process would be, running `command` in `account`.
    pub fn this_process(command: &str, account: &str) -> LockHolder {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map_or_else(|| "unknown".into(), |h| h.trim().to_owned());
        let pid = std::process::id();
        LockHolder {
            holder: format!(
                "{user}@{host}{}",
                boot_id().map_or_else(String::new, |b| format!(" boot {b}"))
            ),
            pid,
            command: command.to_owned(),
            since,
            account: account.to_owned(),
            token: crate::plugins::sha256_hex(
                format!(
                    "{user}/{host}/{pid}/{since:?}/{:?}",
                    std::time::Instant::now()
                )
                .as_bytes(),
            )[..16]
                .to_owned(),
        }
    }

    /// Whether this lock was taken on this machine (same user, host and boot) by a process
    /// that no longer exists: a run that was killed. Only then is it safe to break without
    /// asking; a lock from elsewhere, or where this cannot be told, stays until `heet unlock`.
    pub fn is_dead_local(&self, me: &LockHolder) -> bool {
        let proc_works = std::path::Path::new("/proc/self").exists();
        proc_works
            && self.holder == me.holder
            && boot_id().is_some()
            && self.pid != me.pid
            && !std::path::Path::new("/proc")
                .join(self.pid.to_string())
                .exists()
    }

    /// Who, how and where: `alice@build boot 1a2b (pid 42, heet up, account 111111111111)`.
    pub fn who(&self) -> String {
        let account = if self.account.is_empty() {
            String::new()
        } else {
            format!(", account {}", self.account)
        };
        format!(
            "{} (pid {}, heet {}{account})",
            self.holder, self.pid, self.command
        )
    }

    /// `since` as RFC 3339, e.g. `2026-11-22T23:40:00Z`.
    pub fn since_rfc3339(&self) -> String {
        crate::text::rfc3339(self.since)
    }
}

/// This boot of this machine, so a pid is compared only with pids of the same boot.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().chars().take(8).collect())
}

/// Another run holds the environment. Exit code 4.
#[derive(Debug, thiserror::Error)]
#[error(
    "{project}/{env} is locked by {} since {}; if that run is gone, `heet unlock --env {env}`",
    holder.who(), holder.since_rfc3339()
)]
pub struct EnvLocked {
    pub project: String,
    pub env: String,
    pub holder: LockHolder,
}

/// A config value in Parameter Store. A secret's value is only ever fetched decrypted on
/// request, and is `None` otherwise: heet never holds what it must not print.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigValue {
    pub name: String,
    pub secret: bool,
    pub value: Option<String>,
    pub version: i64,
}

fn config_value(p: &aws_sdk_ssm::types::Parameter, decrypted: bool) -> ConfigValue {
    let secret = p.r#type() == Some(&ParameterType::SecureString);
    ConfigValue {
        name: p.name().unwrap_or_default().to_owned(),
        secret,
        value: (!secret || decrypted).then(|| p.value().unwrap_or_default().to_owned()),
        version: p.version(),
    }
}

impl Ssm {
    /// Config values under `path`; secrets decrypted only with `reveal`.
    pub async fn config_list(&self, path: &str, reveal: bool) -> anyhow::Result<Vec<ConfigValue>> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(false)
            .with_decryption(reveal)
            .max_results(10)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ssm:GetParametersByPath", e))?;
            found.extend(page.parameters().iter().map(|p| config_value(p, reveal)));
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// One config value, if set; a secret decrypted only with `reveal`.
    pub async fn config_get(
        &self,
        name: &str,
        reveal: bool,
    ) -> anyhow::Result<Option<ConfigValue>> {
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(reveal)
            .send()
            .await
        {
            Ok(out) => Ok(out.parameter().map(|p| config_value(p, reveal))),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(err) => Err(sdk_error("ssm:GetParameter", err)),
        }
    }

    /// Writes a config value, a SecureString when `secret`; returns its new version.
    pub async fn config_put(&self, name: &str, value: &str, secret: bool) -> anyhow::Result<i64> {
        let out = self
            .client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(if secret {
                ParameterType::SecureString
            } else {
                ParameterType::String
            })
            .overwrite(true)
            .send()
            .await
            .map_err(|e| sdk_error("ssm:PutParameter", e))?;
        Ok(out.version())
    }

    pub fn new(client: aws_sdk_ssm::Client) -> Ssm {
        Ssm { client }
    }

    /// Takes the lock `name` for `me`, or says who has it. A lock left by a killed run on
    /// this machine is broken, with a warning, and taken.
    pub async fn acquire(
        &self,
        name: &str,
        me: &LockHolder,
        project: &str,
        env: &str,
    ) -> anyhow::Result<()> {
        match self.try_acquire(name, me, project, env).await {
            Err(err) => match err.downcast::<EnvLocked>() {
                Ok(locked) if locked.holder.is_dead_local(me) => {
                    tracing::warn!(
                        "breaking the lock of pid {} (heet {}, since {}): that process is gone",
                        locked.holder.pid,
                        locked.holder.command,
                        locked.holder.since_rfc3339()
                    );
                    self.delete(name).await?;
                    self.try_acquire(name, me, project, env).await
                }
                Ok(locked) => Err(locked.into()),
                Err(other) => Err(other),
            },
            ok => ok,
        }
    }

    async fn try_acquire(
        &self,
        name: &str,
        me: &LockHolder,
        project: &str,
        env: &str,
    ) -> anyhow::Result<()> {
        let value = serde_json::to_string(me)?;
        let put = self
            .client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(false)
            .description("heet: the run changing this environment now")
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_already_exists()) =>
            {
                let holder = self.holder(name).await?;
                // Our own put, retried after its answer was lost: the lock is ours.
                if holder.as_ref().is_some_and(|h| h.token == me.token) {
                    return Ok(());
                }
                let holder = holder.unwrap_or_else(|| LockHolder {
                    // Released between our put and our read: report it as held by nobody
                    // known rather than retrying behind the user's back.
                    holder: "a run that just finished".into(),
                    pid: 0,
                    command: "?".into(),
                    since: 0,
                    token: String::new(),
                    account: String::new(),
                });
                Err(EnvLocked {
                    project: project.to_owned(),
                    env: env.to_owned(),
                    holder,
                }
                .into())
            }
            Err(err) => Err(sdk_error("ssm:PutParameter", err)),
        }
    }

    /// Who holds the lock `name`, if anyone.
    pub async fn holder(&self, name: &str) -> anyhow::Result<Option<LockHolder>> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => {
                let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
                // A value heet cannot read still means the environment is held.
                Ok(Some(serde_json::from_str(value).unwrap_or_else(|_| {
                    LockHolder {
                        holder: format!("unreadable lock value {value:?}"),
                        pid: 0,
                        command: "?".into(),
                        since: 0,
                        token: String::new(),
                        account: String::new(),
                    }
                })))
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(err) => Err(sdk_error("ssm:GetParameter", err)),
        }
    }

    /// Releases the lock if it is still `me`'s.
    pub async fn release(&self, name: &str, me: &LockHolder) -> anyhow::Result<()> {
        match self.holder(name).await? {
            Some(h) if h.token == me.token => self.delete(name).await,
            _ => {
                tracing::warn!("the lock {name} was broken while this run held it");
                Ok(())
            }
        }
    }

    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(())
            }
            Err(err) => Err(sdk_error("ssm:DeleteParameter", err)),
        }
    }

    /// Every parameter under `path`, recursively, as (name, value).
    pub async fn list(&self, path: &str) -> anyhow::Result<Vec<(String, String)>> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .max_results(10)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ssm:GetParametersByPath", e))?;
            found.extend(page.parameters().iter().map(|p| {
                (
                    p.name().unwrap_or_default().to_owned(),
                    p.value().unwrap_or_default().to_owned(),
                )
            }));
        }
        Ok(found)
    }

    /// The names of the parameters under `path`, recursively; their values (secrets still
    /// encrypted) are dropped as they come.
    pub async fn names(&self, path: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.list(path).await?.into_iter().map(|(n, _)| n).collect())
    }

    /// Writes `value` at `name`, replacing what is there.
    pub async fn put(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| sdk_error("ssm:PutParameter", e))?;
        Ok(())
    }

    /// Deletes `names`, ten per call (the API's limit); missing ones are fine.
    pub async fn delete_all(&self, names: &[String]) -> anyhow::Result<()> {
        for chunk in names.chunks(10) {
            self.client
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("ssm:DeleteParameters", e))?;
        }
        Ok(())
    }
}

/// A shell script to run on instances with AWS-RunShellScript.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellCommand {
    /// At most [`crate::tasks::MAX_TARGETS`]: SendCommand's limit.
    pub instance_ids: Vec<String>,
    /// The script's lines.
    pub commands: Vec<String>,
    pub timeout_secs: u64,
    pub working_dir: Option<String>,
    /// At most 100 characters: says what sent it, in the console's command history.
    pub comment: String,
    /// SSM's MaxConcurrency and MaxErrors: `2` or `25%`.
    pub max_concurrency: Option<String>,
    pub max_errors: Option<String>,
}

/// One instance's run of a command, as SSM reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// `Pending`, `InProgress`, `Delayed`, `Success`, `Failed`, `TimedOut`, `Cancelled`,
    /// `Cancelling`.
    pub status: String,
    /// The script's exit code, once it ran (-1 before).
    pub response_code: i32,
    /// The first 24,000 characters of its standard output, and 8,000 of its errors.
    pub output: String,
    pub error: String,
}

impl Invocation {
    /// Whether SSM is done with it: it will not change any more.
    pub fn is_over(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Delayed" | "Cancelling"
        )
    }
}

impl Ssm {
    /// Sends `command` (AWS-RunShellScript) to its instances; returns the command's id.
    pub async fn send_command(&self, command: &ShellCommand) -> anyhow::Result<String> {
        let mut send = self
            .client
            .send_command()
            .document_name("AWS-RunShellScript")
            .set_instance_ids(Some(command.instance_ids.clone()))
            .parameters("commands", command.commands.clone())
            .parameters("executionTimeout", vec![command.timeout_secs.to_string()])
            .comment(command.comment.chars().take(100).collect::<String>());
        if let Some(dir) = &command.working_dir {
            send = send.parameters("workingDirectory", vec![dir.clone()]);
        }
        if let Some(c) = &command.max_concurrency {
            send = send.max_concurrency(c);
        }
        if let Some(e) = &command.max_errors {
            send = send.max_errors(e);
        }
        let out = send
            .send()
            .await
            .map_err(|e| sdk_error("ssm:SendCommand", e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("ssm:SendCommand answered without a command id"))
    }

    /// How `instance_id`'s run of `command_id` stands; `None` while SSM does not know it yet
    /// (`InvocationDoesNotExist`: right after SendCommand, SSM is eventually consistent).
    pub async fn invocation(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> anyhow::Result<Option<Invocation>> {
        match self
            .client
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Invocation {
                status: out
                    .status()
                    .map_or_else(|| "Pending".to_owned(), |s| s.as_str().to_owned()),
                response_code: out.response_code(),
                output: out.standard_output_content().unwrap_or_default().to_owned(),
                error: out.standard_error_content().unwrap_or_default().to_owned(),
            })),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_invocation_does_not_exist()) =>
            {
                Ok(None)
            }
            Err(err) => Err(sdk_error("ssm:GetCommandInvocation", err)),
        }
    }
}
