//! CloudFormation stacks (`[stacks.NAME]`): each template read and checked where the
//! definition names it, the references to its outputs (`${stacks.NAME.OUTPUT}`) found and
//! resolved, and the plan of each stack against what runs, a change set's resources beside
//! an update.
//!
//! A stack is `<project>-<env>-<name>`, tagged like every heet resource and listed in the
//! ledger (`stack/NAME`, with its stack id): a stack of that name the ledger does not list is
//! someone else's, a conflict, never updated or deleted. It is made before the instances
//! (which may read its outputs) and deleted once they are gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::definition::{DefinitionError, Location};
use crate::kinds::{Bookkeeping, Change, Family, Stage};

/// The `heet:resource` prefix and ledger kind of a stack: `stack/NAME`.
pub const PREFIX: &str = "stack";

/// CloudFormation's limit on a template sent in the request (larger ones go through S3,
/// which heet does not upload to).
pub const MAX_TEMPLATE_BYTES: usize = 51_200;

/// The capabilities CloudFormation knows.
pub const CAPABILITIES: [&str; 3] = [
    "CAPABILITY_IAM",
    "CAPABILITY_NAMED_IAM",
    "CAPABILITY_AUTO_EXPAND",
];

/// The place of stack changes: created and updated first of all (what instances read comes
/// out of them), deleted last, once what used them is gone (a band after every other).
const PLACE_MAKE: u8 = 0;
const PLACE_DELETE: u8 = 40;

// ---------------------------------------------------------------------------------------
// The definition
// ---------------------------------------------------------------------------------------

/// `[stacks.NAME]`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stack")]
pub(crate) struct RawStack {
    /// The template, a YAML or JSON file next to heet.toml.
    #[schemars(with = "String")]
    template: Spanned<String>,
    /// The template's parameters: strings, numbers or booleans (a list is sent
    /// comma-separated, as CloudFormation's `CommaDelimitedList` reads it).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    parameters: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// `CAPABILITY_IAM`, `CAPABILITY_NAMED_IAM`, `CAPABILITY_AUTO_EXPAND`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    capabilities: Vec<Spanned<String>>,
}

pub(crate) type RawStacks = BTreeMap<Spanned<String>, Spanned<RawStack>>;

/// A stack as the definition asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    /// The template's path, as written.
    pub template: PathBuf,
    /// The template's text, sent as it is.
    pub body: String,
    /// Every parameter given, as sent.
    pub parameters: BTreeMap<String, String>,
    /// The template's parameters with their defaults (none: it has no default).
    pub declared: BTreeMap<String, Option<String>>,
    pub capabilities: BTreeSet<String>,
    /// The outputs the template declares.
    pub outputs: BTreeSet<String>,
    /// The template's resources: (logical id, type), in the template's order.
    pub resources: Vec<(String, String)>,
    pub at: Location,
}

/// The stacks a definition has, by name.
pub type Stacks = BTreeMap<String, Stack>;

/// What the `[stacks]` tables need of the rest of the definition.
pub(crate) struct Context<'a> {
    pub project: &'a str,
    pub envs: Vec<&'a str>,
    pub base: &'a Path,
    pub source: &'a str,
    pub error: &'a crate::kinds::iam::ErrorAt<'a>,
}

impl Context<'_> {
    fn at<T>(&self, s: &Spanned<T>, message: String) -> DefinitionError {
        (self.error)(s.span().start, message)
    }
}

/// `[stacks.*]`, each template read and checked.
pub(crate) fn build(cx: &Context<'_>, raw: RawStacks) -> Result<Stacks, DefinitionError> {
    let mut stacks = Stacks::new();
    for (name, stack) in raw {
        crate::namespace::check_name("stack", name.get_ref()).map_err(|m| cx.at(&name, m))?;
        for env in &cx.envs {
            let full = full_name(cx.project, env, name.get_ref());
            if full.len() > 128 {
                return Err(cx.at(
                    &name,
                    format!(
                        "stack {:?} is {full:?} in CloudFormation, longer than its 128 characters: use a shorter name",
                        name.get_ref()
                    ),
                ));
            }
        }
        let at = Location::of(cx.source, stack.span().start);
        let what = format!("stacks.{}", name.get_ref());
        let stack = stack.into_inner();
        let path = cx.base.join(stack.template.get_ref());
        let body = std::fs::read_to_string(&path).map_err(|e| {
            cx.at(
                &stack.template,
                format!("{what}.template: cannot read {}: {e}", path.display()),
            )
        })?;
        if body.len() > MAX_TEMPLATE_BYTES {
            return Err(cx.at(
                &stack.template,
                format!(
                    "{what}.template: {} is {} bytes, over the {MAX_TEMPLATE_BYTES} CloudFormation takes in a request",
                    path.display(),
                    body.len()
                ),
            ));
        }
        let template = Template::parse(&body).map_err(|e| {
            cx.at(
                &stack.template,
                format!("{what}.template: {}: {e}", path.display()),
            )
        })?;
        let mut parameters = BTreeMap::new();
        for (key, value) in &stack.parameters {
            if !template.parameters.contains_key(key.get_ref()) {
                return Err(cx.at(
                    key,
                    format!(
                        "{what}.parameters: the template has no parameter {:?} ({})",
                        key.get_ref(),
                        listed("its parameters", template.parameters.keys())
                    ),
                ));
            }
            let text = parameter_text(value.get_ref()).ok_or_else(|| {
                cx.at(
                    value,
                    format!(
                        "{what}.parameters.{}: a parameter is a string, number, boolean or a list of them",
                        key.get_ref()
                    ),
                )
            })?;
            parameters.insert(key.get_ref().clone(), text);
        }
        if let Some(missing) = template
            .parameters
            .iter()
            .find(|(k, default)| default.is_none() && !parameters.contains_key(*k))
        {
            return Err(cx.at(
                &stack.template,
                format!(
                    "{what}.parameters: the template's parameter {:?} has no default: give it a value",
                    missing.0
                ),
            ));
        }
        let mut capabilities = BTreeSet::new();
        for c in &stack.capabilities {
            if !CAPABILITIES.contains(&c.get_ref().as_str()) {
                return Err(cx.at(
                    c,
                    format!(
                        "{what}.capabilities: {:?} is not a capability; they are {}",
                        c.get_ref(),
                        CAPABILITIES.join(", ")
                    ),
                ));
            }
            capabilities.insert(c.get_ref().clone());
        }
        stacks.insert(
            name.get_ref().clone(),
            Stack {
                name: name.into_inner(),
                template: PathBuf::from(stack.template.into_inner()),
                body,
                parameters,
                declared: template.parameters,
                capabilities,
                outputs: template.outputs,
                resources: template.resources,
                at,
            },
        );
    }
    Ok(stacks)
}

fn listed<'a>(what: &str, names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        format!("{what}: none")
    } else {
        format!("{what}: {}", names.join(", "))
    }
}

/// A parameter's value as CloudFormation takes it: text.
fn parameter_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                other => parameter_text(other),
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

/// What heet reads of a template: its parameters, resources and outputs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Template {
    pub parameters: BTreeMap<String, Option<String>>,
    pub resources: Vec<(String, String)>,
    pub outputs: BTreeSet<String>,
}

impl Template {
    /// Reads a YAML or JSON template (JSON is YAML; CloudFormation's short forms such as
    /// `!Ref` are YAML tags, read and left alone).
    pub fn parse(body: &str) -> Result<Template, String> {
        use serde_norway::Value;
        let doc: Value =
            serde_norway::from_str(body).map_err(|e| format!("not YAML or JSON: {e}"))?;
        let Value::Mapping(top) = doc else {
            return Err("a template is a mapping with Resources".into());
        };
        let section = |key: &str| match top.get(key) {
            None => Ok(None),
            Some(Value::Mapping(m)) => Ok(Some(m.clone())),
            Some(_) => Err(format!("its {key} is not a mapping")),
        };
        let key_text = |k: &Value| match k {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("{other:?} is not a logical id")),
        };
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let mut t = Template::default();
        let resources = section("Resources")?.ok_or("it has no Resources")?;
        for (k, v) in &resources {
            let ty = match v {
                Value::Mapping(m) => m.get("Type").and_then(scalar),
                _ => None,
            };
            let id = key_text(k)?;
            let ty = ty.ok_or_else(|| format!("resource {id} has no Type"))?;
            t.resources.push((id, ty));
        }
        for (k, v) in section("Parameters")?.iter().flatten() {
            let default = match v {
                Value::Mapping(m) => m.get("Default").map(|d| match d {
                    Value::Sequence(items) => items
                        .iter()
                        .filter_map(scalar)
                        .collect::<Vec<_>>()
                        .join(","),
                    other => scalar(other).unwrap_or_default(),
                }),
                _ => None,
            };
            t.parameters.insert(key_text(k)?, default);
        }
        for (k, _) in section("Outputs")?.iter().flatten() {
            t.outputs.insert(key_text(k)?);
        }
        Ok(t)
    }
}

/// A stack's name in CloudFormation.
pub fn full_name(project: &str, env: &str, name: &str) -> String {
    format!("{project}-{env}-{name}")
}

/// A stack's `heet:resource` and ledger name.
pub fn resource(name: &str) -> String {
    format!("{PREFIX}/{name}")
}

// ---------------------------------------------------------------------------------------
// References to outputs
// ---------------------------------------------------------------------------------------

/// `${stacks.NAME.OUTPUT}` in a string the definition gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub stack: String,
    pub output: String,
    /// Its byte range in the string.
    pub range: std::ops::Range<usize>,
}

const OPEN: &str = "${stacks.";

impl Reference {
    /// How it is written.
    pub fn text(&self) -> String {
        format!("{OPEN}{}.{}}}", self.stack, self.output)
    }
}

/// The references in `text`; an error says what is malformed.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(OPEN) {
        let start = from + i;
        let rest = &text[start + OPEN.len()..];
        let Some(end) = rest.find('}') else {
            return Err(format!(
                "{:?} is not closed: write ${{stacks.NAME.OUTPUT}}",
                &text[start..]
            ));
        };
        let inner = &rest[..end];
        let written = &text[start..start + OPEN.len() + end + 1];
        let (stack, output) = inner
            .split_once('.')
            .filter(|(s, o)| !s.is_empty() && !o.is_empty() && !o.contains('.'))
            .ok_or_else(|| format!("{written:?} is not ${{stacks.NAME.OUTPUT}}"))?;
        out.push(Reference {
            stack: stack.to_owned(),
            output: output.to_owned(),
            range: start..start + written.len(),
        });
        from = start + written.len();
    }
    Ok(out)
}

/// Checks the references in `text` (the value of `field`, written at bytes `span` of the
/// definition) against `stacks`: each names a stack and an output its template declares.
/// An error points at the reference itself when it is written there as it reads.
pub(crate) fn check_references(
    cx: &Context<'_>,
    stacks: &Stacks,
    field: &str,
    text: &str,
    span: std::ops::Range<usize>,
) -> Result<(), DefinitionError> {
    let here = |r: Option<&Reference>| {
        let written = r.map(|r| &text[r.range.clone()]).unwrap_or(OPEN);
        // Within the value; for a table (whose span is its header), after its header.
        let within = |range: std::ops::RangeFrom<usize>| {
            cx.source
                .get(range.clone())
                .and_then(|s| s.find(written))
                .map(|i| range.start + i)
        };
        cx.source
            .get(span.clone())
            .and_then(|s| s.find(written))
            .map(|i| span.start + i)
            .or_else(|| within(span.start..))
            .unwrap_or(span.start)
    };
    let refs = references(text).map_err(|m| (cx.error)(here(None), format!("{field}: {m}")))?;
    for r in &refs {
        let Some(stack) = stacks.get(&r.stack) else {
            return Err((cx.error)(
                here(Some(r)),
                format!(
                    "{field}: {} names no stack: there is no [stacks.{}] ({})",
                    r.text(),
                    r.stack,
                    listed("the stacks", stacks.keys())
                ),
            ));
        };
        if !stack.outputs.contains(&r.output) {
            return Err((cx.error)(
                here(Some(r)),
                format!(
                    "{field}: {} names no output of stack {}: {} declares no output {:?} ({})",
                    r.text(),
                    r.stack,
                    stack.template.display(),
                    r.output,
                    listed("its outputs", stack.outputs.iter())
                ),
            ));
        }
    }
    Ok(())
}

/// Every stack's outputs, by stack and output name: what references resolve to.
pub type Outputs = BTreeMap<String, BTreeMap<String, String>>;

/// `text` with each reference whose output is known replaced by its value, the others by
/// `stacks.NAME.OUTPUT` (what `plan` shows until the stack is made: a placeholder any field
/// takes, EC2 tags too), each named in `unknown`.
pub fn resolve(text: &str, outputs: &Outputs, unknown: &mut BTreeSet<String>) -> String {
    let Ok(refs) = references(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in refs {
        out.push_str(&text[last..r.range.start]);
        match outputs.get(&r.stack).and_then(|o| o.get(&r.output)) {
            Some(v) => out.push_str(v),
            None => {
                unknown.insert(r.text());
                out.push_str(&format!("stacks.{}.{}", r.stack, r.output));
            }
        }
        last = r.range.end;
    }
    out.push_str(&text[last..]);
    out
}

/// Like [`resolve`], in the strings of a JSON document (a plugin's config).
pub fn resolve_json(
    value: &serde_json::Value,
    outputs: &Outputs,
    unknown: &mut BTreeSet<String>,
) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(resolve(s, outputs, unknown)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve_json(i, outputs, unknown))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve_json(v, outputs, unknown)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Observed
// ---------------------------------------------------------------------------------------

/// A stack as CloudFormation describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedStack {
    /// heet's name for it (`[stacks.NAME]`).
    pub stack: String,
    /// Its stack id (an ARN).
    pub id: String,
    pub status: String,
    /// The template it runs, as sent.
    pub body: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub capabilities: BTreeSet<String>,
    pub outputs: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl ObservedStack {
    /// Why heet may not change it now, if it may not: an operation under way, a change set
    /// made but never executed (heet makes none), an update whose rollback failed.
    pub fn blocked(&self) -> Option<&'static str> {
        match self.status.as_str() {
            "REVIEW_IN_PROGRESS" => {
                Some("a change set made it and was never executed: execute or delete it")
            }
            "UPDATE_ROLLBACK_FAILED" => Some(
                "its update failed to roll back: continue the rollback (ContinueUpdateRollback) first",
            ),
            s if s.ends_with("_IN_PROGRESS") => Some("wait until CloudFormation is done with it"),
            _ => None,
        }
    }

    /// Whether it can only be deleted: a create that failed, or a delete that failed.
    pub fn is_dead(&self) -> bool {
        matches!(
            self.status.as_str(),
            "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" | "DELETE_FAILED"
        )
    }

    /// Whether its tags say it is `project`/`env`'s.
    fn tagged_for(&self, project: &str, env: &str) -> bool {
        use crate::namespace::{TAG_ENV, TAG_PROJECT};
        self.tags.get(TAG_PROJECT).map(String::as_str) == Some(project)
            && self.tags.get(TAG_ENV).map(String::as_str) == Some(env)
    }
}

/// The outputs of the stacks tagged for `project`/`env` that are usable (not a failed
/// create, nothing under way). Whether the ledger lists them is the plan's to say: a stack it
/// does not is a conflict, and nothing is applied.
pub fn outputs_of(project: &str, env: &str, observed: &[ObservedStack]) -> Outputs {
    observed
        .iter()
        .filter(|s| s.tagged_for(project, env) && !s.is_dead() && s.blocked().is_none())
        .map(|s| (s.stack.clone(), s.outputs.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------

/// What a change set says of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceChange {
    /// `Add`, `Modify`, `Remove`, `Import`, `Dynamic`.
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// For a `Modify`: `True`, `False` or `Conditional`.
    pub replacement: Option<String>,
}

impl fmt::Display for ResourceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.action.as_str() {
            "Add" => "+",
            "Remove" => "-",
            "Modify" => "~",
            _ => "?",
        };
        write!(f, "{sign} {} {}", self.resource_type, self.logical_id)?;
        match self.replacement.as_deref() {
            Some("True") => write!(f, " (replaced)"),
            Some("Conditional") => write!(f, " (may be replaced)"),
            _ => Ok(()),
        }
    }
}

/// What an update does, as a change set told `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// Not asked (a plan that makes no calls), or asked and not answered.
    Unknown(Option<String>),
    /// CloudFormation finds nothing to change (the template differs only in what changes no
    /// resource): the update is made, and changes no resource.
    Nothing,
    Changes(Vec<ResourceChange>),
}

/// What a stack's change sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub body: String,
    pub parameters: BTreeMap<String, String>,
    pub capabilities: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackChange {
    Create {
        stack: String,
        name: String,
        send: Send,
        /// The template's resources, each added.
        resources: Vec<(String, String)>,
        /// A stack of heet's that failed to be created (or deleted), deleted first (its id).
        replaces: Option<String>,
        /// Whether what it replaces may still hold resources (a rollback or delete that
        /// failed; a create rolled back holds none).
        replaces_resources: bool,
    },
    Update {
        stack: String,
        name: String,
        id: String,
        send: Send,
        /// Why: the template, parameters or capabilities that differ.
        reasons: Vec<String>,
        preview: Preview,
    },
    Delete {
        stack: String,
        name: String,
        id: String,
    },
}

impl StackChange {
    pub fn stack(&self) -> &str {
        match self {
            StackChange::Create { stack, .. }
            | StackChange::Update { stack, .. }
            | StackChange::Delete { stack, .. } => stack,
        }
    }

    /// Whether it makes or changes a stack (what the rest of the plan may read the outputs
    /// of).
    pub fn makes(&self) -> bool {
        match self {
            StackChange::Create { .. } | StackChange::Update { .. } => true,
            StackChange::Delete { .. } => false,
        }
    }

    /// Whether applying it may remove or replace resources of the stack.
    pub fn is_destructive(&self) -> bool {
        match self {
            StackChange::Create {
                replaces_resources, ..
            } => *replaces_resources,
            StackChange::Update { preview, .. } => match preview {
                Preview::Changes(c) => c.iter().any(|r| {
                    r.action == "Remove"
                        || matches!(r.replacement.as_deref(), Some("True" | "Conditional"))
                }),
                Preview::Nothing => false,
                Preview::Unknown(_) => true,
            },
            StackChange::Delete { .. } => true,
        }
    }
}

impl Change for StackChange {
    fn stage(&self) -> (Stage, u8) {
        match self {
            StackChange::Create { .. } | StackChange::Update { .. } => (Stage::Before, PLACE_MAKE),
            StackChange::Delete { .. } => (Stage::After, PLACE_DELETE),
        }
    }

    fn bookkeeping(&self) -> Bookkeeping {
        match self {
            StackChange::Create { stack, .. } => Bookkeeping::Create(resource(stack)),
            StackChange::Update { .. } => Bookkeeping::None,
            StackChange::Delete { stack, .. } => Bookkeeping::Delete(resource(stack)),
        }
    }

    fn creates(&self) -> bool {
        match self {
            StackChange::Create { .. } => true,
            StackChange::Update { .. } | StackChange::Delete { .. } => false,
        }
    }

    fn is_delete(&self) -> bool {
        match self {
            StackChange::Delete { .. } => true,
            StackChange::Create { .. } | StackChange::Update { .. } => false,
        }
    }

    fn needs_instances_gone(&self) -> bool {
        // Instances in its subnets and groups hold network interfaces until they are gone.
        self.is_delete()
    }

    fn drift_line(&self) -> String {
        self.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

impl fmt::Display for StackChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackChange::Create {
                stack,
                name,
                resources,
                replaces,
                ..
            } => {
                write!(f, "+ stack {stack} ({name})")?;
                if replaces.is_some() {
                    write!(f, ", replacing the one whose create failed")?;
                }
                for (id, ty) in resources {
                    write!(f, "\n      + {ty} {id}")?;
                }
                Ok(())
            }
            StackChange::Update {
                stack,
                name,
                reasons,
                preview,
                ..
            } => {
                write!(f, "~ stack {stack} ({name}): {}", reasons.join(", "))?;
                match preview {
                    Preview::Unknown(None) => write!(f, "\n      change set not asked for"),
                    Preview::Unknown(Some(why)) => {
                        write!(f, "\n      change set unknown: {}", crate::text::shown(why))
                    }
                    Preview::Nothing => write!(f, "\n      change set: no resource changes"),
                    Preview::Changes(changes) => {
                        for c in changes {
                            write!(f, "\n      {c}")?;
                        }
                        Ok(())
                    }
                }
            }
            StackChange::Delete { stack, name, .. } => write!(f, "- stack {stack} ({name})"),
        }
    }
}

/// The stacks' part of a plan.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StackPlan {
    pub changes: Vec<StackChange>,
    /// Stacks heet would make whose names another holds.
    pub conflicts: Vec<String>,
    /// Stacks the ledger lists that do not prove heet's (tags of another environment,
    /// another id): left alone.
    pub foreign: Vec<String>,
    /// Stacks heet made that a run killed before it confirmed them: their ledger entries,
    /// `stack/NAME`, confirmed with the id.
    pub adopted: Vec<(String, String)>,
    /// Stacks with an operation under way: nothing is applied until it ends.
    pub busy: Vec<String>,
    /// Stacks the ledger lists that are gone: forgotten.
    pub forgotten: Vec<String>,
    /// References whose outputs are not known until a stack is made.
    pub unknown: BTreeSet<String>,
}

impl StackPlan {
    /// The part of the plan that makes or changes stacks: applied before the rest is planned
    /// again with their outputs.
    pub fn makes(&self) -> bool {
        self.changes.iter().any(StackChange::makes)
    }
}

impl Family for StackPlan {
    fn label(&self) -> &'static str {
        "stack"
    }

    fn deleted_noun(&self) -> &'static str {
        "stack(s)"
    }

    fn changes(&self) -> Vec<&dyn Change> {
        self.changes.iter().map(|c| c as &dyn Change).collect()
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.makes() && !self.unknown.is_empty() {
            let unknown: Vec<&str> = self.unknown.iter().map(String::as_str).collect();
            notes.push(format!(
                "known once the stacks are applied, then the rest is planned again: {}",
                unknown.join(", ")
            ));
        } else if self.makes() {
            notes.push(
                "the stacks are applied first; what reads their outputs is planned again after"
                    .to_owned(),
            );
        }
        notes
    }

    fn conflicts(&self) -> &[String] {
        &self.conflicts
    }

    fn foreign(&self) -> &[String] {
        &self.foreign
    }

    fn refused(&self) -> Vec<String> {
        self.busy.clone()
    }

    fn retain(&mut self, keep: &dyn Fn(&dyn Change) -> bool) {
        self.changes.retain(|c| keep(c));
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.conflicts.is_empty()
            && self.busy.is_empty()
            && self.forgotten.is_empty()
            && self.adopted.is_empty()
    }

    fn settled(&self) -> Vec<(Bookkeeping, Option<&str>)> {
        crate::kinds::settled(&self.forgotten, &self.adopted)
    }
}

/// The stacks the ledger lists: name → stack id (none: written ahead, not confirmed).
pub fn owned(ledger: &crate::ledger::Ledger) -> BTreeMap<String, Option<String>> {
    ledger
        .entries
        .values()
        .filter_map(|e| match e {
            crate::ledger::Entry::Resource {
                resource, aws_id, ..
            } => {
                let name = resource.strip_prefix(PREFIX)?.strip_prefix('/')?;
                Some((name.to_owned(), aws_id.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Plans `wanted` (empty for `down`) against what runs: a stack is heet's when the ledger
/// lists it with its id (or, written ahead by a run that stopped, without one) and its tags
/// say it is this environment's; any other stack of the name is a conflict.
pub fn plan(
    project: &str,
    env: &str,
    wanted: &Stacks,
    observed: &[ObservedStack],
    owned: &BTreeMap<String, Option<String>>,
    unknown: BTreeSet<String>,
) -> StackPlan {
    let mut p = StackPlan {
        unknown,
        ..StackPlan::default()
    };
    let heets = |o: &ObservedStack| {
        o.tagged_for(project, env)
            && owned
                .get(&o.stack)
                .is_some_and(|id| id.as_ref().is_none_or(|id| *id == o.id))
    };
    for (name, stack) in wanted {
        let full = full_name(project, env, name);
        let send = Send {
            body: stack.body.clone(),
            parameters: stack.parameters.clone(),
            capabilities: stack.capabilities.clone(),
        };
        let create = |replaces: Option<&ObservedStack>| StackChange::Create {
            stack: name.clone(),
            name: full.clone(),
            send: send.clone(),
            resources: stack.resources.clone(),
            replaces: replaces.map(|o| o.id.clone()),
            replaces_resources: replaces.is_some_and(|o| o.status != "ROLLBACK_COMPLETE"),
        };
        let found = observed.iter().find(|o| o.stack == *name);
        if let Some(o) = found
            && heets(o)
            && owned.get(name).is_some_and(Option::is_none)
            && !o.is_dead()
        {
            p.adopted.push((resource(name), o.id.clone()));
        }
        match found {
            None => p.changes.push(create(None)),
            Some(o) if !heets(o) => p.conflicts.push(format!(
                "stack {full} exists ({}) but heet did not create it for {project}/{env}",
                o.status
            )),
            Some(o) if o.blocked().is_some() => p.busy.push(format!(
                "stack {full} is {}: {}",
                o.status,
                o.blocked().unwrap_or_default()
            )),
            Some(o) if o.is_dead() => p.changes.push(create(Some(o))),
            Some(o) => {
                let reasons = differences(stack, o);
                if !reasons.is_empty() {
                    p.changes.push(StackChange::Update {
                        stack: name.clone(),
                        name: full,
                        id: o.id.clone(),
                        send,
                        reasons,
                        preview: Preview::Unknown(None),
                    });
                }
            }
        }
    }
    for name in owned.keys() {
        if wanted.contains_key(name) {
            continue;
        }
        let full = full_name(project, env, name);
        match observed.iter().find(|o| o.stack == *name) {
            Some(o) if heets(o) && o.status.ends_with("_IN_PROGRESS") => p.busy.push(format!(
                "stack {full} is {}: wait until CloudFormation is done with it",
                o.status
            )),
            Some(o) if heets(o) => p.changes.push(StackChange::Delete {
                stack: name.clone(),
                name: full,
                id: o.id.clone(),
            }),
            Some(o) => p.foreign.push(format!(
                "stack {full} ({}): not the stack the ledger lists for {project}/{env}",
                o.id
            )),
            None => p.forgotten.push(resource(name)),
        }
    }
    p
}

/// What differs between the stack wanted and the one that runs: its template, a
/// parameter (given or defaulted). Not its capabilities: they acknowledge what a template
/// does, they change nothing of it.
fn differences(wanted: &Stack, running: &ObservedStack) -> Vec<String> {
    let mut why = Vec::new();
    if running.body.as_deref() != Some(wanted.body.as_str()) {
        why.push(format!("template {}", wanted.template.display()));
    }
    for (key, default) in &wanted.declared {
        let value = wanted.parameters.get(key).or(default.as_ref());
        let now = running.parameters.get(key);
        // A NoEcho parameter reads back masked: it cannot be compared.
        if now.is_some_and(|v| v.chars().all(|c| c == '*') && !v.is_empty()) {
            continue;
        }
        if value != now {
            why.push(format!("parameter {key}"));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "AWSTemplateFormatVersion: '2010-09-09'
Parameters:
  Cidr:
    Type: String
    Default: 10.1.0.0/16
  Name:
    Type: String
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: !Ref Cidr
  Subnet:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: !Select [0, !Cidr [!GetAtt Vpc.CidrBlock, 2, 8]]
Outputs:
  SubnetId:
    Value: !Ref Subnet
  VpcId:
    Value: !Ref Vpc
";

    #[test]
    fn a_yaml_template_with_short_forms_is_read() {
        let t = Template::parse(TEMPLATE).unwrap();
        assert_eq!(
            t.resources,
            vec![
                ("Vpc".to_owned(), "AWS::EC2::VPC".to_owned()),
                ("Subnet".to_owned(), "AWS::EC2::Subnet".to_owned())
            ]
        );
        assert_eq!(t.outputs.iter().collect::<Vec<_>>(), ["SubnetId", "VpcId"]);
        assert_eq!(t.parameters["Cidr"].as_deref(), Some("10.1.0.0/16"));
        assert_eq!(t.parameters["Name"], None);
    }

    #[test]
    fn a_json_template_is_read_and_a_template_without_resources_is_not() {
        let t = Template::parse(r#"{"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup"}}, "Outputs": {"GroupId": {"Value": {"Ref": "G"}}}}"#).unwrap();
        assert_eq!(t.outputs.iter().collect::<Vec<_>>(), ["GroupId"]);
        assert!(
            Template::parse("Outputs: {}")
                .unwrap_err()
                .contains("no Resources")
        );
        assert!(
            Template::parse("Resources:\n  X:\n    Properties: {}\n")
                .unwrap_err()
                .contains("X has no Type")
        );
    }

    #[test]
    fn references_are_found_and_malformed_ones_said() {
        let refs = references("a ${stacks.net.SubnetId} b ${stacks.web.Group}").unwrap();
        assert_eq!(
            refs.iter()
                .map(|r| (r.stack.as_str(), r.output.as_str(), r.range.clone()))
                .collect::<Vec<_>>(),
            [("net", "SubnetId", 2..24), ("web", "Group", 27..46)]
        );
        assert!(references("${HOME} $stacks ${other.x}").unwrap().is_empty());
        assert!(
            references("${stacks.net}")
                .unwrap_err()
                .contains("is not ${stacks.NAME.OUTPUT}")
        );
        assert!(references("${stacks.net.a.b}").is_err());
        assert!(
            references("x ${stacks.net.Subnet")
                .unwrap_err()
                .contains("not closed")
        );
    }

    #[test]
    fn known_outputs_resolve_and_unknown_ones_stay_as_written() {
        let outputs: Outputs = [(
            "net".to_owned(),
            [("SubnetId".to_owned(), "subnet-1".to_owned())].into(),
        )]
        .into();
        let mut unknown = BTreeSet::new();
        let text = "S=${stacks.net.SubnetId} G=${stacks.net.GroupId}";
        assert_eq!(
            resolve(text, &outputs, &mut unknown),
            "S=subnet-1 G=stacks.net.GroupId"
        );
        assert_eq!(
            unknown.into_iter().collect::<Vec<_>>(),
            ["${stacks.net.GroupId}"]
        );
        let json = serde_json::json!({"a": ["${stacks.net.SubnetId}", 1], "b": {"c": "x"}});
        assert_eq!(
            resolve_json(&json, &outputs, &mut BTreeSet::new()),
            serde_json::json!({"a": ["subnet-1", 1], "b": {"c": "x"}})
        );
    }

    fn stack() -> Stack {
        let t = Template::parse(TEMPLATE).unwrap();
        Stack {
            name: "net".into(),
            template: "net.yaml".into(),
            body: TEMPLATE.into(),
            parameters: [("Name".to_owned(), "demo".to_owned())].into(),
            declared: t.parameters,
            capabilities: BTreeSet::new(),
            outputs: t.outputs,
            resources: t.resources,
            at: Location { line: 1, col: 1 },
        }
    }

    fn running(status: &str) -> ObservedStack {
        ObservedStack {
            stack: "net".into(),
            id: "arn:stack/1".into(),
            status: status.into(),
            body: Some(TEMPLATE.into()),
            parameters: [
                ("Name".to_owned(), "demo".to_owned()),
                ("Cidr".to_owned(), "10.1.0.0/16".to_owned()),
            ]
            .into(),
            capabilities: BTreeSet::new(),
            outputs: BTreeMap::new(),
            tags: [
                ("heet:project".to_owned(), "shop".to_owned()),
                ("heet:env".to_owned(), "dev".to_owned()),
            ]
            .into(),
        }
    }

    fn wanted() -> Stacks {
        [("net".to_owned(), stack())].into()
    }

    fn mine() -> BTreeMap<String, Option<String>> {
        [("net".to_owned(), Some("arn:stack/1".to_owned()))].into()
    }

    #[test]
    fn a_missing_stack_is_created_and_a_running_one_as_wanted_is_left() {
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[],
            &BTreeMap::new(),
            BTreeSet::new(),
        );
        assert!(
            matches!(&p.changes[..], [StackChange::Create { name, replaces: None, .. }] if name == "shop-dev-net")
        );
        assert_eq!(p.changes[0].stage(), (Stage::Before, 0));
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("CREATE_COMPLETE")],
            &mine(),
            BTreeSet::new(),
        );
        assert!(p.is_empty(), "{:?}", p.changes);
    }

    #[test]
    fn a_changed_template_or_parameter_is_an_update_with_its_reasons() {
        let mut s = running("UPDATE_COMPLETE");
        s.body = Some("Resources: {}".into());
        s.parameters.insert("Cidr".into(), "10.2.0.0/16".into());
        let p = plan("shop", "dev", &wanted(), &[s], &mine(), BTreeSet::new());
        match &p.changes[..] {
            [StackChange::Update { reasons, .. }] => {
                assert_eq!(reasons, &["template net.yaml", "parameter Cidr"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stack_heet_did_not_make_is_a_conflict_and_never_deleted() {
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("CREATE_COMPLETE")],
            &BTreeMap::new(),
            BTreeSet::new(),
        );
        assert!(p.changes.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        // Listed by the ledger with another id: not the stack heet made.
        let other = [("net".to_owned(), Some("arn:stack/0".to_owned()))].into();
        let p = plan(
            "shop",
            "dev",
            &Stacks::new(),
            &[running("CREATE_COMPLETE")],
            &other,
            BTreeSet::new(),
        );
        assert!(p.changes.is_empty());
        // Tagged for another environment: not this one's.
        let mut s = running("CREATE_COMPLETE");
        s.tags.insert("heet:env".into(), "prod".into());
        let p = plan(
            "shop",
            "dev",
            &Stacks::new(),
            &[s],
            &mine(),
            BTreeSet::new(),
        );
        assert!(p.changes.is_empty());
        assert_eq!(p.foreign().len(), 1, "down names what it leaves");
    }

    #[test]
    fn down_deletes_heets_stack_last_and_forgets_a_gone_one() {
        let p = plan(
            "shop",
            "dev",
            &Stacks::new(),
            &[running("CREATE_COMPLETE")],
            &mine(),
            BTreeSet::new(),
        );
        assert!(matches!(&p.changes[..], [StackChange::Delete { .. }]));
        assert_eq!(p.changes[0].stage(), (Stage::After, PLACE_DELETE));
        assert!(p.changes[0].needs_instances_gone() && p.changes[0].removes());
        let p = plan("shop", "dev", &Stacks::new(), &[], &mine(), BTreeSet::new());
        assert_eq!(p.forgotten, ["stack/net"]);
    }

    #[test]
    fn a_failed_create_is_replaced_and_a_busy_stack_refused() {
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("ROLLBACK_COMPLETE")],
            &mine(),
            BTreeSet::new(),
        );
        assert!(matches!(
            &p.changes[..],
            [StackChange::Create {
                replaces: Some(_),
                ..
            }]
        ));
        // Written ahead by a run that stopped before it confirmed the id: still heet's.
        let pending = [("net".to_owned(), None)].into();
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("ROLLBACK_COMPLETE")],
            &pending,
            BTreeSet::new(),
        );
        assert!(matches!(
            &p.changes[..],
            [StackChange::Create {
                replaces: Some(_),
                ..
            }]
        ));
        // Written ahead, made, not confirmed: adopted with its id.
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("CREATE_COMPLETE")],
            &pending,
            BTreeSet::new(),
        );
        assert!(p.changes.is_empty());
        assert_eq!(
            p.adopted,
            [("stack/net".to_owned(), "arn:stack/1".to_owned())]
        );
        // A rollback that failed may hold resources: replacing it asks.
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("ROLLBACK_FAILED")],
            &mine(),
            BTreeSet::new(),
        );
        assert!(p.changes[0].is_destructive());
        // A change set's stack, never executed: heet makes none, it waits for whoever did.
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("REVIEW_IN_PROGRESS")],
            &mine(),
            BTreeSet::new(),
        );
        assert!(p.changes.is_empty() && p.refused().len() == 1);
        let p = plan(
            "shop",
            "dev",
            &wanted(),
            &[running("UPDATE_IN_PROGRESS")],
            &mine(),
            BTreeSet::new(),
        );
        assert!(p.changes.is_empty() && p.refused().len() == 1);
    }

    #[test]
    fn an_update_that_removes_or_replaces_is_destructive() {
        let change = |preview| StackChange::Update {
            stack: "net".into(),
            name: "shop-dev-net".into(),
            id: "arn".into(),
            send: Send {
                body: String::new(),
                parameters: BTreeMap::new(),
                capabilities: BTreeSet::new(),
            },
            reasons: vec![],
            preview,
        };
        let modify = |replacement: &str| ResourceChange {
            action: "Modify".into(),
            logical_id: "G".into(),
            resource_type: "AWS::EC2::SecurityGroup".into(),
            replacement: Some(replacement.into()),
        };
        assert!(!change(Preview::Changes(vec![modify("False")])).is_destructive());
        assert!(change(Preview::Changes(vec![modify("True")])).is_destructive());
        assert!(!change(Preview::Nothing).is_destructive());
        let shown = change(Preview::Changes(vec![modify("True")])).to_string();
        assert!(
            shown.ends_with("~ AWS::EC2::SecurityGroup G (replaced)"),
            "{shown}"
        );
    }
}
