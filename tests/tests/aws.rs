//! heet under the AWS model (`tests/src/model.rs`): what a real account does that moto does
//! not — throttling, pending instances, ClientToken, eventual consistency, dependency
//! windows, instance-profile propagation, lost answers, Route53's pending changes, instances
//! without a public name — and heet converging exactly through each. Every test prints its
//! figures (`cargo xtask test -- --nocapture`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tests::model::{LOSABLE, Model};
use tests::{Project, call, moto, xml_text};

const DNS: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

[plugins.config.cname]
patterns = ["{role}-{index:02}", "{env}-{role}-{index:02}"]

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2

[environments.staging]
"#;

/// One live instance per slot of `p`, `n` in all; returns them by (role, index).
fn one_per_slot(p: &Project, n: usize) -> BTreeMap<(String, String), String> {
    let live = moto().live_instances("heet:project", &p.name);
    let mut slots = BTreeMap::new();
    for i in &live {
        let slot = (i.tags["heet:role"].clone(), i.tags["heet:index"].clone());
        assert!(
            slots.insert(slot.clone(), i.id.clone()).is_none(),
            "twins in {slot:?}"
        );
        assert!(i.tags.contains_key("heet:batch"), "launched in a batch");
    }
    assert_eq!(live.len(), n, "{slots:?}");
    slots
}

/// Every CNAME of `p`'s zone points at a live instance of `p`'s; returns how many there are.
fn records_on_live_instances(p: &Project) -> usize {
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    let live: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.id)
        .collect();
    let names = public_names(&live);
    let cnames = moto().cnames(&zone);
    for (name, target) in &cnames {
        assert!(
            names.contains(target),
            "{name} → {target}: not a live instance's name"
        );
    }
    cnames.len()
}

/// The public DNS names of `ids`, as moto has them.
fn public_names(ids: &[String]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            let xml = moto().ec2(&[("Action", "DescribeInstances"), ("InstanceId.1", id)]);
            xml_text(&xml, "dnsName")
        })
        .collect()
}

#[test]
fn sixty_instances_come_up_paced_under_aws_limits_with_almost_nothing_throttled() {
    let def = DNS.replace(
        "[roles.www]\ncount = 2\n",
        "[roles.web]\ncount = 20\n[roles.api]\ncount = 20\n[roles.db]\ncount = 20\n",
    );
    let mut p = Project::new(&def, &["cname"]);
    p.use_model(Model::aws());
    let started = Instant::now();
    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    let up_secs = started.elapsed().as_secs_f64();
    let after_up = p.aws.stats();
    assert_eq!(
        up["aws_calls"]["operations"]["ec2:RunInstances"], 3,
        "a batch per role"
    );
    one_per_slot(&p, 60);
    assert_eq!(records_on_live_instances(&p), 120);
    let calls = after_up.total(|s| s.calls);
    let throttled = after_up.total(|s| s.throttled);
    assert!(
        throttled * 50 <= calls,
        "{throttled} of {calls} calls throttled: {}",
        after_up.summary()
    );

    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0);
    assert!(
        again["aws_calls"]["calls"].as_u64().unwrap() <= 6,
        "{}",
        again["aws_calls"]
    );

    let started = Instant::now();
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    let down_secs = started.elapsed().as_secs_f64();
    let down = p.aws.stats().since(&after_up);
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert_eq!(moto().ledger_keys(&p.name, "staging"), Vec::<String>::new());
    eprintln!(
        "aws model, 60 instances: up {up_secs:.1} s ({}); down {down_secs:.1} s ({})",
        after_up.summary(),
        down.summary()
    );
}

#[test]
fn the_first_answer_of_every_launch_tag_ledger_write_and_record_batch_is_lost_and_up_converges() {
    let mut p = Project::new(DNS, &["cname"]);
    p.use_model(Model::quick().lose_first(&LOSABLE));
    let up = p.heet_with(&["up", "--env", "staging"], &[("AWS_MAX_ATTEMPTS", "10")]);
    assert_eq!(up.code(), 0, "{}", up.stderr());
    let stats = p.aws.stats();
    for op in LOSABLE {
        assert!(stats.op(op).lost >= 1, "{op}: {}", stats.summary());
    }
    assert_eq!(
        stats.op("ec2:RunInstances").forwarded,
        1,
        "launched once: no twin"
    );
    one_per_slot(&p, 2);
    assert_eq!(records_on_live_instances(&p), 4);
    let keys = moto().ledger_keys(&p.name, "staging");
    assert_eq!(
        keys.len(),
        4,
        "every record in the ledger, no batch left: {keys:?}"
    );
    assert!(keys.iter().all(|k| k.starts_with("record/")), "{keys:?}");
    assert!(
        moto()
            .ssm_parameter(&format!("/heet/{}/staging/lock", p.name))
            .is_none(),
        "its own lock, taken by a put whose answer was lost, is released"
    );
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    eprintln!("lost answers: {}", stats.summary());
}

const VPC: &str = r#"
[project]
name = "{project}"

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

[roles.db]
ports = [5432]
allow_from = ["www"]

[environments.dev]
cidr = "10.40.0.0/16"
"#;

#[test]
fn a_vpc_comes_and_goes_through_aws_eventual_consistency_and_dependency_windows() {
    let mut p = Project::new(VPC, &[]);
    p.use_model(Model::aws());
    let started = Instant::now();
    p.heet(&["up", "--env", "dev"]).ok();
    let up_secs = started.elapsed().as_secs_f64();
    let after_up = p.aws.stats();
    // The model refused calls naming what heet had just made, and heet waited them out.
    let not_yet: u64 = after_up
        .0
        .iter()
        .filter(|(op, _)| !op.starts_with("ec2:Describe") && *op != "ec2:RunInstances")
        .map(|(_, s)| s.modelled)
        .sum();
    assert!(not_yet > 0, "{}", after_up.summary());
    assert_eq!(moto().groups("heet:project", &p.name).len(), 2);
    one_per_slot(&p, 3);

    let started = Instant::now();
    p.heet(&["down", "--env", "dev", "--yes"]).ok();
    let down_secs = started.elapsed().as_secs_f64();
    let down = p.aws.stats().since(&after_up);
    let refused =
        down.op("ec2:DeleteSecurityGroup").modelled + down.op("ec2:DeleteSubnet").modelled;
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    eprintln!(
        "vpc under the aws model: up {up_secs:.1} s ({} answered by the model), down {down_secs:.1} s ({refused} deletes refused while instances were leaving)",
        after_up.total(|s| s.modelled)
    );
}

#[test]
fn a_new_instance_profile_is_waited_for() {
    let mut quick = Model::quick();
    // Longer than a loaded CI machine takes from the profile's creation to RunInstances (the
    // zone exists by then), shorter than heet's patience.
    quick.profile_propagation = Duration::from_secs(8);
    let with_profile = DNS.replace(
        "count = 2\n",
        "count = 2\ninstance_profile = \"{project}-app\"\n",
    );
    let mut p = Project::new(
        &with_profile.replace("count = 2\n", "count = 0\n"),
        &["cname"],
    );
    p.use_model(quick);
    // The zone first, so that what follows the profile's creation is only the launch.
    p.heet(&["up", "--env", "staging"]).ok();
    p.write("heet.toml", &with_profile);
    let profile = format!("{}-app", p.name);
    let before = p.aws.stats().op("ec2:RunInstances").modelled;
    // Made through the model, as a moment ago in a real account.
    let (status, body) = call(
        &p.aws.endpoint,
        "iam",
        &[
            ("Action", "CreateInstanceProfile"),
            ("InstanceProfileName", &profile),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    p.heet(&["up", "--env", "staging"]).ok();
    let refused = p.aws.stats().op("ec2:RunInstances").modelled - before;
    assert!(
        refused >= 1,
        "RunInstances was not refused while the profile propagated"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8) - Duration::from_millis(500),
        "up finished before the profile could be used"
    );
    one_per_slot(&p, 2);
    eprintln!(
        "instance profile: RunInstances refused {refused} time(s), up took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

#[test]
fn a_token_ec2_no_longer_honours_is_replaced_and_logged() {
    for (what, code) in [
        ("terminated", "IdempotentInstanceTerminated"),
        ("other parameters", "IdempotentParameterMismatch"),
    ] {
        let p = Project::new(DNS, &["cname", "tags"]);
        // Killed right after RunInstances: the batch is written ahead, its instances have
        // only the batch's tags.
        let killed = p.heet_with(
            &["up", "--env", "staging"],
            &[("HEET_TEST_ABORT_AFTER_OP", "ec2:RunInstances")],
        );
        assert!(killed.stderr().contains("aborting"), "{}", killed.stderr());
        let launched = moto().live_instances("heet:project", &p.name);
        assert_eq!(launched.len(), 2);
        assert!(launched.iter().all(|i| !i.tags.contains_key("heet:id")));
        // Someone terminates them; for the mismatch, the batch's shared tags change too.
        for i in &launched {
            moto().terminate(&i.id);
        }
        if code == "IdempotentParameterMismatch" {
            p.write(
                "heet.toml",
                &format!("{DNS}\n[plugins.config.tags.all]\ncost-center = \"moved\"\n"),
            );
        }
        std::thread::sleep(Duration::from_secs(1));
        let next = p.heet(&["up", "--env", "staging"]);
        assert_eq!(next.code(), 0, "{what}: {}", next.stderr());
        assert!(
            next.stderr().contains(code) && next.stderr().contains("again under a new token"),
            "{what}: {}",
            next.stderr()
        );
        one_per_slot(&p, 2);
        assert_eq!(records_on_live_instances(&p), 4);
        p.heet(&["down", "--env", "staging", "--yes"]).ok();
        assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
        assert_eq!(moto().ledger_keys(&p.name, "staging"), Vec::<String>::new());
    }
}

#[test]
fn an_instance_without_a_public_name_gets_an_a_record_to_its_address() {
    let p = Project::new(DNS, &["cname"]);
    // A VPC of the user's, DNS hostnames off (as new VPCs are), public addresses on.
    let ec2 = |params: &[(&str, &str)]| {
        let (status, xml) = call(&p.aws.endpoint, "ec2", params);
        assert_eq!(status, 200, "{params:?}: {xml}");
        xml
    };
    let vpc = xml_text(
        &ec2(&[("Action", "CreateVpc"), ("CidrBlock", "10.77.0.0/16")]),
        "vpcId",
    );
    std::thread::sleep(Duration::from_secs(1));
    let subnet = xml_text(
        &ec2(&[
            ("Action", "CreateSubnet"),
            ("VpcId", &vpc),
            ("CidrBlock", "10.77.1.0/24"),
        ]),
        "subnetId",
    );
    std::thread::sleep(Duration::from_secs(1));
    ec2(&[
        ("Action", "ModifySubnetAttribute"),
        ("SubnetId", &subnet),
        ("MapPublicIpOnLaunch.Value", "true"),
    ]);
    p.write(
        "heet.toml",
        &DNS.replace(
            "[defaults]",
            &format!("[network]\nvpc = \"{vpc}\"\nsubnet_ids = [\"{subnet}\"]\n\n[defaults]"),
        ),
    );
    p.heet(&["up", "--env", "staging"]).ok();
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    // As AWSHeet's NickNameHelper: no public DNS name, so an A record to the public address.
    assert!(
        moto().cnames(&zone).is_empty(),
        "{:?}",
        moto().cnames(&zone)
    );
    let a = moto().records_of(&zone, "A");
    assert_eq!(a.len(), 4, "{a:?}");
    let addresses = addresses_of(&p, "ipAddress");
    for (name, target) in &a {
        assert!(
            addresses.contains(target),
            "{name} → {target}: not a live instance's public address"
        );
    }
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(moto().records_of(&zone, "A").is_empty());
}

/// An address of each of `p`'s live instances, by the DescribeInstances field `field`
/// (`ipAddress`, `privateIpAddress`).
fn addresses_of(p: &Project, field: &str) -> Vec<String> {
    moto()
        .live_instances("heet:project", &p.name)
        .iter()
        .map(|i| {
            let xml = moto().ec2(&[("Action", "DescribeInstances"), ("InstanceId.1", &i.id)]);
            xml_text(&xml, field)
        })
        .collect()
}

#[test]
fn record_a_writes_a_records_and_going_back_to_cnames_swaps_each_in_one_change() {
    let with_a = DNS.replace(
        "[roles.www]\ncount = 2",
        "[roles.www]\ncount = 2\nrecord = \"a\"",
    );
    assert_ne!(with_a, DNS);
    let p = Project::new(&with_a, &["cname"]);
    p.heet(&["up", "--env", "staging"]).ok();
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    let a = moto().records_of(&zone, "A");
    assert_eq!(a.len(), 4, "{a:?}");
    assert!(moto().cnames(&zone).is_empty());
    let addresses = addresses_of(&p, "ipAddress");
    assert!(
        a.values().all(|t| addresses.contains(t)),
        "{a:?} {addresses:?}"
    );
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(
        plan["plan"]["records"],
        serde_json::json!([]),
        "no-op: {plan}"
    );

    // Back to CNAMEs: Route53 refuses a CNAME beside an A record (the model too), so each
    // name's A record is deleted in the same change its CNAME is created in.
    p.write("heet.toml", DNS);
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let records = plan["plan"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{plan}");
    assert!(records.iter().all(|r| r["type"] == "CNAME"), "{plan}");
    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(
        up["aws_calls"]["operations"]["route53:ChangeResourceRecordSets"], 1,
        "one change: {up}"
    );
    assert!(moto().records_of(&zone, "A").is_empty());
    assert_eq!(records_on_live_instances(&p), 4);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(moto().cnames(&zone).is_empty());
    assert_eq!(moto().ledger_keys(&p.name, "staging"), Vec::<String>::new());
}

#[test]
fn a_second_change_to_a_zone_goes_while_the_first_is_still_pending() {
    // Changes take 30 s to propagate here: a run that waited for INSYNC between its two
    // changes would take that long.
    let mut quick = Model::quick();
    quick.insync = Duration::from_secs(30);
    let mut p = Project::new(DNS, &["cname"]);
    p.use_model(quick);
    p.heet(&["up", "--env", "staging"]).ok();
    // New names: the old records go before the instances are touched, the new ones after,
    // two changes to one zone in one run, both while the first run's change is PENDING.
    p.write(
        "heet.toml",
        &DNS.replace("[\"{role}-{index:02}\", ", "[\"new-{role}-{index:02}\", "),
    );
    let before = p.aws.stats();
    let started = Instant::now();
    let up = p.heet(&["up", "--env", "staging", "--yes", "--stats"]);
    up.ok();
    let took = started.elapsed();
    let run = p.aws.stats().since(&before);
    assert_eq!(run.op("route53:GetChange").calls, 0, "{}", run.summary());
    assert!(
        took < Duration::from_secs(25),
        "waited for INSYNC: {took:?}"
    );
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    let names: Vec<String> = moto().cnames(&zone).into_keys().collect();
    assert_eq!(names.len(), 4);
    assert!(
        names.iter().filter(|n| n.starts_with("new-")).count() == 2,
        "{names:?}"
    );
    eprintln!(
        "route53: two changes while pending, {} refused while processing (retried), {:.1} s",
        run.op("route53:ChangeResourceRecordSets").modelled,
        took.as_secs_f64()
    );
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

const SETTINGS: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.nat]
availability_zone = "us-east-1b"
placement_group = "{project}-cluster"
tenancy = "dedicated"
monitoring = true
ebs_optimized = true
source_dest_check = false
disable_api_termination = true

[environments.staging]
"#;

/// The instance-level element `tag` of the first instance of a DescribeInstances answer (a
/// network interface has a `sourceDestCheck` of its own).
fn instance_field(xml: &str, tag: &str) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let item = doc
        .descendants()
        .find(|n| n.has_tag_name("instancesSet"))
        .and_then(|s| s.children().find(|c| c.has_tag_name("item")))
        .unwrap();
    tests::child_text(item, tag)
}

/// What EC2 (through the model) says of the instance `id`: its describe and its
/// termination protection.
fn described(p: &Project, id: &str) -> (String, String) {
    let (status, xml) = call(
        &p.aws.endpoint,
        "ec2",
        &[("Action", "DescribeInstances"), ("InstanceId.1", id)],
    );
    assert_eq!(status, 200, "{xml}");
    let (status, attr) = call(
        &p.aws.endpoint,
        "ec2",
        &[
            ("Action", "DescribeInstanceAttribute"),
            ("InstanceId", id),
            ("Attribute", "disableApiTermination"),
        ],
    );
    assert_eq!(status, 200, "{attr}");
    let doc = roxmltree::Document::parse(&attr).unwrap();
    let protected = doc
        .descendants()
        .find(|n| n.has_tag_name("disableApiTermination"))
        .map(|n| tests::child_text(n, "value"))
        .unwrap_or_default();
    (xml, protected)
}

#[test]
fn each_role_setting_round_trips_and_what_ec2_changes_in_place_is_changed_in_place() {
    let p = Project::new(SETTINGS, &[]);
    p.heet(&["up", "--env", "staging"]).ok();
    let live = moto().live_instances("heet:project", &p.name);
    assert_eq!(live.len(), 1);
    let id = live[0].id.clone();
    let (xml, protected) = described(&p, &id);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let item = doc
        .descendants()
        .find(|n| n.has_tag_name("placement"))
        .unwrap();
    assert_eq!(tests::child_text(item, "availabilityZone"), "us-east-1b");
    assert_eq!(
        tests::child_text(item, "groupName"),
        format!("{}-cluster", p.name)
    );
    assert_eq!(tests::child_text(item, "tenancy"), "dedicated");
    assert_eq!(instance_field(&xml, "ebsOptimized"), "true");
    assert_eq!(instance_field(&xml, "sourceDestCheck"), "false");
    let monitoring = doc
        .descendants()
        .find(|n| n.has_tag_name("monitoring"))
        .unwrap();
    assert_eq!(tests::child_text(monitoring, "state"), "enabled");
    assert_eq!(protected, "true");
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");

    // Monitoring turned off by hand is drift, put back in place.
    let (status, xml) = call(
        &p.aws.endpoint,
        "ec2",
        &[("Action", "UnmonitorInstances"), ("InstanceId.1", &id)],
    );
    assert_eq!(status, 200, "{xml}");
    let status = p.heet(&["status", "--env", "staging"]);
    assert_eq!(status.code(), 2, "{}", status.stdout());
    assert!(
        status.stdout().contains("changed: nat[1] ") && status.stdout().contains("monitoring on"),
        "{}",
        status.stdout()
    );
    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(
        up["aws_calls"]["operations"]["ec2:MonitorInstances"], 1,
        "{up}"
    );
    let (xml, _) = described(&p, &id);
    assert!(xml.contains("<state>enabled</state>"), "{xml}");

    // Protected: down refuses and terminates nothing.
    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    assert_ne!(down.code(), 0);
    assert!(
        down.stderr().contains("termination protection is on"),
        "{}",
        down.stderr()
    );
    assert_eq!(moto().live_instances("heet:project", &p.name).len(), 1);

    // What EC2 changes on a running instance is changed on it: the same instance.
    p.write(
        "heet.toml",
        &SETTINGS
            .replace("monitoring = true", "monitoring = false")
            .replace("source_dest_check = false", "source_dest_check = true")
            .replace(
                "disable_api_termination = true",
                "disable_api_termination = false",
            ),
    );
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let changes = plan["plan"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{plan}");
    assert_eq!(changes[0]["action"], "modify", "{plan}");
    assert_eq!(
        changes[0]["attributes"].as_array().unwrap().len(),
        3,
        "{plan}"
    );
    p.heet(&["up", "--env", "staging"]).ok();
    let (xml, protected) = described(&p, &id);
    assert!(xml.contains("<state>disabled</state>"), "{xml}");
    assert_eq!(instance_field(&xml, "sourceDestCheck"), "true");
    assert_eq!(protected, "false");
    assert_eq!(moto().live_instances("heet:project", &p.name)[0].id, id);
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");

    // A placement EC2 cannot change replaces the instance.
    p.write(
        "heet.toml",
        &SETTINGS
            .replace("tenancy = \"dedicated\"", "tenancy = \"default\"")
            .replace(
                "disable_api_termination = true",
                "disable_api_termination = false",
            )
            .replace("monitoring = true", "monitoring = false")
            .replace("source_dest_check = false", "source_dest_check = true"),
    );
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(plan["plan"]["changes"][0]["action"], "replace", "{plan}");
    assert!(
        plan["plan"]["changes"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("placement"),
        "{plan}"
    );
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
}

#[test]
fn role_limits_plan_up_and_down_to_that_role_and_what_it_needs() {
    let two = DNS.replace(
        "[roles.www]\ncount = 2",
        "[roles.www]\ncount = 2\n\n[roles.db]\ncount = 1",
    );
    assert_ne!(two, DNS);
    let p = Project::new(&two, &["cname"]);
    let roles = || -> Vec<String> {
        let mut r: Vec<String> = moto()
            .live_instances("heet:project", &p.name)
            .iter()
            .map(|i| i.tags["heet:role"].clone())
            .collect();
        r.sort();
        r
    };
    let zone_name = format!("{}.heet.test", p.name);
    let names = || -> Vec<String> {
        let zone = moto().zone_id(&zone_name).unwrap();
        moto().cnames(&zone).into_keys().collect()
    };

    // db alone: its instance and its names; www waits.
    p.heet(&["up", "--env", "staging", "--role", "db"]).ok();
    assert_eq!(roles(), ["db"]);
    let db_names = names();
    assert_eq!(db_names.len(), 2, "{db_names:?}");
    assert!(
        db_names
            .iter()
            .all(|n| n.starts_with("db-") || n.starts_with("staging-db-"))
    );
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let changes = plan["plan"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{plan}");
    assert!(
        changes
            .iter()
            .all(|c| c["action"] == "create" && c["role"] == "www")
    );
    let limited = p
        .heet(&[
            "plan", "--env", "staging", "--role", "db", "--output", "json",
        ])
        .json();
    assert_eq!(
        limited["plan"]["changes"],
        serde_json::json!([]),
        "{limited}"
    );
    p.heet(&["up", "--env", "staging"]).ok();
    assert_eq!(roles(), ["db", "www", "www"]);
    assert_eq!(names().len(), 6);

    // down --role www: www's instances and names go, db's stay, with their ledger entries.
    p.heet(&["down", "--env", "staging", "--yes", "--role", "www"])
        .ok();
    assert_eq!(roles(), ["db"]);
    assert_eq!(names(), db_names);
    let again = p
        .heet(&["up", "--env", "staging", "--role", "db", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");

    let bad = p.heet(&["plan", "--env", "staging", "--role", "web"]);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("no role \"web\""), "{}", bad.stderr());

    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert_eq!(moto().ledger_keys(&p.name, "staging"), Vec::<String>::new());
}

#[test]
fn an_address_that_exists_follows_its_instance_and_is_never_released() {
    let alloc = xml_text(
        &moto().ec2(&[("Action", "AllocateAddress"), ("Domain", "vpc")]),
        "allocationId",
    );
    let def = format!(
        "[project]\nname = \"{{project}}\"\n\n[defaults]\nami = \"ami-12c6146b\"\n\n[roles.nat]\nelastic_ip = \"{alloc}\"\n\n[environments.staging]\n"
    );
    let p = Project::new(&def, &[]);
    let holder = || {
        let xml = moto().ec2(&[
            ("Action", "DescribeAddresses"),
            ("AllocationId.1", alloc.as_str()),
        ]);
        xml_text(&xml, "instanceId")
    };
    p.heet(&["up", "--env", "staging"]).ok();
    let first = moto().live_instances("heet:project", &p.name)[0].id.clone();
    assert_eq!(holder(), first);
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");

    // A replacement gets it in its round, as heet's own addresses.
    p.write(
        "heet.toml",
        &def.replace(
            "[roles.nat]\n",
            "[roles.nat]\ninstance_type = \"t3.small\"\n",
        ),
    );
    p.heet(&["up", "--env", "staging", "--yes"]).ok();
    let live = moto().live_instances("heet:project", &p.name);
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, first);
    assert_eq!(holder(), live[0].id);

    // down leaves it allocated, and heet never tagged it.
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    let xml = moto().ec2(&[
        ("Action", "DescribeAddresses"),
        ("AllocationId.1", alloc.as_str()),
    ]);
    assert_eq!(xml_text(&xml, "allocationId"), alloc, "{xml}");
    assert!(!xml.contains("heet:"), "{xml}");
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    moto().ec2(&[
        ("Action", "ReleaseAddress"),
        ("AllocationId", alloc.as_str()),
    ]);
}
