//! CloudFormation: heet's stacks described by name, previewed as change sets (created,
//! described, deleted again), created, updated and deleted, each waited for until
//! CloudFormation is done; a stack that rolls back or fails is an error carrying the events
//! that failed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, Tag};

use super::sdk_error;
use crate::kinds::stacks::{ObservedStack, Preview, ResourceChange, Send};

/// How long heet waits for CloudFormation to finish one stack: its own default for a
/// stack's resources is an hour.
const WAIT: Duration = Duration::from_secs(60 * 60);
/// The first and the longest pause between two looks at a stack under way.
const POLL_FIRST: Duration = Duration::from_millis(500);
const POLL_MAX: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Cfn {
    client: Client,
}

/// A stack CloudFormation could not bring to what was asked: it rolled back, or failed.
/// Exit 1; nothing after it is applied.
#[derive(Debug, thiserror::Error)]
#[error("stack {name} ended {status}{}", failed_events(.events))]
pub struct StackFailed {
    pub name: String,
    pub status: String,
    /// The events of the operation that failed, oldest first: `logical id (type): status: reason`.
    pub events: Vec<String>,
}

fn failed_events(events: &[String]) -> String {
    if events.is_empty() {
        String::new()
    } else {
        format!(
            "; what failed: {}",
            events
                .iter()
                .map(|e| crate::text::shown(e).to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// Whether CloudFormation answered that the stack does not exist.
fn missing<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ValidationError") && e.message().is_some_and(|m| m.contains("does not exist"))
}

/// Whether CloudFormation refused an update or change set because nothing would change
/// (AWS's answer; moto creates and applies such an update).
fn nothing_to_update(message: Option<&str>) -> bool {
    message.is_some_and(|m| {
        m.contains("No updates are to be performed") || m.contains("didn't contain changes")
    })
}

/// A key and its value as CloudFormation lists them (a value may be empty).
fn pair(key: Option<&str>, value: Option<&str>) -> Option<(String, String)> {
    Some((key?.to_owned(), value.unwrap_or_default().to_owned()))
}

fn parameters(p: &BTreeMap<String, String>) -> Vec<Parameter> {
    p.iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect()
}

fn capabilities(c: &BTreeSet<String>) -> Vec<Capability> {
    c.iter().map(|c| Capability::from(c.as_str())).collect()
}

fn tags(t: &BTreeMap<String, String>) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

impl Cfn {
    pub fn new(client: Client) -> Cfn {
        Cfn { client }
    }

    /// The stacks named (heet's name → CloudFormation's) that exist, each with the template
    /// it runs.
    pub async fn observe(&self, names: &[(String, String)]) -> anyhow::Result<Vec<ObservedStack>> {
        let found = futures::future::try_join_all(names.iter().map(|(stack, full)| async move {
            let Some(mut s) = self.describe(full).await? else {
                return anyhow::Ok(None);
            };
            s.stack = stack.clone();
            let body = self
                .client
                .get_template()
                .stack_name(&s.id)
                .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
                .send()
                .await
                .map_err(|e| sdk_error("cloudformation:GetTemplate", e))?;
            s.body = body.template_body().map(str::to_owned);
            Ok(Some(s))
        }))
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The stack `name_or_id` as it is now, without its template; none when there is none.
    async fn describe(&self, name_or_id: &str) -> anyhow::Result<Option<ObservedStack>> {
        let out = match self
            .client
            .describe_stacks()
            .stack_name(name_or_id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(sdk_error("cloudformation:DescribeStacks", e)),
        };
        let Some(s) = out.stacks().first() else {
            return Ok(None);
        };
        Ok(Some(ObservedStack {
            stack: String::new(),
            id: s.stack_id().unwrap_or_default().to_owned(),
            status: s
                .stack_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            body: None,
            parameters: s
                .parameters()
                .iter()
                .filter_map(|p| pair(p.parameter_key(), p.parameter_value()))
                .collect(),
            capabilities: s
                .capabilities()
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            outputs: s
                .outputs()
                .iter()
                .filter_map(|o| pair(o.output_key(), o.output_value()))
                .collect(),
            tags: s
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect(),
        }))
    }

    /// What updating stack `name` with `send` would do, as a change set tells: created,
    /// described until CloudFormation has worked it out, and deleted again.
    pub async fn preview(&self, name: &str, send: &Send, token: &str) -> Preview {
        // By name: AWS takes a stack's name or id, moto only its name.
        match self.change_set(name, send, token).await {
            Ok(p) => p,
            Err(e) => Preview::Unknown(Some(format!("{e:#}"))),
        }
    }

    async fn change_set(&self, name: &str, send: &Send, token: &str) -> anyhow::Result<Preview> {
        let made = self
            .client
            .create_change_set()
            .stack_name(name)
            .change_set_name(format!("heet-plan-{token}"))
            .change_set_type(ChangeSetType::Update)
            .template_body(&send.body)
            .set_parameters(Some(parameters(&send.parameters)))
            .set_capabilities(Some(capabilities(&send.capabilities)))
            .description("heet plan: described, then deleted")
            .send()
            .await;
        let arn = match made {
            Ok(out) => out.id().unwrap_or_default().to_owned(),
            Err(e) if nothing_to_update(e.message()) => return Ok(Preview::Nothing),
            Err(e) => return Err(sdk_error("cloudformation:CreateChangeSet", e)),
        };
        let described = self.described(&arn).await;
        // Deleted whatever the description said: a change set left behind is clutter only,
        // but heet leaves none.
        let deleted = self
            .client
            .delete_change_set()
            .change_set_name(&arn)
            .send()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(
                "{:#}",
                sdk_error("cloudformation:DeleteChangeSet", e).context(arn.clone())
            );
        }
        described
    }

    async fn described(&self, arn: &str) -> anyhow::Result<Preview> {
        let started = Instant::now();
        let mut pause = POLL_FIRST;
        loop {
            let mut changes = Vec::new();
            let mut next: Option<String> = None;
            let status = loop {
                let out = self
                    .client
                    .describe_change_set()
                    .change_set_name(arn)
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| sdk_error("cloudformation:DescribeChangeSet", e))?;
                for c in out.changes() {
                    if let Some(r) = c.resource_change() {
                        changes.push(ResourceChange {
                            action: r
                                .action()
                                .map(|a| a.as_str().to_owned())
                                .unwrap_or_default(),
                            logical_id: r.logical_resource_id().unwrap_or_default().to_owned(),
                            resource_type: r.resource_type().unwrap_or_default().to_owned(),
                            replacement: r.replacement().map(|r| r.as_str().to_owned()),
                        });
                    }
                }
                next = out.next_token().map(str::to_owned);
                if next.is_none() {
                    break (
                        out.status().cloned(),
                        out.status_reason().map(str::to_owned),
                    );
                }
            };
            match status {
                (Some(ChangeSetStatus::CreateComplete), _) if changes.is_empty() => {
                    return Ok(Preview::Nothing);
                }
                (Some(ChangeSetStatus::CreateComplete), _) => return Ok(Preview::Changes(changes)),
                (Some(ChangeSetStatus::Failed), reason) if nothing_to_update(reason.as_deref()) => {
                    return Ok(Preview::Nothing);
                }
                (Some(ChangeSetStatus::Failed), reason) => {
                    anyhow::bail!(
                        "the change set failed: {}",
                        reason.unwrap_or_else(|| "CloudFormation gave no reason".into())
                    );
                }
                _ if started.elapsed() > Duration::from_secs(120) => {
                    anyhow::bail!("the change set was not ready after 2 min");
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
            }
        }
    }

    /// Creates stack `name` and waits until it is; returns its id. The token makes a retry
    /// of the same create one stack.
    pub async fn create(
        &self,
        name: &str,
        send: &Send,
        tags: &BTreeMap<String, String>,
        token: &str,
    ) -> anyhow::Result<String> {
        let out = self
            .client
            .create_stack()
            .stack_name(name)
            .template_body(&send.body)
            .set_parameters(Some(parameters(&send.parameters)))
            .set_capabilities(Some(capabilities(&send.capabilities)))
            .set_tags(Some(self::tags(tags)))
            .client_request_token(token)
            .send()
            .await
            .map_err(|e| sdk_error("cloudformation:CreateStack", e))?;
        let id = out.stack_id().unwrap_or(name).to_owned();
        self.wait(name, &id, "CREATE_COMPLETE").await?;
        Ok(id)
    }

    /// Updates stack `id` and waits until it is; an update CloudFormation finds nothing to
    /// do in is done.
    pub async fn update(
        &self,
        name: &str,
        id: &str,
        send: &Send,
        tags: &BTreeMap<String, String>,
        token: &str,
    ) -> anyhow::Result<()> {
        let sent = self
            .client
            .update_stack()
            .stack_name(id)
            .template_body(&send.body)
            .set_parameters(Some(parameters(&send.parameters)))
            .set_capabilities(Some(capabilities(&send.capabilities)))
            .set_tags(Some(self::tags(tags)))
            .client_request_token(token)
            .send()
            .await;
        match sent {
            Ok(_) => self.wait(name, id, "UPDATE_COMPLETE").await,
            Err(e) if nothing_to_update(e.message()) => Ok(()),
            Err(e) => Err(sdk_error("cloudformation:UpdateStack", e)),
        }
    }

    /// Deletes stack `id` and waits until it is gone.
    pub async fn delete(&self, name: &str, id: &str, token: &str) -> anyhow::Result<()> {
        match self
            .client
            .delete_stack()
            .stack_name(id)
            .client_request_token(token)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if missing(&e) => return Ok(()),
            Err(e) => return Err(sdk_error("cloudformation:DeleteStack", e)),
        }
        self.wait(name, id, "DELETE_COMPLETE").await
    }

    /// Waits until stack `id` is no longer under way: `done` (or gone, for a delete) is
    /// success, anything else a [`StackFailed`] with the events that failed.
    async fn wait(&self, name: &str, id: &str, done: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut pause = POLL_FIRST;
        loop {
            let status = match self.describe(id).await? {
                None if done == "DELETE_COMPLETE" => return Ok(()),
                None => anyhow::bail!("stack {name} is gone while heet waited for {done}"),
                Some(s) => s.status,
            };
            if status == done {
                return Ok(());
            }
            if !status.ends_with("_IN_PROGRESS") {
                return Err(StackFailed {
                    name: name.to_owned(),
                    events: self
                        .failures(name, id)
                        .await
                        .unwrap_or_else(|e| vec![format!("{e:#}")]),
                    status,
                }
                .into());
            }
            if started.elapsed() > WAIT {
                anyhow::bail!(
                    "stack {name} is still {status} after {} min: see its events in CloudFormation",
                    WAIT.as_secs() / 60
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// The failed events of the stack's last operation, oldest first: the events back to the
    /// stack's own `*_IN_PROGRESS` that began it (newest first, a page at a time).
    async fn failures(&self, name: &str, id: &str) -> anyhow::Result<Vec<String>> {
        let mut failed = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..20 {
            let out = self
                .client
                .describe_stack_events()
                .stack_name(id)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| sdk_error("cloudformation:DescribeStackEvents", e))?;
            if failed_in(out.stack_events(), name, id, &mut failed) {
                break;
            }
            match out.next_token() {
                Some(t) => next = Some(t.to_owned()),
                None => break,
            }
        }
        failed.reverse();
        Ok(failed)
    }
}

/// Adds the failed events of `events` (newest first) to `failed`; whether it reached the
/// stack's own event that began its last operation.
fn failed_in(
    events: &[aws_sdk_cloudformation::types::StackEvent],
    name: &str,
    id: &str,
    failed: &mut Vec<String>,
) -> bool {
    for e in events {
        let status = e.resource_status().map(|s| s.as_str()).unwrap_or_default();
        if status.ends_with("_FAILED") {
            failed.push(format!(
                "{} ({}): {status}: {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_type().unwrap_or("?"),
                e.resource_status_reason().unwrap_or("no reason given")
            ));
        }
        // The stack's own events, not a nested stack's.
        let is_stack =
            e.physical_resource_id() == Some(id) && e.logical_resource_id() == Some(name);
        if is_stack
            && matches!(
                status,
                "CREATE_IN_PROGRESS" | "UPDATE_IN_PROGRESS" | "DELETE_IN_PROGRESS"
            )
        {
            return true;
        }
    }
    false
}
