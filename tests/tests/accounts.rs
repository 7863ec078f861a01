//! Accounts per environment: an environment pinned to an account (`account_id`) is refused,
//! exit 2, when the credentials are another account's, before any call but STS's
//! GetCallerIdentity (so before the lock, the ledger or anything else), whatever the command;
//! with its own account's credentials it runs as ever. moto's default account is
//! 123456789012.

use tests::model::Model;
use tests::{Project, moto};

const DEF: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 1

[environments.staging]
account_id = "123456789012"

[environments.production]
account_id = "222222222222"
"#;

#[test]
fn an_environment_pinned_to_another_account_is_refused_before_any_other_call() {
    let p = Project::new(DEF, &[]);
    let commands: [&[&str]; 6] = [
        &["plan", "--env", "production"],
        &["up", "--env", "production", "--yes"],
        &["status", "--env", "production"],
        &["down", "--env", "production", "--yes"],
        &["unlock", "--env", "production", "--yes"],
        &["config", "list", "--env", "production"],
    ];
    for args in commands {
        let before = p.aws.stats();
        let run = p.heet(args);
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        assert!(
            run.stderr().contains(
                "production is pinned to account 222222222222 (environments.production.account_id), but these credentials are for account 123456789012: nothing was done"
            ),
            "{args:?}: {}",
            run.stderr()
        );
        let calls: Vec<(String, u64)> = p
            .aws
            .stats()
            .since(&before)
            .0
            .into_iter()
            .filter(|(_, s)| s.calls > 0)
            .map(|(op, s)| (op, s.calls))
            .collect();
        assert_eq!(
            calls,
            [("sts:GetCallerIdentity".to_owned(), 1)],
            "{args:?}: nothing but the account check"
        );
    }

    // Its own account: the check passes and the command runs.
    let before = p.aws.stats();
    p.heet(&["plan", "--env", "staging"]).ok();
    let seen = p.aws.stats().since(&before);
    assert_eq!(seen.op("sts:GetCallerIdentity").calls, 1);
    assert!(seen.op("ec2:DescribeInstances").calls >= 1);
}

/// Staging and production in accounts of their own, each reached by assuming a role there
/// from the default account's credentials (moto answers AssumeRole into any account with
/// that account's credentials and keeps accounts apart).
const TWO_ACCOUNTS: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

[plugins.config.cname]
patterns = ["{env}-{role}-{index:02}"]

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 1

[environments.staging]
account_id = "111111111111"
assume_role = "arn:aws:iam::111111111111:role/heet-deploy"

[environments.production]
account_id = "222222222222"
assume_role = "arn:aws:iam::222222222222:role/heet-deploy"
external_id = "{project}-production"
session_name = "heet-ci"
duration = 1800
"#;

const STAGING: &str = "111111111111";
const PRODUCTION: &str = "222222222222";

/// What heet made for `env` of `p`, as `account` sees it: its live instances, the CNAMEs in
/// its zone, its ledger's keys.
fn seen_in(p: &Project, account: &str, env: &str) -> (usize, usize, usize) {
    let aws = moto().in_account(account);
    assert_eq!(aws.account(), account);
    let instances = aws
        .live_instances("heet:project", &p.name)
        .into_iter()
        .filter(|i| i.tags["heet:env"] == env)
        .count();
    let records = aws
        .zone_id(&format!("{}.heet.test", p.name))
        .map_or(0, |zone| {
            aws.cnames(&zone)
                .keys()
                .filter(|n| n.starts_with(&format!("{env}-")))
                .count()
        });
    (instances, records, aws.ledger_keys(&p.name, env).len())
}

/// The roles of `TWO_ACCOUNTS`, trusting the default account as their trust policies would:
/// production's only with its external id.
fn trusting(p: &Project) -> Model {
    let production = format!("{}-production", p.name);
    tests::suite_model().trusting(&[
        ("arn:aws:iam::111111111111:role/heet-deploy", None),
        (
            "arn:aws:iam::222222222222:role/heet-deploy",
            Some(production.as_str()),
        ),
    ])
}

#[test]
fn each_environment_lives_in_its_own_account_through_an_assumed_role() {
    let mut p = Project::new(TWO_ACCOUNTS, &["cname"]);
    p.use_model(trusting(&p));
    for env in ["staging", "production"] {
        let account = if env == "staging" {
            STAGING
        } else {
            PRODUCTION
        };
        let plan = p.heet(&["plan", "--env", env, "--output", "json"]);
        assert_eq!(plan.ok().json()["account"], account);
        let up = p.heet(&["up", "--env", env, "--yes", "--output", "json"]);
        let up = up.ok().json();
        assert_eq!(up["applied"]["launched"].as_array().unwrap().len(), 1);
        // The account heet acted in heads its report.
        assert_eq!(up["account"], account, "{up}");
    }
    // The roles were assumed as the environments say: production with its external id
    // (its trust refuses any other), session name and duration; staging as heet-<user>.
    let asked = p.aws.assume_requests();
    let of = |account: &str| {
        let role = format!("arn:aws:iam::{account}:role/heet-deploy");
        asked
            .iter()
            .find(|a| a["RoleArn"] == role)
            .unwrap_or_else(|| panic!("{role} assumed: {asked:?}"))
            .clone()
    };
    assert_eq!(of(PRODUCTION)["RoleSessionName"], "heet-ci");
    assert_eq!(of(PRODUCTION)["DurationSeconds"], "1800");
    assert!(of(STAGING)["RoleSessionName"].starts_with("heet-"));
    assert!(!of(STAGING).contains_key("ExternalId"));

    // Each environment's instance, record and ledger exist in its own account only, and
    // nothing in the account whose credentials assumed the roles.
    assert_eq!(seen_in(&p, STAGING, "staging"), (1, 1, 1));
    assert_eq!(seen_in(&p, PRODUCTION, "production"), (1, 1, 1));
    assert_eq!(seen_in(&p, STAGING, "production"), (0, 0, 0));
    assert_eq!(seen_in(&p, PRODUCTION, "staging"), (0, 0, 0));
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    assert!(moto().ledger_keys(&p.name, "staging").is_empty());

    // A second `up` of each changes nothing, in its own account.
    for env in ["staging", "production"] {
        let again = p.heet(&["up", "--env", env, "--yes", "--output", "json"]);
        let again = again.ok().json();
        assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");
    }

    // Config and status act in the environment's account too.
    let status = p.heet(&["status", "--env", "production", "--output", "json"]);
    assert_eq!(status.ok().json()["account"], PRODUCTION);
    let config = p.heet(&["config", "list", "--env", "staging", "--output", "json"]);
    assert_eq!(config.ok().json()["account"], STAGING);

    // `down` of production leaves staging whole.
    let down = p.heet(&["down", "--env", "production", "--yes", "--output", "json"]);
    assert_eq!(down.ok().json()["account"], PRODUCTION);
    assert_eq!(seen_in(&p, PRODUCTION, "production"), (0, 0, 0));
    assert_eq!(seen_in(&p, STAGING, "staging"), (1, 1, 1));
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(seen_in(&p, STAGING, "staging"), (0, 0, 0));
}

#[test]
fn a_role_that_does_not_trust_these_credentials_stops_everything_naming_it() {
    let mut p = Project::new(TWO_ACCOUNTS, &["cname"]);
    // Production's trust asks for an external id the definition does not send.
    p.use_model(tests::suite_model().trusting(&[(
        "arn:aws:iam::222222222222:role/heet-deploy",
        Some("another-id"),
    )]));
    let run = p.heet(&["up", "--env", "production", "--yes"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains(
            "cannot assume arn:aws:iam::222222222222:role/heet-deploy (environments.production.assume_role):"
        ) && err.contains("AccessDenied")
            && err.contains("heet iam-policy --trust production prints one"),
        "{err}"
    );
    // STS refused before heet made any call of its own.
    let calls: Vec<String> = p
        .aws
        .stats()
        .0
        .into_iter()
        .filter(|(_, s)| s.calls > 0)
        .map(|(op, _)| op)
        .collect();
    assert_eq!(calls, ["sts:AssumeRole"]);
}

#[test]
fn the_trust_policy_names_the_account_that_assumes_and_the_external_id() {
    let p = Project::new(TWO_ACCOUNTS, &["cname"]);
    let trust = p
        .heet(&["iam-policy", "--trust", "production"])
        .ok()
        .stdout();
    let trust: serde_json::Value = serde_json::from_str(&trust).unwrap();
    let s = &trust["Statement"][0];
    // The credentials in use are the default account's: they are who assumes the role.
    assert_eq!(s["Principal"]["AWS"], "arn:aws:iam::123456789012:root");
    assert_eq!(s["Action"], "sts:AssumeRole");
    assert_eq!(
        s["Condition"]["StringEquals"]["sts:ExternalId"],
        format!("{}-production", p.name)
    );
    let given = p.heet(&[
        "iam-policy",
        "--trust",
        "staging",
        "--principal",
        "333333333333",
        "--output",
        "json",
    ]);
    let given = given.ok().json();
    assert_eq!(given["role"], "arn:aws:iam::111111111111:role/heet-deploy");
    assert_eq!(
        given["document"]["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::333333333333:root"
    );
}

#[test]
fn plan_v_says_where_the_region_profile_and_account_come_from() {
    let p = Project::new(
        &format!(
            "{TWO_ACCOUNTS}region = \"eu-west-1\"\nprofile = \"ops\"\n\n[environments.dev]\n\n[environments.ops]\nprofile = \"ops\"\n"
        ),
        &["cname"],
    );
    // The profile `ops` holds keys of account 333333333333: whoever uses it acts there,
    // whatever keys the shell has (the tests' are the default account's).
    let ops_key = moto().in_account("333333333333").access_key().to_owned();
    p.write(
        "aws-config",
        &format!("[profile ops]\naws_access_key_id = {ops_key}\naws_secret_access_key = x\n"),
    );
    let config = p.path("aws-config");
    let config = config.to_str().unwrap();
    let env = [("AWS_CONFIG_FILE", config)];

    let prod = p.heet_with(&["plan", "--env", "production", "-v"], &env);
    let err = prod.ok().stderr();
    for line in [
        "region eu-west-1 (from environments.production.region)",
        "profile ops (from environments.production.profile)",
        "account 222222222222, as the role arn:aws:iam::222222222222:role/heet-deploy (environments.production.assume_role)",
    ] {
        assert!(err.contains(line), "{line}\n{err}");
    }
    // The command line wins over the environment's keys.
    let flags = p.heet_with(
        &["plan", "--env", "production", "-v", "--region", "us-east-1"],
        &env,
    );
    assert!(
        flags
            .ok()
            .stderr()
            .contains("region us-east-1 (from --region)"),
        "{}",
        flags.stderr()
    );
    // An environment with no keys: the AWS config chain (the tests' AWS_REGION and keys).
    let dev = p.heet_with(&["plan", "--env", "dev", "-v"], &env);
    let err = dev.ok().stderr();
    assert!(
        err.contains("region us-east-1 (from the AWS config chain)")
            && err.contains("credentials from the AWS config chain")
            && err.contains("account 123456789012"),
        "{err}"
    );
    // A profile, from the environment or the command line, wins over the shell's keys.
    for (args, from) in [
        (
            &["plan", "--env", "ops", "-v"][..],
            "environments.ops.profile",
        ),
        (
            &["plan", "--env", "dev", "-v", "--profile", "ops"][..],
            "--profile",
        ),
    ] {
        let run = p.heet_with(args, &env);
        let err = run.ok().stderr();
        assert!(
            err.contains(&format!("profile ops (from {from})"))
                && err.contains("account 333333333333"),
            "{args:?}: {err}"
        );
    }
}
