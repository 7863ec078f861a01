//! Everyday operations against moto: config and secrets in Parameter Store, the Ansible
//! inventory, the IAM policy (each action proven used), and the customers example: two
//! customers × dev/prod, fully separate, up and down.

use std::collections::BTreeSet;
use std::path::Path;

use tests::{Project, Run, moto, plugin_dir, repo_root};

const SECRET: &str = "pg://app:Hunter2-never-printed@db/app";

const APP: &str = r#"
[project]
name = "{project}"

[plugins.config.cloud-init]
config_keys = ["DATABASE_URL", "LOG_LEVEL"]

[defaults]
ami = "ami-12c6146b"

[roles.www]

[environments.prod]
"#;

#[test]
fn a_secret_is_never_printed_logged_or_written_outside_its_parameter() {
    let p = Project::new(APP, &["cloud-init"]);
    // The secret comes on stdin, as a user keeps it out of shell history.
    let set = p.heet_input(
        &[
            "config",
            "set",
            "DATABASE_URL",
            "--secret",
            "--env",
            "prod",
            "-vv",
        ],
        &format!("{SECRET}\n"),
    );
    set.ok();
    assert_eq!(set.stdout().trim(), "set DATABASE_URL (secret, version 1)");
    p.heet(&["config", "set", "LOG_LEVEL", "info", "--env", "prod"])
        .ok();
    let name = format!("/heet/{}/prod/config/DATABASE_URL", p.name);
    assert_eq!(
        moto().ssm_under(&format!("/heet/{}/prod/config/", p.name)),
        [
            (name.clone(), SECRET.to_owned()),
            (
                format!("/heet/{}/prod/config/LOG_LEVEL", p.name),
                "info".to_owned()
            )
        ],
        "stored whole, without the newline"
    );

    let list = p.heet(&["config", "list", "--env", "prod"]);
    assert_eq!(
        list.ok().stdout(),
        "DATABASE_URL (secret, version 1)\nLOG_LEVEL=info\n"
    );
    let get = p.heet(&["config", "get", "DATABASE_URL", "--env", "prod"]);
    assert_eq!(
        get.ok().stdout(),
        "DATABASE_URL is a secret (version 1): add --reveal to print it\n"
    );
    let json = p
        .heet(&[
            "config",
            "get",
            "DATABASE_URL",
            "--env",
            "prod",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(json["value"], serde_json::Value::Null);
    assert_eq!(json["secret"], true);
    let revealed = p.heet(&["config", "get", "DATABASE_URL", "--env", "prod", "--reveal"]);
    assert_eq!(revealed.ok().stdout(), format!("{SECRET}\n"));
    let all = p
        .heet(&[
            "config", "list", "--env", "prod", "--reveal", "--output", "json",
        ])
        .json();
    assert_eq!(all["keys"][0]["value"], SECRET);

    // A forgotten --secret never turns a secret into plain text.
    let plain = p.heet(&["config", "set", "DATABASE_URL", "oops", "--env", "prod"]);
    assert_eq!(plain.code(), 2, "{}", plain.stderr());
    assert!(
        plain
            .stderr()
            .contains("DATABASE_URL is a secret: pass --secret")
    );
    let bad = p.heet(&["config", "set", "DATABASE-URL", "x", "--env", "prod"]);
    assert_eq!(bad.code(), 2);
    assert!(
        bad.stderr().contains("invalid config key \"DATABASE-URL\""),
        "{}",
        bad.stderr()
    );

    // The instance fetches the keys at boot: its user_data names them, never the value.
    let up = p.heet(&["up", "--env", "prod", "-vv"]);
    up.ok();
    let instance = &moto().live_instances("heet:project", &p.name)[0];
    let user_data = moto().user_data(&instance.id);
    assert!(
        user_data.contains("for k in DATABASE_URL LOG_LEVEL; do")
            && user_data.contains(&format!("/heet/{}/prod/config/$k", p.name)),
        "{user_data}"
    );
    let status = p.heet(&["status", "--env", "prod", "-vv", "--output", "json"]);
    let down = p.heet(&["down", "--env", "prod", "--yes", "-vv"]);
    down.ok();
    for (what, run) in [
        ("set", &set),
        ("list", &list),
        ("get", &get),
        ("up", &up),
        ("status", &status),
        ("down", &down),
    ] {
        for text in [run.stdout(), run.stderr()] {
            assert!(
                !text.contains("Hunter2"),
                "{what} printed the secret:\n{text}"
            );
        }
    }
    assert!(!user_data.contains("Hunter2"));
    // Nothing else heet keeps for the project holds it either (ledger, lock).
    for (name, value) in moto().ssm_under(&format!("/heet/{}/", p.name)) {
        assert!(
            !value.contains("Hunter2") || name.ends_with("/config/DATABASE_URL"),
            "{name} holds the secret"
        );
    }

    let unset = p.heet(&["config", "unset", "DATABASE_URL", "--env", "prod"]);
    assert_eq!(unset.ok().stdout(), "unset DATABASE_URL\n");
    let gone = p.heet(&["config", "get", "DATABASE_URL", "--env", "prod"]);
    assert_eq!(gone.code(), 2);
    assert!(
        gone.stderr().contains("DATABASE_URL is not set"),
        "{}",
        gone.stderr()
    );
}

const EVERYTHING: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

[plugins.config.cname]
patterns = ["{role}-{index:02}"]

[network]
vpc = "create"
subnets = 2

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2
ports = [443]
allow_cidr = ["0.0.0.0/0"]
eip = true
key_pair = "create"

[roles.db]
ports = [5432]
allow_from = ["www"]
volume_gb = 10
source_dest_check = false
instance_profile = "iam:app"
key_pair = { public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHe21njEm5jyACCSs2x886LlE5CtVJDr3kiT8Yx3kmbo" }

[roles.api]
instance_type = "t3.micro"

[roles.api.load_balancer]
port = 8000
health_check = { path = "/up" }

[environments.prod]

[iam.policies.deploy]
statements = [{ actions = ["s3:GetObject"], resources = ["*"] }]

[iam.groups.ops]
policies = ["deploy", "arn:aws:iam::aws:policy/ReadOnlyAccess"]

[iam.users.ci]
groups = ["ops"]
access_key = true

[iam.roles.app]
assume = "ec2"
policies = ["deploy"]
"#;

/// Every operation a command reported with `--stats`.
fn operations(runs: &[Run]) -> BTreeSet<String> {
    runs.iter().flat_map(Run::operations).collect()
}

#[test]
fn the_iam_policy_lists_exactly_the_actions_a_lifecycle_calls() {
    let p = Project::new(EVERYTHING, &["cname"]);
    let policy = p.heet(&["iam-policy", "--output", "json"]).json();
    let allowed: BTreeSet<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(
        allowed.contains("iam:PassRole"),
        "db has an instance profile"
    );
    let ssm = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "HeetState")
        .unwrap();
    assert_eq!(
        ssm["Resource"],
        serde_json::json!([format!("arn:aws:ssm:*:*:parameter/heet/{}/*", p.name)])
    );

    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--env", "prod", "--stats"][..]].concat()
    }
    let mut runs = vec![
        p.heet(&with(&["plan"])),
        p.heet(&with(&["up"])),
        p.heet(&with(&["up"])),
        p.heet(&with(&["status"])),
        p.heet(&with(&["config", "set", "K", "v"])),
        p.heet(&with(&["config", "get", "K"])),
        p.heet(&with(&["config", "list"])),
        p.heet(&with(&["config", "unset", "K"])),
        p.heet(&with(&["keys", "get", "www", "--reveal"])),
        p.heet(&with(&["inventory"])),
        p.heet(&with(&["hosts"])),
        p.heet(&with(&["unlock", "--yes"])),
    ];
    // New CNAMEs: instances are retagged (heet:dns) and records change; a new policy
    // document and trust; a policy attached by hand to heet's user is detached.
    p.write(
        "heet.toml",
        &EVERYTHING
            .replace("{role}-{index:02}", "{env}-{role}-{index:02}")
            .replace("s3:GetObject", "s3:GetObjectVersion")
            .replace("assume = \"ec2\"", "assume = \"ec2.amazonaws.com.cn\"")
            // The balancer's health check and listener change in place; its instance is
            // replaced, drained from the target group first.
            .replace("path = \"/up\"", "path = \"/ready\"")
            .replace("port = 8000", "port = 8000\nlisten = 8080")
            .replace(
                "instance_type = \"t3.micro\"",
                "instance_type = \"t3.small\"",
            )
            // A third subnet: the balancer follows the environment's subnets.
            .replace("subnets = 2", "subnets = 3"),
    );
    moto().iam(&[
        ("Action", "AttachUserPolicy"),
        ("UserName", &format!("{}-prod-ci", p.name)),
        ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
    ]);
    runs.push(p.heet(&with(&["up", "--yes"])));
    runs.push(p.heet(&with(&["down", "--yes"])));
    for r in &runs {
        r.ok();
    }
    let called = operations(&runs);
    // Checked by IAM inside other calls, never called themselves (heet's iam.rs).
    let authorization_only = [
        "iam:PassRole",
        "iam:TagPolicy",
        "iam:TagUser",
        "iam:TagRole",
        "iam:TagInstanceProfile",
        "elasticloadbalancing:AddTags",
    ];
    let needed: BTreeSet<String> = allowed
        .iter()
        .filter(|a| !authorization_only.contains(&a.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        needed.difference(&called).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "allowed but never called"
    );
    assert_eq!(
        called.difference(&needed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "called but not allowed"
    );
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
}

/// `policy` as moto can enforce it: moto matches a statement's `Resource` against `*` for
/// every service but S3 (it does not know which resource a call names), so each statement
/// keeps its actions, effect and conditions and gets `Resource: "*"`.
fn as_moto_enforces(policy: &serde_json::Value) -> serde_json::Value {
    let mut policy = policy.clone();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        statement["Resource"] = serde_json::json!("*");
    }
    policy
}

/// Makes IAM user `name` with `policy` attached and an access key, by unsigned calls that
/// moto takes while its `INITIAL_NO_AUTH_ACTION_COUNT` lasts (4 calls): the key's id and
/// secret.
fn bootstrap_user(endpoint: &str, name: &str, policy: &serde_json::Value) -> (String, String) {
    let iam = |params: &[(&str, &str)]| {
        let (status, body) = tests::call(endpoint, "iam", params);
        assert_eq!(status, 200, "{params:?}: {body}");
        body
    };
    iam(&[("Action", "CreateUser"), ("UserName", name)]);
    let document = policy.to_string();
    assert!(document.len() <= 6_144, "{} characters", document.len());
    let created = iam(&[
        ("Action", "CreatePolicy"),
        ("PolicyName", name),
        ("PolicyDocument", &document),
    ]);
    let arn = tests::xml_text(&created, "Arn");
    iam(&[
        ("Action", "AttachUserPolicy"),
        ("UserName", name),
        ("PolicyArn", &arn),
    ]);
    let key = iam(&[("Action", "CreateAccessKey"), ("UserName", name)]);
    (
        tests::xml_text(&key, "AccessKeyId"),
        tests::xml_text(&key, "SecretAccessKey"),
    )
}

/// midops' bootstrap: an account whose only user holds `heet iam-policy`'s output runs a
/// definition of every kind (but DNS) from plan to down, and no call is denied; a user whose policy
/// lacks one action is denied that action, so the enforcement is real.
#[test]
fn a_bootstrap_user_with_only_heets_policy_runs_every_command() {
    // moto refuses every signed Route53 request (its signature check fails on Route53's REST
    // paths, whatever the policy), so this definition has no zone: Route53's actions are
    // proven by the call-count test above alone.
    let without_dns: String = EVERYTHING
        .lines()
        .filter(|l| {
            ![
                "domain",
                "create_zone",
                "[plugins.config.cname]",
                "patterns",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let p = Project::new(&without_dns, &[]);
    let policy = p.heet(&["iam-policy", "--output", "json"]).json();
    assert!(
        !policy.to_string().contains("route53"),
        "no zone, no Route53: {policy}"
    );
    let enforced = as_moto_enforces(&policy);
    // Without iam:CreateAccessKey: the user's key cannot be made.
    let mut narrow = enforced.clone();
    for statement in narrow["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = statement["Action"].as_array_mut() {
            actions.retain(|a| a != "iam:CreateAccessKey");
        }
    }
    assert_ne!(narrow, enforced, "the policy grants iam:CreateAccessKey");

    // A moto of its own: authorization from the 9th call on, for this test alone.
    let authorized = tests::Moto::start_with(
        &tests::moto_server_command(),
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "8")],
    );
    let (id, secret) = bootstrap_user(&authorized.endpoint, "bootstrap", &enforced);
    let (narrow_id, narrow_secret) = bootstrap_user(&authorized.endpoint, "narrow", &narrow);
    let (status, body) = tests::call(&authorized.endpoint, "iam", &[("Action", "ListUsers")]);
    assert_eq!(status, 403, "unsigned calls are refused now: {body}");

    let as_user = |id: &str, secret: &str, args: &[&str]| {
        let args = [args, &["--env", "prod"][..]].concat();
        p.heet_with(
            &args,
            &[
                ("AWS_ENDPOINT_URL", authorized.endpoint.as_str()),
                ("AWS_ACCESS_KEY_ID", id),
                ("AWS_SECRET_ACCESS_KEY", secret),
            ],
        )
    };
    let denied = as_user(&narrow_id, &narrow_secret, &["up"]);
    assert_ne!(denied.code(), 0);
    assert!(
        // moto's refusal carries no error code the SDK reads (AWS's says AccessDenied):
        // heet names the call and the answer's status.
        denied.stderr().contains("iam:CreateAccessKey") && denied.stderr().contains("HTTP 403"),
        "{}",
        denied.stderr()
    );
    as_user(&narrow_id, &narrow_secret, &["down", "--yes"]).ok();

    for args in [
        &["plan"][..],
        &["up"],
        &["up"],
        &["status"],
        &["config", "set", "K", "v"],
        &["config", "get", "K"],
        &["config", "list"],
        &["config", "unset", "K"],
        &["keys", "get", "www", "--reveal"],
        &["inventory"],
        &["hosts"],
        &["down", "--yes"],
    ] {
        let run = as_user(&id, &secret, args);
        assert_eq!(
            run.code(),
            0,
            "heet {args:?}: {}{}",
            run.stdout(),
            run.stderr()
        );
        for refusal in ["AccessDenied", "UnauthorizedOperation", "AuthFailure"] {
            assert!(
                !run.stderr().contains(refusal),
                "heet {args:?}: {}",
                run.stderr()
            );
        }
    }
    let after = as_user(&id, &secret, &["plan", "--output", "json"]);
    let iam = &after.ok().json()["plan"]["iam"]["changes"];
    assert_eq!(
        iam.as_array().unwrap().len(),
        10,
        "down left nothing of heet's IAM: {iam}"
    );
}

/// The accounts `examples/customers` runs its customers in.
const ACME_ACCOUNT: &str = "111111111111";
const GLOBEX_ACCOUNT: &str = "222222222222";

/// Copies `examples/customers` (the definitions, and the built plugins as `plugins/`) into
/// a temporary folder.
fn customers() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in tests::CUSTOMERS_PLUGINS {
        std::fs::copy(
            plugin_dir().join(format!("{p}.wasm")),
            plugins.join(format!("{p}.wasm")),
        )
        .unwrap();
    }
    for c in ["acme", "globex"] {
        std::fs::create_dir(dir.path().join(c)).unwrap();
        std::fs::copy(
            repo_root()
                .join("examples/customers")
                .join(c)
                .join("heet.toml"),
            dir.path().join(c).join("heet.toml"),
        )
        .unwrap();
    }
    dir
}

fn heet_in(dir: &Path, args: &[&str]) -> Run {
    tests::heet_in(dir, args)
}

#[test]
fn customers_come_up_fully_separate_and_go_leaving_nothing() {
    let root = customers();
    let (acme, globex) = (root.path().join("acme"), root.path().join("globex"));
    // Each customer's own account, reached by assuming a role there (the example says so).
    let account = |project: &str| {
        moto().in_account(match project {
            "acme" => ACME_ACCOUNT,
            _ => GLOBEX_ACCOUNT,
        })
    };
    for c in [&acme, &globex] {
        heet_in(c, &["plugins", "lock"]).ok();
        for env in ["dev", "prod"] {
            heet_in(c, &["up", "--env", env]).ok();
        }
    }

    // Each customer and environment has its own VPC, with the CIDR its definition gives.
    let vpc_of = |project: &str, env: &str| {
        let ids = account(project).ids(
            ("DescribeVpcs", "vpcSet", "vpcId"),
            &[("tag:heet:project", project), ("tag:heet:env", env)],
        );
        assert_eq!(ids.len(), 1, "{project}/{env}: {ids:?}");
        ids[0].clone()
    };
    let vpcs: BTreeSet<String> = [
        ("acme", "dev"),
        ("acme", "prod"),
        ("globex", "dev"),
        ("globex", "prod"),
    ]
    .iter()
    .map(|(p, e)| vpc_of(p, e))
    .collect();
    assert_eq!(vpcs.len(), 4);
    let cidr = account("globex").ids(
        ("DescribeVpcs", "vpcSet", "cidrBlock"),
        &[("vpc-id", &vpc_of("globex", "prod"))],
    );
    assert_eq!(cidr, ["10.21.0.0/16"]);

    // Every instance is in its customer's VPC and tagged for it.
    for (project, env) in [("acme", "prod"), ("globex", "dev")] {
        let aws = account(project);
        let subnets = aws.ids(
            ("DescribeSubnets", "subnetSet", "subnetId"),
            &[("vpc-id", &vpc_of(project, env))],
        );
        for i in aws.live_instances("heet:project", project) {
            if i.tags["heet:env"] != env {
                continue;
            }
            assert_eq!(i.tags["customer"], project);
            let (_, subnet, _) = aws.placement(&i.id);
            assert!(
                subnets.contains(&subnet),
                "{} of {project} in {subnet}",
                i.id
            );
        }
    }

    // The inventory: groups per role and per env--role, hostvars with ids and DNS names.
    let inv = heet_in(&globex, &["inventory", "--env", "prod", "--output", "json"]).json();
    assert_eq!(inv["www"]["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(
        inv["prod--db"]["hosts"],
        serde_json::json!(["globex-prod-db-01"])
    );
    let www1 = &inv["_meta"]["hostvars"]["globex-prod-www-01"];
    assert!(www1["instance_id"].as_str().unwrap().starts_with("i-"));
    assert!(
        www1["public_dns"]
            .as_str()
            .unwrap()
            .ends_with(".amazonaws.com"),
        "{www1}"
    );
    assert_eq!(www1["heet_role"], "www");
    assert_eq!(
        heet_in(&globex, &["inventory", "--env", "prod", "--host", "x"])
            .ok()
            .stdout(),
        "{}\n",
        "Ansible's per-host call"
    );
    let hosts = heet_in(&acme, &["hosts", "--env", "dev", "--role", "db"]);
    assert_eq!(hosts.ok().stdout().lines().count(), 1);

    // Each customer's IAM, per environment: the ops group with its managed policy, the
    // deploy user in it with its key kept as a secret, the app role whose instance profile
    // www launches with; nothing of one customer names the other.
    for (project, env) in [("acme", "dev"), ("globex", "prod")] {
        let full = |n: &str| format!("{project}-{env}-{n}");
        let aws = account(project);
        let mut mine: Vec<String> = aws
            .iam_entities(project)
            .into_iter()
            .filter(|e| e.contains(&format!("{project}-{env}-")))
            .collect();
        mine.sort();
        assert_eq!(
            mine,
            [
                format!("group {}", full("ops")),
                format!("instance-profile {}", full("app")),
                format!("policy {}", full("app-config")),
                format!("role {}", full("app")),
                format!("user {}", full("deploy")),
            ]
        );
        let group = aws.iam(&[("Action", "GetGroup"), ("GroupName", &full("ops"))]);
        assert!(
            group.contains(&format!("<UserName>{}</UserName>", full("deploy"))),
            "{group}"
        );
        let policies = aws.iam(&[
            ("Action", "ListAttachedGroupPolicies"),
            ("GroupName", &full("ops")),
        ]);
        assert!(
            policies.contains("arn:aws:iam::aws:policy/ReadOnlyAccess"),
            "{policies}"
        );
        let key = aws.ssm_parameter(&format!(
            "/heet/{project}/{env}/config/IAM_DEPLOY_SECRET_ACCESS_KEY"
        ));
        assert!(
            key.is_some_and(|k| k.len() >= 20),
            "the deploy key's secret is kept"
        );
        let listed = heet_in(
            if project == "acme" { &acme } else { &globex },
            &["config", "list", "--env", env],
        );
        assert!(
            listed
                .ok()
                .stdout()
                .contains("IAM_DEPLOY_SECRET_ACCESS_KEY (secret"),
            "{}",
            listed.stdout()
        );
        for i in aws.live_instances("heet:project", project) {
            if i.tags["heet:env"] == env && i.tags["heet:role"] == "www" {
                let described =
                    aws.ec2(&[("Action", "DescribeInstances"), ("InstanceId.1", &i.id)]);
                assert!(
                    described.contains(&full("app")),
                    "{} has no app profile: {described}",
                    i.id
                );
            }
        }
    }

    // Nothing of either customer is in the other's account, or in the account whose
    // credentials assumed the roles.
    for project in ["acme", "globex"] {
        let other = if project == "acme" { "globex" } else { "acme" };
        assert!(!account(project).leftovers(project).is_empty());
        assert_eq!(account(other).leftovers(project), Vec::<String>::new());
        assert_eq!(moto().leftovers(project), Vec::<String>::new());
        assert_eq!(moto().ssm_under(&format!("/heet/{project}/")), []);
    }

    // Taking acme's prod down leaves acme's dev and all of globex as they were.
    let before = account("globex").leftovers("globex");
    let acme_dev = account("acme").ids(
        ("DescribeSecurityGroups", "securityGroupInfo", "groupId"),
        &[("tag:heet:project", "acme"), ("tag:heet:env", "dev")],
    );
    heet_in(&acme, &["down", "--env", "prod", "--yes"]).ok();
    assert_eq!(account("globex").leftovers("globex"), before);
    assert_eq!(
        account("acme").ids(
            ("DescribeSecurityGroups", "securityGroupInfo", "groupId"),
            &[("tag:heet:project", "acme")],
        ),
        acme_dev
    );

    for c in [&acme, &globex] {
        for env in ["dev", "prod"] {
            heet_in(c, &["down", "--env", env, "--yes"]).ok();
        }
    }
    for project in ["acme", "globex"] {
        assert_eq!(account(project).leftovers(project), Vec::<String>::new());
        assert_eq!(account(project).ssm_under(&format!("/heet/{project}/")), []);
    }
}

#[test]
fn graph_draws_roles_their_firewall_and_names_as_dot_mermaid_and_svg() {
    let root = customers();
    let acme = root.path().join("acme");
    heet_in(&acme, &["plugins", "lock"]).ok();

    let dot = heet_in(&acme, &["graph", "--env", "prod"]).ok().stdout();
    for line in [
        "digraph \"acme/prod\" {",
        "\"role:www\" [shape=box, color=black, label=\"www\\n2 × m5.large\"];",
        "\"role:db\" [shape=box, color=black, label=\"db\\n1 × r5.large\\nvolume 200 GiB\"];",
        "\"net:0.0.0.0/0\" -> \"role:www\" [label=\"tcp 80, 443\"];",
        "\"role:www\" -> \"role:db\" [label=\"tcp 5432\"];",
        "\"name:prod-www-02.acme.customers.example\" -> \"role:www\" [label=\"CNAME → www[2]\"];",
    ] {
        assert!(dot.contains(line), "{line}\nin\n{dot}");
    }
    assert!(
        !dot.contains("\"net:0.0.0.0/0\" -> \"role:db\""),
        "only www reaches the db: {dot}"
    );

    let mermaid = heet_in(&acme, &["graph", "--env", "dev", "--format", "mermaid"])
        .ok()
        .stdout();
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("[\"www<br/>1 × t3.small\"]"), "{mermaid}");

    // The SVG is XML holding every role, network and port of the drawing.
    let svg = heet_in(&acme, &["graph", "--env", "prod", "--format", "svg"])
        .ok()
        .stdout();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.descendants().filter_map(|t| t.text()).collect::<String>())
        .collect();
    for want in [
        "www",
        "2 × m5.large",
        "db",
        "0.0.0.0/0",
        "tcp 80, 443",
        "tcp 5432",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(want)),
            "{want} in {texts:?}"
        );
    }
}

#[test]
fn graph_live_draws_what_runs_and_leaves_look_alikes_out() {
    // The customers example's acme under a name and an AWS model of its own: the other tests
    // bring acme up, through the model they share.
    let toml = std::fs::read_to_string(repo_root().join("examples/customers/acme/heet.toml"))
        .unwrap()
        .replace("name = \"acme\"", "name = \"{project}\"")
        .replace("acme.customers.example", "{project}.customers.example")
        .replace("dir = \"../plugins\"", "dir = \"plugins\"");
    let p = tests::Project::new(&toml, &tests::CUSTOMERS_PLUGINS);

    let empty = p.heet(&["graph", "--env", "dev", "--live"]).ok().stdout();
    assert!(!empty.contains("\"role:www\""), "nothing runs yet: {empty}");
    p.heet(&["up", "--env", "dev"]).ok();
    // The look-alike where heet works: acme's account.
    let acme = moto().in_account(ACME_ACCOUNT);
    let fake = acme.launch_foreign(&[
        ("heet:project", &p.name),
        ("heet:env", "dev"),
        ("heet:role", "www"),
        ("heet:index", "9"),
    ]);
    let live = p.heet(&["graph", "--env", "dev", "--live"]).ok().stdout();
    for line in [
        format!("digraph \"{}/dev (live)\" {{", p.name),
        "\"role:www\" [shape=box, color=black, label=\"www\\n1 × t3.small running\"];".to_owned(),
        "\"net:0.0.0.0/0\" -> \"role:www\" [label=\"tcp 80, 443\"];".to_owned(),
        "\"role:www\" -> \"role:db\" [label=\"tcp 5432\"];".to_owned(),
        format!(
            "\"name:dev-www-01.{}.customers.example\" -> \"role:www\" [label=\"CNAME → www[1]\"];",
            p.name
        ),
    ] {
        assert!(live.contains(&line), "{line}\nin\n{live}");
    }
    acme.terminate(&fake);
    p.heet(&["down", "--env", "dev", "--yes"]).ok();
}
