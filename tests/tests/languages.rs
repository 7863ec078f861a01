//! Plugins in JavaScript and Python, built from source by `heet plugins build` (jco with
//! QuickJS, componentize-py, both with stub WASI): the reference guard in JavaScript and
//! naming in Python run through the chain and the host's checks like the Rust ones, and the
//! sandbox holds them as it holds Rust: fuel stops a JavaScript loop, the memory cap a Python
//! allocation, and a component built without stub WASI is refused at load.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{Project, all_plugins_dir, heet_bin, repo_root};

const BASE: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2

[environments.staging]
"#;

fn with(extra: &str) -> String {
    BASE.replace("[defaults]", &format!("{extra}\n[defaults]"))
}

/// Builds the plugin folder `folder` (relative to the repository) into `out`.
fn build(folder: &str, out: &Path) -> PathBuf {
    let run = Command::new(heet_bin())
        .args(["plugins", "build", "--manifest-path"])
        .arg(repo_root().join(folder).join("heet-plugin.toml"))
        .arg("--out")
        .arg(out)
        .arg("--output")
        .arg("json")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{folder}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    PathBuf::from(report["built"][0]["path"].as_str().unwrap())
}

fn copy_in(p: &Project, file: &Path, name: &str) {
    let folder = p.path("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(file, folder.join(format!("{name}.wasm"))).unwrap();
    p.lock();
}

#[test]
fn the_javascript_guard_and_the_python_naming_plugin_answer_through_the_chain() {
    let built = all_plugins_dir();
    let p = Project::new(
        &with(
            "[plugins]\norder = [\"naming-py\", \"guard-js\"]\n[plugins.config.naming-py]\npattern = \"{env}-{role}-py{index:03}\"\n[plugins.config.guard-js]\nmax_count_per_role = 1\nrequire_tags = [\"owner\"]\n",
        ),
        &[],
    );
    copy_in(&p, &built.join("naming-py.wasm"), "naming-py");
    copy_in(&p, &built.join("guard-js.wasm"), "guard-js");

    let listed = p.heet(&["plugins", "list", "--output", "json"]).json();
    let hooks: Vec<(String, serde_json::Value)> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_owned(), i["hooks"].clone()))
        .collect();
    assert_eq!(
        hooks,
        [
            (
                "naming-py".to_owned(),
                serde_json::json!(["configure", "naming"])
            ),
            (
                "guard-js".to_owned(),
                serde_json::json!(["configure", "guard"])
            ),
        ]
    );

    // Two www instances without an owner tag: the JavaScript guard says both, exit 3.
    let denied = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(denied.code(), 3, "{}", denied.stderr());
    let err = denied.stderr();
    assert!(
        err.contains("max-count-per-role") && err.contains("2 instances, more than the 1 allowed"),
        "{err}"
    );
    assert!(err.contains("instances lack the tag \"owner\""), "{err}");

    // Within the policy, the Python plugin's names are the plan's.
    p.write(
        "heet.toml",
        &with(
            "[plugins]\norder = [\"naming-py\", \"guard-js\"]\n[plugins.config.naming-py]\npattern = \"{env}-{role}-py{index:03}\"\n[plugins.config.guard-js]\nmax_count_per_role = 2\n",
        ),
    );
    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    let names: Vec<&str> = plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["staging-www-py001", "staging-www-py002"]);

    // The host checks a Python answer as it checks a Rust one: an empty name is refused.
    p.write(
        "heet.toml",
        &with("[plugins.config.naming-py]\npattern = \"\"\n"),
    );
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("plugin naming-py: hook naming: invalid answer: empty name"),
        "{}",
        run.stderr()
    );

    // Each language's configure error is reported at the plugin's config, exit 2.
    for (config, says) in [
        (
            "[plugins.config.naming-py]\npattern = \"{env}-{nope}\"\n",
            "plugin naming-py rejected its config: unknown placeholder {nope}",
        ),
        (
            "[plugins.config.guard-js]\nmax_sizes = \"large\"\n",
            "plugin guard-js rejected its config: unknown field `max_sizes`",
        ),
    ] {
        p.write("heet.toml", &with(config));
        let run = p.heet(&["plan", "--env", "staging"]);
        assert_eq!(run.code(), 2, "{}", run.stderr());
        assert!(run.stderr().contains(says), "{says:?} in {}", run.stderr());
        assert!(run.stderr().contains("heet.toml:"), "{}", run.stderr());
    }
}

#[test]
fn the_sandbox_holds_javascript_and_python_as_it_holds_rust() {
    let out = tempfile::tempdir().unwrap();

    // A JavaScript loop that never ends: fuel stops it.
    let looping = build("tests/fixtures/js-loop", out.path());
    let p = Project::new(&with("[plugins.limits]\nfuel = 50_000_000\n"), &[]);
    copy_in(&p, &looping, "js-loop");
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "plugin js-loop: hook guard: ran out of fuel (50000000 units, plugins.limits.fuel)"
        ),
        "{}",
        run.stderr()
    );

    // A Python allocation of 512 MiB: the memory cap stops it.
    let hog = build("tests/fixtures/py-hog", out.path());
    let p = Project::new(&with("[plugins.limits]\nmemory_mb = 64\n"), &[]);
    copy_in(&p, &hog, "py-hog");
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("plugin py-hog: hook naming: tried to grow its memory to"),
        "{}",
        run.stderr()
    );

    // The JavaScript guard built without stub WASI imports WASI: refused at load, naming it.
    let jco = std::env::var_os("HEET_JCO").map_or_else(
        || {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap()
                .join(".cache/heet/jco/node_modules/.bin/jco")
        },
        PathBuf::from,
    );
    let wit = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("plugins/guard-js/wit/world.wit"),
        wit.path().join("world.wit"),
    )
    .unwrap();
    std::fs::create_dir_all(wit.path().join("deps/heet")).unwrap();
    std::fs::copy(
        repo_root().join("wit/heet.wit"),
        wit.path().join("deps/heet/heet.wit"),
    )
    .unwrap();
    let with_wasi = out.path().join("with-wasi.wasm");
    let made = Command::new(&jco)
        .arg("componentize")
        .arg(repo_root().join("plugins/guard-js/guard.js"))
        .arg("-w")
        .arg(wit.path())
        .args([
            "-n",
            "guard-plugin",
            "--backend",
            "qjs",
            "--backend-qjs-disable-async",
            "-o",
        ])
        .arg(&with_wasi)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let p = Project::new(BASE, &[]);
    copy_in(&p, &with_wasi, "with-wasi");
    let run = p.heet(&["plan", "--env", "staging"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("plugin with-wasi (plugins/with-wasi.wasm): imports wasi:"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("which heet does not provide"),
        "{}",
        run.stderr()
    );
}

#[test]
fn every_languages_scaffold_builds_and_passes_its_own_fixture_and_a_wrong_case_fails() {
    let root = tempfile::tempdir().unwrap();
    for lang in ["js", "python"] {
        let dir = root.path().join(format!("limit-{lang}"));
        let new = Command::new(heet_bin())
            .args([
                "plugins",
                "new",
                &format!("limit-{lang}"),
                "--lang",
                lang,
                "--path",
            ])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            new.status.success(),
            "{}",
            String::from_utf8_lossy(&new.stderr)
        );
        let test = |args: &[&str]| {
            Command::new(heet_bin())
                .args(["plugins", "test"])
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap()
        };
        let run = test(&[]);
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(
            run.status.success(),
            "{lang}: {out}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            out.contains("test result: ok. 3 passed; 0 failed"),
            "{lang}: {out}"
        );
        assert!(
            out.contains("tests/limits.toml: two instances are one too many ... ok"),
            "{lang}: {out}"
        );

        // A case that expects what the plugin does not do fails, named, exit 1, in JSON too.
        std::fs::write(
            dir.join("tests/wrong.toml"),
            "config = { max_instances = 3 }\n[[case]]\nname = \"three are too many\"\nhook = \"guard\"\ninstances = [{ role = \"www\", index = 1 }, { role = \"www\", index = 2 }, { role = \"db\", index = 1 }]\nexpect = { violations = [\"max-instances\"] }\n",
        )
        .unwrap();
        let component = dir.join("target/built.wasm");
        let build = Command::new(heet_bin())
            .args(["plugins", "build", "--out"])
            .arg(dir.join("target"))
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "{}",
            String::from_utf8_lossy(&build.stderr)
        );
        std::fs::rename(dir.join(format!("target/limit-{lang}.wasm")), &component).unwrap();
        let run = test(&[
            "--component",
            component.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(report["passed"], 3, "{report}");
        assert_eq!(report["failed"], 1, "{report}");
        let failed = report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["passed"] == false)
            .unwrap();
        assert_eq!(failed["name"], "three are too many");
        assert!(
            failed["failure"]
                .as_str()
                .unwrap()
                .contains("expected violations [\"max-instances\"], got []"),
            "{failed}"
        );
        assert!(
            String::from_utf8_lossy(&run.stderr).contains("1 of 4 plugin test case(s) failed"),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
