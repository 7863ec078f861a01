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
    // The lock says which account the run acts in (moto's default).
    assert_eq!(holder["account"], "123456789012");

    let second = p.heet(&["up", "--env", "staging"]);
    assert_eq!(second.code(), 4, "{}", second.stderr());
    let err = second.stderr();
    assert!(
        err.contains(&format!("{}/staging is locked by", p.name))
            && err.contains(&format!(
                "(pid {}, heet up, account 123456789012) since 20",
                first.id()
            ))
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
fn a_killed_runs_lock_is_broken_here_and_another_machines_only_by_unlock() {
    let p = Project::new(DEF, &[]);
    let mut doomed = p.spawn(
        &["up", "--env", "staging"],
        &[("HEET_TEST_HOLD_LOCK_MS", "60000")],
    );
    wait_for_lock(&p);
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // Same user, host and boot, and the pid is gone: the next run breaks the lock itself.
    let next = p.heet(&["up", "--env", "staging"]);
    next.ok();
    assert!(
        next.stderr().contains(&format!(
            "breaking the lock of pid {} (heet up",
            doomed.id()
        )),
        "{}",
        next.stderr()
    );
    assert_eq!(moto().live_instances("heet:project", &p.name).len(), 2);

    // A lock from another machine cannot be judged from here: it blocks until unlocked.
    let elsewhere = serde_json::json!({
        "holder": "ci@runner-7 boot 1234abcd", "pid": 4242, "command": "down",
        "since": 1_795_000_000, "token": "feedfacefeedface"
    });
    moto().ssm_put(&lock_name(&p), &elsewhere.to_string());
    let blocked = p.heet(&["down", "--env", "staging", "--yes"]);
    assert_eq!(blocked.code(), 4, "{}", blocked.stderr());
    assert!(
        blocked.stderr().contains(&format!(
            "{}/staging is locked by ci@runner-7 boot 1234abcd (pid 4242, heet down) since 2026-11-18T",
            p.name
        )),
        "{}",
        blocked.stderr()
    );
    assert_eq!(
        moto().live_instances("heet:project", &p.name).len(),
        2,
        "nothing deleted"
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
        out.contains(&format!(
            "unlocked {}/staging: the lock of ci@runner-7 boot 1234abcd (pid 4242, heet down",
            p.name
        )),
        "{out}"
    );
    assert_eq!(moto().ssm_parameter(&lock_name(&p)), None);
    let again = p
        .heet(&["unlock", "--env", "staging", "--yes"])
        .ok()
        .stdout();
    assert!(again.contains("is not locked"), "{again}");

    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}

/// Two www instances, each with its indexed CNAME in a zone heet creates.
const DNS: &str = r#"
[project]
name = "{project}"
domain = "{project}.example.com"
create_zone = true

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2

[environments.staging]
"#;

fn domain(p: &Project) -> String {
    format!("{}.example.com", p.name)
}

/// Asserts that the zone holds exactly heet's two CNAMEs (plus `others`), each pointing at
/// the live instance of its slot, and that exactly two heet instances live.
fn assert_converged(p: &Project, others: &[(&str, &str)]) {
    let live = moto().live_instances("heet:project", &p.name);
    // The look-alike carries every heet tag but the spec, which only heet's launches write.
    let ours: Vec<_> = live
        .iter()
        .filter(|i| i.tags.contains_key("heet:spec"))
        .collect();
    assert_eq!(ours.len(), 2, "no twin, none missing: {live:?}");
    let zone = moto().zone_id(&domain(p)).expect("zone");
    let mut expected: std::collections::BTreeMap<String, String> = others
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    let dns_of = |id: &str| {
        let xml = moto().ec2(&[("Action", "DescribeInstances"), ("InstanceId.1", id)]);
        let start = xml.find("<dnsName>").unwrap() + "<dnsName>".len();
        xml[start..start + xml[start..].find('<').unwrap()].to_owned()
    };
    for i in &ours {
        let index: u32 = i.tags["heet:index"].parse().unwrap();
        expected.insert(
            format!("staging-www-{index:02}.{}", domain(p)),
            dns_of(&i.id),
        );
    }
    assert_eq!(moto().cnames(&zone), expected);
}

#[test]
fn status_finds_drift_up_repairs_it_and_down_removes_only_heets() {
    let p = Project::new(DNS, &["cname"]);
    p.heet(&["up", "--env", "staging"]).ok();
    assert_converged(&p, &[]);
    let clean = p.heet(&["status", "--env", "staging"]);
    assert_eq!(clean.code(), 0, "{}\n{}", clean.stdout(), clean.stderr());

    // Behind heet's back: one instance dies, a look-alike appears, and someone adds a
    // record with heet's naming pattern.
    let live = moto().live_instances("heet:project", &p.name);
    let first = live.iter().find(|i| i.tags["heet:index"] == "1").unwrap();
    moto().terminate(&first.id);
    let foreign = moto().launch_foreign(&[
        ("heet:project", &p.name),
        ("heet:env", "staging"),
        ("heet:role", "www"),
        ("heet:index", "3"),
        ("heet:id", "0000000000000000"),
    ]);
    let zone = moto().zone_id(&domain(&p)).unwrap();
    let theirs = format!("staging-www-03.{}", domain(&p));
    moto().add_cname(&zone, &theirs, "theirs.example.net");

    let status = p.heet(&["status", "--env", "staging", "--output", "json"]);
    assert_eq!(status.code(), 2, "drift: {}", status.stderr());
    let report: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    let first_record = format!("staging-www-01.{}", domain(&p));
    assert!(
        report["missing"][0].as_str().unwrap().starts_with("www[1]"),
        "{report}"
    );
    assert!(
        report["dead_records"][0]
            .as_str()
            .unwrap()
            .starts_with(&first_record),
        "{report}"
    );
    assert_eq!(report["foreign"], serde_json::json!([foreign]), "{report}");
    assert!(
        !report.to_string().contains("staging-www-03"),
        "not heet's: {report}"
    );

    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(
        up["applied"]["launched"].as_array().unwrap().len(),
        1,
        "{up}"
    );
    assert_eq!(
        up["aws_calls"]["operations"]["route53:ChangeResourceRecordSets"], 1,
        "one batch: {}",
        up["aws_calls"]
    );
    assert_converged(&p, &[(&theirs, "theirs.example.net")]);
    assert_eq!(p.heet(&["status", "--env", "staging"]).code(), 0);

    let down = p
        .heet(&["down", "--env", "staging", "--yes", "--output", "json"])
        .json();
    assert_eq!(down["terminated"].as_array().unwrap().len(), 2, "{down}");
    assert_eq!(down["record"].as_array().unwrap().len(), 2, "{down}");
    let left: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, [foreign], "only the look-alike survives");
    assert_eq!(
        moto().cnames(&zone).into_keys().collect::<Vec<_>>(),
        [theirs],
        "only their record survives"
    );
    assert_eq!(
        moto().ledger_keys(&p.name, "staging"),
        Vec::<String>::new(),
        "the ledger is empty after down ({first_record} included)"
    );
}

#[test]
fn a_no_op_up_of_3_roles_by_20_instances_makes_at_most_6_calls_and_no_mutation() {
    let def = DNS.replace(
        "[roles.www]\ncount = 2\n",
        "[roles.web]\ncount = 20\n[roles.api]\ncount = 20\n[roles.db]\ncount = 20\n",
    );
    let p = Project::new(&def, &["cname"]);
    let first = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(first["applied"]["launched"].as_array().unwrap().len(), 60);
    let zone = moto().zone_id(&domain(&p)).unwrap();
    assert_eq!(moto().cnames(&zone).len(), 60);
    // Three launches (one per role), each written ahead, confirmed and dropped once its
    // instances carry their tags; 60 records written ahead and confirmed; in deflated 4 KB
    // pages, where one parameter per entry took 240 writes.
    assert_eq!(first["aws_calls"]["operations"]["ec2:RunInstances"], 3);
    let puts = first["aws_calls"]["operations"]["ssm:PutParameter"]
        .as_u64()
        .unwrap();
    assert!(puts <= 10, "{puts} ledger and lock writes");
    let keys = moto().ledger_keys(&p.name, "staging");
    assert_eq!(keys.len(), 60, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("record/")), "{keys:?}");

    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    let calls = &again["aws_calls"];
    assert_eq!(calls["mutating"], 0, "{calls}");
    assert!(calls["calls"].as_u64().unwrap() <= 6, "{calls}");
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    assert!(moto().cnames(&zone).is_empty());
}

#[test]
fn killed_at_any_aws_call_the_next_up_converges_exactly() {
    // Call numbers of a first `up` here (`HEET_LOG=heet=trace` lists them): 1 asks STS
    // whose the credentials are, 4 takes the lock, 8 writes the launches ahead (one ledger
    // page), 9-10 launch, 11 confirms, 12 waits, 13 creates the zone, 14 writes the records
    // ahead, 15 is the batch, 16 confirms, 17-18 release the lock.
    for n in [4, 8, 9, 11, 13, 14, 15, 16, 17] {
        let p = Project::new(DNS, &["cname"]);
        let crashed = p.heet_with(
            &["up", "--env", "staging"],
            &[("HEET_TEST_ABORT_AFTER_CALLS", &n.to_string())],
        );
        assert_ne!(crashed.code(), 0, "call {n}: {}", crashed.stderr());
        assert!(
            crashed.stderr().contains("aborting"),
            "call {n}: {}",
            crashed.stderr()
        );
        // The next up converges; the dead run's lock, if it took one, it breaks itself.
        let next = p.heet(&["up", "--env", "staging"]);
        next.ok();
        // Until the records are in, the next up has work to do and finds the dead lock.
        if (4..=14).contains(&n) {
            assert!(
                next.stderr().contains("breaking the lock of pid"),
                "call {n}: {}",
                next.stderr()
            );
        }
        assert_converged(&p, &[]);
        let again = p
            .heet(&["up", "--env", "staging", "--output", "json"])
            .json();
        assert_eq!(
            again["aws_calls"]["mutating"], 0,
            "call {n}: {}",
            again["aws_calls"]
        );
        p.heet(&["down", "--env", "staging", "--yes"]).ok();
        assert!(
            moto().live_instances("heet:project", &p.name).is_empty(),
            "call {n}"
        );
        let zone = moto().zone_id(&domain(&p)).unwrap();
        assert!(
            moto().cnames(&zone).is_empty(),
            "call {n}: {:?}",
            moto().cnames(&zone)
        );
    }
}

#[test]
fn records_no_plugin_wants_any_more_are_deleted_and_instances_kept() {
    let p = Project::new(DNS, &["cname"]);
    p.heet(&["up", "--env", "staging"]).ok();
    let zone = moto().zone_id(&domain(&p)).unwrap();
    assert_eq!(moto().cnames(&zone).len(), 2);

    // The cname plugin now names no record for www: nothing else changes.
    p.write(
        "heet.toml",
        &DNS.replace(
            "[defaults]",
            "[plugins.config.cname]\nroles = [\"none\"]\n\n[defaults]",
        ),
    );
    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    let ops = &up["aws_calls"]["operations"];
    assert!(ops.get("ec2:RunInstances").is_none(), "{ops}");
    assert_eq!(ops["route53:ChangeResourceRecordSets"], 1, "{ops}");
    assert!(moto().cnames(&zone).is_empty());
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["aws_calls"]);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

#[test]
fn down_still_cleans_up_when_someone_deleted_the_records_and_the_zone() {
    let p = Project::new(DNS, &["cname"]);
    p.heet(&["up", "--env", "staging"]).ok();
    let zone = moto().zone_id(&domain(&p)).unwrap();
    for (name, target) in moto().cnames(&zone) {
        moto().delete_cname(&zone, &name, &target);
    }
    moto().delete_zone(&zone);
    assert_eq!(moto().zone_id(&domain(&p)), None);

    let down = p
        .heet(&["down", "--env", "staging", "--yes", "--output", "json"])
        .json();
    assert_eq!(down["terminated"].as_array().unwrap().len(), 2, "{down}");
    // Nothing left to delete: the ledger's records are only forgotten.
    let records = down["record"].as_array().unwrap();
    assert!(!records.is_empty(), "{down}");
    assert!(
        records
            .iter()
            .all(|r| r.as_str().unwrap().ends_with("(already gone: forget it)")),
        "{down}"
    );
    assert!(
        down["aws_calls"]["operations"]
            .get("route53:ChangeResourceRecordSets")
            .is_none(),
        "{down}"
    );
    let first = format!("record/staging-www-01.{}", domain(&p));
    assert!(
        !moto().ledger_keys(&p.name, "staging").contains(&first),
        "the ledger forgot them"
    );
}
