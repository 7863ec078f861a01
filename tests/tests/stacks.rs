//! CloudFormation stacks under the AWS model (a stack is worked on for a while, a create that
//! fails on a resource is rolled back): examples/stack-demo end to end (outputs as the
//! instances' subnet, group, user data and a plugin's config; a template change shown as a
//! change set and applied; `down` deleting the instances, then the stack), a rollback that
//! launches nothing, and stacks heet did not make left alone.

use std::collections::BTreeMap;

use tests::{Project, call, moto, repo_root, xml_members, xml_text};

const PLUGINS: [&str; 3] = ["naming", "tags", "cname"];

/// CloudFormation's answer to `params`, through moto directly.
fn cfn(params: &[(&str, &str)]) -> (u16, String) {
    call(&moto().endpoint, "cloudformation", params)
}

/// The stack `name`'s status and outputs, or none when it does not exist.
fn stack(name: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (status, xml) = cfn(&[("Action", "DescribeStacks"), ("StackName", name)]);
    if status != 200 {
        assert!(xml.contains("does not exist"), "{status}: {xml}");
        return None;
    }
    let outputs = xml_members(&xml)
        .into_iter()
        .filter_map(|m| Some((m.get("OutputKey")?.clone(), m.get("OutputValue")?.clone())))
        .collect();
    Some((xml_text(&xml, "StackStatus"), outputs))
}

/// An instance's subnet and security groups, as EC2 describes it.
fn placement(id: &str) -> (String, Vec<String>) {
    let (groups, subnet, _) = moto().placement(id);
    (subnet, groups)
}

/// examples/stack-demo as a project of its own: its definition (named after the test), its
/// templates and its plugins.
fn stack_demo() -> Project {
    let example = repo_root().join("examples/stack-demo");
    let toml = std::fs::read_to_string(example.join("heet.toml"))
        .unwrap()
        .replace("name = \"stack-demo\"", "name = \"{project}\"")
        .replace(
            "domain = \"stack-demo.example\"",
            "domain = \"{project}.example\"",
        );
    let p = Project::new(&toml, &PLUGINS);
    for f in ["net.yaml", "net-with-admin.yaml"] {
        std::fs::copy(example.join(f), p.path(f)).unwrap();
    }
    p
}

#[test]
fn the_stack_demo_feeds_a_stacks_outputs_to_instances_changes_it_by_change_set_and_deletes_it_last()
{
    let p = stack_demo();
    let name = format!("{}-staging-net", p.name);

    // A plan of nothing yet: the stack's resources, the outputs known once it is made.
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let stacks = &plan["plan"]["stacks"];
    assert_eq!(stacks["changes"][0]["action"], "create", "{plan}");
    let added: Vec<&str> = stacks["changes"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["logical_id"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["Vpc", "Subnet", "AppGroup"]);
    assert_eq!(
        stacks["unknown_outputs"],
        serde_json::json!([
            "${stacks.net.GroupId}",
            "${stacks.net.SubnetId}",
            "${stacks.net.VpcId}"
        ])
    );
    assert!(stack(&name).is_none(), "plan made nothing");

    // Up: the stack first, then the instances in its subnet and group.
    p.heet(&["up", "--env", "staging"]).ok();
    let (status, outputs) = stack(&name).expect("the stack");
    assert_eq!(status, "CREATE_COMPLETE");
    let instances = moto().live_instances("heet:project", &p.name);
    assert_eq!(instances.len(), 2);
    for i in &instances {
        let (subnet, groups) = placement(&i.id);
        assert_eq!(subnet, outputs["SubnetId"]);
        assert_eq!(groups, [outputs["GroupId"].clone()]);
        assert!(
            moto()
                .user_data(&i.id)
                .contains(&format!("vpc={}", outputs["VpcId"])),
            "user data reads the output"
        );
        assert_eq!(
            i.tags["network"], outputs["VpcId"],
            "the tags plugin's config"
        );
        assert_eq!(i.tags["subnet"], outputs["SubnetId"], "host.stack-output");
    }
    // The stack's VPC gives no public DNS names: the names are A records.
    let zone = moto().zone_id(&format!("{}.example", p.name)).unwrap();
    let a = moto().records_of(&zone, "A");
    assert_eq!(a.len(), 2, "{a:?}");
    // The ledger lists the stack, with its id.
    assert!(
        moto()
            .ledger_keys(&p.name, "staging")
            .contains(&"resource/stack/net".to_owned()),
        "{:?}",
        moto().ledger_keys(&p.name, "staging")
    );

    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{again}");

    // The template changes: the plan shows CloudFormation's change set, and leaves none.
    std::fs::copy(p.path("net-with-admin.yaml"), p.path("net.yaml")).unwrap();
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let change = &plan["plan"]["stacks"]["changes"][0];
    assert_eq!(change["action"], "update", "{plan}");
    assert_eq!(change["reasons"], serde_json::json!(["template net.yaml"]));
    assert_eq!(change["change_set"]["status"], "changes", "{change}");
    assert_eq!(
        change["change_set"]["resources"],
        serde_json::json!([{"action": "Add", "logical_id": "AdminGroup", "type": "AWS::EC2::SecurityGroup", "replacement": null}])
    );
    let (_, sets) = cfn(&[("Action", "ListChangeSets"), ("StackName", &name)]);
    assert!(xml_members(&sets).is_empty(), "no change set left: {sets}");
    let text = p.heet(&["plan", "--env", "staging"]);
    assert!(
        text.stdout()
            .contains("+ AWS::EC2::SecurityGroup AdminGroup"),
        "{}",
        text.stdout()
    );

    // Up applies it; the instances keep running (what they read did not change).
    let up = p.heet(&["up", "--env", "staging"]);
    up.ok();
    let (status, outputs) = stack(&name).unwrap();
    assert_eq!(status, "UPDATE_COMPLETE");
    assert!(outputs.contains_key("AdminGroupId"), "{outputs:?}");
    let now: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(now.len(), 2);
    assert!(instances.iter().all(|i| now.contains(&i.id)));

    // Down: the instances, then the stack.
    let down = p.heet(&["down", "--env", "staging", "--yes", "-v"]);
    down.ok();
    let log = down.stderr();
    let terminated = log.find("terminating 2 instance(s)").expect(&log);
    let deleted = log.find("stack: - stack net").expect(&log);
    assert!(terminated < deleted, "{log}");
    assert!(stack(&name).is_none());
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert!(moto().ledger_keys(&p.name, "staging").is_empty());
}

const BROKEN: &str = "Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: 10.50.0.0/16
  Subnet:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: 192.168.0.0/24
Outputs:
  SubnetId:
    Value: !Ref Subnet
";

const ONE_ROLE: &str = r#"
[project]
name = "{project}"

[stacks.net]
template = "net.yaml"

[defaults]
ami = "ami-12c6146b"

[roles.app]
subnet_id = "${stacks.net.SubnetId}"

[environments.staging]
"#;

#[test]
fn a_stack_that_rolls_back_fails_up_with_its_events_and_launches_nothing_then_is_replaced() {
    let p = Project::new(ONE_ROLE, &[]);
    p.write("net.yaml", BROKEN);
    let name = format!("{}-staging-net", p.name);

    let up = p.heet(&["up", "--env", "staging"]);
    assert_eq!(up.code(), 1, "{}\n{}", up.stdout(), up.stderr());
    let err = up.stderr();
    assert!(
        err.contains(&format!("stack {name} ended ROLLBACK_COMPLETE")),
        "{err}"
    );
    assert!(
        err.contains(
            "Subnet (AWS::EC2::Subnet): CREATE_FAILED: The CIDR '192.168.0.0/24' is invalid"
        ),
        "{err}"
    );
    assert!(moto().live_instances("heet:project", &p.name).is_empty());

    // Fixed, the failed stack is deleted and made again, then the instance launched into it.
    p.write(
        "net.yaml",
        &BROKEN.replace("192.168.0.0/24", "10.50.1.0/24"),
    );
    let plan = p.heet(&["plan", "--env", "staging"]);
    assert!(
        plan.stdout()
            .contains("replacing the one whose create failed"),
        "{}",
        plan.stdout()
    );
    p.heet(&["up", "--env", "staging"]).ok();
    let (status, outputs) = stack(&name).unwrap();
    assert_eq!(status, "CREATE_COMPLETE");
    let instances = moto().live_instances("heet:project", &p.name);
    assert_eq!(instances.len(), 1);
    assert_eq!(placement(&instances[0].id).0, outputs["SubnetId"]);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(stack(&name).is_none());
}

#[test]
fn stacks_heet_did_not_make_are_never_updated_or_deleted() {
    let p = Project::new(ONE_ROLE, &[]);
    let good = BROKEN.replace("192.168.0.0/24", "10.50.1.0/24");
    p.write("net.yaml", &good);
    // Someone else's stack holds heet's name, tagged as if it were heet's.
    let name = format!("{}-staging-net", p.name);
    let tagged = [
        ("Action", "CreateStack"),
        ("StackName", name.as_str()),
        ("TemplateBody", good.as_str()),
        ("Tags.member.1.Key", "heet:project"),
        ("Tags.member.1.Value", p.name.as_str()),
        ("Tags.member.2.Key", "heet:env"),
        ("Tags.member.2.Value", "staging"),
        ("Tags.member.3.Key", "heet:resource"),
        ("Tags.member.3.Value", "stack/net"),
    ];
    assert_eq!(cfn(&tagged).0, 200);
    let up = p.heet(&["up", "--env", "staging"]);
    assert_ne!(up.code(), 0);
    assert!(
        up.stderr().contains("nothing applied") && up.stderr().contains("heet did not create it"),
        "{}",
        up.stderr()
    );
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    // `down` leaves it, as it leaves a look-alike of another name.
    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    down.ok();
    assert_eq!(stack(&name).unwrap().0, "CREATE_COMPLETE");
    cfn(&[("Action", "DeleteStack"), ("StackName", &name)]);
}
