//! The environment lock in SSM Parameter Store: one run at a time changes an environment, a
//! run that dies leaves a lock naming itself, and `heet unlock` breaks it explicitly.

use std::time::{Duration, Instant};

use tests::{Project, Run, moto};

const DEF: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2

[environments.staging]
"#;

fn lock_name(p: &Project) -> String {
    format!("/heet/{}/staging/lock", p.name)
}

/// Waits (10 s at most) until the environment's lock exists on moto.
fn wait_for_lock(p: &Project) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = moto().ssm_parameter(&lock_name(p)) {
            return serde_json::from_str(&value).unwrap();
        }
        assert!(Instant::now() < deadline, "no lock appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn of_two_concurrent_ups_exactly_one_proceeds() {
    let p = Project::new(DEF, &[]);
    let first = p.spawn(
        &["up", "--env", "staging", "--output", "json"],
        &[("HEET_TEST_HOLD_LOCK_MS", "1500")],
    );
    let holder = wait_for_lock(&p);
    assert_eq!(holder["pid"], first.id(), "{holder}");
    assert_eq!(holder["command"], "up");

    let second = p.heet(&["up", "--env", "staging"]);
    assert_eq!(second.code(), 4, "{}", second.stderr());
    let err = second.stderr();
    assert!(
        err.contains(&format!("{}/staging is locked by", p.name))
            && err.contains(&format!("(pid {}, heet up) since 20", first.id()))
            && err.contains("`heet unlock --env staging`"),
        "{err}"
    );

    let first = Run(first.wait_with_output().unwrap());
    let up = first.json();
    assert_eq!(up["applied"]["launched"].as_array().unwrap().len(), 2);
    assert_eq!(
        moto().live_instances("heet:project", &p.name).len(),
        2,
        "no twins"
    );
    assert_eq!(moto().ssm_parameter(&lock_name(&p)), None, "released");

    // A converged environment is not locked at all: no mutating call.
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["aws_calls"]);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().ssm_parameter(&lock_name(&p)), None);
}

#[test]
fn a_killed_run_leaves_a_lock_that_unlock_breaks() {
    let p = Project::new(DEF, &[]);
    let mut doomed = p.spawn(
        &["up", "--env", "staging"],
        &[("HEET_TEST_HOLD_LOCK_MS", "60000")],
    );
    wait_for_lock(&p);
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    let blocked = p.heet(&["up", "--env", "staging"]);
    assert_eq!(blocked.code(), 4, "{}", blocked.stderr());
    assert!(
        blocked
            .stderr()
            .contains(&format!("(pid {}, heet up)", doomed.id())),
        "{}",
        blocked.stderr()
    );
    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    assert_eq!(
        down.code(),
        0,
        "nothing to delete needs no lock: {}",
        down.stderr()
    );

    let refused = p.heet(&["unlock", "--env", "staging"]);
    assert_eq!(
        refused.code(),
        2,
        "no terminal, no --yes: {}",
        refused.stderr()
    );
    assert!(moto().ssm_parameter(&lock_name(&p)).is_some());

    let unlocked = p.heet(&["unlock", "--env", "staging", "--yes"]);
    let out = unlocked.ok().stdout();
    assert!(
        out.contains(&format!("unlocked {}/staging: the lock of", p.name))
            && out.contains(&format!("(pid {}, heet up", doomed.id())),
        "{out}"
    );
    assert_eq!(moto().ssm_parameter(&lock_name(&p)), None);
    let again = p
        .heet(&["unlock", "--env", "staging", "--yes"])
        .ok()
        .stdout();
    assert!(again.contains("is not locked"), "{again}");

    p.heet(&["up", "--env", "staging"]).ok();
    assert_eq!(moto().live_instances("heet:project", &p.name).len(), 2);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}
