//! Project automation: `cargo xtask setup | demo [EXAMPLE] | test`.
//!
//! Everything a fresh machine needs is installed here, by the project itself: the wasm target,
//! moto's server in a venv under ~/.cache/heet, the JavaScript and Python component toolchains
//! (npm's jco, PyPI's componentize-py) beside it, and Debian's docker-registry (the loopback
//! OCI registry of the plugin-sharing tests). Nothing relies on a hand-installed tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

mod bench;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const MOTO_SPEC: &str = "moto[server]>=5.1,<6";
/// The component toolchains of JavaScript and Python plugins (docs/plugins.md).
const JCO_SPEC: &str = "@bytecodealliance/jco@1.35.0";
const COMPONENTIZE_PY_SPEC: &str = "componentize-py==0.25.1";

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "setup" => setup().map(drop),
        "demo" => demo(std::env::args().nth(2).as_deref().unwrap_or("simple-demo")),
        "test" => test(),
        "bench" => bench::bench(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  setup  install the wasm target, moto's server, jco and componentize-py (under ~/.cache/heet)\n         and docker-registry\n  demo [EXAMPLE]  set up, then run `heet up` on examples/EXAMPLE (simple-demo, stack-demo,\n                 balancer-demo, webapp, customers)\n                 against a local moto server\n  test   set up, then run every test of the workspace\n  bench [N...]  heet vs Terraform, Ansible and boto3 on moto (N instances, default 30 102 300),\n                 into BENCHMARKS.md\n  bench kinds   heet's up, no-op up and down of a network and IAM estate under the AWS model\n  bench rollout  a rolling replacement of 8 instances under the AWS model, against its bound\n  bench plugins  the plugin microbenchmarks alone (Rust, JavaScript, Python), into their section"
            );
            if task.is_empty() {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Installs what the tests and the demo need; returns the `moto_server` to run.
fn setup() -> anyhow::Result<PathBuf> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm target")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l == WASM_TARGET)
    {
        eprintln!("xtask: adding the {WASM_TARGET} target");
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }

    let venv = tests::moto_venv();
    let server = venv.join("bin/moto_server");
    if !server.is_file() {
        eprintln!("xtask: installing {MOTO_SPEC} into {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", MOTO_SPEC]))?;
    }

    // Where heet looks for them (plugins/languages.rs): ~/.cache/heet/{jco,py-venv}.
    let cache = venv.parent().unwrap().to_owned();
    let jco = cache.join("jco");
    if !jco.join("node_modules/.bin/jco").is_file() {
        eprintln!("xtask: installing {JCO_SPEC} into {}", jco.display());
        std::fs::create_dir_all(&jco)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&jco)
            .arg(JCO_SPEC))?;
    }
    let py = cache.join("py-venv");
    if !py.join("bin/componentize-py").is_file() {
        eprintln!(
            "xtask: installing {COMPONENTIZE_PY_SPEC} into {}",
            py.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&py))?;
        run(Command::new(py.join("bin/pip")).args(["install", "--quiet", COMPONENTIZE_PY_SPEC]))?;
    }

    if Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("xtask: installing Debian's docker-registry (the plugin tests' OCI registry)");
        // apt-get needs root: as another user, sudo without a prompt (CI's), else say what
        // to run rather than fail inside apt-get.
        let root_user = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let sudo = !root_user
            && Command::new("sudo")
                .args(["-n", "true"])
                .status()
                .is_ok_and(|s| s.success());
        if !root_user && !sudo {
            bail!(
                "docker-registry is not installed and installing it needs root: run `sudo apt-get install -y docker-registry`, then `cargo xtask setup` again"
            );
        }
        let apt = |args: &[&str]| {
            let mut c = if sudo {
                let mut c = Command::new("sudo");
                c.args(["-n", "--preserve-env=DEBIAN_FRONTEND", "apt-get"]);
                c
            } else {
                Command::new("apt-get")
            };
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        if run(&mut apt(&["install", "-y", "-qq", "docker-registry"])).is_err() {
            run(&mut apt(&["update", "-qq"]))?;
            run(&mut apt(&["install", "-y", "-qq", "docker-registry"]))?;
        }
    }
    Ok(server)
}

/// The examples and the reference plugins each one uses.
const EXAMPLES: [(&str, &[&str]); 5] = [
    ("simple-demo", &["naming"]),
    ("stack-demo", &["naming", "tags", "cname"]),
    ("balancer-demo", &["cname"]),
    ("webapp", &tests::WEBAPP_PLUGINS),
    ("customers", &tests::CUSTOMERS_PLUGINS),
];

/// The projects of the customers example, one folder each, sharing `../plugins`.
const CUSTOMERS: [&str; 2] = ["acme", "globex"];

fn demo(name: &str) -> anyhow::Result<()> {
    let Some((_, plugins)) = EXAMPLES.iter().find(|(n, _)| *n == name) else {
        bail!(
            "no example {name:?}: try simple-demo, stack-demo, balancer-demo, webapp or customers"
        );
    };
    let server = setup()?;
    run(cargo().args(["build", "-q", "-p", "heet"]))?;
    let target = target_dir()?;
    let heet = target.join("debug/heet");
    let example = root().join("examples").join(name);
    let mut build = Command::new(&heet);
    build
        .args(["plugins", "build", "--out"])
        .arg(example.join("plugins"))
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"));
    for p in *plugins {
        build.args(["-p", p]);
    }
    run(&mut build)?;

    let moto = tests::Moto::start(&server);
    // In front of moto, AWS as it behaves: throttling, pending instances, eventual
    // consistency (tests/src/model.rs).
    let aws = tests::model::Model::aws().start(&moto.endpoint);
    eprintln!(
        "xtask: moto server on {}, the AWS model in front of it on {}",
        moto.endpoint, aws.endpoint
    );
    let heet_in = |dir: &Path, args: &[&str]| {
        eprintln!(
            "\n{}$ heet {}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
        let mut cmd = Command::new(&heet);
        cmd.args(args)
            .current_dir(dir)
            .env("AWS_ENDPOINT_URL", &aws.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
        run(&mut cmd)
    };
    if name == "customers" {
        // Each customer pins the shared plugins itself, and comes up in dev and prod.
        for customer in CUSTOMERS {
            let dir = example.join(customer);
            heet_in(&dir, &["plugins", "lock"])?;
            heet_in(
                &dir,
                &[
                    "config",
                    "set",
                    "DATABASE_URL",
                    &format!("postgres://{customer}:s3cret@db/{customer}"),
                    "--secret",
                    "--env",
                    "prod",
                ],
            )?;
            heet_in(&dir, &["config", "list", "--env", "prod"])?;
            heet_in(&dir, &["up", "--env", "dev", "--stats"])?;
            heet_in(&dir, &["up", "--env", "prod", "--stats"])?;
        }
        for customer in CUSTOMERS {
            heet_in(&example.join(customer), &["inventory", "--env", "prod"])?;
        }
        heet_in(
            &example.join("globex"),
            &["hosts", "--env", "prod", "--role", "www"],
        )?;
        // The deploy user's access key: its id and its secret kept in config, the secret
        // shown only as one.
        heet_in(&example.join("acme"), &["config", "list", "--env", "prod"])?;
        heet_in(&example.join("acme"), &["up", "--env", "prod", "--stats"])?;
        for customer in CUSTOMERS {
            let dir = example.join(customer);
            for env in ["dev", "prod"] {
                heet_in(&dir, &["down", "--env", env, "--yes"])?;
            }
            heet_in(&dir, &["config", "unset", "DATABASE_URL", "--env", "prod"])?;
        }
        return Ok(());
    }
    if name == "stack-demo" || name == "balancer-demo" {
        // In a scratch copy: the demo changes the definition (the template, the instance
        // type) between two `up`s.
        let scratch = tempfile::tempdir()?;
        copy_dir(&example, scratch.path())?;
        let heet_here = |args: &[&str]| heet_in(scratch.path(), args);
        heet_here(&["plugins", "lock"])?;
        heet_here(&["plan", "--env", "staging"])?;
        heet_here(&["up", "--env", "staging", "--stats"])?;
        heet_here(&["up", "--env", "staging", "--stats"])?;
        if name == "stack-demo" {
            eprintln!("\nxtask: net.yaml becomes net-with-admin.yaml (one group more)");
            std::fs::copy(
                scratch.path().join("net-with-admin.yaml"),
                scratch.path().join("net.yaml"),
            )?;
        } else {
            eprintln!(
                "\nxtask: instance_type becomes t3.small: the role rolls behind its balancer"
            );
            let toml = scratch.path().join("heet.toml");
            let text = std::fs::read_to_string(&toml)?;
            std::fs::write(
                &toml,
                text.replace(
                    "instance_type = \"t3.micro\"",
                    "instance_type = \"t3.small\"",
                ),
            )?;
        }
        heet_here(&["plan", "--env", "staging"])?;
        heet_here(&["up", "--env", "staging", "--yes", "--stats"])?;
        heet_here(&["down", "--env", "staging", "--yes"])?;
        return Ok(());
    }
    let heet_in_example = |args: &[&str]| heet_in(&example, args);
    // The plugins were just built from this checkout's sources: pinning them is the review.
    heet_in_example(&["plugins", "lock"])?;
    heet_in_example(&["plugins", "list"])?;
    heet_in_example(&["plan", "--env", "production"])?;
    heet_in_example(&["plan", "--env", "staging"])?;
    heet_in_example(&["up", "--env", "staging", "--stats"])?;
    heet_in_example(&["up", "--env", "staging", "--stats"])?;
    if name == "webapp" {
        // Knitting's deploy, step by step on the instances (SSM Run Command).
        heet_in_example(&["run", "deploy", "--env", "staging"])?;
    }
    heet_in_example(&["down", "--env", "staging", "--yes"])?;
    Ok(())
}

/// Copies the files of `from` (and its folders', recursively) into `to`.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn target_dir() -> anyhow::Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

fn test() -> anyhow::Result<()> {
    let server = setup()?;
    run(cargo()
        .args(["test", "--workspace"])
        .env("HEET_MOTO_SERVER", &server))
}
