//! Faults between heet and AWS, and runs killed at random, on top of the AWS model's own
//! behaviour (throttling, pending instances, eventual consistency): heet converges exactly
//! afterwards, makes no twins, and leaves nothing behind after `down`. Each test prints its
//! figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tests::{Project, Run, moto};

const DEF: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

[plugins.config.cname]
patterns = ["{role}-{index:02}"]

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = {count}
ports = [443]
allow_cidr = ["0.0.0.0/0"]

[roles.db]
ports = [5432]
allow_from = ["www"]

[environments.staging]
"#;

fn def(count: u32) -> String {
    DEF.replace("{count}", &count.to_string())
}

/// Asserts that moto holds exactly what the definition asks, `www` instances plus one db:
/// one live instance per slot, one CNAME per instance pointing at it, both groups.
fn assert_converged(p: &Project, www: usize) {
    let live = moto().live_instances("heet:project", &p.name);
    let mut slots: BTreeMap<(String, String), usize> = BTreeMap::new();
    for i in &live {
        *slots
            .entry((i.tags["heet:role"].clone(), i.tags["heet:index"].clone()))
            .or_default() += 1;
    }
    assert!(slots.values().all(|n| *n == 1), "twins: {slots:?}");
    assert_eq!(live.len(), www + 1, "{slots:?}");
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    assert_eq!(moto().cnames(&zone).len(), www + 1);
    assert_eq!(moto().groups("heet:project", &p.name).len(), 2);
}

fn attempts(run: &Run) -> (u64, u64) {
    let json = run.json();
    (
        json["aws_calls"]["calls"].as_u64().unwrap(),
        json["aws_calls"]["attempts"].as_u64().unwrap(),
    )
}

#[test]
fn with_30_percent_faults_up_and_down_converge_exactly() {
    let p = Project::new(&def(3), &["cname"]);
    let proxy = tests::suite_model().faults(30, 7).start(&moto().endpoint);
    let env = [
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
        ("AWS_MAX_ATTEMPTS", "10"),
    ];
    let started = Instant::now();
    let up = p.heet_with(&["up", "--env", "staging", "--output", "json"], &env);
    let (calls, tries) = attempts(&up);
    assert_converged(&p, 3);
    let again = p.heet_with(&["up", "--env", "staging", "--output", "json"], &env);
    assert_eq!(again.json()["aws_calls"]["mutating"], 0);
    let down = p.heet_with(
        &["down", "--env", "staging", "--yes", "--output", "json"],
        &env,
    );
    let (down_calls, down_tries) = attempts(&down);
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    eprintln!(
        "30% faults: up {calls} calls in {tries} attempts, down {down_calls} calls in {down_tries} attempts; proxy: {}; {:.1} s in all",
        proxy.stats().summary(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        proxy.stats().total(|s| s.faults) > 0 && tries > calls,
        "faults were injected and retried"
    );
}

#[test]
fn with_every_call_failing_heet_stops_clearly_and_the_next_clean_up_converges() {
    let p = Project::new(&def(2), &["cname"]);
    let proxy = tests::suite_model().faults(100, 11).start(&moto().endpoint);
    let started = Instant::now();
    let run = p.heet_with(
        &["up", "--env", "staging"],
        &[("AWS_ENDPOINT_URL", &proxy.endpoint)],
    );
    let took = started.elapsed();
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let err = run.stderr();
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    // The first look asks STS whose the credentials are, then describes instances, the
    // network and the zone at once: whichever call fails first is the one named, with what
    // it met.
    let op = line
        .trim_start_matches("error: ")
        .split(": ")
        .next()
        .unwrap();
    let action = op.split(':').nth(1).unwrap_or("");
    assert!(
        ["Describe", "List", "Get"]
            .iter()
            .any(|r| action.starts_with(r))
            && line.len() > "error: ".len() + op.len() + 2,
        "a call of the first look and what it met: {line}"
    );
    assert_eq!(
        proxy.stats().total(|s| s.forwarded),
        0,
        "nothing reached moto"
    );
    eprintln!(
        "100% faults: stopped after {:.1} s with {line:?}; proxy: {}",
        took.as_secs_f64(),
        proxy.stats().summary()
    );
    assert!(took < Duration::from_secs(120), "bounded: {took:?}");
    assert!(moto().live_instances("heet:project", &p.name).is_empty());

    p.heet(&["up", "--env", "staging"]).ok();
    assert_converged(&p, 2);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
}

#[test]
fn twenty_runs_killed_at_random_moments_each_converge_on_the_next_up() {
    const RUNS: u64 = 20;
    let seed = 20_261_123;
    let mut rng = fastrand::Rng::with_seed(seed);
    let p = Project::new(&def(1), &["cname"]);
    // Kill moments are drawn from the length of an `up` that has the same kind of work.
    let started = Instant::now();
    p.heet(&["up", "--env", "staging", "--yes"]).ok();
    let span = started.elapsed().as_millis() as u64;
    let mut converged = 0;
    let mut killed_mid_run = 0;
    let mut killed_after_launch = 0;
    for i in 0..RUNS {
        // A different size each time, so every killed run has work to do.
        let www = 1 + ((i + 1) % 4) as usize;
        p.write("heet.toml", &def(www as u32));
        // Every fourth run dies right after a batch launch, before its instances get their
        // own tags; of the others, a quarter die anywhere in a run, the rest once it holds the
        // lock, i.e. while it mutates, which is where a kill can hurt.
        if i % 4 == 3 {
            // Another AMI: every slot is replaced, so there is a launch to die after.
            p.write(
                "heet.toml",
                &def(www as u32).replace("ami-12c6146b", "ami-0fe11e5d"),
            );
            let killed = p.heet_with(
                &["up", "--env", "staging", "--yes"],
                &[("HEET_TEST_ABORT_AFTER_OP", "ec2:RunInstances")],
            );
            assert!(killed.stderr().contains("aborting"), "{}", killed.stderr());
            killed_after_launch += 1;
            killed_mid_run += 1;
            let next = p.heet(&["up", "--env", "staging", "--yes"]);
            assert_eq!(
                next.code(),
                0,
                "run {i} (killed after its launch):\n{}",
                next.stderr()
            );
            assert_converged(&p, www);
            converged += 1;
            continue;
        }
        let anywhere = rng.u8(0..4) == 0;
        let delay = Duration::from_millis(if anywhere {
            rng.u64(0..span.max(1))
        } else {
            rng.u64(0..200)
        });
        let mut child = p.spawn(&["up", "--env", "staging", "--yes"], &[]);
        if !anywhere {
            let lock = format!("/heet/{}/staging/lock", p.name);
            let deadline = Instant::now() + Duration::from_secs(10);
            while moto().ssm_parameter(&lock).is_none()
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let next = p.heet(&["up", "--env", "staging", "--yes"]);
        assert_eq!(
            next.code(),
            0,
            "run {i} (killed after {delay:?}):\n{}",
            next.stderr()
        );
        assert_converged(&p, www);
        converged += 1;
    }
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    let orphans = moto().leftovers(&p.name);
    let ledger = moto().ssm_under(&format!("/heet/{}/", p.name));
    eprintln!(
        "kill -9 campaign (seed {seed}, kills within {span} ms): {converged}/{RUNS} converged, {killed_mid_run} killed mid-run ({killed_after_launch} right after a batch launch), 0 twins, {} orphans and {} ledger entries after down",
        orphans.len(),
        ledger.len()
    );
    assert_eq!(orphans, Vec::<String>::new());
    assert_eq!(ledger, []);
}
