//! Networks and storage against moto: security groups between roles, a VPC per environment,
//! data volumes and Elastic IPs, all torn down by `down`.

use tests::{Project, moto};

const FIREWALL: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2
ports = [80, 443]
allow_cidr = ["0.0.0.0/0"]

[roles.db]
ports = [5432]
allow_from = ["www"]
volume_gb = 20

[roles.worker]

[environments.staging]
"#;

#[test]
fn db_admits_the_www_group_and_nothing_else() {
    let p = Project::new(FIREWALL, &[]);
    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(up["applied"]["launched"].as_array().unwrap().len(), 4);

    let groups = moto().groups("heet:project", &p.name);
    let by_name = |n: &str| {
        groups
            .iter()
            .find(|g| g.name == format!("{}-staging-{n}", p.name))
            .unwrap_or_else(|| panic!("no group {n} in {groups:?}"))
    };
    let (www, db) = (by_name("www"), by_name("db"));
    assert_eq!(groups.len(), 2, "worker opens nothing: no group {groups:?}");
    assert_eq!(db.ingress, [("5432/tcp".to_owned(), www.id.clone())]);
    let mut web = www.ingress.clone();
    web.sort();
    assert_eq!(
        web,
        [
            ("443/tcp".to_owned(), "0.0.0.0/0".to_owned()),
            ("80/tcp".to_owned(), "0.0.0.0/0".to_owned())
        ]
    );

    // Each instance is in its own role's group, and only that one.
    for i in moto().live_instances("heet:project", &p.name) {
        let (groups, _, _) = moto().placement(&i.id);
        match i.tags["heet:role"].as_str() {
            "www" => assert_eq!(groups, std::slice::from_ref(&www.id)),
            "db" => assert_eq!(groups, std::slice::from_ref(&db.id)),
            "worker" => assert!(!groups.contains(&www.id) && !groups.contains(&db.id)),
            other => panic!("role {other}"),
        }
    }

    // A rule added by hand to heet's group is drift, and the next `up` revokes it.
    moto().ec2(&[
        ("Action", "AuthorizeSecurityGroupIngress"),
        ("GroupId", &db.id),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "5432"),
        ("IpPermissions.1.ToPort", "5432"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
    ]);
    let status = p.heet(&["status", "--env", "staging"]);
    assert_eq!(status.code(), 2, "{}", status.stdout());
    assert!(
        status.stdout().contains("changed: ~ group db")
            && status.stdout().contains("revoke 5432/tcp from 0.0.0.0/0"),
        "{}",
        status.stdout()
    );
    p.heet(&["up", "--env", "staging"]).ok();
    let db = moto()
        .groups("heet:project", &p.name)
        .into_iter()
        .find(|g| g.id == db.id)
        .unwrap();
    assert_eq!(db.ingress, [("5432/tcp".to_owned(), www.id.clone())]);

    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["plan"]);

    // db's data volume: 20 GiB, attached to it, tagged with its slot, gone with it.
    let db_instance = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .find(|i| i.tags["heet:role"] == "db")
        .unwrap();
    let volumes = moto().volumes("heet:project", &p.name);
    assert_eq!(
        volumes
            .iter()
            .map(|(_, size, gone, on)| (size.as_str(), gone.as_str(), on.as_str()))
            .collect::<Vec<_>>(),
        [("20", "true", db_instance.id.as_str())],
        "{volumes:?}"
    );

    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert_eq!(moto().volumes("heet:project", &p.name), []);
}

#[test]
fn a_kept_volume_outlives_down() {
    let p = Project::new(
        &FIREWALL.replace("volume_gb = 20", "volume_gb = 8\nvolume_keep = true"),
        &[],
    );
    p.heet(&["up", "--env", "staging"]).ok();
    let ours = moto().volumes("heet:project", &p.name);
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!((ours[0].1.as_str(), ours[0].2.as_str()), ("8", "false"));
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    let kept = moto().volumes("heet:project", &p.name);
    assert_eq!(kept.len(), 1, "kept, tagged, for the user to delete");
    assert_eq!(kept[0].0, ours[0].0);
    moto().ec2(&[("Action", "DeleteVolume"), ("VolumeId", &kept[0].0)]);
}

#[test]
fn a_guard_refuses_a_closed_port_open_to_the_world() {
    let def = format!(
        "{FIREWALL}\n[plugins.config.guard]\nclosed_ports = [22]\nopen_roles = [\"bastion\"]\n"
    )
    .replace(
        "[roles.worker]",
        "[roles.worker]\nports = [22]\nallow_cidr = [\"0.0.0.0/0\"]",
    );
    let p = Project::new(&def, &["guard"]);
    let plan = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(plan.code(), 3, "{}", plan.stderr());
    assert!(
        plan.stderr().contains(
            "plugin guard: closed-ports: port 22 is open to 0.0.0.0/0; only bastion may open it to the internet (role worker)"
        ),
        "{}",
        plan.stderr()
    );
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
}

const VPC: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

[network]
vpc = "create"
subnets = 2

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 3
ports = [443]
allow_cidr = ["0.0.0.0/0"]
eip = true

[environments.dev]
cidr = "10.30.0.0/16"
"#;

#[test]
fn a_vpc_per_environment_with_elastic_ips_comes_and_goes() {
    let p = Project::new(VPC, &["cname"]);
    p.write(
        "heet.toml",
        &format!("{VPC}\n[plugins.config.cname]\npatterns = [\"{{role}}-{{index:02}}\"]\n"),
    );
    let plan = p.heet(&["plan", "--env", "dev"]);
    assert_eq!(plan.code(), 0, "{}", plan.stderr());
    for line in [
        "+ vpc {p}-dev 10.30.0.0/16",
        "+ internet gateway",
        "+ subnet/1 10.30.0.0/24",
        "+ subnet/2 10.30.1.0/24",
        "+ security group {p}-dev-www",
        "+ elastic ip for {p}-dev-www-03",
    ] {
        let line = line.replace("{p}", &p.name);
        assert!(
            plan.stdout().contains(&line),
            "{line} in\n{}",
            plan.stdout()
        );
    }

    p.heet(&["up", "--env", "dev"]).ok();
    let vpcs = moto().ids(
        ("DescribeVpcs", "vpcSet", "vpcId"),
        &[("tag:heet:project", &p.name)],
    );
    assert_eq!(vpcs.len(), 1);
    let subnets = moto().ids(
        ("DescribeSubnets", "subnetSet", "subnetId"),
        &[("vpc-id", &vpcs[0])],
    );
    assert_eq!(subnets.len(), 2);
    let addresses = moto().ids(
        ("DescribeAddresses", "addressesSet", "publicIp"),
        &[("tag:heet:project", &p.name)],
    );
    assert_eq!(addresses.len(), 3);

    // Instances spread over the two subnets, each reachable at its Elastic IP, and its CNAME
    // points at the name of that IP.
    let zone = moto().zone_id(&format!("{}.heet.test", p.name)).unwrap();
    let cnames = moto().cnames(&zone);
    let mut used = std::collections::BTreeSet::new();
    for i in moto().live_instances("heet:project", &p.name) {
        let (_, subnet, ip) = moto().placement(&i.id);
        assert!(subnets.contains(&subnet), "{subnet} not in {subnets:?}");
        used.insert(subnet);
        assert!(addresses.contains(&ip), "{} has {ip}, not an EIP", i.id);
        let name = format!(
            "www-{:02}.{}.heet.test",
            i.tags["heet:index"].parse::<u32>().unwrap(),
            p.name
        );
        assert_eq!(cnames[&name], tests::public_dns(&ip), "{name}");
    }
    assert_eq!(used.len(), 2);

    let again = p.heet(&["up", "--env", "dev", "--output", "json"]).json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["plan"]);

    let down = p
        .heet(&["down", "--env", "dev", "--yes", "--output", "json"])
        .json();
    assert_eq!(down["terminated"].as_array().unwrap().len(), 3);
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert!(moto().cnames(&zone).keys().all(|n| !n.starts_with("www-")));
    assert_eq!(moto().ledger_keys(&p.name, "dev"), Vec::<String>::new());
}

/// Creates a resource with raw EC2, tagged as heet tags its own but without heet's id;
/// returns the id found at `id_field` in the answer.
fn decoy(
    p: &Project,
    action: &[(&str, &str)],
    kind: &str,
    resource: &str,
    id_field: &str,
) -> String {
    let mut params = action.to_vec();
    let tags = [
        ("heet:project", p.name.as_str()),
        ("heet:env", "staging"),
        ("heet:resource", resource),
        ("heet:id", "0000000000000000"),
    ];
    let keys: Vec<(String, String)> = tags
        .iter()
        .enumerate()
        .flat_map(|(i, (k, v))| {
            [
                (
                    format!("TagSpecification.1.Tag.{}.Key", i + 1),
                    (*k).to_owned(),
                ),
                (
                    format!("TagSpecification.1.Tag.{}.Value", i + 1),
                    (*v).to_owned(),
                ),
            ]
        })
        .collect();
    params.push(("TagSpecification.1.ResourceType", kind));
    params.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let xml = moto().ec2(&params);
    let start = xml.find(&format!("<{id_field}>")).expect(&xml) + id_field.len() + 2;
    xml[start..start + xml[start..].find('<').unwrap()].to_owned()
}

#[test]
fn look_alike_network_resources_survive_up_and_down() {
    let p = Project::new(FIREWALL, &[]);
    let vpc = decoy(
        &p,
        &[("Action", "CreateVpc"), ("CidrBlock", "10.99.0.0/16")],
        "vpc",
        "vpc/main",
        "vpcId",
    );
    let group_name = format!("{}-staging-www-copy", p.name);
    let group = decoy(
        &p,
        &[
            ("Action", "CreateSecurityGroup"),
            ("GroupName", &group_name),
            ("GroupDescription", "not heet's"),
        ],
        "security-group",
        "group/www",
        "groupId",
    );
    let eip = decoy(
        &p,
        &[("Action", "AllocateAddress"), ("Domain", "vpc")],
        "elastic-ip",
        "eip/www-1",
        "allocationId",
    );
    let decoys = [vpc, group, eip];
    let before = moto().leftovers(&p.name);
    for d in &decoys {
        assert!(
            before.contains(d),
            "{d} not found as tagged for the project"
        );
    }

    let plan = p.heet(&["plan", "--env", "staging"]);
    for d in &decoys {
        assert!(!plan.ok().stdout().contains(d.as_str()), "{d} in the plan");
    }
    p.heet(&["up", "--env", "staging"]).ok();
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    let mut after = moto().leftovers(&p.name);
    after.sort();
    let mut expected = decoys.to_vec();
    expected.sort();
    assert_eq!(after, expected, "exactly the decoys are left");
}
