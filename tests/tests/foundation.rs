//! The foundation end to end: plan → up → up → plan → down against moto, environments side
//! by side, the naming plugin's answer as the Name tag, and the errors users meet first.

use tests::{Project, moto};

const DEMO: &str = r##"
[project]
name = "{project}"

[plugins.config.naming]
pattern = "{env}-{role}-{index:02}"

[defaults]
ami = "ami-12c6146b"
instance_type = "t3.micro"

[roles.demo]
count = 1
user_data = "#!/bin/sh\necho role=demo\n"

[roles.www]
count = 2
instance_type = "t3.small"

[environments.staging]
[environments.production]
protected = true
"##;

fn without_naming_config(def: &str) -> String {
    let out = def.replace(
        "[plugins.config.naming]\npattern = \"{env}-{role}-{index:02}\"\n",
        "",
    );
    assert_ne!(out, def);
    out
}

#[test]
fn plan_up_up_plan_down_converges_and_cleans_up() {
    let p = Project::new(DEMO, &["naming"]);

    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let changes = plan["plan"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| c["action"] == "create"));
    assert_eq!(plan["aws_calls"]["mutating"], 0);

    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(up["applied"]["launched"].as_array().unwrap().len(), 3);
    // One RunInstances per role and launch settings: demo × 1 and www × 2.
    assert_eq!(up["aws_calls"]["operations"]["ec2:RunInstances"], 2);

    // Moto's own view: three live instances, named by the naming plugin, fully tagged.
    let live = moto().live_instances("heet:project", &p.name);
    assert_eq!(live.len(), 3);
    let mut names: Vec<&str> = live.iter().map(|i| i.tags["Name"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["staging-demo-01", "staging-www-01", "staging-www-02"]
    );
    for i in &live {
        assert_eq!(i.tags["heet:env"], "staging");
        for key in ["heet:role", "heet:index", "heet:id", "heet:spec"] {
            assert!(
                i.tags.contains_key(key),
                "{} lacks {key}: {:?}",
                i.id,
                i.tags
            );
        }
    }
    let demo = live.iter().find(|i| i.tags["heet:role"] == "demo").unwrap();
    assert_eq!(demo.instance_type, "t3.micro");
    assert_eq!(moto().user_data(&demo.id), "#!/bin/sh\necho role=demo\n");
    assert!(
        live.iter()
            .filter(|i| i.tags["heet:role"] == "www")
            .all(|i| i.instance_type == "t3.small")
    );

    // The second up changes nothing and makes no mutating call.
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["plan"]["changes"].as_array().unwrap().len(), 0);
    assert_eq!(again["plan"]["unchanged"], 3);
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["aws_calls"]);
    assert!(again["applied"].is_null());
    let text = p.heet(&["up", "--env", "staging"]);
    assert!(
        text.ok().stdout().starts_with("no changes:"),
        "{}",
        text.stdout()
    );

    let plan = p.heet(&["plan", "--env", "staging", "--detailed-exitcode"]);
    assert_eq!(plan.code(), 0, "{}", plan.stderr());
    assert!(plan.stdout().contains("no changes"));

    let down = p
        .heet(&["down", "--env", "staging", "--yes", "--output", "json"])
        .json();
    assert_eq!(down["terminated"].as_array().unwrap().len(), 3);
    assert!(moto().live_instances("heet:project", &p.name).is_empty());

    // And down again has nothing left to do.
    let again = p.heet(&["down", "--env", "staging", "--yes"]);
    assert!(
        again.ok().stdout().starts_with("nothing to delete"),
        "{}",
        again.stdout()
    );
}

#[test]
fn environments_side_by_side_never_see_each_other() {
    let p = Project::new(DEMO, &["naming"]);
    p.heet(&["up", "--env", "staging"]).ok();
    p.heet(&["up", "--env", "production", "--yes"]).ok();

    let staging = moto().live_instances("heet:env", "staging");
    let production = moto().live_instances("heet:env", "production");
    let ours = |v: &Vec<tests::MotoInstance>| {
        v.iter()
            .filter(|i| i.tags["heet:project"] == p.name)
            .count()
    };
    assert_eq!((ours(&staging), ours(&production)), (3, 3));

    // Each environment's plan sees only its own instances: no change either side.
    for env in ["staging", "production"] {
        let plan = p.heet(&["plan", "--env", env, "--output", "json"]).json();
        assert_eq!(
            plan["plan"]["changes"].as_array().unwrap().len(),
            0,
            "{env}: {}",
            plan["plan"]
        );
        assert_eq!(plan["plan"]["unchanged"], 3);
        assert_eq!(plan["plan"]["foreign"].as_array().unwrap().len(), 0);
    }

    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    let left = moto().live_instances("heet:project", &p.name);
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|i| i.tags["heet:env"] == "production"));
    p.heet(&["down", "--env", "production", "--yes"]).ok();
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}

#[test]
fn the_naming_plugins_answer_is_the_name_tag() {
    let def = DEMO.replace(
        "{env}-{role}-{index:02}",
        "{project}-{role}-n{index:03}-of-{count}",
    );
    let p = Project::new(&def, &["naming"]);
    p.heet(&["up", "--env", "staging"]).ok();
    let mut names: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.tags["Name"].clone())
        .collect();
    names.sort();
    let n = &p.name;
    assert_eq!(
        names,
        [
            format!("{n}-demo-n001-of-1"),
            format!("{n}-www-n001-of-2"),
            format!("{n}-www-n002-of-2")
        ]
    );

    // Without the plugin, heet's default name applies, and an up retags in place.
    std::fs::remove_file(p.dir.path().join("plugins/naming.wasm")).unwrap();
    p.lock();
    p.write("heet.toml", &without_naming_config(DEMO));
    let up = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    let ops = &up["aws_calls"]["operations"];
    assert_eq!(ops["ec2:CreateTags"], 3, "{ops}");
    assert!(
        ops.get("ec2:RunInstances").is_none() && ops.get("ec2:TerminateInstances").is_none(),
        "{ops}"
    );
    let live = moto().live_instances("heet:project", &p.name);
    assert!(
        live.iter()
            .any(|i| i.tags["Name"] == format!("{n}-staging-www-02"))
    );
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

#[test]
fn down_leaves_look_alikes_and_refuses_without_yes_off_a_terminal() {
    let p = Project::new(DEMO, &["naming"]);
    p.heet(&["up", "--env", "staging"]).ok();
    // Someone else's instance with heet-looking tags but no id heet derived.
    let decoy = moto().launch_foreign(&[
        ("heet:project", &p.name),
        ("heet:env", "staging"),
        ("heet:role", "www"),
        ("heet:index", "1"),
        ("heet:id", "0123456789abcdef"),
        ("Name", "staging-www-01"),
    ]);

    let refused = p.heet(&["down", "--env", "staging"]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("refusing without --yes"),
        "{}",
        refused.stderr()
    );
    assert_eq!(
        moto().live_instances("heet:project", &p.name).len(),
        4,
        "nothing terminated"
    );

    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(plan["plan"]["foreign"], serde_json::json!([decoy]));
    assert_eq!(
        plan["plan"]["changes"].as_array().unwrap().len(),
        0,
        "the decoy is no twin"
    );

    let down = p.heet(&["down", "--env", "staging", "--yes"]);
    assert!(down.ok().stdout().contains(&format!(
        "left alone (tagged for {}/staging but not created by heet): {decoy}",
        p.name
    )));
    let left = moto().live_instances("heet:project", &p.name);
    assert_eq!(
        left.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [decoy.as_str()]
    );
}

#[test]
fn a_trapping_plugin_is_named_and_nothing_is_created() {
    let p = Project::new(&without_naming_config(DEMO), &["trap"]);
    for args in [
        &["plan", "--env", "staging"][..],
        &["up", "--env", "staging", "--yes"],
    ] {
        let run = p.heet(args);
        assert_eq!(run.code(), 1, "{}", run.stderr());
        let err = run.stderr();
        assert!(
            err.contains("error: plugin trap: hook naming: panicked at")
                && err.contains("no name for role demo"),
            "{err}"
        );
    }
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}

/// Runs `up` with the trap fixture in `mode` under `limits`; returns stderr after checking the
/// run failed with code 1 and created nothing.
fn trapped_up(mode: &str, limits: &str) -> String {
    let def = without_naming_config(DEMO).replace(
        "[defaults]",
        &format!(
            "[plugins.config.trap]\nmode = \"{mode}\"\n[plugins.limits]\n{limits}\n\n[defaults]"
        ),
    );
    let p = Project::new(&def, &["trap"]);
    let started = std::time::Instant::now();
    let run = p.heet(&["up", "--env", "staging", "--yes"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "limits must stop it quickly"
    );
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    run.stderr()
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let err = trapped_up("spin", "fuel = 1_000_000");
    assert!(
        err.contains(
            "error: plugin trap: hook naming: ran out of fuel (1000000 units, plugins.limits.fuel)"
        ),
        "{err}"
    );
}

#[test]
fn an_endless_loop_with_plenty_of_fuel_hits_the_deadline() {
    let err = trapped_up("spin", "fuel = 100_000_000_000\ntimeout_ms = 200");
    assert!(err.contains("error: plugin trap: hook naming: did not finish within 200 ms (plugins.limits.timeout_ms)"), "{err}");
}

#[test]
fn a_huge_allocation_hits_the_memory_cap() {
    let err = trapped_up("alloc", "memory_mb = 16");
    assert!(
        err.contains("error: plugin trap: hook naming: tried to grow its memory to"),
        "{err}"
    );
    assert!(
        err.contains("over its limit of 16 MiB (plugins.limits.memory_mb)"),
        "{err}"
    );
}

#[test]
fn definition_and_usage_errors_exit_2_with_a_place() {
    let p = Project::new(DEMO, &[]);
    let missing = p.heet(&["plan", "--env", "staging", "-f", "nope.toml"]);
    assert_eq!(missing.code(), 2);
    assert!(
        missing
            .stderr()
            .starts_with("error: nope.toml: cannot read the definition:"),
        "{}",
        missing.stderr()
    );

    p.write("bad.toml", "[project]\nname = \"x\"\nregion = \n");
    let bad = p.heet(&["plan", "--env", "staging", "-f", "bad.toml"]);
    assert_eq!(bad.code(), 2);
    assert!(
        bad.stderr().starts_with("error: bad.toml:3:10: "),
        "{}",
        bad.stderr()
    );

    p.write("typo.toml", &DEMO.replace("count = 2", "cuont = 2"));
    let typo = p.heet(&["up", "--env", "staging", "-f", "typo.toml"]);
    assert_eq!(typo.code(), 2);
    assert!(
        typo.stderr()
            .starts_with("error: typo.toml:17:1: unknown field `cuont`"),
        "{}",
        typo.stderr()
    );

    let bad_env = p.heet(&["up", "--env", "stag;ing"]);
    assert_eq!(bad_env.code(), 2);
    assert!(
        bad_env
            .stderr()
            .contains("invalid env name \"stag;ing\": character ';' is not allowed"),
        "{}",
        bad_env.stderr()
    );

    let undefined = p.heet(&["up", "--env", "qa"]);
    assert_eq!(undefined.code(), 2);
    assert!(
        undefined
            .stderr()
            .contains("environment \"qa\" is not defined (defined: production, staging)"),
        "{}",
        undefined.stderr()
    );

    p.write(
        "cfg.toml",
        &DEMO.replace("[plugins.config.naming]", "[plugins.config.nmaing]"),
    );
    let typo = p.heet(&["plan", "--env", "staging", "-f", "cfg.toml"]);
    assert_eq!(typo.code(), 2);
    assert!(
        typo.stderr()
            .contains("cfg.toml:5:17: plugins.config.nmaing: no plugin \"nmaing\""),
        "{}",
        typo.stderr()
    );

    assert!(moto().live_instances("heet:project", &p.name).is_empty());
}

#[test]
fn detailed_exitcode_reports_pending_changes() {
    let p = Project::new(DEMO, &["naming"]);
    let run = p.heet(&["plan", "--env", "staging", "--detailed-exitcode"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stdout()
            .starts_with(&format!("plan for {}/staging: 3 to create", p.name)),
        "{}",
        run.stdout()
    );
}

#[test]
fn plugins_list_shows_hooks_and_hash() {
    let p = Project::new(DEMO, &["naming", "trap"]);
    let list = p.heet(&["plugins", "list", "--output", "json"]).json();
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2);
    assert_eq!(plugins[0]["name"], "naming");
    assert_eq!(
        plugins[0]["hooks"],
        serde_json::json!(["configure", "naming"])
    );
    assert_eq!(plugins[0]["wit"], serde_json::json!(["0.1.2"]));
    assert_eq!(
        plugins[1]["hooks"],
        serde_json::json!(["configure", "naming"])
    );
    let bytes = std::fs::read(p.dir.path().join("plugins/naming.wasm")).unwrap();
    let sha = plugins[0]["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    // Not hard-coded: the listed hash must change when the bytes do.
    std::fs::write(
        p.dir.path().join("plugins/naming.wasm"),
        [&bytes[..], b"\0"].concat(),
    )
    .unwrap();
    let changed = p.heet(&["plugins", "list", "--output", "json"]);
    assert_ne!(
        changed.code(),
        0,
        "a component with trailing junk must be refused"
    );
    assert!(
        changed.stderr().contains("plugin naming"),
        "{}",
        changed.stderr()
    );
}

#[test]
fn compiled_plugins_are_cached_by_hash_and_a_corrupt_entry_is_recompiled() {
    let p = Project::new(DEMO, &["naming"]);
    let cache = p.dir.path().join("cache");
    let cache_env = [("HEET_CACHE_DIR", cache.to_str().unwrap())];
    let list = p
        .heet_with(&["plugins", "list", "--output", "json"], &cache_env)
        .json();
    let sha = list["plugins"][0]["sha256"].as_str().unwrap().to_owned();
    let entries: Vec<_> = std::fs::read_dir(cache.join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert!(
        entry
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{sha}-")),
        "{entry:?}"
    );

    std::fs::write(entry, b"not a compiled component").unwrap();
    let up = p
        .heet_with(&["up", "--env", "staging", "--output", "json"], &cache_env)
        .json();
    assert_eq!(up["applied"]["launched"].as_array().unwrap().len(), 3);
    assert!(
        std::fs::metadata(entry).unwrap().len() > 1000,
        "the corrupt entry was replaced"
    );
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

#[test]
fn endpoint_url_flag_wins_over_the_environment() {
    let p = Project::new(DEMO, &["naming"]);
    let dead = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9")];
    let refused = p.heet_with(&["plan", "--env", "staging"], &dead);
    assert_eq!(refused.code(), 2);
    assert!(
        refused
            .stderr()
            .contains("error: cannot reach AWS at http://127.0.0.1:9: "),
        "{}",
        refused.stderr()
    );
    let flag = p.heet_with(
        &[
            "plan",
            "--env",
            "staging",
            "--endpoint-url",
            &moto().endpoint,
        ],
        &dead,
    );
    assert!(
        flag.ok().stdout().contains("3 to create"),
        "{}",
        flag.stdout()
    );
}

#[test]
fn lowering_a_count_deletes_only_after_consent() {
    let p = Project::new(DEMO, &["naming"]);
    p.heet(&["up", "--env", "staging"]).ok();
    p.write("heet.toml", &DEMO.replace("count = 2", "count = 1"));

    let refused = p.heet(&["up", "--env", "staging"]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("this terminates 1 instance(s)"),
        "{}",
        refused.stderr()
    );
    assert_eq!(
        moto().live_instances("heet:project", &p.name).len(),
        3,
        "nothing was terminated"
    );

    let up = p
        .heet(&["up", "--env", "staging", "--yes", "--output", "json"])
        .json();
    let changes = up["plan"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["action"], "delete");
    assert_eq!(changes[0]["name"], "staging-www-02");
    let names: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.tags["Name"].clone())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(!names.contains(&"staging-www-02".to_owned()), "{names:?}");
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

#[test]
fn guard_violations_exit_3_all_printed_nothing_created() {
    let def = DEMO.replace(
        "[defaults]",
        "[plugins.config.guard]\nmax_count_per_role = 1\nmax_size = \"micro\"\nrequire_tags = [\"owner\"]\n\n[defaults]",
    );
    let p = Project::new(&def, &["naming", "guard"]);
    for args in [
        &["plan", "--env", "staging"][..],
        &["up", "--env", "staging", "--yes"],
    ] {
        let run = p.heet(args);
        assert_eq!(run.code(), 3, "{}", run.stderr());
        assert!(
            run.stderr().contains(
                "error: policy denied the plan (4 violation(s))\n  \
                 plugin guard: max-count-per-role: 2 instances, more than the 1 allowed (role www)\n  \
                 plugin guard: max-size: t3.small is bigger than micro (role www)\n  \
                 plugin guard: require-tags: instances lack the tag \"owner\" (role demo)\n  \
                 plugin guard: require-tags: instances lack the tag \"owner\" (role www)"
            ),
            "{}",
            run.stderr()
        );
    }
    assert!(moto().live_instances("heet:project", &p.name).is_empty());

    // Within policy, the same plugin lets the plan through.
    p.write(
        "heet.toml",
        &DEMO.replace(
            "[defaults]",
            "[plugins.config.guard]\nmax_count_per_role = 2\n\n[defaults]",
        ),
    );
    let plan = p.heet(&["plan", "--env", "staging"]);
    assert!(
        plan.ok().stdout().contains("3 to create"),
        "{}",
        plan.stdout()
    );
}

/// `heet plan` in a clean environment: an empty HOME and only what is given in `env`.
fn plan_bare(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    std::fs::write(
        dir.path().join("heet.toml"),
        "[project]\nname = \"shop\"\nregion = \"eu-west-1\"\n[defaults]\nami = \"ami-12c6146b\"\n[roles.www]\n[environments.staging]\n",
    )
    .unwrap();
    let out = std::process::Command::new(tests::heet_bin())
        .args(["plan", "--env", "staging"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", dir.path().join("home"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_aws_set_up_is_one_line_saying_what_to_do() {
    let (code, err) = plan_bare(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.lines().count() <= 3, "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        line.contains("no AWS credentials")
            && line.contains("AWS_PROFILE")
            && line.contains("AWS_ACCESS_KEY_ID")
            && line.contains("--endpoint-url"),
        "{err}"
    );

    // An endpoint nothing listens on: a port just taken and given back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let (code, err) = plan_bare(&[
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", &endpoint),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: cannot reach AWS at {endpoint}: "))
            && err.contains("connection refused"),
        "{err}"
    );
    // Not retried: a refused connection does not come back within a backoff.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
