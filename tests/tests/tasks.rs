//! `heet run` against moto through the AWS model (whose SSM Run Command keeps an invocation
//! unknown, then in progress, then done, and fails it on chosen instance types): a scenario's
//! steps are sent in order, each to heet's own running instances of its role by id (a
//! look-alike with the role's tags is never one of them), with the task's script, timeout,
//! directory and user; a failing step stops the scenario, names its instances with their exit
//! code and output, and exits 1 with the later steps unsent; `max_errors` lets a step take
//! failures; a scenario that succeeds leaves `heet:scenario/<name>` (time and version) on its
//! instances, which `status` shows per role and `up` leaves alone; unknown scenarios and
//! tasks, and an environment with nothing running, are clear errors; plugins shape each
//! role's task (variables and script) through the tasks hook, and an answer heet refuses
//! stops the run with nothing sent.

use tests::model::SentCommand;
use tests::{Project, moto, suite_model};

const DEF: &str = r#"
[project]
name = "{project}"
version = "1.4.2"

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2

[roles.db]
instance_type = "t3.small"

[environments.staging]

[tasks.www.site_down]
run = "touch /srv/maintenance"

[tasks.ALL.update]
run = "apt-get update -q\napt-get upgrade -y -q"

[tasks.db.migrate]
script = "migrate.sh"
timeout = "10m"
user = "app"
working_dir = "/srv/app"

[tasks.www.site_up]
run = "rm -f /srv/maintenance"

[scenarios.deploy]
steps = ["www.site_down", "ALL.update", { task = "db.migrate", max_concurrency = 1 }, "www.site_up"]

[scenarios.patch]
steps = [{ task = "ALL.update", max_errors = 1 }, "www.site_up"]
"#;

fn project() -> Project {
    let p = Project::new(DEF, &[]);
    p.write("migrate.sh", "./manage.py migrate --noinput\n");
    p
}

/// heet's instances of `role`, by index.
fn instances(p: &Project, role: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .filter(|i| i.tags.get("heet:role").map(String::as_str) == Some(role))
        .filter(|i| {
            i.tags
                .get("heet:id")
                .is_some_and(|id| id != "0000000000000000")
        })
        .map(|i| (i.tags["heet:index"].parse().unwrap(), i.id))
        .collect();
    found.sort();
    found.into_iter().map(|(_, id)| id).collect()
}

/// Each command sent as (instance ids, the script's role, its last line).
fn shapes(sent: &[SentCommand]) -> Vec<(Vec<String>, String, String)> {
    sent.iter()
        .map(|c| {
            // A task with a user gets its script quoted whole: unquote it first.
            let role = c.commands[0]
                .replace("'\\''", "'")
                .split("HEET_ROLE='")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap_or("?")
                .to_owned();
            let last = c.commands.last().cloned().unwrap_or_default();
            (c.instance_ids.clone(), role, last)
        })
        .collect()
}

#[test]
fn a_scenario_runs_each_step_in_order_on_heets_instances_of_its_role() {
    let p = project();
    p.heet(&["up", "--env", "staging"]).ok();
    let (www, db) = (instances(&p, "www"), instances(&p, "db"));
    assert_eq!((www.len(), db.len()), (2, 1));
    // A look-alike: www's tags, but not the id heet derives for its slot.
    let fake = moto().launch_foreign(&[
        ("heet:project", &p.name),
        ("heet:env", "staging"),
        ("heet:role", "www"),
        ("heet:index", "3"),
        ("heet:id", "0000000000000000"),
    ]);

    let report = p
        .heet(&["run", "deploy", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(report["status"], "succeeded", "{report}");
    let sent = p.aws.sent_commands();
    let all_www = || (www.clone(), "www".to_owned());
    let expected = [
        (all_www(), "touch /srv/maintenance"),
        ((db.clone(), "db".to_owned()), "apt-get upgrade -y -q"),
        (all_www(), "apt-get upgrade -y -q"),
        ((db.clone(), "db".to_owned()), ""),
        (all_www(), "rm -f /srv/maintenance"),
    ];
    let got = shapes(&sent);
    assert_eq!(got.len(), expected.len(), "{sent:#?}");
    for ((ids, role, last), ((want_ids, want_role), want_last)) in got.iter().zip(&expected) {
        assert_eq!((ids, role), (want_ids, want_role), "{sent:#?}");
        if !want_last.is_empty() {
            assert_eq!(last, want_last);
        }
    }
    assert!(
        sent.iter().all(|c| !c.instance_ids.contains(&fake)),
        "the look-alike is never a target"
    );
    // The migration runs as its user, in its folder, within its timeout, one at a time.
    let migrate = &sent[3];
    assert_eq!(migrate.commands.len(), 1);
    assert!(
        migrate.commands[0].starts_with("runuser -u app -- /bin/bash -c '")
            && migrate.commands[0].contains("./manage.py migrate --noinput"),
        "{}",
        migrate.commands[0]
    );
    assert_eq!(migrate.working_dir.as_deref(), Some("/srv/app"));
    assert_eq!(migrate.execution_timeout.as_deref(), Some("600"));
    assert_eq!(migrate.max_concurrency.as_deref(), Some("1"));
    assert_eq!(sent[0].execution_timeout.as_deref(), Some("3600"));
    assert!(
        sent[0].comment.contains("deploy: www.site_down"),
        "{}",
        sent[0].comment
    );

    let steps = report["steps"].as_array().unwrap();
    let summary: Vec<(String, String, usize)> = steps
        .iter()
        .map(|s| {
            (
                s["task"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
                s["invocations"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("www.site_down".to_owned(), "succeeded".to_owned(), 2),
            ("ALL.update".to_owned(), "succeeded".to_owned(), 3),
            ("db.migrate".to_owned(), "succeeded".to_owned(), 1),
            ("www.site_up".to_owned(), "succeeded".to_owned(), 2),
        ]
    );
    assert!(
        steps
            .iter()
            .flat_map(|s| s["invocations"].as_array().unwrap())
            .all(|i| i["status"] == "Success" && i["response_code"] == 0),
        "{report}"
    );

    // Every instance the scenario ran on says so, with the version; the look-alike does not.
    let mut stamp = None;
    for i in moto().live_instances("heet:project", &p.name) {
        let tag = i.tags.get("heet:scenario/deploy");
        if i.id == fake {
            assert_eq!(tag, None);
        } else {
            let v = tag.unwrap_or_else(|| panic!("{} has no heet:scenario/deploy", i.id));
            assert!(v.starts_with("20") && v.ends_with("Z 1.4.2"), "{v}");
            stamp = Some(v.clone());
        }
    }
    let stamp = stamp.unwrap();
    let status = p
        .heet(&["status", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(
        status["last_runs"],
        serde_json::json!([
            format!("db: deploy at {stamp}"),
            format!("www: deploy at {stamp}")
        ])
    );
    // Not heet's launch tags: nothing to undo.
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["plan"]);

    // One task alone, in text.
    let one = p.heet(&["run", "--task", "www.site_up", "--env", "staging"]);
    one.ok();
    assert!(
        one.stdout().starts_with(&format!(
            "task www.site_up on {}/staging: succeeded",
            p.name
        )),
        "{}",
        one.stdout()
    );
    let sent = p.aws.sent_commands();
    assert_eq!(sent.len(), 6);
    assert_eq!(sent[5].instance_ids, www);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    moto().terminate(&fake);
}

#[test]
fn a_failing_step_stops_the_scenario_and_names_its_instances() {
    let mut p = project();
    // Every command fails on db's instance type.
    p.use_model(suite_model().failing_commands("t3.small"));
    p.heet(&["up", "--env", "staging"]).ok();
    let db = instances(&p, "db");

    let run = p.heet(&["run", "deploy", "--env", "staging"]);
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout(), run.stderr());
    assert!(
        run.stderr().contains(
            "scenario deploy stopped at step 2 of 4 (ALL.update): 1 of 3 instance(s) failed"
        ),
        "{}",
        run.stderr()
    );
    let out = run.stdout();
    assert!(
        out.contains(&format!(
            "db[1] {}-staging-db-01 {}: Failed, exit 1",
            p.name, db[0]
        )) && out.contains(&format!("| the script failed on {}", db[0]))
            && out.contains("3/4 db.migrate: not run")
            && out.contains("4/4 www.site_up: not run"),
        "{out}"
    );
    // Nothing after the failed step was sent.
    let sent = p.aws.sent_commands();
    assert_eq!(sent.len(), 3, "{sent:#?}");
    assert!(sent.iter().all(|c| !c.commands.concat().contains("migrate")
        && !c.commands.concat().contains("rm -f /srv/maintenance")));

    // The same in JSON: every invocation, and the steps not run.
    let json = p.heet(&["run", "deploy", "--env", "staging", "--output", "json"]);
    assert_eq!(json.code(), 1);
    let report: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["steps"][1]["status"], "failed");
    let failed: Vec<&serde_json::Value> = report["steps"][1]["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] != "Success")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["instance_id"], db[0].as_str());
    assert_eq!(failed[0]["status"], "Failed");
    assert_eq!(failed[0]["response_code"], 1);
    assert_eq!(report["steps"][2]["status"], "not run");
    assert_eq!(report["steps"][3]["status"], "not run");

    // A step that may take one failure goes on.
    let patch = p
        .heet(&["run", "patch", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(patch["status"], "succeeded", "{patch}");
    assert_eq!(patch["steps"][1]["status"], "succeeded");
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}

#[test]
fn unknown_scenarios_and_tasks_and_nothing_running_are_clear_errors() {
    let p = project();
    let nope = p.heet(&["run", "nope", "--env", "staging"]);
    assert_eq!(nope.code(), 2);
    assert!(
        nope.stderr()
            .contains("there is no scenario \"nope\" (the scenarios are deploy, patch)"),
        "{}",
        nope.stderr()
    );
    let task = p.heet(&["run", "--task", "www.nope", "--env", "staging"]);
    assert_eq!(task.code(), 2);
    assert!(
        task.stderr().contains("there is no task \"www.nope\""),
        "{}",
        task.stderr()
    );
    let neither = p.heet(&["run", "--env", "staging"]);
    assert_eq!(neither.code(), 2, "{}", neither.stderr());
    // Nothing runs yet: the first step has no instance, and nothing is sent.
    let early = p.heet(&["run", "deploy", "--env", "staging"]);
    assert_eq!(early.code(), 1);
    assert!(
        early
            .stderr()
            .contains("step 1 (www.site_down): no running instance of role www"),
        "{}",
        early.stderr()
    );
    assert!(p.aws.sent_commands().is_empty());
}

/// Two tasks-only chain plugins: `a` everywhere, `b` granted db only; `b_extra` goes in b's
/// config.
fn shaping(b_extra: &str) -> String {
    format!(
        "{DEF}\n[plugins.config.a]\nmark = \"a\"\ntasks_only = true\n\
         [plugins.config.b]\nmark = \"b\"\ntasks_only = true\n{b_extra}\n\
         [plugins.grants.b]\n\
         hooks = [\"sizing\", \"naming\", \"tags\", \"cnames\", \"user-data\", \"guard\", \"tasks\"]\n\
         roles = [\"db\"]\n"
    )
}

#[test]
fn plugins_shape_each_roles_task_and_a_refused_answer_sends_nothing() {
    let p = Project::new(&shaping(""), &[]);
    p.write("migrate.sh", "./manage.py migrate --noinput\n");
    p.add_plugin("chain", "a");
    p.add_plugin("chain", "b");
    p.heet(&["up", "--env", "staging"]).ok();
    let (www, db) = (instances(&p, "www"), instances(&p, "db"));
    assert_eq!(
        (www.len(), db.len()),
        (2, 1),
        "tasks_only: sizing unchanged"
    );

    let report = p
        .heet(&["run", "deploy", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(report["status"], "succeeded", "{report}");
    let sent = p.aws.sent_commands();
    assert_eq!(sent.len(), 5, "{sent:#?}");
    // www.site_down: only a is granted www; its variable after heet's, its line after the
    // script.
    assert_eq!(sent[0].instance_ids, www);
    assert_eq!(
        sent[0].commands[1..],
        [
            "export HEET_SCENARIO='deploy'",
            "export CHAIN_A='www.site_down in staging saw 0 var(s)'",
            "touch /srv/maintenance",
            "# a deploy",
        ],
        "{sent:#?}"
    );
    // ALL.update on db: a, then b, which sees a's answer.
    assert_eq!(sent[1].instance_ids, db);
    assert_eq!(
        sent[1].commands[2..],
        [
            "export CHAIN_A='db.update in staging saw 0 var(s)'",
            "export CHAIN_B='db.update in staging saw 1 var(s)'",
            "apt-get update -q",
            "apt-get upgrade -y -q",
            "# a deploy",
            "# b deploy",
        ],
        "{sent:#?}"
    );
    // The same step on www: a only.
    assert_eq!(sent[2].instance_ids, www);
    assert!(!sent[2].commands.concat().contains("CHAIN_B"), "{sent:#?}");
    // A task with a user gets the plugins' variables inside its quoted script.
    assert!(
        sent[3].commands[0].contains("export CHAIN_B='\\''db.migrate in staging saw 1 var(s)'\\''"),
        "{}",
        sent[3].commands[0]
    );

    // b answers a variable of heet's: refused, naming plugin and hook, before anything is sent
    // (its step is the second, the first is a's alone).
    p.write("heet.toml", &shaping("task_var = \"HEET_ENV\""));
    let refused = p.heet(&["run", "deploy", "--env", "staging"]);
    assert_eq!(refused.code(), 1, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("plugin b: hook tasks: invalid answer: variable HEET_ENV is heet's"),
        "{}",
        refused.stderr()
    );
    assert_eq!(p.aws.sent_commands().len(), 5, "nothing more was sent");
    p.write("heet.toml", &shaping(""));
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
}
