//! Load balancers under the AWS model (a registered target is `initial` until its health
//! checks pass, a deregistered one drains, a deleted balancer's network interfaces linger):
//! a load-balanced role end to end (balancer, target group, listener, targets, groups, the
//! name to the balancer; a rollout that waits for each successor to be healthy in the target
//! group and drains each old instance before terminating it; `down` exact, a look-alike left),
//! a successor that never becomes healthy there, and a balancer of heet's name heet did not
//! make.

use std::collections::{BTreeMap, BTreeSet};

use tests::{Project, call, moto, xml_members, xml_text};

/// ELB's answer to `params`, through moto directly.
fn elb(params: &[(&str, &str)]) -> String {
    let (status, xml) = call(&moto().endpoint, "elasticloadbalancing", params);
    assert_eq!(status, 200, "{params:?}: {xml}");
    xml
}

fn member_of<'a>(
    members: &'a [BTreeMap<String, String>],
    key: &str,
    value: &str,
) -> Option<&'a BTreeMap<String, String>> {
    members
        .iter()
        .find(|m| m.get(key).map(String::as_str) == Some(value))
}

/// A balancer by name: (ARN, DNS name), if it exists.
fn balancer(name: &str) -> Option<(String, String)> {
    let members = xml_members(&elb(&[("Action", "DescribeLoadBalancers")]));
    let m = member_of(&members, "LoadBalancerName", name)?;
    Some((m["LoadBalancerArn"].clone(), m["DNSName"].clone()))
}

/// A target group by name: its members' fields.
fn target_group(name: &str) -> Option<BTreeMap<String, String>> {
    let members = xml_members(&elb(&[("Action", "DescribeTargetGroups")]));
    member_of(&members, "TargetGroupName", name).cloned()
}

/// The targets of a group, by instance id: (port, state).
fn targets(group: &str) -> BTreeMap<String, (String, String)> {
    let xml = elb(&[
        ("Action", "DescribeTargetHealth"),
        ("TargetGroupArn", group),
    ]);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("member") && n.children().any(|c| c.has_tag_name("Target")))
        .map(|m| {
            let text = |name: &str| {
                m.descendants()
                    .find(|c| c.has_tag_name(name))
                    .and_then(|c| c.text())
                    .unwrap_or_default()
                    .to_owned()
            };
            (text("Id"), (text("Port"), text("State")))
        })
        .collect()
}

fn live(project: &str) -> BTreeSet<String> {
    moto()
        .live_instances("heet:project", project)
        .into_iter()
        .map(|i| i.id)
        .collect()
}

const DEF: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

[network]
vpc = "create"

[defaults]
ami = "ami-12c6146b"
instance_type = "{type}"

[roles.www]
count = 2

[roles.www.load_balancer]
listen = 80
port = 8080
health_check = { path = "/health", interval = 10 }
drain = 20
name = "shop"

[roles.www.rolling]
batch = 1
health = "target-group"
timeout = "{timeout}"

[environments.staging]
"#;

fn def(instance_type: &str, timeout: &str) -> String {
    DEF.replace("{type}", instance_type)
        .replace("{timeout}", timeout)
}

#[test]
fn a_load_balanced_role_is_served_through_its_balancer_rolls_behind_it_and_goes_exactly() {
    let p = Project::new(&def("t3.micro", "60s"), &["cname"]);
    let name = format!("{}-staging-www", p.name);

    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let actions: Vec<&str> = plan["plan"]["balancers"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create-balancer",
            "create-target-group",
            "create-listener",
            "register",
            "register"
        ],
        "{plan}"
    );

    p.heet(&["up", "--env", "staging"]).ok();
    let instances = live(&p.name);
    assert_eq!(instances.len(), 2);

    // The balancer in heet's two subnets, behind its own group.
    let (lb_arn, dns) = balancer(&name).expect("the balancer");
    let xml = elb(&[
        ("Action", "DescribeLoadBalancers"),
        ("LoadBalancerArns.member.1", &lb_arn),
    ]);
    assert_eq!(xml_text(&xml, "Scheme"), "internet-facing");
    let groups = moto().groups("heet:project", &p.name);
    let lb_group = groups
        .iter()
        .find(|g| g.name == format!("{}-staging-www.lb", p.name))
        .expect("the balancer's group");
    let www_group = groups
        .iter()
        .find(|g| g.name == format!("{}-staging-www", p.name))
        .expect("the role's group");
    assert!(xml.contains(&lb_group.id), "{xml}");
    let subnets = moto().ids(
        ("DescribeSubnets", "subnetSet", "subnetId"),
        &[("tag:heet:project", &p.name)],
    );
    assert_eq!(subnets.len(), 2);
    for s in &subnets {
        assert!(xml.contains(s.as_str()), "balancer in subnet {s}: {xml}");
    }
    // The balancer's group admits the listener's port; the role's group admits the target
    // port from the balancer's group only.
    assert_eq!(
        lb_group.ingress,
        [("80/tcp".to_owned(), "0.0.0.0/0".to_owned())]
    );
    assert_eq!(
        www_group.ingress,
        [("8080/tcp".to_owned(), lb_group.id.clone())]
    );

    // The target group, its health check and drain time, the listener forwarding to it.
    let tg = target_group(&name).expect("the target group");
    assert_eq!(tg["Port"], "8080");
    assert_eq!(tg["Protocol"], "HTTP");
    assert_eq!(tg["HealthCheckPath"], "/health");
    assert_eq!(tg["HealthCheckIntervalSeconds"], "10");
    let tg_arn = tg["TargetGroupArn"].clone();
    let attributes = xml_members(&elb(&[
        ("Action", "DescribeTargetGroupAttributes"),
        ("TargetGroupArn", &tg_arn),
    ]));
    assert_eq!(
        member_of(&attributes, "Key", "deregistration_delay.timeout_seconds").unwrap()["Value"],
        "20"
    );
    let listeners = elb(&[
        ("Action", "DescribeListeners"),
        ("LoadBalancerArn", &lb_arn),
    ]);
    assert_eq!(xml_text(&listeners, "Port"), "80");
    assert!(listeners.contains(&tg_arn), "{listeners}");

    // The role's instances are its targets, on the port asked.
    let registered = targets(&tg_arn);
    assert_eq!(
        registered.keys().cloned().collect::<BTreeSet<_>>(),
        instances
    );
    assert!(registered.values().all(|(port, _)| port == "8080"));

    // The name points at the balancer; the instances keep their own.
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    let cnames = moto().cnames(&zone);
    assert_eq!(
        cnames.get(&format!("shop.{}.heet.test", p.name)),
        Some(&dns.to_ascii_lowercase()),
        "{cnames:?}"
    );
    assert_eq!(cnames.len(), 3, "{cnames:?}");
    let ledger = moto().ledger_keys(&p.name, "staging");
    for key in ["resource/balancer/www", "resource/target-group/www"] {
        assert!(ledger.contains(&key.to_owned()), "{ledger:?}");
    }

    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");

    // A rollout: each successor is healthy in the target group before its old instance is
    // drained from it, then terminated.
    p.write("heet.toml", &def("t3.small", "60s"));
    let up = p.heet(&["up", "--env", "staging", "--yes", "-v"]);
    up.ok();
    let now = live(&p.name);
    assert_eq!(now.len(), 2);
    assert!(now.is_disjoint(&instances), "every instance replaced");
    let registered = targets(&tg_arn);
    assert_eq!(
        registered.keys().cloned().collect::<BTreeSet<_>>(),
        now,
        "only the successors are targets: {registered:?}"
    );
    assert!(
        registered.values().all(|(_, state)| state == "healthy"),
        "{registered:?}"
    );
    let journal = p.aws.journal();
    for old in &instances {
        let drained = journal
            .iter()
            .position(|(op, ids)| op.ends_with("DeregisterTargets") && ids.contains(old));
        let terminated = journal
            .iter()
            .position(|(op, ids)| op.ends_with("TerminateInstances") && ids.contains(old));
        assert!(
            matches!((drained, terminated), (Some(d), Some(t)) if d < t),
            "{old} deregistered before it is terminated: {journal:?}"
        );
    }
    assert!(up.stderr().contains("to be healthy in"), "{}", up.stderr());

    // A look-alike: heet's tags, another name, not in the ledger. Down leaves it.
    let default_subnets = moto().ids(
        ("DescribeSubnets", "subnetSet", "subnetId"),
        &[("default-for-az", "true")],
    );
    let look_alike = format!("{}-staging-www2", p.name);
    elb(&[
        ("Action", "CreateLoadBalancer"),
        ("Name", &look_alike),
        ("Subnets.member.1", &default_subnets[0]),
        ("Subnets.member.2", &default_subnets[1]),
        ("Tags.member.1.Key", "heet:project"),
        ("Tags.member.1.Value", &p.name),
        ("Tags.member.2.Key", "heet:env"),
        ("Tags.member.2.Value", "staging"),
        ("Tags.member.3.Key", "heet:resource"),
        ("Tags.member.3.Value", "balancer/www"),
    ]);

    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    down.ok();
    assert!(balancer(&name).is_none());
    assert!(target_group(&name).is_none());
    assert!(balancer(&look_alike).is_some(), "the look-alike survives");
    assert!(live(&p.name).is_empty());
    assert_eq!(moto().cnames(&zone).len(), 0);
    let (look_alike_arn, _) = balancer(&look_alike).unwrap();
    elb(&[
        ("Action", "DeleteLoadBalancer"),
        ("LoadBalancerArn", &look_alike_arn),
    ]);
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert!(moto().ledger_keys(&p.name, "staging").is_empty());
}

#[test]
fn a_successor_never_healthy_in_its_target_group_stops_the_rollout_and_the_old_instance_serves() {
    // Without a name of its own, the balancer's name is the cname plugin's for the role.
    let unnamed = |instance_type: &str| def(instance_type, "4s").replace("name = \"shop\"\n", "");
    let mut p = Project::new(&unnamed("t3.micro"), &["cname"]);
    // t3.large boots and runs, and fails the balancer's health checks.
    p.use_model(tests::suite_model().impaired("t3.large"));
    p.heet(&["up", "--env", "staging"]).ok();
    let name = format!("{}-staging-www", p.name);
    let (_, dns) = balancer(&name).unwrap();
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    assert_eq!(
        moto()
            .cnames(&zone)
            .get(&format!("staging-www.{}.heet.test", p.name)),
        Some(&dns.to_ascii_lowercase())
    );
    let tg_arn = target_group(&name).unwrap()["TargetGroupArn"].clone();
    let old = live(&p.name);

    p.write("heet.toml", &unnamed("t3.large"));
    let up = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(up.code(), 1, "{}", up.stderr());
    let err = up.stderr();
    assert!(
        err.contains("rollout stopped at batch 1") && err.contains("target unhealthy"),
        "{err}"
    );
    assert_eq!(
        live(&p.name),
        old,
        "the old instances serve, the successor is gone"
    );
    let registered: BTreeSet<String> = targets(&tg_arn)
        .into_iter()
        .filter(|(_, (_, state))| state == "healthy")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        registered, old,
        "the old instances are still its healthy targets"
    );

    p.write("heet.toml", &unnamed("t3.micro"));
    p.assert_converged_then_down("staging");
}

#[test]
fn a_balancer_of_heets_name_that_heet_did_not_make_stops_up_before_any_change() {
    let p = Project::new(
        r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.api.load_balancer]
port = 8000

[environments.staging]
"#,
        &[],
    );
    let name = format!("{}-staging-api", p.name);
    let subnets = moto().ids(
        ("DescribeSubnets", "subnetSet", "subnetId"),
        &[("default-for-az", "true")],
    );
    elb(&[
        ("Action", "CreateLoadBalancer"),
        ("Name", &name),
        ("Subnets.member.1", &subnets[0]),
        ("Subnets.member.2", &subnets[1]),
    ]);
    let up = p.heet(&["up", "--env", "staging"]);
    assert_ne!(up.code(), 0, "{}", up.stderr());
    assert!(
        up.stderr().contains(&format!("balancer {name} exists")),
        "{}",
        up.stderr()
    );
    assert!(live(&p.name).is_empty(), "nothing launched");
    assert!(target_group(&name).is_none(), "nothing made");
    let (arn, _) = balancer(&name).unwrap();
    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    down.ok();
    assert!(balancer(&name).is_some(), "down leaves it");
    elb(&[("Action", "DeleteLoadBalancer"), ("LoadBalancerArn", &arn)]);
}
