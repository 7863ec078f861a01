//! The AWS model itself (`tests/src/model.rs`), driven by raw API calls through it: each
//! behaviour it claims to add to moto is observed here, so the suites that run heet through
//! it test what they say they test.

use std::time::{Duration, Instant};

use tests::model::Model;
use tests::{call, moto, xml_text};

/// A model with short windows, fresh buckets, in front of this process's moto.
fn model(m: Model) -> tests::model::AwsModel {
    m.start(&moto().endpoint)
}

fn run(endpoint: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut params = vec![
        ("Action", "RunInstances"),
        ("ImageId", "ami-12c6146b"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
    ];
    params.extend_from_slice(extra);
    call(endpoint, "ec2", &params)
}

fn state_of(endpoint: &str, id: &str) -> (String, String) {
    let (status, xml) = call(
        endpoint,
        "ec2",
        &[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", "instance-id"),
            ("Filter.1.Value.1", id),
        ],
    );
    assert_eq!(status, 200, "{xml}");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let Some(item) = doc
        .descendants()
        .filter(|n| n.has_tag_name("instancesSet"))
        .flat_map(|s| s.children().filter(|c| c.has_tag_name("item")))
        .next()
    else {
        return ("missing".into(), String::new());
    };
    let state = item
        .descendants()
        .find(|n| n.has_tag_name("instanceState"))
        .map(|s| xml_text(&tests_node_xml(&xml, s.range()), "name"))
        .unwrap_or_default();
    let dns = item
        .children()
        .find(|c| c.has_tag_name("dnsName"))
        .and_then(|n| n.text())
        .unwrap_or_default()
        .to_owned();
    (state, dns)
}

fn tests_node_xml(xml: &str, range: std::ops::Range<usize>) -> String {
    xml[range].to_owned()
}

#[test]
fn run_instances_is_throttled_at_a_burst_of_5_in_ec2s_own_words() {
    let m = model(Model::quick());
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (status, body) = run(&m.endpoint, &[]);
        codes.push((status, xml_text(&body, "Code")));
    }
    assert!(codes[..5].iter().all(|(s, _)| *s == 200), "{codes:?}");
    assert_eq!(codes[5], (503, "RequestLimitExceeded".to_owned()));
    let stats = m.stats().op("ec2:RunInstances");
    assert_eq!((stats.calls, stats.forwarded, stats.throttled), (6, 5, 1));
    // The bucket refills at 2 per second.
    std::thread::sleep(Duration::from_millis(550));
    assert_eq!(run(&m.endpoint, &[]).0, 200);
}

#[test]
fn a_client_token_replays_its_first_answer_and_refuses_other_parameters() {
    let m = model(Model::quick());
    let token = format!("model-test-{}", std::process::id());
    let tokens = [("ClientToken", token.as_str())];
    let (_, first) = run(&m.endpoint, &tokens);
    let (status, again) = run(&m.endpoint, &tokens);
    assert_eq!(status, 200);
    let id = xml_text(&first, "instanceId");
    assert_eq!(xml_text(&again, "instanceId"), id, "the same instance");
    assert_eq!(
        m.stats().op("ec2:RunInstances").forwarded,
        1,
        "moto launched once"
    );

    let (status, other) = run(
        &m.endpoint,
        &[
            ("ClientToken", token.as_str()),
            ("InstanceType", "m5.large"),
        ],
    );
    assert_eq!(
        (status, xml_text(&other, "Code").as_str()),
        (400, "IdempotentParameterMismatch")
    );

    moto().terminate(&id);
    let (status, gone) = run(&m.endpoint, &tokens);
    assert_eq!(
        (status, xml_text(&gone, "Code").as_str()),
        (400, "IdempotentInstanceTerminated")
    );
}

#[test]
fn new_instances_are_invisible_then_pending_without_a_public_name_then_running() {
    let mut quick = Model::quick();
    quick.consistency = Duration::from_millis(300);
    quick.pending = Duration::from_millis(1200);
    let m = model(quick);
    let (_, answer) = run(&m.endpoint, &[]);
    let id = xml_text(&answer, "instanceId");
    assert_eq!(
        xml_text(&answer, "dnsName"),
        "",
        "no public name in the answer"
    );
    assert_eq!(state_of(&m.endpoint, &id).0, "missing", "not visible yet");
    let (status, body) = call(
        &m.endpoint,
        "ec2",
        &[
            ("Action", "CreateTags"),
            ("ResourceId.1", &id),
            ("Tag.1.Key", "a"),
            ("Tag.1.Value", "b"),
        ],
    );
    assert_eq!(
        (status, xml_text(&body, "Code").as_str()),
        (400, "InvalidInstanceID.NotFound")
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        state_of(&m.endpoint, &id),
        ("pending".into(), String::new())
    );
    // A state filter is the model's, not moto's: a pending instance is not `running`.
    let (_, xml) = call(
        &m.endpoint,
        "ec2",
        &[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", "instance-id"),
            ("Filter.1.Value.1", &id),
            ("Filter.2.Name", "instance-state-name"),
            ("Filter.2.Value.1", "running"),
        ],
    );
    assert_eq!(xml_text(&xml, "instanceId"), "", "{xml}");
    let started = Instant::now();
    while state_of(&m.endpoint, &id).0 != "running" {
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, dns) = state_of(&m.endpoint, &id);
    assert!(dns.ends_with(".amazonaws.com"), "{dns}");

    // Terminated: shutting-down first, as EC2 shows it.
    call(
        &m.endpoint,
        "ec2",
        &[("Action", "TerminateInstances"), ("InstanceId.1", &id)],
    );
    assert_eq!(state_of(&m.endpoint, &id).0, "shutting-down");
}

#[test]
fn a_new_group_is_not_found_at_first_and_cannot_be_deleted_while_an_instance_just_left_it() {
    let mut quick = Model::quick();
    quick.consistency = Duration::from_millis(300);
    quick.dependency = Duration::from_millis(800);
    let m = model(quick);
    let name = format!("model-group-{}", std::process::id());
    let (_, created) = call(
        &m.endpoint,
        "ec2",
        &[
            ("Action", "CreateSecurityGroup"),
            ("GroupName", &name),
            ("GroupDescription", "model test"),
        ],
    );
    let group = xml_text(&created, "groupId");
    let (status, body) = call(
        &m.endpoint,
        "ec2",
        &[
            ("Action", "AuthorizeSecurityGroupIngress"),
            ("GroupId", &group),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "80"),
            ("IpPermissions.1.ToPort", "80"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
        ],
    );
    assert_eq!(
        (status, xml_text(&body, "Code").as_str()),
        (400, "InvalidGroup.NotFound")
    );
    let (_, listed) = call(
        &m.endpoint,
        "ec2",
        &[
            ("Action", "DescribeSecurityGroups"),
            ("Filter.1.Name", "group-name"),
            ("Filter.1.Value.1", &name),
        ],
    );
    assert_eq!(xml_text(&listed, "groupId"), "", "hidden from describes");
    std::thread::sleep(Duration::from_millis(350));

    let (status, launched) = run(&m.endpoint, &[("SecurityGroupId.1", &group)]);
    assert_eq!(status, 200, "{launched}");
    let id = xml_text(&launched, "instanceId");
    std::thread::sleep(Duration::from_millis(350));
    call(
        &m.endpoint,
        "ec2",
        &[("Action", "TerminateInstances"), ("InstanceId.1", &id)],
    );
    let delete = || {
        let (status, body) = call(
            &m.endpoint,
            "ec2",
            &[("Action", "DeleteSecurityGroup"), ("GroupId", &group)],
        );
        (status, xml_text(&body, "Code"))
    };
    assert_eq!(delete(), (400, "DependencyViolation".to_owned()));
    std::thread::sleep(Duration::from_millis(850));
    assert_eq!(delete().0, 200);
}

#[test]
fn a_new_instance_profile_is_refused_by_run_instances_for_a_while() {
    let mut quick = Model::quick();
    quick.profile_propagation = Duration::from_millis(600);
    let m = model(quick);
    let name = format!("model-profile-{}", std::process::id());
    let (status, _) = call(
        &m.endpoint,
        "iam",
        &[
            ("Action", "CreateInstanceProfile"),
            ("InstanceProfileName", &name),
        ],
    );
    assert_eq!(status, 200);
    let (status, body) = run(&m.endpoint, &[("IamInstanceProfile.Name", &name)]);
    assert_eq!(status, 400);
    assert!(
        xml_text(&body, "Message").contains("Invalid IAM Instance Profile name"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(650));
    assert_eq!(
        run(&m.endpoint, &[("IamInstanceProfile.Name", &name)]).0,
        200
    );
}

#[test]
fn a_lost_answer_was_carried_out_and_its_token_returns_the_same_instance() {
    let m = model(Model::quick().lose(100, &["ec2:RunInstances"]));
    let token = format!("lost-{}", std::process::id());
    let tagged = [
        ("ClientToken", token.as_str()),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", "model-test"),
        ("TagSpecification.1.Tag.1.Value", token.as_str()),
    ];
    assert_eq!(run(&m.endpoint, &tagged).0, 0, "the connection was dropped");
    // The client retries with its token: answered from the token (and lost again).
    assert_eq!(run(&m.endpoint, &tagged).0, 0);
    let stats = m.stats().op("ec2:RunInstances");
    assert_eq!((stats.lost, stats.forwarded, stats.modelled), (2, 1, 1));
    assert_eq!(
        moto().live_instances("model-test", &token).len(),
        1,
        "one launch"
    );
}

#[test]
fn route53_batches_are_checked_and_stay_pending_for_a_while() {
    let mut quick = Model::quick();
    quick.insync = Duration::from_millis(1500);
    quick.processing = Duration::from_millis(300);
    let m = model(quick);
    let domain = format!("model{}.heet.test", std::process::id());
    let post = |path: &str, body: String| route53_post(&m.endpoint, path, body);
    let zone_request = format!(
        r#"<?xml version="1.0"?><CreateHostedZoneRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Name>{domain}.</Name><CallerReference>ref-{domain}</CallerReference></CreateHostedZoneRequest>"#
    );
    let (status, zone) = post("hostedzone", zone_request.clone());
    assert_eq!(status, 201, "{zone}");
    let zone = xml_text(&zone, "Id")
        .trim_start_matches("/hostedzone/")
        .to_owned();
    let (status, again) = post("hostedzone", zone_request);
    assert_eq!(
        (status, xml_text(&again, "Code").as_str()),
        (409, "HostedZoneAlreadyExists")
    );

    let batch = |action: &str| {
        format!(
            r#"<?xml version="1.0"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change><Action>{action}</Action><ResourceRecordSet><Name>a.{domain}.</Name><Type>CNAME</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>x.example</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#
        )
    };
    let rrset = format!("hostedzone/{zone}/rrset");
    let (status, missing) = post(&rrset, batch("DELETE"));
    assert_eq!(
        (status, xml_text(&missing, "Code").as_str()),
        (400, "InvalidChangeBatch")
    );
    let (status, created) = post(&rrset, batch("CREATE"));
    assert_eq!(status, 200, "{created}");
    let change = xml_text(&created, "Id")
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (status, busy) = post(&rrset, batch("UPSERT"));
    assert_eq!(
        (status, xml_text(&busy, "Code").as_str()),
        (400, "PriorRequestNotComplete")
    );
    let status_of = || {
        let mut r = ureq::get(format!("{}/2013-04-01/change/{change}", m.endpoint))
            .header("Authorization", tests_auth("route53"))
            .call()
            .unwrap();
        xml_text(&r.body_mut().read_to_string().unwrap(), "Status")
    };
    // Processed but still propagating: a new change is taken, as Route53 takes it.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(status_of(), "PENDING");
    let (status, upserted) = post(&rrset, batch("UPSERT"));
    assert_eq!(status, 200, "{upserted}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_of(), "INSYNC");
    let (status, exists) = post(&rrset, batch("CREATE"));
    assert_eq!(
        (status, xml_text(&exists, "Code").as_str()),
        (400, "InvalidChangeBatch"),
        "{exists}"
    );
    assert_eq!(post(&rrset, batch("DELETE")).0, 200);
}

/// POSTs `body` to Route53's `path` through `endpoint`: (status, body).
fn route53_post(endpoint: &str, path: &str, body: String) -> (u16, String) {
    let mut r = ureq::post(format!("{endpoint}/2013-04-01/{path}"))
        .header("Authorization", tests_auth("route53"))
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn tests_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"
    )
}

#[test]
fn instances_in_a_vpc_without_dns_hostnames_have_no_public_name() {
    let m = model(Model::quick());
    let (_, vpc) = call(
        &m.endpoint,
        "ec2",
        &[("Action", "CreateVpc"), ("CidrBlock", "10.201.0.0/16")],
    );
    let vpc = xml_text(&vpc, "vpcId");
    std::thread::sleep(Duration::from_millis(550));
    let (_, subnet) = call(
        &m.endpoint,
        "ec2",
        &[
            ("Action", "CreateSubnet"),
            ("VpcId", &vpc),
            ("CidrBlock", "10.201.1.0/24"),
        ],
    );
    let subnet = xml_text(&subnet, "subnetId");
    std::thread::sleep(Duration::from_millis(550));
    // A public address, which moto would give a public DNS name in any VPC.
    let (status, launched) = run(
        &m.endpoint,
        &[
            ("NetworkInterface.1.DeviceIndex", "0"),
            ("NetworkInterface.1.SubnetId", &subnet),
            ("NetworkInterface.1.AssociatePublicIpAddress", "true"),
        ],
    );
    assert_eq!(status, 200, "{launched}");
    let id = xml_text(&launched, "instanceId");
    let started = Instant::now();
    loop {
        let (state, dns) = state_of(&m.endpoint, &id);
        if state == "running" {
            assert_eq!(dns, "", "enableDnsHostnames is off in {vpc}");
            // moto itself gives it one: the model is what takes it away.
            let raw = moto().ec2(&[("Action", "DescribeInstances"), ("InstanceId.1", &id)]);
            assert!(
                xml_text(&raw, "dnsName").ends_with(".amazonaws.com"),
                "{raw}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn route53_checks_see_every_page_of_a_large_zone() {
    let m = model(Model::quick());
    let domain = format!("big{}.heet.test", std::process::id());
    let zone = moto().create_zone(&domain);
    let change = |action: &str, names: std::ops::Range<u32>| {
        let changes: String = names
            .map(|i| format!(r#"<Change><Action>{action}</Action><ResourceRecordSet><Name>r{i:03}.{domain}.</Name><Type>CNAME</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>t{i}.example</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>"#))
            .collect();
        let body = format!(
            r#"<?xml version="1.0"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes>{changes}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#
        );
        route53_post(&m.endpoint, &format!("hostedzone/{zone}/rrset"), body)
    };
    assert_eq!(change("CREATE", 0..350).0, 200);
    assert_eq!(moto().cnames(&zone).len(), 350);
    std::thread::sleep(Duration::from_millis(500));
    // Past moto's first page of 300: still found, so the delete is valid.
    let (status, body) = change("DELETE", 340..350);
    assert_eq!(status, 200, "{body}");
}

/// The state of `id` in `group`, as DescribeTargetHealth through `endpoint` says, listing the
/// group's targets (`asked`: none) or asking for `id`.
fn target_state(endpoint: &str, group: &str, id: &str, asked: bool) -> Option<String> {
    let mut params = vec![
        ("Action", "DescribeTargetHealth"),
        ("TargetGroupArn", group),
    ];
    if asked {
        params.push(("Targets.member.1.Id", id));
    }
    let (status, xml) = call(endpoint, "elasticloadbalancing", &params);
    assert_eq!(status, 200, "{xml}");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    doc.descendants()
        .filter(|m| m.has_tag_name("member"))
        .find(|m| {
            m.descendants()
                .any(|c| c.has_tag_name("Id") && c.text() == Some(id))
        })
        .and_then(|m| m.descendants().find(|c| c.has_tag_name("State")))
        .and_then(|s| s.text().map(str::to_owned))
}

#[test]
fn a_target_is_initial_until_its_checks_pass_drains_when_it_leaves_and_elb_throttles() {
    // Interval 10 s × 2 checks and a drain of 20 s, scaled to 0.6 s and 0.6 s.
    let quick = Model {
        elb_scale: 0.03,
        ..Model::quick()
    };
    let m = model(quick.clone().impaired("t3.large"));
    let elb = |params: &[(&str, &str)]| call(&m.endpoint, "elasticloadbalancing", params);
    let vpc = xml_text(
        &call(&moto().endpoint, "ec2", &[("Action", "DescribeVpcs")]).1,
        "vpcId",
    );
    let name = format!("model-tg-{}", std::process::id());
    let (status, created) = elb(&[
        ("Action", "CreateTargetGroup"),
        ("Name", &name),
        ("Protocol", "HTTP"),
        ("Port", "80"),
        ("VpcId", &vpc),
        ("HealthCheckIntervalSeconds", "10"),
        ("HealthyThresholdCount", "2"),
    ]);
    assert_eq!(status, 200, "{created}");
    let group = xml_text(&created, "TargetGroupArn");
    // A health check that would outlast its interval is refused, as ELB does.
    let (status, refused) = elb(&[
        ("Action", "ModifyTargetGroup"),
        ("TargetGroupArn", &group),
        ("HealthCheckIntervalSeconds", "5"),
    ]);
    assert_eq!(
        (status, xml_text(&refused, "Code").as_str()),
        (400, "ValidationError"),
        "{refused}"
    );
    let (_, attrs) = elb(&[
        ("Action", "ModifyTargetGroupAttributes"),
        ("TargetGroupArn", &group),
        (
            "Attributes.member.1.Key",
            "deregistration_delay.timeout_seconds",
        ),
        ("Attributes.member.1.Value", "20"),
    ]);
    assert!(attrs.contains("20"), "{attrs}");
    let (_, good) = run(&moto().endpoint, &[]);
    let good = xml_text(&good, "instanceId");
    let (_, bad) = run(&m.endpoint, &[("InstanceType", "t3.large")]);
    let bad = xml_text(&bad, "instanceId");
    std::thread::sleep(quick.pending + Duration::from_millis(100));
    for id in [&good, &bad] {
        let (status, body) = elb(&[
            ("Action", "RegisterTargets"),
            ("TargetGroupArn", &group),
            ("Targets.member.1.Id", id),
        ]);
        assert_eq!(status, 200, "{body}");
    }
    // No balancer forwards to the group yet: its targets are not in use.
    assert_eq!(
        target_state(&m.endpoint, &group, &good, false).as_deref(),
        Some("unused")
    );
    let subnets = moto().ids(
        ("DescribeSubnets", "subnetSet", "subnetId"),
        &[("default-for-az", "true")],
    );
    let (status, made) = elb(&[
        ("Action", "CreateLoadBalancer"),
        ("Name", &name),
        ("Subnets.member.1", &subnets[0]),
        ("Subnets.member.2", &subnets[1]),
    ]);
    assert_eq!(status, 200, "{made}");
    let balancer = xml_text(&made, "LoadBalancerArn");
    let (status, listener) = elb(&[
        ("Action", "CreateListener"),
        ("LoadBalancerArn", &balancer),
        ("Protocol", "HTTP"),
        ("Port", "80"),
        ("DefaultActions.member.1.Type", "forward"),
        ("DefaultActions.member.1.TargetGroupArn", &group),
    ]);
    assert_eq!(status, 200, "{listener}");
    // Registered again once in use: the checks start over from now, as they do in ELB.
    for id in [&good, &bad] {
        elb(&[
            ("Action", "DeregisterTargets"),
            ("TargetGroupArn", &group),
            ("Targets.member.1.Id", id),
        ]);
        elb(&[
            ("Action", "RegisterTargets"),
            ("TargetGroupArn", &group),
            ("Targets.member.1.Id", id),
        ]);
    }
    // A subnet the balancer is in cannot be deleted while it lives.
    let (status, busy) = call(
        &m.endpoint,
        "ec2",
        &[("Action", "DeleteSubnet"), ("SubnetId", &subnets[0])],
    );
    assert_eq!(
        (status, xml_text(&busy, "Code").as_str()),
        (400, "DependencyViolation")
    );
    assert_eq!(
        target_state(&m.endpoint, &group, &good, false).as_deref(),
        Some("initial")
    );
    assert_eq!(
        target_state(&moto().endpoint, &group, &good, false).as_deref(),
        Some("healthy"),
        "moto: healthy at once"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        target_state(&m.endpoint, &group, &good, false).as_deref(),
        Some("healthy")
    );
    assert_eq!(
        target_state(&m.endpoint, &group, &bad, true).as_deref(),
        Some("unhealthy"),
        "an impaired instance fails its checks"
    );

    elb(&[
        ("Action", "DeregisterTargets"),
        ("TargetGroupArn", &group),
        ("Targets.member.1.Id", &good),
    ]);
    assert_eq!(
        target_state(&moto().endpoint, &group, &good, false),
        None,
        "moto: gone at once"
    );
    for asked in [false, true] {
        assert_eq!(
            target_state(&m.endpoint, &group, &good, asked).as_deref(),
            Some("draining")
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(target_state(&m.endpoint, &group, &good, false), None);
    assert_eq!(
        target_state(&m.endpoint, &group, &good, true).as_deref(),
        Some("unused")
    );
    assert_eq!(
        m.journal().last(),
        Some(&(
            "elasticloadbalancing:DeregisterTargets".to_owned(),
            vec![good.clone()]
        ))
    );

    elb(&[
        ("Action", "DeleteLoadBalancer"),
        ("LoadBalancerArn", &balancer),
    ]);

    // Registration's bucket: 20 at once, then 4 a second (the account's is 40).
    let codes: Vec<String> = (0..22)
        .map(|_| {
            let (status, body) = elb(&[
                ("Action", "RegisterTargets"),
                ("TargetGroupArn", &group),
                ("Targets.member.1.Id", &bad),
            ]);
            if status == 200 {
                "ok".to_owned()
            } else {
                xml_text(&body, "Code")
            }
        })
        .collect();
    // The bucket is nearly full (what the test spent above has mostly been refilled).
    let first = codes.iter().position(|c| c == "ThrottlingException");
    assert!(
        first.is_some_and(|n| (14..=21).contains(&n))
            && codes
                .iter()
                .all(|c| c == "ok" || c == "ThrottlingException"),
        "{codes:?}"
    );
}
