//! Accounts per environment: an environment pinned to an account (`account_id`) is refused,
//! exit 2, when the credentials are another account's, before any call but STS's
//! GetCallerIdentity (so before the lock, the ledger or anything else), whatever the command;
//! with its own account's credentials it runs as ever. moto's default account is
//! 123456789012.

use tests::Project;

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
