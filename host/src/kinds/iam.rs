//! IAM as heet resources (the midops bootstrap: an account's first users, groups and
//! policies): managed policies, groups, users with an optional access key, and roles, each
//! with an instance profile of its name. IAM is account-global, so heet's entities are named
//! `<project>-<env>-<name>` and live under the path `/heet/<project>/<env>/`.
//!
//! Groups carry no tags in IAM, and a path or tag anyone can copy proves nothing, so the
//! ledger is the proof: an entity is heet's only if the ledger lists it with the unique id
//! IAM gave it when heet created it (or lists it written ahead, without an id, when a run
//! died between the write and the create). An access key is heet's only if its id is the one
//! kept beside its secret in the environment's config.
//!
//! Everything here is pure: the definition's `[iam]` tables, the desired and observed forms,
//! and the plan between them ([`plan`]), whose changes say their stage, their order and their
//! ledger bookkeeping. `cloud::iam` observes and applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::{Bookkeeping, Change, Family, Stage};
use crate::namespace::check_name;
use crate::validate;

// ---------------------------------------------------------------------------------------
// The definition
// ---------------------------------------------------------------------------------------

/// `[iam]`: by short name, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Iam {
    /// Managed policies: their documents.
    pub policies: BTreeMap<String, Value>,
    pub groups: BTreeMap<String, Group>,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub policies: Vec<PolicyRef>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    /// Short names of heet's groups.
    pub groups: Vec<String>,
    /// One access key, its secret kept as a SecureString in the environment's config.
    pub access_key: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// The trust (assume-role) document.
    pub trust: Value,
    pub policies: Vec<PolicyRef>,
}

/// A policy attached to a group or role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyRef {
    /// One of heet's, by short name (its ARN is known once it exists).
    Heet(String),
    /// An ARN: AWS-managed, or the account's own.
    Arn(String),
}

impl Iam {
    /// The ARNs of the policies the definition attaches that are not heet's.
    pub fn managed_arns(&self) -> BTreeSet<String> {
        self.groups
            .values()
            .flat_map(|g| &g.policies)
            .chain(self.roles.values().flat_map(|r| &r.policies))
            .filter_map(|p| match p {
                PolicyRef::Arn(a) => Some(a.clone()),
                PolicyRef::Heet(_) => None,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.groups.is_empty()
            && self.users.is_empty()
            && self.roles.is_empty()
    }
}

/// IAM's limits on names (IAM API reference, `CreateUser` and friends).
pub const MAX_USER_NAME: usize = 64;
pub const MAX_ROLE_NAME: usize = 64;
pub const MAX_GROUP_NAME: usize = 128;
pub const MAX_POLICY_NAME: usize = 128;
/// A managed policy's document, white space not counted.
pub const MAX_POLICY_CHARS: usize = 6_144;
/// A role's trust document (the default quota), white space not counted.
pub const MAX_TRUST_CHARS: usize = 2_048;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Iam")]
pub(crate) struct RawIam {
    /// `[iam.policies.NAME]`: managed policies.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawPolicy>")]
    policies: BTreeMap<Spanned<String>, Spanned<RawPolicy>>,
    /// `[iam.groups.NAME]`: groups and the policies attached to them.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawGroup>")]
    groups: BTreeMap<Spanned<String>, Spanned<RawGroup>>,
    /// `[iam.users.NAME]`: users, their groups and access key.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawUser>")]
    users: BTreeMap<Spanned<String>, Spanned<RawUser>>,
    /// `[iam.roles.NAME]`: roles, each with an instance profile of its name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawRole>")]
    roles: BTreeMap<Spanned<String>, Spanned<RawRole>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IamPolicy")]
struct RawPolicy {
    #[schemars(with = "Option<String>")]
    document: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<RawStatement>>")]
    statements: Option<Spanned<Vec<RawStatement>>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IamStatement")]
struct RawStatement {
    sid: Option<String>,
    #[schemars(with = "Option<String>")]
    effect: Option<Spanned<String>>,
    actions: Vec<String>,
    resources: Vec<String>,
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    condition: Option<toml::Table>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IamGroup")]
struct RawGroup {
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    policies: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IamUser")]
struct RawUser {
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    access_key: bool,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IamRole")]
struct RawRole {
    #[schemars(with = "String")]
    assume: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    policies: Vec<Spanned<String>>,
}

/// An error at a byte offset of heet.toml.
pub(crate) type ErrorAt<'a> = dyn Fn(usize, String) -> crate::definition::DefinitionError + 'a;

/// What the `[iam]` tables need to know of the rest of the definition.
pub(crate) struct Context<'a> {
    pub project: &'a str,
    /// Every environment the definition has: a full name must fit IAM's limits in each.
    pub envs: Vec<&'a str>,
    /// Where documents are read from.
    pub base: &'a Path,
    pub error: &'a ErrorAt<'a>,
}

impl Context<'_> {
    fn at<T>(&self, s: &Spanned<T>, message: String) -> crate::definition::DefinitionError {
        (self.error)(s.span().start, message)
    }

    /// Checks `name` as heet's names are checked, and that `<project>-<env>-<name>` fits
    /// IAM's `limit` in every environment.
    fn name(
        &self,
        what: &str,
        name: &Spanned<String>,
        limit: usize,
    ) -> Result<(), crate::definition::DefinitionError> {
        check_name(what, name.get_ref()).map_err(|m| self.at(name, m))?;
        for env in &self.envs {
            let full = full_name(self.project, env, name.get_ref());
            if full.len() > limit {
                return Err(self.at(
                    name,
                    format!(
                        "{what} {:?} is {full:?} in IAM ({} characters), longer than IAM's {limit}: use a shorter name",
                        name.get_ref(),
                        full.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn document(
        &self,
        what: &str,
        file: &Spanned<String>,
        limit: usize,
    ) -> Result<Value, crate::definition::DefinitionError> {
        let path = self.base.join(file.get_ref());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.at(file, format!("{what}: cannot read {}: {e}", path.display())))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| self.at(file, format!("{what}: {} is not JSON: {e}", path.display())))?;
        check_document(&doc, limit).map_err(|m| self.at(file, format!("{what}: {m}")))?;
        Ok(doc)
    }

    fn policy_refs(
        &self,
        what: &str,
        refs: &[Spanned<String>],
        policies: &BTreeMap<Spanned<String>, Spanned<RawPolicy>>,
    ) -> Result<Vec<PolicyRef>, crate::definition::DefinitionError> {
        let mut out = Vec::new();
        for r in refs {
            let p = r.get_ref();
            let one = if p.starts_with("arn:") {
                check_policy_arn(p).map_err(|m| self.at(r, format!("{what}: {m}")))?;
                PolicyRef::Arn(p.clone())
            } else if policies.keys().any(|k| k.get_ref() == p) {
                PolicyRef::Heet(p.clone())
            } else {
                return Err(self.at(
                    r,
                    format!(
                        "{what}: there is no policy {p:?} in [iam.policies] (an AWS-managed policy is named by its ARN, arn:aws:iam::aws:policy/…)"
                    ),
                ));
            };
            if !out.contains(&one) {
                out.push(one);
            }
        }
        // Ten managed policies per group or role is IAM's default quota.
        if out.len() > 10 {
            return Err(self.at(
                &refs[10],
                format!("{what}: at most 10 managed policies may be attached (IAM's quota)"),
            ));
        }
        Ok(out)
    }
}

pub(crate) fn build(
    cx: &Context<'_>,
    raw: RawIam,
) -> Result<Iam, crate::definition::DefinitionError> {
    let mut iam = Iam::default();
    for (name, p) in &raw.policies {
        cx.name("iam policy", name, MAX_POLICY_NAME)?;
        let what = format!("iam.policies.{}", name.get_ref());
        let raw_policy = p.get_ref();
        let doc = match (&raw_policy.document, &raw_policy.statements) {
            (Some(file), None) => cx.document(&what, file, MAX_POLICY_CHARS)?,
            (None, Some(statements)) => {
                let doc = inline_document(cx, &what, statements)?;
                check_document(&doc, MAX_POLICY_CHARS)
                    .map_err(|m| cx.at(statements, format!("{what}: {m}")))?;
                doc
            }
            (Some(file), Some(_)) => {
                return Err(cx.at(
                    file,
                    format!("{what}: set document or statements, not both"),
                ));
            }
            (None, None) => {
                return Err(cx.at(
                    p,
                    format!(
                        "{what}: set document (a JSON policy file next to heet.toml) or statements"
                    ),
                ));
            }
        };
        iam.policies.insert(name.get_ref().clone(), doc);
    }
    for (name, g) in &raw.groups {
        cx.name("iam group", name, MAX_GROUP_NAME)?;
        let what = format!("iam.groups.{}.policies", name.get_ref());
        let policies = cx.policy_refs(&what, &g.get_ref().policies, &raw.policies)?;
        iam.groups
            .insert(name.get_ref().clone(), Group { policies });
    }
    for (name, u) in &raw.users {
        cx.name("iam user", name, MAX_USER_NAME)?;
        let mut groups = Vec::new();
        for g in &u.get_ref().groups {
            if !raw.groups.keys().any(|k| k.get_ref() == g.get_ref()) {
                return Err(cx.at(
                    g,
                    format!(
                        "iam.users.{}.groups: there is no group {:?} in [iam.groups]",
                        name.get_ref(),
                        g.get_ref()
                    ),
                ));
            }
            if !groups.contains(g.get_ref()) {
                groups.push(g.get_ref().clone());
            }
        }
        iam.users.insert(
            name.get_ref().clone(),
            User {
                groups,
                access_key: u.get_ref().access_key,
            },
        );
    }
    for (name, r) in &raw.roles {
        cx.name("iam role", name, MAX_ROLE_NAME)?;
        let what = format!("iam.roles.{}", name.get_ref());
        let assume = &r.get_ref().assume;
        let trust = if assume.get_ref().ends_with(".json") {
            cx.document(&format!("{what}.assume"), assume, MAX_TRUST_CHARS)?
        } else {
            let service = assume.get_ref();
            let ok = !service.is_empty()
                && service
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(cx.at(
                    assume,
                    format!(
                        "{what}.assume is a service that may assume the role (\"ec2\", \"lambda\", …) or a trust document, a .json file next to heet.toml"
                    ),
                ));
            }
            service_trust(service)
        };
        let policies = cx.policy_refs(
            &format!("{what}.policies"),
            &r.get_ref().policies,
            &raw.policies,
        )?;
        iam.roles
            .insert(name.get_ref().clone(), Role { trust, policies });
    }
    Ok(iam)
}

/// The trust document letting `service` (`ec2` → `ec2.amazonaws.com`) assume a role.
pub fn service_trust(service: &str) -> Value {
    let principal = if service.contains('.') {
        service.to_owned()
    } else {
        format!("{service}.amazonaws.com")
    };
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": principal },
            "Action": "sts:AssumeRole"
        }]
    })
}

fn inline_document(
    cx: &Context<'_>,
    what: &str,
    statements: &Spanned<Vec<RawStatement>>,
) -> Result<Value, crate::definition::DefinitionError> {
    if statements.get_ref().is_empty() {
        return Err(cx.at(statements, format!("{what}.statements is empty")));
    }
    let mut out = Vec::new();
    for s in statements.get_ref() {
        let effect = match &s.effect {
            None => "Allow".to_owned(),
            Some(e) if e.get_ref() == "Allow" || e.get_ref() == "Deny" => e.get_ref().clone(),
            Some(e) => {
                return Err(cx.at(
                    e,
                    format!("{what}.statements: effect is \"Allow\" or \"Deny\""),
                ));
            }
        };
        if s.actions.is_empty() || s.resources.is_empty() {
            return Err(cx.at(
                statements,
                format!("{what}.statements: each statement needs actions and resources"),
            ));
        }
        let mut st = serde_json::Map::new();
        if let Some(sid) = &s.sid {
            st.insert("Sid".into(), Value::String(sid.clone()));
        }
        st.insert("Effect".into(), Value::String(effect));
        st.insert("Action".into(), serde_json::json!(s.actions));
        st.insert("Resource".into(), serde_json::json!(s.resources));
        if let Some(c) = &s.condition {
            let c = serde_json::to_value(c)
                .map_err(|e| cx.at(statements, format!("{what}.statements: condition: {e}")))?;
            st.insert("Condition".into(), c);
        }
        out.push(Value::Object(st));
    }
    Ok(serde_json::json!({ "Version": "2012-10-17", "Statement": out }))
}

/// A policy document as IAM takes one: an object with a `Statement`, within `limit`
/// characters without white space.
pub fn check_document(doc: &Value, limit: usize) -> Result<(), String> {
    let Some(obj) = doc.as_object() else {
        return Err("a policy document is a JSON object".into());
    };
    match obj.get("Statement") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        Some(Value::Object(_)) => {}
        _ => return Err("a policy document needs a Statement (an object or a list)".into()),
    }
    let size = compact(doc).chars().filter(|c| !c.is_whitespace()).count();
    if size > limit {
        return Err(format!(
            "the document is {size} characters without white space, more than IAM's {limit}"
        ));
    }
    Ok(())
}

fn check_policy_arn(arn: &str) -> Result<(), String> {
    let ok = validate::iam_arn(arn).is_some_and(|(_, account, resource)| {
        (account == "aws" || validate::is_account_id(account))
            && resource
                .strip_prefix("policy/")
                .is_some_and(|name| !name.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not a policy ARN (arn:aws:iam::aws:policy/NAME or arn:aws:iam::ACCOUNT:policy/NAME)"
        ))
    }
}

/// A document as heet sends it: compact JSON.
pub fn compact(doc: &Value) -> String {
    serde_json::to_string(doc).unwrap_or_default()
}

/// A document as IAM returns it: URL-encoded JSON (RFC 3986), or plain JSON (emulators).
pub fn parse_document(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        let decoded = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    })
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// The IAM name of heet's entity `name` of `project`/`env`.
pub fn full_name(project: &str, env: &str, name: &str) -> String {
    format!("{project}-{env}-{name}")
}

/// The IAM path of every entity heet makes for `project`/`env`.
pub fn path(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/")
}

/// The kinds of IAM entity, as their ledger resources are named (`iam-user/deploy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Policy,
    Group,
    User,
    Role,
    Profile,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Policy,
        Kind::Group,
        Kind::User,
        Kind::Role,
        Kind::Profile,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Policy => "iam-policy",
            Kind::Group => "iam-group",
            Kind::User => "iam-user",
            Kind::Role => "iam-role",
            Kind::Profile => "iam-profile",
        }
    }

    /// What it is called in plans.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::Group => "group",
            Kind::User => "user",
            Kind::Role => "role",
            Kind::Profile => "instance profile",
        }
    }

    /// The ledger resource of heet's entity with IAM name `name`.
    pub fn resource(self, name: &str) -> String {
        format!("{}/{name}", self.prefix())
    }

    pub fn of_resource(resource: &str) -> Option<(Kind, &str)> {
        let (prefix, name) = resource.split_once('/')?;
        Kind::ALL
            .into_iter()
            .find(|k| k.prefix() == prefix)
            .map(|k| (k, name))
    }
}

/// The config key holding a user's access key id, and the one holding its secret.
pub fn access_key_keys(user_short: &str) -> (String, String) {
    let base = format!("IAM_{}", user_short.to_ascii_uppercase().replace('-', "_"));
    (
        format!("{base}_ACCESS_KEY_ID"),
        format!("{base}_SECRET_ACCESS_KEY"),
    )
}

// ---------------------------------------------------------------------------------------
// Desired and observed
// ---------------------------------------------------------------------------------------

/// What IAM should hold for one environment: the definition's tables with full names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredIam {
    pub project: String,
    pub env: String,
    pub iam: Iam,
}

impl DesiredIam {
    pub fn of(project: &str, env: &str, iam: &Iam) -> DesiredIam {
        DesiredIam {
            project: project.to_owned(),
            env: env.to_owned(),
            iam: iam.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.iam.is_empty()
    }

    fn full(&self, name: &str) -> String {
        full_name(&self.project, &self.env, name)
    }
}

/// One version of a managed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub id: String,
    pub default: bool,
}

/// An IAM entity under heet's path, as IAM reports it (names are IAM names).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub kind: Kind,
    pub name: String,
    /// IAM's unique id (`AIDA…`, `AGPA…`, `AROA…`, `ANPA…`, `AIPA…`).
    pub id: String,
    pub arn: String,
    pub detail: ObservedDetail,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ObservedDetail {
    Policy {
        /// The default version's document.
        document: Option<Value>,
        versions: Vec<Version>,
    },
    Group {
        attached: Vec<String>,
        members: Vec<String>,
    },
    User {
        groups: Vec<String>,
        attached: Vec<String>,
        /// Ids of its access keys.
        keys: Vec<String>,
    },
    Role {
        trust: Option<Value>,
        attached: Vec<String>,
    },
    Profile {
        roles: Vec<String>,
    },
}

/// What observing IAM found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedIam {
    pub entities: Vec<Observed>,
    /// Policy ARNs the definition attaches that IAM does not have.
    pub missing: Vec<String>,
    /// The access key id kept for each user (by IAM name), from the environment's config.
    pub stored_keys: BTreeMap<String, String>,
}

/// What the ledger says of one IAM entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The unique id IAM gave it; none while written ahead.
    pub id: Option<String>,
}

/// The IAM entities `ledger` lists, by ledger resource.
pub fn owned(ledger: &crate::ledger::Ledger) -> BTreeMap<String, Owned> {
    ledger
        .entries
        .values()
        .filter_map(|e| match e {
            crate::ledger::Entry::Resource {
                resource, aws_id, ..
            } if Kind::of_resource(resource).is_some() => {
                Some((resource.clone(), Owned { id: aws_id.clone() }))
            }
            _ => None,
        })
        .collect()
}

/// Whether `ledger` lists any IAM entity.
pub fn in_ledger(ledger: &crate::ledger::Ledger) -> bool {
    ledger
        .resource_kinds()
        .into_iter()
        .any(|k| Kind::ALL.iter().any(|i| i.prefix() == k))
}

// ---------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------

/// Which entity a policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    Group(String),
    User(String),
    Role(String),
}

impl Holder {
    /// What kind of entity it is (`group`, `user`, `role`), and its IAM name.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Holder::Group(n) => ("group", n),
            Holder::User(n) => ("user", n),
            Holder::Role(n) => ("role", n),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = self.parts();
        write!(f, "{kind} {name}")
    }
}

/// A policy to attach: an ARN, or heet's policy by IAM name (resolved when applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachable {
    Heet(String),
    Arn(String),
}

impl fmt::Display for Attachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attachable::Heet(n) => write!(f, "policy {n}"),
            Attachable::Arn(a) => write!(f, "{a}"),
        }
    }
}

/// One change to IAM. Names are IAM names.
#[derive(Debug, Clone, PartialEq)]
pub enum IamChange {
    CreatePolicy {
        name: String,
        document: Value,
    },
    /// A changed document becomes the new default version; at IAM's five versions the
    /// oldest non-default one goes first.
    NewPolicyVersion {
        name: String,
        arn: String,
        document: Value,
        drop: Option<String>,
    },
    CreateGroup {
        name: String,
    },
    CreateUser {
        name: String,
    },
    CreateRole {
        name: String,
        trust: Value,
    },
    UpdateTrust {
        name: String,
        trust: Value,
    },
    /// An instance profile of the role's name, holding the role (`exists`: it is there,
    /// without the role).
    CreateProfile {
        name: String,
        role: String,
        exists: bool,
    },
    Attach {
        holder: Holder,
        policy: Attachable,
    },
    /// An attachment the definition does not have (a hand-attached policy included).
    Detach {
        holder: Holder,
        arn: String,
    },
    Join {
        user: String,
        group: String,
    },
    /// A membership the definition does not have (a hand-added one included).
    Leave {
        user: String,
        group: String,
    },
    /// A key whose secret goes to the config keys `secret` (and its id to `id`).
    CreateAccessKey {
        user: String,
        id_key: String,
        secret_key: String,
    },
    /// A key of heet's user that is not the one heet keeps (made by hand, or one whose
    /// secret a killed run lost), or the kept one once not wanted (`stored` then names the
    /// config keys to delete with it).
    DeleteAccessKey {
        user: String,
        key_id: String,
        stored: Option<(String, String)>,
    },
    /// Deletes the entity once what holds it is undone: a user's memberships, policies,
    /// access keys and login profile; a group's members and policies; a role's policies
    /// and profiles; a profile's role; a policy's non-default versions.
    Delete {
        kind: Kind,
        name: String,
        arn: String,
    },
}

impl Change for IamChange {
    /// When apply makes it (the one table of the IAM apply order; ties are made at once).
    fn stage(&self) -> (Stage, u8) {
        match self {
            IamChange::CreatePolicy { .. } => (Stage::Before, 1),
            IamChange::NewPolicyVersion { .. } => (Stage::Before, 2),
            IamChange::CreateGroup { .. } | IamChange::CreateRole { .. } => (Stage::Before, 3),
            IamChange::UpdateTrust { .. } | IamChange::CreateUser { .. } => (Stage::Before, 4),
            IamChange::CreateProfile { .. } => (Stage::Before, 5),
            IamChange::Attach { .. } => (Stage::Before, 6),
            IamChange::Join { .. } => (Stage::Before, 7),
            IamChange::Detach { .. } | IamChange::Leave { .. } => (Stage::Before, 8),
            // IAM allows two keys a user: strays go before a new one is made.
            IamChange::DeleteAccessKey { .. } => (Stage::Before, 9),
            IamChange::CreateAccessKey { .. } => (Stage::Before, 10),
            // What instances used goes once they are gone, users first, policies last.
            IamChange::Delete { kind, .. } => (
                Stage::After,
                match kind {
                    Kind::User => 1,
                    Kind::Profile => 2,
                    Kind::Role => 3,
                    Kind::Group => 4,
                    Kind::Policy => 5,
                },
            ),
        }
    }

    /// The ledger entry the executor writes around it.
    fn bookkeeping(&self) -> Bookkeeping {
        match self {
            IamChange::CreatePolicy { name, .. } => {
                Bookkeeping::Create(Kind::Policy.resource(name))
            }
            IamChange::CreateGroup { name } => Bookkeeping::Create(Kind::Group.resource(name)),
            IamChange::CreateUser { name } => Bookkeeping::Create(Kind::User.resource(name)),
            IamChange::CreateRole { name, .. } => Bookkeeping::Create(Kind::Role.resource(name)),
            IamChange::CreateProfile {
                name,
                exists: false,
                ..
            } => Bookkeeping::Create(Kind::Profile.resource(name)),
            IamChange::Delete { kind, name, .. } => Bookkeeping::Delete(kind.resource(name)),
            IamChange::NewPolicyVersion { .. }
            | IamChange::UpdateTrust { .. }
            | IamChange::CreateProfile { exists: true, .. }
            | IamChange::Attach { .. }
            | IamChange::Detach { .. }
            | IamChange::Join { .. }
            | IamChange::Leave { .. }
            | IamChange::CreateAccessKey { .. }
            | IamChange::DeleteAccessKey { .. } => Bookkeeping::None,
        }
    }

    fn creates(&self) -> bool {
        matches!(self.bookkeeping(), Bookkeeping::Create(_))
            || matches!(
                self,
                IamChange::CreateAccessKey { .. }
                    | IamChange::Attach { .. }
                    | IamChange::Join { .. }
            )
    }

    fn is_delete(&self) -> bool {
        matches!(
            self,
            IamChange::Delete { .. }
                | IamChange::DeleteAccessKey { .. }
                | IamChange::Detach { .. }
                | IamChange::Leave { .. }
        )
    }
}

impl fmt::Display for IamChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IamChange::CreatePolicy { name, .. } => write!(f, "create iam policy {name}"),
            IamChange::NewPolicyVersion { name, drop, .. } => {
                write!(
                    f,
                    "new default version of iam policy {name} (document changed"
                )?;
                if let Some(v) = drop {
                    write!(f, "; version {v} deleted first: IAM keeps 5")?;
                }
                write!(f, ")")
            }
            IamChange::CreateGroup { name } => write!(f, "create iam group {name}"),
            IamChange::CreateUser { name } => write!(f, "create iam user {name}"),
            IamChange::CreateRole { name, .. } => write!(f, "create iam role {name}"),
            IamChange::UpdateTrust { name, .. } => {
                write!(f, "update the trust document of iam role {name}")
            }
            IamChange::CreateProfile {
                name,
                role,
                exists: false,
            } => write!(f, "create instance profile {name} for role {role}"),
            IamChange::CreateProfile { name, role, .. } => {
                write!(f, "put role {role} in instance profile {name}")
            }
            IamChange::Attach { holder, policy } => write!(f, "attach {policy} to iam {holder}"),
            IamChange::Detach { holder, arn } => write!(f, "detach {arn} from iam {holder}"),
            IamChange::Join { user, group } => write!(f, "add iam user {user} to group {group}"),
            IamChange::Leave { user, group } => {
                write!(f, "remove iam user {user} from group {group}")
            }
            IamChange::CreateAccessKey {
                user, secret_key, ..
            } => write!(
                f,
                "create an access key for iam user {user} (secret kept in config {secret_key})"
            ),
            IamChange::DeleteAccessKey {
                user,
                stored: Some(_),
                ..
            } => write!(f, "delete the access key of iam user {user}"),
            IamChange::DeleteAccessKey { user, .. } => write!(
                f,
                "delete an access key of iam user {user} that heet did not make"
            ),
            IamChange::Delete { kind, name, .. } => write!(f, "delete iam {} {name}", kind.label()),
        }
    }
}

/// The IAM part of a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IamPlan {
    pub changes: Vec<IamChange>,
    /// Names heet would create that an entity it did not create holds: nothing is applied.
    pub conflicts: Vec<String>,
    /// Entities under heet's path that heet did not create: never touched.
    pub foreign: Vec<String>,
    /// Ledger entries of entities that are gone: dropped. Bookkeeping, not a change.
    pub forgotten: Vec<String>,
    /// Entities a killed run created after writing them ahead: confirmed with their ids
    /// (ledger resource, IAM id). Bookkeeping, not a change.
    pub adopted: Vec<(String, String)>,
    /// The ARN of each of heet's policies that exists, by IAM name (attachments name it).
    pub arns: BTreeMap<String, String>,
}

impl Family for IamPlan {
    fn label(&self) -> &'static str {
        "iam"
    }
    fn deleted_noun(&self) -> &'static str {
        "IAM entit(ies)"
    }
    fn changes(&self) -> Vec<&dyn Change> {
        self.changes.iter().map(|c| c as &dyn Change).collect()
    }
    fn conflicts(&self) -> &[String] {
        &self.conflicts
    }
    fn foreign(&self) -> &[String] {
        &self.foreign
    }
    fn retain(&mut self, keep: &dyn Fn(&dyn Change) -> bool) {
        self.changes.retain(|c| keep(c));
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.conflicts.is_empty()
            && self.forgotten.is_empty()
            && self.adopted.is_empty()
    }

    fn settled(&self) -> Vec<(Bookkeeping, Option<&str>)> {
        crate::kinds::settled(&self.forgotten, &self.adopted)
    }
}

/// The changes turning `observed` into `desired`. `owned` is what the ledger lists of IAM
/// (by ledger resource).
pub fn plan(
    desired: &DesiredIam,
    observed: &ObservedIam,
    owned: &BTreeMap<String, Owned>,
) -> IamPlan {
    let mut out = IamPlan::default();
    // heet's entities by (kind, IAM name); the rest are someone else's.
    let mut mine: BTreeMap<(Kind, &str), &Observed> = BTreeMap::new();
    for o in &observed.entities {
        let resource = o.kind.resource(&o.name);
        match owned.get(&resource) {
            Some(Owned { id: Some(id) }) if *id == o.id => {
                mine.insert((o.kind, &o.name), o);
            }
            // Written ahead by a run that died around the create: the create went through.
            Some(Owned { id: None }) => {
                out.adopted.push((resource, o.id.clone()));
                mine.insert((o.kind, &o.name), o);
            }
            _ => out
                .foreign
                .push(format!("iam {} {} ({})", o.kind.label(), o.name, o.id)),
        }
    }
    for resource in owned.keys() {
        let Some((kind, name)) = Kind::of_resource(resource) else {
            continue;
        };
        if !mine.contains_key(&(kind, name)) {
            out.forgotten.push(resource.clone());
        }
    }
    let taken = |kind: Kind, name: &str| {
        observed
            .entities
            .iter()
            .any(|o| o.kind == kind && o.name == name)
            && !mine.contains_key(&(kind, name))
    };
    let iam = &desired.iam;
    for arn in &observed.missing {
        out.conflicts.push(format!(
            "the policy {arn} does not exist: nothing can be attached to it"
        ));
    }
    let mut changes = Vec::new();
    let conflict = |kind: Kind, name: &str, out: &mut IamPlan| {
        out.conflicts.push(format!(
            "iam {} {name} exists under heet's path but heet did not create it",
            kind.label()
        ));
    };

    // Policies: heet's ARNs, known once they exist.
    let mut arns: BTreeMap<String, String> = BTreeMap::new();
    let mut wanted: BTreeSet<(Kind, String)> = BTreeSet::new();
    for (short, document) in &iam.policies {
        let name = desired.full(short);
        wanted.insert((Kind::Policy, name.clone()));
        match mine.get(&(Kind::Policy, name.as_str())) {
            None if taken(Kind::Policy, &name) => conflict(Kind::Policy, &name, &mut out),
            None => changes.push(IamChange::CreatePolicy {
                name: name.clone(),
                document: document.clone(),
            }),
            Some(o) => {
                arns.insert(name.clone(), o.arn.clone());
                if let ObservedDetail::Policy {
                    document: current,
                    versions,
                } = &o.detail
                    && current.as_ref() != Some(document)
                {
                    changes.push(IamChange::NewPolicyVersion {
                        name: name.clone(),
                        arn: o.arn.clone(),
                        document: document.clone(),
                        drop: oldest_to_drop(versions),
                    });
                }
            }
        }
    }
    let resolve = |p: &PolicyRef| -> (Attachable, Option<String>) {
        match p {
            PolicyRef::Arn(a) => (Attachable::Arn(a.clone()), Some(a.clone())),
            PolicyRef::Heet(short) => {
                let name = desired.full(short);
                let arn = arns.get(&name).cloned();
                (Attachable::Heet(name), arn)
            }
        }
    };
    // Attaches what `want` has that `attached` lacks, detaches the rest.
    let attachments =
        |holder: Holder, want: &[PolicyRef], attached: &[String], changes: &mut Vec<IamChange>| {
            let mut keep = BTreeSet::new();
            for p in want {
                let (policy, arn) = resolve(p);
                match arn {
                    Some(arn) if attached.contains(&arn) => {
                        keep.insert(arn);
                    }
                    _ => changes.push(IamChange::Attach {
                        holder: holder.clone(),
                        policy,
                    }),
                }
            }
            for arn in attached {
                if !keep.contains(arn) {
                    changes.push(IamChange::Detach {
                        holder: holder.clone(),
                        arn: arn.clone(),
                    });
                }
            }
        };

    // Groups, and who should be in each.
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (short, u) in &iam.users {
        for g in &u.groups {
            members
                .entry(desired.full(g))
                .or_default()
                .insert(desired.full(short));
        }
    }
    let mut leaves: BTreeSet<(String, String)> = BTreeSet::new();
    for (short, g) in &iam.groups {
        let name = desired.full(short);
        wanted.insert((Kind::Group, name.clone()));
        match mine.get(&(Kind::Group, name.as_str())) {
            None if taken(Kind::Group, &name) => conflict(Kind::Group, &name, &mut out),
            None => {
                changes.push(IamChange::CreateGroup { name: name.clone() });
                attachments(Holder::Group(name), &g.policies, &[], &mut changes);
            }
            Some(o) => {
                if let ObservedDetail::Group {
                    attached,
                    members: present,
                } = &o.detail
                {
                    attachments(
                        Holder::Group(name.clone()),
                        &g.policies,
                        attached,
                        &mut changes,
                    );
                    let want = members.get(&name);
                    for m in present {
                        if !want.is_some_and(|w| w.contains(m)) {
                            leaves.insert((m.clone(), name.clone()));
                        }
                    }
                }
            }
        }
    }

    // Users: their memberships, stray policies and access keys.
    for (short, u) in &iam.users {
        let name = desired.full(short);
        wanted.insert((Kind::User, name.clone()));
        let (id_key, secret_key) = access_key_keys(short);
        let stored = observed.stored_keys.get(&name);
        match mine.get(&(Kind::User, name.as_str())) {
            None if taken(Kind::User, &name) => conflict(Kind::User, &name, &mut out),
            None => {
                changes.push(IamChange::CreateUser { name: name.clone() });
                for g in &u.groups {
                    changes.push(IamChange::Join {
                        user: name.clone(),
                        group: desired.full(g),
                    });
                }
                if u.access_key {
                    changes.push(IamChange::CreateAccessKey {
                        user: name.clone(),
                        id_key,
                        secret_key,
                    });
                }
            }
            Some(o) => {
                let ObservedDetail::User {
                    groups,
                    attached,
                    keys,
                } = &o.detail
                else {
                    continue;
                };
                for g in &u.groups {
                    let g = desired.full(g);
                    if !groups.contains(&g) {
                        changes.push(IamChange::Join {
                            user: name.clone(),
                            group: g,
                        });
                    }
                }
                for g in groups {
                    let wanted_here = u.groups.iter().any(|w| desired.full(w) == *g);
                    if !wanted_here {
                        leaves.insert((name.clone(), g.clone()));
                    }
                }
                attachments(Holder::User(name.clone()), &[], attached, &mut changes);
                let kept = stored.filter(|id| keys.contains(id));
                for k in keys {
                    if Some(k) != kept || !u.access_key {
                        changes.push(IamChange::DeleteAccessKey {
                            user: name.clone(),
                            key_id: k.clone(),
                            stored: (Some(k) == kept).then(|| (id_key.clone(), secret_key.clone())),
                        });
                    }
                }
                if u.access_key && kept.is_none() {
                    changes.push(IamChange::CreateAccessKey {
                        user: name.clone(),
                        id_key,
                        secret_key,
                    });
                }
            }
        }
    }
    for (user, group) in leaves {
        changes.push(IamChange::Leave { user, group });
    }

    // Roles and their instance profiles.
    for (short, r) in &iam.roles {
        let name = desired.full(short);
        wanted.insert((Kind::Role, name.clone()));
        wanted.insert((Kind::Profile, name.clone()));
        match mine.get(&(Kind::Role, name.as_str())) {
            None if taken(Kind::Role, &name) => conflict(Kind::Role, &name, &mut out),
            None => {
                changes.push(IamChange::CreateRole {
                    name: name.clone(),
                    trust: r.trust.clone(),
                });
                attachments(Holder::Role(name.clone()), &r.policies, &[], &mut changes);
            }
            Some(o) => {
                if let ObservedDetail::Role { trust, attached } = &o.detail {
                    if trust.as_ref() != Some(&r.trust) {
                        changes.push(IamChange::UpdateTrust {
                            name: name.clone(),
                            trust: r.trust.clone(),
                        });
                    }
                    attachments(
                        Holder::Role(name.clone()),
                        &r.policies,
                        attached,
                        &mut changes,
                    );
                }
            }
        }
        match mine.get(&(Kind::Profile, name.as_str())) {
            None if taken(Kind::Profile, &name) => conflict(Kind::Profile, &name, &mut out),
            None => changes.push(IamChange::CreateProfile {
                name: name.clone(),
                role: name.clone(),
                exists: false,
            }),
            Some(o) => {
                if let ObservedDetail::Profile { roles } = &o.detail
                    && !roles.contains(&name)
                {
                    changes.push(IamChange::CreateProfile {
                        name: name.clone(),
                        role: name.clone(),
                        exists: true,
                    });
                }
            }
        }
    }

    // heet's entities the definition no longer has.
    for ((kind, name), o) in &mine {
        if wanted.contains(&(*kind, (*name).to_owned())) {
            continue;
        }
        if let ObservedDetail::User { keys, .. } = &o.detail {
            // A kept access key's config keys go with it.
            let short = name
                .strip_prefix(&format!("{}-{}-", desired.project, desired.env))
                .unwrap_or(name);
            if let Some(id) = observed.stored_keys.get(*name)
                && keys.contains(id)
            {
                changes.push(IamChange::DeleteAccessKey {
                    user: (*name).to_owned(),
                    key_id: id.clone(),
                    stored: Some(access_key_keys(short)),
                });
            }
        }
        changes.push(IamChange::Delete {
            kind: *kind,
            name: (*name).to_owned(),
            arn: o.arn.clone(),
        });
    }
    // Memberships and attachments of entities being deleted go with them.
    let deleted: BTreeSet<(Kind, String)> = changes
        .iter()
        .filter_map(|c| match c {
            IamChange::Delete { kind, name, .. } => Some((*kind, name.clone())),
            _ => None,
        })
        .collect();
    changes.retain(|c| match c {
        IamChange::Leave { user, group } => {
            !deleted.contains(&(Kind::User, user.clone()))
                && !deleted.contains(&(Kind::Group, group.clone()))
        }
        IamChange::Detach {
            holder: Holder::User(n),
            ..
        } => !deleted.contains(&(Kind::User, n.clone())),
        _ => true,
    });
    out.changes = changes;
    out.arns = arns;
    out
}

/// The version deleted before a new one when a policy has IAM's five: the oldest that is
/// not the default.
fn oldest_to_drop(versions: &[Version]) -> Option<String> {
    if versions.len() < 5 {
        return None;
    }
    versions
        .iter()
        .filter(|v| !v.default)
        .min_by_key(|v| {
            v.id.trim_start_matches('v')
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        })
        .map(|v| v.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> DesiredIam {
        let mut iam = Iam::default();
        iam.policies.insert(
            "deploy".into(),
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}),
        );
        iam.groups.insert(
            "ops".into(),
            Group {
                policies: vec![
                    PolicyRef::Heet("deploy".into()),
                    PolicyRef::Arn("arn:aws:iam::aws:policy/ReadOnlyAccess".into()),
                ],
            },
        );
        iam.users.insert(
            "deployer".into(),
            User {
                groups: vec!["ops".into()],
                access_key: true,
            },
        );
        iam.roles.insert(
            "app".into(),
            Role {
                trust: service_trust("ec2"),
                policies: vec![PolicyRef::Heet("deploy".into())],
            },
        );
        DesiredIam::of("shop", "prod", &iam)
    }

    fn entity(kind: Kind, name: &str, detail: ObservedDetail) -> Observed {
        Observed {
            kind,
            name: name.into(),
            id: format!("ID-{name}-{}", kind.prefix()),
            arn: format!(
                "arn:aws:iam::123456789012:{}/heet/shop/prod/{name}",
                kind.prefix()
            ),
            detail,
        }
    }

    /// Everything as `desired()` wants it, and the ledger listing it.
    fn converged() -> (ObservedIam, BTreeMap<String, Owned>) {
        let d = desired();
        let policy = entity(
            Kind::Policy,
            "shop-prod-deploy",
            ObservedDetail::Policy {
                document: d.iam.policies.get("deploy").cloned(),
                versions: vec![Version {
                    id: "v1".into(),
                    default: true,
                }],
            },
        );
        let arn = policy.arn.clone();
        let entities = vec![
            policy,
            entity(
                Kind::Group,
                "shop-prod-ops",
                ObservedDetail::Group {
                    attached: vec![arn.clone(), "arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
                    members: vec!["shop-prod-deployer".into()],
                },
            ),
            entity(
                Kind::User,
                "shop-prod-deployer",
                ObservedDetail::User {
                    groups: vec!["shop-prod-ops".into()],
                    attached: vec![],
                    keys: vec!["AKIA1".into()],
                },
            ),
            entity(
                Kind::Role,
                "shop-prod-app",
                ObservedDetail::Role {
                    trust: Some(service_trust("ec2")),
                    attached: vec![arn],
                },
            ),
            entity(
                Kind::Profile,
                "shop-prod-app",
                ObservedDetail::Profile {
                    roles: vec!["shop-prod-app".into()],
                },
            ),
        ];
        let owned = entities
            .iter()
            .map(|o| {
                (
                    o.kind.resource(&o.name),
                    Owned {
                        id: Some(o.id.clone()),
                    },
                )
            })
            .collect();
        let observed = ObservedIam {
            entities,
            missing: Vec::new(),
            stored_keys: BTreeMap::from([("shop-prod-deployer".into(), "AKIA1".into())]),
        };
        (observed, owned)
    }

    fn shown(p: &IamPlan) -> Vec<String> {
        p.changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_empty_account_gets_everything_created_before_it_is_used() {
        let p = plan(&desired(), &ObservedIam::default(), &BTreeMap::new());
        let mut changes = p.changes.clone();
        changes.sort_by_key(IamChange::stage);
        let order: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "create iam policy shop-prod-deploy",
                "create iam group shop-prod-ops",
                "create iam role shop-prod-app",
                "create iam user shop-prod-deployer",
                "create instance profile shop-prod-app for role shop-prod-app",
                "attach policy shop-prod-deploy to iam group shop-prod-ops",
                "attach arn:aws:iam::aws:policy/ReadOnlyAccess to iam group shop-prod-ops",
                "attach policy shop-prod-deploy to iam role shop-prod-app",
                "add iam user shop-prod-deployer to group shop-prod-ops",
                "create an access key for iam user shop-prod-deployer (secret kept in config IAM_DEPLOYER_SECRET_ACCESS_KEY)",
            ]
        );
        assert!(p.conflicts.is_empty() && p.foreign.is_empty());
        assert_eq!(
            p.changes[0].bookkeeping(),
            Bookkeeping::Create("iam-policy/shop-prod-deploy".into())
        );
    }

    #[test]
    fn nothing_changes_when_everything_is_in_place() {
        let (observed, owned) = converged();
        let p = plan(&desired(), &observed, &owned);
        assert!(p.is_empty(), "{:?}", shown(&p));
    }

    #[test]
    fn hand_made_memberships_policies_and_keys_are_undone() {
        let (mut observed, owned) = converged();
        for o in &mut observed.entities {
            match &mut o.detail {
                ObservedDetail::Group { members, .. } => members.push("alice".into()),
                ObservedDetail::User {
                    groups,
                    attached,
                    keys,
                } => {
                    groups.push("admins".into());
                    attached.push("arn:aws:iam::aws:policy/AdministratorAccess".into());
                    keys.push("AKIA2".into());
                }
                ObservedDetail::Role { attached, .. } => {
                    attached.push("arn:aws:iam::aws:policy/AdministratorAccess".into())
                }
                _ => {}
            }
        }
        let p = plan(&desired(), &observed, &owned);
        let mut got = shown(&p);
        got.sort();
        assert_eq!(
            got,
            [
                "delete an access key of iam user shop-prod-deployer that heet did not make",
                "detach arn:aws:iam::aws:policy/AdministratorAccess from iam role shop-prod-app",
                "detach arn:aws:iam::aws:policy/AdministratorAccess from iam user shop-prod-deployer",
                "remove iam user alice from group shop-prod-ops",
                "remove iam user shop-prod-deployer from group admins",
            ]
        );
        // The key heet keeps is not the one deleted.
        assert!(p.changes.iter().any(|c| matches!(c, IamChange::DeleteAccessKey { key_id, stored: None, .. } if key_id == "AKIA2")));
    }

    #[test]
    fn a_changed_document_is_a_new_version_and_the_oldest_goes_at_five() {
        let (mut observed, owned) = converged();
        let mut d = desired();
        d.iam.policies.insert(
            "deploy".into(),
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
        );
        let p = plan(&d, &observed, &owned);
        assert_eq!(
            shown(&p),
            ["new default version of iam policy shop-prod-deploy (document changed)"]
        );
        if let ObservedDetail::Policy { versions, .. } = &mut observed.entities[0].detail {
            *versions = (1..=5)
                .map(|n| Version {
                    id: format!("v{n}"),
                    default: n == 2,
                })
                .collect();
        }
        let p = plan(&d, &observed, &owned);
        assert!(
            matches!(&p.changes[0], IamChange::NewPolicyVersion { drop: Some(v), .. } if v == "v1")
        );
    }

    #[test]
    fn look_alikes_are_foreign_and_a_taken_name_is_a_conflict() {
        let (mut observed, mut owned) = converged();
        // The user heet made is gone; someone made one of its name, and one more under the path.
        observed.entities[2].id = "SOMEONE-ELSES".into();
        let intruder = entity(
            Kind::User,
            "shop-prod-intruder",
            ObservedDetail::User {
                groups: vec![],
                attached: vec![],
                keys: vec![],
            },
        );
        observed.entities.push(intruder);
        owned.insert(
            "iam-user/shop-prod-gone".into(),
            Owned {
                id: Some("X".into()),
            },
        );
        let p = plan(&desired(), &observed, &owned);
        assert_eq!(
            p.conflicts,
            ["iam user shop-prod-deployer exists under heet's path but heet did not create it"]
        );
        assert_eq!(p.foreign.len(), 2, "{:?}", p.foreign);
        assert!(
            !p.changes.iter().any(|c| c.to_string().contains("intruder")),
            "{:?}",
            shown(&p)
        );
        // The one heet made is gone too: its entry goes, the look-alike stays someone else's.
        assert_eq!(
            p.forgotten,
            ["iam-user/shop-prod-deployer", "iam-user/shop-prod-gone"]
        );
    }

    #[test]
    fn down_deletes_heets_entities_users_first_policies_last_and_keeps_foreign_ones() {
        let (mut observed, owned) = converged();
        observed.entities.push(entity(
            Kind::Role,
            "shop-prod-decoy",
            ObservedDetail::Role {
                trust: None,
                attached: vec![],
            },
        ));
        let nothing = DesiredIam::of("shop", "prod", &Iam::default());
        let p = plan(&nothing, &observed, &owned);
        let mut changes = p.changes.clone();
        changes.sort_by_key(IamChange::stage);
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "delete the access key of iam user shop-prod-deployer",
                "delete iam user shop-prod-deployer",
                "delete iam instance profile shop-prod-app",
                "delete iam role shop-prod-app",
                "delete iam group shop-prod-ops",
                "delete iam policy shop-prod-deploy",
            ]
        );
        assert_eq!(p.foreign.len(), 1);
    }

    #[test]
    fn documents_are_read_back_url_encoded_or_plain() {
        let doc = serde_json::json!({"Statement": [{"Effect": "Allow"}]});
        assert_eq!(parse_document(&compact(&doc)), Some(doc.clone()));
        let encoded = "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%7D%5D%7D";
        assert_eq!(parse_document(encoded), Some(doc));
    }

    #[test]
    fn documents_and_arns_are_checked_before_any_call() {
        assert!(check_document(&serde_json::json!({"Version": "2012-10-17"}), 10).is_err());
        let big = serde_json::json!({"Statement": [{"Action": "x".repeat(MAX_POLICY_CHARS)}]});
        assert!(
            check_document(&big, MAX_POLICY_CHARS)
                .unwrap_err()
                .contains("6144")
        );
        assert!(check_policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess").is_ok());
        assert!(check_policy_arn("arn:aws:iam::123456789012:policy/team/x").is_ok());
        assert!(check_policy_arn("arn:aws:s3:::bucket").is_err());
        assert!(check_policy_arn("arn:aws:iam::12:policy/x").is_err());
    }
}
