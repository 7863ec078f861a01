//! The least-privilege IAM policy heet needs for a definition (Paaws: "works with a
//! locked-down IAM"): only the actions the definition's features make heet call, SSM limited
//! to the project's parameters, and changes to existing EC2 resources limited to those tagged
//! for the project.
//!
//! `tests/tests/operations.rs` proves the table honest: a lifecycle of every command against
//! moto calls exactly these actions, no more and no fewer.

use std::fmt;

use serde::Serialize;

use crate::definition::{AssumeRole, Definition};
use crate::kinds::network;
use crate::namespace::TAG_PROJECT;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: &'static str,
    pub effect: &'static str,
    pub action: Vec<&'static str>,
    pub resource: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

/// Permissions IAM checks that are not API calls of their own (so no test can see them
/// called): `iam:PassRole` is checked inside RunInstances for an instance profile, and a
/// create that carries tags needs the kind's `Tag…` permission too.
pub const AUTHORIZATION_ONLY: [&str; 6] = [
    "iam:PassRole",
    "iam:TagPolicy",
    "iam:TagUser",
    "iam:TagRole",
    "iam:TagInstanceProfile",
    "elasticloadbalancing:AddTags",
];

/// What heet calls to observe IAM under its path (listing cannot be limited to a path), and
/// to check that the policies a definition attaches by ARN exist.
const IAM_LIST: [&str; 6] = [
    "iam:GetPolicy",
    "iam:ListPolicies",
    "iam:ListGroups",
    "iam:ListUsers",
    "iam:ListRoles",
    "iam:ListInstanceProfiles",
];

/// What heet calls on its own IAM entities, all under `/heet/<project>/`.
const IAM_OWN: [&str; 39] = [
    "iam:GetPolicyVersion",
    "iam:ListPolicyVersions",
    "iam:CreatePolicy",
    "iam:TagPolicy",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicyVersion",
    "iam:DeletePolicy",
    "iam:GetGroup",
    "iam:ListAttachedGroupPolicies",
    "iam:CreateGroup",
    "iam:AttachGroupPolicy",
    "iam:DetachGroupPolicy",
    "iam:AddUserToGroup",
    "iam:RemoveUserFromGroup",
    "iam:DeleteGroup",
    "iam:ListGroupsForUser",
    "iam:ListAttachedUserPolicies",
    "iam:ListAccessKeys",
    "iam:CreateUser",
    "iam:TagUser",
    "iam:DetachUserPolicy",
    "iam:CreateAccessKey",
    "iam:DeleteAccessKey",
    "iam:DeleteLoginProfile",
    "iam:DeleteUser",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:CreateRole",
    "iam:TagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:DeleteRole",
    "iam:GetInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:TagInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:DeleteInstanceProfile",
];

/// What heet calls on its stacks: observed with their templates, previewed by change sets
/// (created, described, deleted), created, updated, deleted, and their events read when one
/// fails.
const STACKS: [&str; 10] = [
    "cloudformation:DescribeStacks",
    "cloudformation:GetTemplate",
    "cloudformation:CreateChangeSet",
    "cloudformation:DescribeChangeSet",
    "cloudformation:DeleteChangeSet",
    "cloudformation:CreateStack",
    "cloudformation:UpdateStack",
    "cloudformation:DeleteStack",
    "cloudformation:DescribeStackEvents",
    "cloudformation:TagResource",
];

/// What heet reads of load balancers: ELB cannot limit its describes to resources.
const BALANCERS_OBSERVE: [&str; 6] = [
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetHealth",
];

/// What heet does to its own balancers, target groups and listeners.
const BALANCERS_OWN: [&str; 12] = [
    "elasticloadbalancing:CreateLoadBalancer",
    "elasticloadbalancing:CreateTargetGroup",
    "elasticloadbalancing:CreateListener",
    "elasticloadbalancing:AddTags",
    "elasticloadbalancing:ModifyTargetGroup",
    "elasticloadbalancing:ModifyTargetGroupAttributes",
    "elasticloadbalancing:ModifyListener",
    "elasticloadbalancing:SetSubnets",
    "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:DeleteTargetGroup",
];

fn statement(
    sid: &'static str,
    action: Vec<&'static str>,
    resource: Vec<String>,
    condition: Option<serde_json::Value>,
) -> Statement {
    Statement {
        sid,
        effect: "Allow",
        action,
        resource,
        condition,
    }
}

/// The policy for `def`.
pub fn policy(def: &Definition) -> Policy {
    let profiles = def.roles.iter().any(|r| r.instance_profile.is_some());
    let all = || vec!["*".to_owned()];
    let pick = |on: bool, actions: &[&'static str]| if on { actions.to_vec() } else { Vec::new() };

    // Each kind of network resource says what it needs (`network::Kind::actions`); EC2's
    // Describe calls cannot be limited to resources, creates make new resources (tagged in
    // the same call), everything else touches a resource that exists: only the project's.
    let kinds = network::kinds_of(def);
    let per_kind = |f: fn(network::KindActions) -> &'static [&'static str]| {
        kinds
            .iter()
            .flat_map(move |k| f(k.actions()).iter().copied())
            .collect::<Vec<_>>()
    };
    // Every run asks STS who it is first (the account in every report, `account_id`'s
    // check). AWS needs no permission for it; it is listed so the policy names every call.
    let mut observe = vec!["sts:GetCallerIdentity", "ec2:DescribeInstances"];
    // A rollout healthy at `status-ok` waits for EC2's status checks.
    let status_checks = def
        .roles
        .iter()
        .any(|r| r.rolling.health == crate::rolling::Health::StatusOk);
    observe.extend(pick(status_checks, &["ec2:DescribeInstanceStatus"]));
    observe.extend(per_kind(|a| a.observe));
    let mut create = vec!["ec2:RunInstances"];
    create.extend(per_kind(|a| a.create));
    let mut tag_on_create = vec!["RunInstances"];
    tag_on_create.extend(per_kind(|a| a.tag_on_create));
    let mut own = vec!["ec2:CreateTags", "ec2:TerminateInstances"];
    own.extend(per_kind(|a| a.own));
    // Addresses a role names (`elastic_ip`) are not heet's: read, and associated with heet's
    // instances (the instance side under the project's tag, the address by its ARN below).
    let given: Vec<&str> = def
        .roles
        .iter()
        .filter_map(|r| r.elastic_ip.as_deref())
        .collect();
    let own_addresses = kinds.contains(&network::Kind::Address);
    observe.extend(pick(
        !given.is_empty() && !own_addresses,
        &["ec2:DescribeAddresses"],
    ));
    own.extend(pick(
        !given.is_empty() && !own_addresses,
        &["ec2:AssociateAddress"],
    ));
    // Monitoring is changed in place for the roles that say it (unset, heet leaves it).
    let monitoring = def.roles.iter().any(|r| r.monitoring.is_some());
    own.extend(pick(
        monitoring,
        &["ec2:MonitorInstances", "ec2:UnmonitorInstances"],
    ));
    // Termination protection is turned off before heet terminates an instance launched
    // with it, whatever the definition says now: always granted, on heet's instances only.
    own.push("ec2:ModifyInstanceAttribute");

    let mut statements = vec![
        statement("HeetObserve", observe, all(), None),
        statement("HeetCreate", create, all(), None),
        statement(
            "HeetTagOnCreate",
            vec!["ec2:CreateTags"],
            all(),
            Some(serde_json::json!({
                "StringEquals": { "ec2:CreateAction": tag_on_create }
            })),
        ),
        statement(
            "HeetOwnResources",
            own,
            all(),
            Some(serde_json::json!({
                "StringEquals": { format!("ec2:ResourceTag/{TAG_PROJECT}"): def.project }
            })),
        ),
        statement(
            "HeetState",
            vec![
                "ssm:GetParametersByPath",
                "ssm:GetParameter",
                "ssm:PutParameter",
                "ssm:DeleteParameter",
                "ssm:DeleteParameters",
            ],
            vec![format!(
                "arn:aws:ssm:{}:*:parameter/heet/{}/*",
                one_region(def).unwrap_or("*"),
                def.project
            )],
            None,
        ),
    ];
    if !given.is_empty() {
        let region = one_region(def).unwrap_or("*");
        statements.push(statement(
            "HeetGivenAddresses",
            vec!["ec2:AssociateAddress"],
            given
                .iter()
                .map(|a| format!("arn:aws:ec2:{region}:*:elastic-ip/{a}"))
                .collect(),
            None,
        ));
    }
    if !def.stacks.is_empty() {
        // The stacks are `<project>-<env>-<name>`. CloudFormation makes their resources with
        // these same credentials (heet passes no service role): what a template makes must
        // be granted beside this policy.
        statements.push(statement(
            "HeetStacks",
            STACKS.to_vec(),
            vec![format!(
                "arn:aws:cloudformation:{}:*:stack/{}-*/*",
                one_region(def).unwrap_or("*"),
                def.project
            )],
            None,
        ));
    }
    if def.roles.iter().any(|r| r.load_balancer.is_some()) {
        let mut observe = BALANCERS_OBSERVE.to_vec();
        // A balancer in the default VPC goes into its default subnets, found by describe.
        observe.extend(pick(
            def.network.vpc == crate::definition::Vpc::Default,
            &["ec2:DescribeSubnets"],
        ));
        statements.push(statement("HeetBalancersObserve", observe, all(), None));
        // Balancers and target groups are named `<project>-<env>-<role>`, cut to 32
        // characters (the project's first 23 at least), or `heet-<hash>` where that would
        // start with `internal-`.
        let region = one_region(def).unwrap_or("*");
        let prefix: String = if format!("{}-", def.project).starts_with("internal-") {
            "heet-".to_owned()
        } else {
            def.project.chars().take(23).collect()
        };
        statements.push(statement(
            "HeetBalancers",
            BALANCERS_OWN.to_vec(),
            ["loadbalancer/app", "targetgroup", "listener/app"]
                .iter()
                .map(|kind| format!("arn:aws:elasticloadbalancing:{region}:*:{kind}/{prefix}*"))
                .collect(),
            None,
        ));
    }
    if def.domain.is_some() {
        let mut find = vec!["route53:ListHostedZonesByName"];
        find.extend(pick(def.create_zone, &["route53:CreateHostedZone"]));
        statements.push(statement("HeetFindZone", find, all(), None));
        statements.push(statement(
            "HeetRecords",
            vec![
                "route53:ListResourceRecordSets",
                "route53:ChangeResourceRecordSets",
            ],
            vec!["arn:aws:route53:::hostedzone/*".to_owned()],
            None,
        ));
    }
    if !def.iam.is_empty() {
        statements.push(statement("HeetIamList", IAM_LIST.to_vec(), all(), None));
        // Everything heet makes lives under /heet/<project>/: it changes nothing else. (The
        // policy an Attach names is a condition key, not a resource: left open, as a group
        // or role may hold any policy the definition names.)
        let own = ["policy", "group", "user", "role", "instance-profile"]
            .iter()
            .map(|kind| format!("arn:aws:iam::*:{kind}/heet/{}/*", def.project))
            .collect();
        statements.push(statement("HeetIamOwn", IAM_OWN.to_vec(), own, None));
    }
    if !def.tasks.tasks.is_empty() {
        // `heet run` sends AWS-RunShellScript, and only to instances tagged for the project
        // (heet names each by id, from its own describe), then reads each run's result.
        statements.push(statement(
            "HeetRunShellScript",
            vec!["ssm:SendCommand"],
            vec!["arn:aws:ssm:*::document/AWS-RunShellScript".to_owned()],
            None,
        ));
        statements.push(statement(
            "HeetRunOnOwnInstances",
            vec!["ssm:SendCommand"],
            vec!["arn:aws:ec2:*:*:instance/*".to_owned()],
            Some(serde_json::json!({
                "StringEquals": { format!("ssm:resourceTag/{TAG_PROJECT}"): def.project }
            })),
        ));
        statements.push(statement(
            "HeetRunResults",
            vec!["ssm:GetCommandInvocation"],
            all(),
            None,
        ));
    }
    if profiles {
        statements.push(statement(
            "HeetPassInstanceRole",
            vec!["iam:PassRole"],
            all(),
            Some(serde_json::json!({
                "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" }
            })),
        ));
    }
    Policy {
        version: "2012-10-17",
        statement: statements,
    }
}

/// The region every environment of `def` runs in, when they share one the definition names
/// (`project.region`, or each environment's `region`).
fn one_region(def: &Definition) -> Option<&str> {
    let mut regions = def
        .environments
        .values()
        .map(|e| e.region.as_deref().or(def.region.as_deref()));
    let first = regions.next().flatten()?;
    regions.all(|r| r == Some(first)).then_some(first)
}

/// The trust policy the role `env` assumes (`assume_role`) needs: principals of
/// `principal_account` may assume it, with the environment's `external_id` when it has one.
/// The role also needs [`policy`]'s permissions attached, and whoever assumes it a grant of
/// `sts:AssumeRole` on its ARN in their own account (trusting `:root` delegates to that
/// account's IAM).
pub fn trust(role: &AssumeRole, principal_account: &str) -> Trust {
    // The role's partition (aws, aws-cn, aws-us-gov) is its trusted account's too.
    let partition = crate::validate::iam_arn(&role.arn).map_or("aws", |(p, _, _)| p);
    let mut statement = serde_json::json!({
        "Sid": "HeetAssume",
        "Effect": "Allow",
        "Principal": { "AWS": format!("arn:{partition}:iam::{principal_account}:root") },
        "Action": "sts:AssumeRole",
    });
    if let Some(id) = &role.external_id {
        statement["Condition"] = serde_json::json!({ "StringEquals": { "sts:ExternalId": id } });
    }
    Trust {
        role: role.arn.clone(),
        document: serde_json::json!({ "Version": "2012-10-17", "Statement": [statement] }),
    }
}

/// The role `env` of `def` assumes, or why there is none to trust anyone.
pub fn assumed_role<'a>(def: &'a Definition, env: &str) -> Result<&'a AssumeRole, String> {
    def.environments
        .get(env)
        .and_then(|e| e.assume_role.as_ref())
        .ok_or_else(|| {
            format!("environments.{env} has no assume_role: there is no role to trust anyone")
        })
}

/// A role's trust policy, as `heet iam-policy --trust ENV` prints it: the document alone
/// (it is pasted into IAM as is), the role it is for in the JSON report.
#[derive(Debug, Serialize)]
pub struct Trust {
    pub role: String,
    pub document: serde_json::Value,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string_pretty(&self.document).map_err(|_| fmt::Error)?;
        write!(f, "{json}")
    }
}

impl Policy {
    /// Every action, once, sorted.
    pub fn actions(&self) -> std::collections::BTreeSet<&'static str> {
        self.statement
            .iter()
            .flat_map(|s| s.action.iter().copied())
            .collect()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The policy is JSON whatever the output format: it is pasted into IAM as is.
        let json = serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?;
        write!(f, "{json}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn def(extra: &str) -> Definition {
        let src = format!(
            "[project]\nname = \"shop\"\nregion = \"eu-west-1\"\n{extra}\n[defaults]\nami = \"ami-1\"\n[roles.www]\n[environments.prod]\n"
        );
        Definition::parse(Path::new("heet.toml"), &src).unwrap()
    }

    #[test]
    fn an_assumed_role_trusts_the_account_named_with_the_external_id() {
        let d = Definition::parse(
            Path::new("heet.toml"),
            "[project]\nname = \"shop\"\n[defaults]\nami = \"ami-1\"\n[roles.www]\n\
             [environments.staging]\nregion = \"eu-west-1\"\n\
             [environments.prod]\nregion = \"us-east-2\"\n\
             assume_role = \"arn:aws:iam::222222222222:role/heet\"\nexternal_id = \"shop-prod\"\n",
        )
        .unwrap();
        let t = trust(assumed_role(&d, "prod").unwrap(), "111111111111");
        assert_eq!(t.role, "arn:aws:iam::222222222222:role/heet");
        let s = &t.document["Statement"][0];
        assert_eq!(s["Principal"]["AWS"], "arn:aws:iam::111111111111:root");
        assert_eq!(s["Action"], "sts:AssumeRole");
        assert_eq!(
            s["Condition"]["StringEquals"]["sts:ExternalId"],
            "shop-prod"
        );
        assert!(assumed_role(&d, "staging").is_err());
        // Two regions: the parameters' ARNs cannot name one.
        let json = serde_json::to_value(policy(&d)).unwrap();
        assert_eq!(
            json["Statement"][4]["Resource"][0],
            "arn:aws:ssm:*:*:parameter/heet/shop/*"
        );
    }

    #[test]
    fn a_plain_definition_needs_instances_and_its_own_parameters_only() {
        let p = policy(&def(""));
        let actions: Vec<&str> = p.actions().into_iter().collect();
        assert_eq!(
            actions,
            [
                "ec2:CreateTags",
                "ec2:DescribeInstances",
                // Protection off before a terminate, whatever the definition says now.
                "ec2:ModifyInstanceAttribute",
                "ec2:RunInstances",
                "ec2:TerminateInstances",
                "ssm:DeleteParameter",
                "ssm:DeleteParameters",
                "ssm:GetParameter",
                "ssm:GetParametersByPath",
                "ssm:PutParameter",
                "sts:GetCallerIdentity",
            ]
        );
        let json = serde_json::to_value(&p).unwrap();
        let state = &json["Statement"][4];
        assert_eq!(
            state["Resource"][0],
            "arn:aws:ssm:eu-west-1:*:parameter/heet/shop/*"
        );
        assert_eq!(
            json["Statement"][3]["Condition"]["StringEquals"]["ec2:ResourceTag/heet:project"],
            "shop"
        );
    }

    #[test]
    fn tasks_may_send_the_shell_document_to_the_projects_instances_only() {
        let plain = policy(&def(""));
        assert!(!plain.actions().contains("ssm:SendCommand"));
        let p = policy(&def("[tasks.www.update]\nrun = \"apt-get update\""));
        let json = serde_json::to_value(&p).unwrap();
        let by_sid = |sid: &str| {
            json["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == sid)
                .unwrap_or_else(|| panic!("no {sid} in {json}"))
                .clone()
        };
        let on = by_sid("HeetRunOnOwnInstances");
        assert_eq!(on["Action"][0], "ssm:SendCommand");
        assert_eq!(
            on["Condition"]["StringEquals"]["ssm:resourceTag/heet:project"],
            "shop"
        );
        assert_eq!(
            by_sid("HeetRunShellScript")["Resource"][0],
            "arn:aws:ssm:*::document/AWS-RunShellScript"
        );
        assert!(p.actions().contains("ssm:GetCommandInvocation"));
    }

    #[test]
    fn features_add_their_actions() {
        let p = policy(&def(
            "domain = \"shop.example\"\ncreate_zone = true\n[network]\nvpc = \"create\"",
        ));
        let actions = p.actions();
        for a in [
            "ec2:CreateVpc",
            "ec2:CreateRoute",
            "route53:CreateHostedZone",
            "route53:ChangeResourceRecordSets",
        ] {
            assert!(actions.contains(a), "{a}");
        }
        assert!(!actions.contains("ec2:AllocateAddress"));
        assert!(!actions.contains("iam:PassRole"));
        assert!(
            !actions.contains("iam:CreateUser"),
            "no [iam], no IAM changes"
        );
    }

    #[test]
    fn iam_changes_are_scoped_to_the_projects_path() {
        let p = policy(&def("[iam.users.deploy]
access_key = true
[iam.roles.app]
assume = \"ec2\""));
        let json = serde_json::to_value(&p).unwrap();
        let statements = json["Statement"].as_array().unwrap();
        let sid = |name: &str| statements.iter().find(|s| s["Sid"] == name).unwrap();
        let own = sid("HeetIamOwn");
        assert_eq!(
            own["Resource"],
            serde_json::json!([
                "arn:aws:iam::*:policy/heet/shop/*",
                "arn:aws:iam::*:group/heet/shop/*",
                "arn:aws:iam::*:user/heet/shop/*",
                "arn:aws:iam::*:role/heet/shop/*",
                "arn:aws:iam::*:instance-profile/heet/shop/*",
            ])
        );
        let own_actions: Vec<&str> = own["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for a in ["iam:CreateUser", "iam:CreateAccessKey", "iam:DeleteRole"] {
            assert!(own_actions.contains(&a), "{a}");
        }
        // Only lists and reads are open to every resource.
        let list = sid("HeetIamList");
        assert_eq!(list["Resource"], serde_json::json!(["*"]));
        for a in list["Action"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            assert!(a.starts_with("iam:List") || a.starts_with("iam:Get"), "{a}");
        }
    }
}
