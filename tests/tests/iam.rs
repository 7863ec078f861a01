//! IAM kinds against moto, through the AWS model: policies, groups, users with an access
//! key, roles with their instance profiles; made, kept without a mutating call, repaired
//! after hand-made drift (memberships, attached policies, keys, a changed document past
//! IAM's five versions), look-alikes under heet's path untouched, a run killed anywhere
//! during creation converging, and `down` exact.

use tests::{Project, Run, moto, xml_members};

const DEF: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.www]
instance_profile = "iam:app"

[environments.staging]

[iam.policies.deploy]
statements = [{ actions = ["s3:GetObject"], resources = ["arn:aws:s3:::releases/*"] }]

[iam.groups.ops]
policies = ["deploy", "arn:aws:iam::aws:policy/ReadOnlyAccess"]

[iam.users.deployer]
groups = ["ops"]
access_key = true

[iam.roles.app]
assume = "ec2"
policies = ["deploy"]
"#;

fn all_output(run: &Run) -> String {
    format!("{}{}", run.stdout(), run.stderr())
}

fn mutating(run: &Run) -> u64 {
    run.json()["aws_calls"]["mutating"].as_u64().unwrap()
}

/// IAM names of `p`'s staging entities.
fn name(p: &Project, short: &str) -> String {
    format!("{}-staging-{short}", p.name)
}

fn path(p: &Project) -> String {
    format!("/heet/{}/staging/", p.name)
}

fn members(p: &Project, group: &str) -> Vec<String> {
    let xml = moto().iam(&[("Action", "GetGroup"), ("GroupName", &name(p, group))]);
    let mut users: Vec<String> = xml_members(&xml)
        .into_iter()
        .filter_map(|m| m.get("UserName").cloned())
        .collect();
    users.sort();
    users
}

fn attached(action: &str, holder: (&str, &str)) -> Vec<String> {
    let xml = moto().iam(&[("Action", action), holder]);
    let mut arns: Vec<String> = xml_members(&xml)
        .into_iter()
        .filter_map(|m| m.get("PolicyArn").cloned())
        .collect();
    arns.sort();
    arns
}

fn access_keys(user: &str) -> Vec<String> {
    let xml = moto().iam(&[("Action", "ListAccessKeys"), ("UserName", user)]);
    xml_members(&xml)
        .into_iter()
        .filter_map(|m| m.get("AccessKeyId").cloned())
        .collect()
}

fn policy_arn(p: &Project) -> String {
    format!(
        "arn:aws:iam::123456789012:policy{}{}",
        path(p),
        name(p, "deploy")
    )
}

/// The versions of heet's policy: (id, default).
fn versions(p: &Project) -> Vec<(String, bool)> {
    let xml = moto().iam(&[
        ("Action", "ListPolicyVersions"),
        ("PolicyArn", &policy_arn(p)),
    ]);
    xml_members(&xml)
        .into_iter()
        .map(|m| (m["VersionId"].clone(), m["IsDefaultVersion"] == "true"))
        .collect()
}

fn config(p: &Project, key: &str) -> Option<String> {
    moto().ssm_parameter(&format!("/heet/{}/staging/config/{key}", p.name))
}

#[test]
fn iam_is_made_kept_repaired_and_removed_exactly() {
    let p = Project::new(DEF, &[]);
    let deployer = name(&p, "deployer");
    let plan = p.heet(&["plan", "--env", "staging", "--output", "json"]);
    plan.ok();
    let iam = &plan.json()["plan"]["iam"]["changes"];
    assert_eq!(iam.as_array().unwrap().len(), 10, "{iam}");

    let up = p.heet(&["up", "--env", "staging", "--output", "json"]);
    up.ok();
    let mut want = vec![
        format!("group {}", name(&p, "ops")),
        format!("instance-profile {}", name(&p, "app")),
        format!("policy {}", name(&p, "deploy")),
        format!("role {}", name(&p, "app")),
        format!("user {deployer}"),
    ];
    want.sort();
    let mut got = moto().iam_entities(&p.name);
    got.sort();
    assert_eq!(got, want);
    assert_eq!(members(&p, "ops"), std::slice::from_ref(&deployer));
    assert_eq!(
        attached("ListAttachedGroupPolicies", ("GroupName", &name(&p, "ops"))),
        [
            policy_arn(&p),
            "arn:aws:iam::aws:policy/ReadOnlyAccess".to_owned()
        ]
    );
    assert_eq!(
        attached("ListAttachedRolePolicies", ("RoleName", &name(&p, "app"))),
        [policy_arn(&p)]
    );
    let profile = moto().iam(&[
        ("Action", "GetInstanceProfile"),
        ("InstanceProfileName", &name(&p, "app")),
    ]);
    assert!(profile.contains(&format!("<RoleName>{}</RoleName>", name(&p, "app"))));
    // The instance launched with heet's profile.
    let instances = moto().ec2(&[
        ("Action", "DescribeInstances"),
        ("Filter.1.Name", "tag:heet:project"),
        ("Filter.1.Value.1", &p.name),
    ]);
    assert!(
        instances.contains(&format!(
            "instance-profile/heet/{}/staging/{}",
            p.name,
            name(&p, "app")
        )) || instances.contains(&format!("instance-profile/{}", name(&p, "app"))),
        "{instances}"
    );

    // One access key: its id beside its secret in config, neither printed anywhere.
    let keys = access_keys(&deployer);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        config(&p, "IAM_DEPLOYER_ACCESS_KEY_ID"),
        Some(keys[0].clone())
    );
    let secret = config(&p, "IAM_DEPLOYER_SECRET_ACCESS_KEY").expect("the secret is kept");
    assert!(secret.len() >= 20);
    let ledger: String = moto()
        .ssm_under(&format!("/heet/{}/staging/ledger/", p.name))
        .into_iter()
        .map(|(_, v)| tests::ledger_page(&v).map(|m| format!("{m:?}")).unwrap())
        .collect();
    for text in [all_output(&plan), all_output(&up), ledger] {
        assert!(!text.contains(&secret), "the secret leaked: {text}");
        assert!(!text.contains(&keys[0]), "the key id leaked: {text}");
    }
    let listed = p.heet(&["config", "list", "--env", "staging"]);
    assert!(!all_output(&listed).contains(&secret));

    // Again: nothing to do, no mutating call.
    let again = p.heet(&["up", "--env", "staging", "--output", "json"]);
    assert_eq!(mutating(&again), 0, "{}", again.stdout());

    // Drift by hand: a foreign user in heet's group, heet's user in a foreign group with
    // an admin policy and a second key, and a changed document in heet.toml.
    moto().iam(&[
        ("Action", "CreateUser"),
        ("UserName", &format!("{}-alice", p.name)),
    ]);
    moto().iam(&[
        ("Action", "CreateGroup"),
        ("GroupName", &format!("{}-admins", p.name)),
    ]);
    moto().iam(&[
        ("Action", "AddUserToGroup"),
        ("UserName", &format!("{}-alice", p.name)),
        ("GroupName", &name(&p, "ops")),
    ]);
    moto().iam(&[
        ("Action", "AddUserToGroup"),
        ("UserName", &deployer),
        ("GroupName", &format!("{}-admins", p.name)),
    ]);
    moto().iam(&[
        ("Action", "AttachUserPolicy"),
        ("UserName", &deployer),
        ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
    ]);
    moto().iam(&[("Action", "CreateAccessKey"), ("UserName", &deployer)]);
    let status = p.heet(&["status", "--env", "staging"]);
    assert_ne!(status.code(), 0, "drift is not a clean status");
    for line in [
        format!(
            "remove iam user {}-alice from group {}",
            p.name,
            name(&p, "ops")
        ),
        format!("remove iam user {deployer} from group {}-admins", p.name),
        format!("detach arn:aws:iam::aws:policy/AdministratorAccess from iam user {deployer}"),
        format!("delete an access key of iam user {deployer} that heet did not make"),
    ] {
        assert!(
            status.stdout().contains(&line),
            "{line}:\n{}",
            status.stdout()
        );
    }
    let repaired = p.heet(&["up", "--env", "staging"]);
    repaired.ok();
    assert_eq!(members(&p, "ops"), std::slice::from_ref(&deployer));
    assert!(attached("ListAttachedUserPolicies", ("UserName", &deployer)).is_empty());
    assert_eq!(
        access_keys(&deployer),
        keys,
        "the kept key stays, the other goes"
    );
    let groups = moto().iam(&[("Action", "ListGroupsForUser"), ("UserName", &deployer)]);
    assert!(!groups.contains("-admins"), "{groups}");

    // A changed document: a new default version each time, never more than IAM's five.
    for n in 1..=5 {
        p.write(
            "heet.toml",
            &DEF.replace("{project}", &p.name)
                .replace("s3:GetObject", &format!("s3:GetObjectVersion{n}")),
        );
        let run = p.heet(&["up", "--env", "staging"]);
        run.ok();
        let v = versions(&p);
        assert!(v.len() <= 5, "{v:?}");
        assert_eq!(v.iter().filter(|(_, d)| *d).count(), 1, "{v:?}");
        assert!(
            v.iter().any(|(id, d)| *d && *id == format!("v{}", n + 1)),
            "{v:?}"
        );
    }
    let doc = moto().iam(&[
        ("Action", "GetPolicyVersion"),
        ("PolicyArn", &policy_arn(&p)),
        ("VersionId", "v6"),
    ]);
    assert!(doc.contains("GetObjectVersion5"), "{doc}");
    let settled = p.heet(&["up", "--env", "staging", "--output", "json"]);
    assert_eq!(mutating(&settled), 0, "{}", settled.stdout());

    // Down: exactly heet's, everything that held it undone; alice and her group stay.
    let down = p.heet(&["down", "--env", "staging", "--yes", "--output", "json"]);
    let report = down.json();
    assert!(!all_output(&down).contains(&secret));
    // Each family's changes under its own key: IAM's deletes and what held them undone.
    let iam: Vec<&str> = report["iam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for deleted in ["delete iam user", "delete iam group", "delete iam role"] {
        assert!(iam.iter().any(|l| l.starts_with(deleted)), "{iam:?}");
    }
    assert_eq!(report["network"], serde_json::json!([]));
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert!(config(&p, "IAM_DEPLOYER_SECRET_ACCESS_KEY").is_none());
    let users = moto().iam(&[("Action", "ListUsers")]);
    assert!(users.contains(&format!("{}-alice", p.name)), "{users}");
    assert_eq!(moto().ledger_keys(&p.name, "staging"), Vec::<String>::new());
}

#[test]
fn look_alikes_under_heets_path_are_never_touched_and_a_taken_name_stops_the_run() {
    let p = Project::new(DEF, &[]);
    let path = path(&p);
    // Made outside heet, under heet's path, tagged as heet tags: one not in the definition,
    // one holding a name heet wants.
    for user in [name(&p, "intruder"), name(&p, "deployer")] {
        moto().iam(&[
            ("Action", "CreateUser"),
            ("UserName", &user),
            ("Path", &path),
            ("Tags.member.1.Key", "heet:project"),
            ("Tags.member.1.Value", &p.name),
            ("Tags.member.2.Key", "heet:env"),
            ("Tags.member.2.Value", "staging"),
            ("Tags.member.3.Key", "heet:resource"),
            ("Tags.member.3.Value", &format!("iam-user/{user}")),
        ]);
    }
    moto().iam(&[
        ("Action", "CreateRole"),
        ("RoleName", &name(&p, "decoy")),
        ("Path", &path),
        (
            "AssumeRolePolicyDocument",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        ),
    ]);
    let before = moto().iam_entities(&p.name);

    let up = p.heet(&["up", "--env", "staging"]);
    assert_ne!(up.code(), 0);
    assert!(
        up.stderr().contains(&format!(
            "iam user {} exists under heet's path but heet did not create it",
            name(&p, "deployer")
        )),
        "{}",
        up.stderr()
    );
    assert_eq!(moto().iam_entities(&p.name), before, "nothing was applied");
    assert!(moto().live_instances("heet:project", &p.name).is_empty());

    // With the taken name out of the definition, heet makes its own and leaves the rest.
    p.write(
        "heet.toml",
        &DEF.replace("{project}", &p.name)
            .replace("[iam.users.deployer]", "[iam.users.ci]"),
    );
    let up = p.heet(&["up", "--env", "staging"]);
    up.ok();
    assert!(
        up.stdout().contains(&format!(
            "not heet's, left alone: iam user {}",
            name(&p, "intruder")
        )),
        "{}",
        up.stdout()
    );
    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    down.ok();
    assert_eq!(moto().iam_entities(&p.name), before, "{}", down.stdout());
    assert!(
        down.stdout()
            .contains(&format!("iam role {}", name(&p, "decoy"))),
        "down says what it left: {}",
        down.stdout()
    );
}

#[test]
fn killed_anywhere_during_iam_creation_the_next_up_converges_exactly() {
    // A first `up` of DEF makes its IAM before its instance: the lock, the ledger and the
    // survey take the first calls (after STS's GetCallerIdentity, call 1), then each entity
    // is written ahead, made and confirmed.
    for n in [9, 12, 15, 18, 21, 24, 27, 30] {
        let p = Project::new(DEF, &[]);
        let crashed = p.heet_with(
            &["up", "--env", "staging"],
            &[("HEET_TEST_ABORT_AFTER_CALLS", &n.to_string())],
        );
        assert_ne!(crashed.code(), 0, "call {n}: {}", crashed.stderr());
        let next = p.heet(&["up", "--env", "staging"]);
        assert_eq!(next.code(), 0, "call {n}: {}", all_output(&next));
        let again = p.heet(&["up", "--env", "staging", "--output", "json"]);
        assert_eq!(mutating(&again), 0, "call {n}: {}", again.stdout());
        assert_eq!(
            moto().iam_entities(&p.name).len(),
            5,
            "call {n}: one of each: {:?}",
            moto().iam_entities(&p.name)
        );
        let deployer = name(&p, "deployer");
        let keys = access_keys(&deployer);
        assert_eq!(keys.len(), 1, "call {n}: {keys:?}");
        assert_eq!(
            config(&p, "IAM_DEPLOYER_ACCESS_KEY_ID"),
            Some(keys[0].clone())
        );
        assert_eq!(members(&p, "ops"), [deployer]);
        p.heet(&["down", "--env", "staging", "--yes"]).ok();
        assert_eq!(moto().leftovers(&p.name), Vec::<String>::new(), "call {n}");
    }
}

/// The AWS operations of `run` in the order they completed, from heet's trace
/// (`HEET_LOG=heet=trace`): `iam:CreatePolicy`, `ec2:CreateSecurityGroup`.
fn completed(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.contains("aws call "))
        .filter_map(|l| l.split_once(" done: ").map(|(_, op)| op.trim().to_owned()))
        .collect()
}

#[test]
fn iam_and_the_network_are_made_at_once() {
    // DEF with a firewall: groups and rules made before the instances, as IAM is.
    let def = DEF.replace(
        "[roles.www]\n",
        "[roles.www]\nports = [80]\nallow_cidr = [\"0.0.0.0/0\"]\n",
    );
    let p = Project::new(&def, &[]);
    let up = p.heet_with(&["up", "--env", "staging"], &[("HEET_LOG", "heet=trace")]);
    up.ok();
    let calls = completed(&up);
    let at = |f: &dyn Fn(&str) -> bool| -> Vec<usize> {
        calls
            .iter()
            .enumerate()
            .filter(|(_, op)| f(op))
            .map(|(i, _)| i)
            .collect()
    };
    let iam = at(&|op| op.starts_with("iam:Create") || op.starts_with("iam:Attach"));
    let network =
        at(&|op| op == "ec2:CreateSecurityGroup" || op == "ec2:AuthorizeSecurityGroupIngress");
    assert!(!iam.is_empty() && !network.is_empty(), "{calls:?}");
    // One after the other, every call of one family would come before the other's first.
    assert!(
        network[0] < *iam.last().unwrap() && iam[0] < *network.last().unwrap(),
        "IAM and the network were not made at once: {calls:?}"
    );
    let launch = at(&|op| op == "ec2:RunInstances");
    assert!(
        launch[0] > *iam.last().unwrap() && launch[0] > *network.last().unwrap(),
        "the instances come after what they need: {calls:?}"
    );
    let again = p.heet(&["up", "--env", "staging", "--output", "json"]);
    assert_eq!(mutating(&again), 0, "{}", again.stdout());
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert_eq!(moto().iam_entities(&p.name), Vec::<String>::new());
    assert_eq!(moto().ledger_keys(&p.name, "staging"), Vec::<String>::new());
}
