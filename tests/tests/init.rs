//! `heet init`, as a newcomer meets it: in an empty folder it writes a heet.toml named after
//! the folder, in the AWS config's region, that plans against moto as written; it never
//! overwrites; and the naming plugin it leaves in plugins/naming builds, locks and names the
//! instances once its config is uncommented.

use std::path::Path;
use std::process::Command;

use tests::{heet_bin, heet_in, target_dir};

fn plan_names(dir: &Path) -> Vec<String> {
    let plan = heet_in(dir, &["plan", "--env", "staging", "--output", "json"]).json();
    plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn init_writes_a_project_that_plans_and_a_naming_plugin_that_builds() {
    // A fixed folder, so the plugin's build stays warm from one run to the next.
    let root = target_dir().join("heet-init-test");
    let dir = root.join("My Shop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let init = heet_in(&dir, &["init"]);
    let out = init.ok().stdout();
    assert!(
        out.contains("created my-shop in us-east-1")
            && out.contains("heet plan --env staging")
            && out.contains("heet plugins lock"),
        "{out}"
    );
    let toml = std::fs::read_to_string(dir.join("heet.toml")).unwrap();
    assert!(toml.contains("name = \"my-shop\""), "{toml}");
    assert!(toml.contains("region = \"us-east-1\"          # from your AWS config"));
    assert!(dir.join("plugins/naming/src/lib.rs").is_file());
    assert!(dir.join("plugins/naming/tests/names.toml").is_file());

    // As written, it plans against moto: one www, heet's default name, nothing else to do.
    assert_eq!(plan_names(&dir), ["my-shop-staging-www-01"]);

    // A second init refuses, and leaves heet.toml as it was.
    let again = heet_in(&dir, &["init", "--name", "other"]);
    assert_eq!(again.code(), 2, "{}", again.stderr());
    assert!(
        again.stderr().contains("never overwrites"),
        "{}",
        again.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("heet.toml")).unwrap(),
        toml
    );

    // The naming plugin, as the file says: build it into plugins/, lock, uncomment its config.
    let build = Command::new(heet_bin())
        .args(["plugins", "build", "--out", ".."])
        .current_dir(dir.join("plugins/naming"))
        .env("CARGO_TARGET_DIR", root.join("target"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(dir.join("plugins/naming.wasm").is_file());
    heet_in(&dir, &["plugins", "lock"]).ok();
    std::fs::write(
        dir.join("heet.toml"),
        toml.replace(
            "# [plugins.config.naming]\n# pattern",
            "[plugins.config.naming]\npattern",
        ),
    )
    .unwrap();
    assert_eq!(plan_names(&dir), ["staging-www-01"]);
}

#[test]
fn a_folder_without_a_usable_name_needs_one() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("___");
    std::fs::create_dir(&dir).unwrap();
    let run = heet_in(&dir, &["init"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("pass a project name with `heet init --name NAME`"),
        "{}",
        run.stderr()
    );
    assert!(!dir.join("heet.toml").exists());
    heet_in(&dir, &["init", "--name", "shop"]).ok();
    assert!(
        std::fs::read_to_string(dir.join("heet.toml"))
            .unwrap()
            .contains("name = \"shop\"")
    );
}
