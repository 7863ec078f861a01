//! `cargo xtask bench [N...]`: heet against Terraform, Ansible and a minimal boto3 script on
//! the same estate and the same moto server, as ratios, into BENCHMARKS.md.
//!
//! Every tool talks to moto through a counting proxy (the test crate's fault proxy at 0 %
//! faults), so "AWS calls" is measured the same way for all. moto is reset between tools.
//! Wall time is the median of `HEET_BENCH_REPS` (default 3) repetitions; peak memory is the
//! tool process's maximum resident set (wait4), children included for the Python tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{cargo, root, run, setup, target_dir};

/// The operations measured, in the order each repetition runs them.
const OPS: [&str; 4] = ["up from empty", "no-op up", "plan (no changes)", "down"];

struct Measure {
    secs: f64,
    calls: u64,
    rss_mib: u64,
}

/// One tool: how to prepare its folder and run each operation.
struct Tool {
    name: &'static str,
    dir: PathBuf,
    /// The command of each of [`OPS`].
    commands: Vec<Command>,
}

fn measure(cmd: &mut Command, counts: &tests::fault::FaultCounts) -> anyhow::Result<Measure> {
    let before = counts.forwarded.load(Ordering::Relaxed);
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: waits for our own child, filling `status` and `usage`.
    let usage = unsafe {
        if libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) != pid {
            bail!("wait4 failed for {cmd:?}");
        }
        usage.assume_init()
    };
    let secs = started.elapsed().as_secs_f64();
    // `plan -detailed-exitcode` style exits are not failures here; anything else is.
    let code = libc::WEXITSTATUS(status);
    if !libc::WIFEXITED(status) || code != 0 {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            std::io::Read::read_to_string(&mut e, &mut err).ok();
        }
        bail!(
            "{cmd:?} exited {code}: {}",
            err.chars().take(2000).collect::<String>()
        );
    }
    Ok(Measure {
        secs,
        calls: counts.forwarded.load(Ordering::Relaxed) - before,
        rss_mib: (usage.ru_maxrss / 1024) as u64,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn with_aws(cmd: &mut Command, endpoint: &str) -> Command {
    let mut c = std::mem::replace(cmd, Command::new(""));
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE");
    c
}

fn heet_tool(base: &Path, heet: &Path, per_role: u32, endpoint: &str) -> anyhow::Result<Tool> {
    let dir = base.join("heet");
    std::fs::create_dir_all(&dir)?;
    let def = std::fs::read_to_string(root().join("xtask/bench/heet.toml"))?
        .replace("{count}", &per_role.to_string());
    std::fs::write(dir.join("heet.toml"), def)?;
    run(Command::new(heet)
        .args(["plugins", "build", "-p", "cname", "--out"])
        .arg(dir.join("plugins"))
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .stdout(std::process::Stdio::null()))?;
    run(Command::new(heet)
        .args(["plugins", "lock"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null()))?;
    let cmd = |args: &[&str]| {
        let mut c = Command::new(heet);
        c.args(args).current_dir(&dir);
        with_aws(&mut c, endpoint)
    };
    Ok(Tool {
        name: "heet",
        commands: vec![
            cmd(&["up", "--env", "bench", "--yes", "-q"]),
            cmd(&["up", "--env", "bench", "--yes", "-q"]),
            cmd(&["plan", "--env", "bench", "-q"]),
            cmd(&["down", "--env", "bench", "--yes", "-q"]),
        ],
        dir,
    })
}

fn boto3_tool(base: &Path, python: &Path, per_role: u32, endpoint: &str) -> Tool {
    let dir = base.join("boto3");
    let cmd = |action: &str| {
        let mut c = Command::new(python);
        c.arg(root().join("xtask/bench/minimal.py")).args([
            endpoint,
            &per_role.to_string(),
            "bench.heet.test",
            action,
        ]);
        with_aws(&mut c, endpoint)
    };
    Tool {
        name: "boto3 (minimal)",
        commands: vec![cmd("up"), cmd("noop"), cmd("noop"), cmd("down")],
        dir,
    }
}

/// Terraform with the AWS provider from the image's filesystem mirror, offline.
fn terraform_tool(base: &Path, per_role: u32, endpoint: &str) -> anyhow::Result<Option<Tool>> {
    let mirror = Path::new("/opt/tf-plugins");
    if Command::new("terraform").arg("version").output().is_err() || !mirror.is_dir() {
        eprintln!(
            "xtask: no terraform or no provider mirror in {}: skipping Terraform",
            mirror.display()
        );
        return Ok(None);
    }
    let dir = base.join("terraform");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(root().join("xtask/bench/main.tf"), dir.join("main.tf"))?;
    let rc = dir.join("terraformrc");
    std::fs::write(
        &rc,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n    include = [\"registry.terraform.io/*/*\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/*/*\"]\n  }}\n}}\n",
            mirror.display()
        ),
    )?;
    let vars = [
        format!("-var=endpoint={endpoint}"),
        format!("-var=per_role={per_role}"),
        "-var=domain=bench.heet.test".to_owned(),
    ];
    let cmd = |args: &[&str]| {
        let mut c = Command::new("terraform");
        c.args(args)
            .args(&vars)
            .current_dir(&dir)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1");
        c
    };
    let mut init = Command::new("terraform");
    run(init
        .args(["init", "-input=false", "-no-color"])
        .current_dir(&dir)
        .env("TF_CLI_CONFIG_FILE", &rc)
        .env("CHECKPOINT_DISABLE", "1")
        .stdout(std::process::Stdio::null()))?;
    Ok(Some(Tool {
        name: "Terraform 1.11 + AWS 5.100",
        commands: vec![
            cmd(&["apply", "-auto-approve", "-input=false", "-no-color"]),
            cmd(&["apply", "-auto-approve", "-input=false", "-no-color"]),
            cmd(&["plan", "-input=false", "-no-color"]),
            cmd(&["destroy", "-auto-approve", "-input=false", "-no-color"]),
        ],
        dir,
    }))
}

fn ansible_tool(base: &Path, venv: &Path, per_role: u32, endpoint: &str) -> Option<Tool> {
    let playbook = venv.join("bin/ansible-playbook");
    if !playbook.is_file() {
        eprintln!("xtask: no ansible in {}: skipping Ansible", venv.display());
        return None;
    }
    let dir = base.join("ansible");
    let cmd = |state: &str, check: bool| {
        let mut c = Command::new(&playbook);
        c.arg(root().join("xtask/bench/playbook.yml"))
            .arg("-e")
            .arg(format!(
                "endpoint={endpoint} per_role={per_role} domain=bench.heet.test state={state}"
            ))
            .env("ANSIBLE_PYTHON_INTERPRETER", venv.join("bin/python"))
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false");
        if check {
            c.arg("--check");
        }
        c
    };
    Some(Tool {
        name: "Ansible amazon.aws",
        commands: vec![
            cmd("present", false),
            cmd("present", false),
            cmd("present", true),
            cmd("absent", false),
        ],
        dir,
    })
}

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let sizes: Vec<u32> = if args.is_empty() {
        vec![10, 100, 300]
    } else {
        args.iter()
            .map(|a| a.parse().with_context(|| format!("not a size: {a}")))
            .collect::<anyhow::Result<_>>()?
    };
    let reps: usize = std::env::var("HEET_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let server = setup()?;
    let release = std::env::var("HEET_BENCH_PROFILE").as_deref() == Ok("release");
    let mut build = cargo();
    build.args(["build", "-q", "-p", "heet"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let heet = target_dir()?.join(if release {
        "release/heet"
    } else {
        "debug/heet"
    });
    let venv = tests::moto_venv().parent().unwrap().join("bench-venv");
    if !venv.join("bin/ansible-playbook").is_file() {
        eprintln!(
            "xtask: installing ansible and boto3 into {}",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "ansible>=10,<12",
            "boto3",
        ]))?;
    }
    let moto = tests::Moto::start(&server);
    let proxy = tests::fault::FaultProxy::start(&moto.endpoint, 0, 0);

    // (size, tool, op) → measures
    let mut results: BTreeMap<(u32, usize, usize), Vec<Measure>> = BTreeMap::new();
    let mut names = Vec::new();
    for &n in &sizes {
        let per_role = (n / 3).max(1);
        let base = tempfile_dir()?;
        let mut tools = vec![heet_tool(&base, &heet, per_role, &proxy.endpoint)?];
        tools.push(boto3_tool(
            &base,
            &venv.join("bin/python"),
            per_role,
            &proxy.endpoint,
        ));
        tools.extend(terraform_tool(&base, per_role, &proxy.endpoint)?);
        tools.extend(ansible_tool(&base, &venv, per_role, &proxy.endpoint));
        for (t, tool) in tools.iter_mut().enumerate() {
            if names.len() <= t {
                names.push(tool.name);
            }
            moto.reset();
            for rep in 0..reps {
                for (o, cmd) in tool.commands.iter_mut().enumerate() {
                    let m = measure(cmd, &proxy.counts)
                        .with_context(|| format!("{} {} at N={n}", tool.name, OPS[o]))?;
                    eprintln!(
                        "N={:<4} {:<28} {:<18} rep {rep}: {:>7.2} s {:>6} calls {:>5} MiB",
                        per_role * 3,
                        tool.name,
                        OPS[o],
                        m.secs,
                        m.calls,
                        m.rss_mib
                    );
                    results.entry((n, t, o)).or_default().push(m);
                }
            }
            let _ = std::fs::remove_dir_all(&tool.dir);
        }
    }

    let report = render(&sizes, &names, &results, reps, release);
    std::fs::write(root().join("BENCHMARKS.md"), &report)?;
    println!("{report}");
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("heet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn render(
    sizes: &[u32],
    names: &[&str],
    results: &BTreeMap<(u32, usize, usize), Vec<Measure>>,
    reps: usize,
    release: bool,
) -> String {
    let mut out = String::new();
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        out,
        "# Benchmarks\n\nheet against Terraform, Ansible and a minimal boto3 script, on the same estate (N\ninstances over 3 roles, two CNAMEs each, in a zone the tool creates) and the same moto\nserver, reset between tools. Generated by:\n\n```sh\nHEET_BENCH_REPS={reps}{} cargo xtask bench {}\n```\n\nMachine: {machine}, {cores} cores. heet {} build. Wall time is the median of {reps} runs; calls\nare counted by a proxy in front of moto, the same for every tool; memory is the peak\nresident set of the tool's process tree. Ratios are the peer's figure over heet's: above 1,\nheet is faster or makes fewer calls. Terraform and Ansible run from their own state or\ninventory as their users would (`plan` = `terraform plan`, `ansible-playbook --check`;\nthe boto3 script's plan is its read-only pass). The Ansible playbook's `down` terminates the\ninstances only (its records would need one task per record): it does less than the others.\n",
        if release {
            " HEET_BENCH_PROFILE=release"
        } else {
            ""
        },
        sizes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        if release {
            "release"
        } else {
            "debug (dev profile)"
        },
    );
    for &n in sizes {
        let per_role = (n / 3).max(1);
        let _ = writeln!(out, "\n## N = {} instances\n", per_role * 3);
        let _ = writeln!(
            out,
            "| operation | tool | wall (s) | × heet | AWS calls | × heet | peak MiB |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for (o, op) in OPS.iter().enumerate() {
            let Some(heet) = results.get(&(n, 0, o)) else {
                continue;
            };
            let heet_secs = median(heet.iter().map(|m| m.secs).collect());
            let heet_calls = heet[0].calls.max(1) as f64;
            for (t, name) in names.iter().enumerate() {
                let Some(ms) = results.get(&(n, t, o)) else {
                    continue;
                };
                let secs = median(ms.iter().map(|m| m.secs).collect());
                let calls = ms[0].calls;
                let rss = ms.iter().map(|m| m.rss_mib).max().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "| {op} | {name} | {secs:.2} | {:.1} | {calls} | {:.1} | {rss} |",
                    secs / heet_secs,
                    calls as f64 / heet_calls
                );
            }
        }
    }
    targets(&mut out, sizes, names, results);
    out
}

/// Where heet stands against the targets of the benchmark issue, at the largest N measured.
fn targets(
    out: &mut String,
    sizes: &[u32],
    names: &[&str],
    results: &BTreeMap<(u32, usize, usize), Vec<Measure>>,
) {
    let Some(&n) = sizes.iter().max() else {
        return;
    };
    let secs = |tool: usize, op: usize| {
        results
            .get(&(n, tool, op))
            .map(|ms| median(ms.iter().map(|m| m.secs).collect()))
    };
    let tool = |prefix: &str| names.iter().position(|t| t.starts_with(prefix));
    let _ = writeln!(
        out,
        "\n## Targets (N = {})\n\n| target | measured | met |\n|---|---|---|",
        (n / 3).max(1) * 3
    );
    let mut row = |target: &str, measured: Option<f64>, want: f64, unit: &str, above: bool| {
        let (text, met) = match measured {
            Some(m) => (
                format!("{m:.1}{unit}"),
                if (above && m >= want) || (!above && m <= want) {
                    "yes"
                } else {
                    "no"
                },
            ),
            None => ("not measured".to_owned(), "-"),
        };
        let _ = writeln!(out, "| {target} | {text} | {met} |");
    };
    let ratio = |peer: Option<usize>, op: usize| Some(secs(peer?, op)? / secs(0, op)?);
    row(
        "up ≥ 5× faster than Terraform",
        ratio(tool("Terraform"), 0),
        5.0,
        "×",
        true,
    );
    row(
        "no-op plan ≥ 20× faster than Terraform",
        ratio(tool("Terraform"), 2),
        20.0,
        "×",
        true,
    );
    row(
        "up ≥ 3× faster than Ansible",
        ratio(tool("Ansible"), 0),
        3.0,
        "×",
        true,
    );
    row(
        "up within 1.5× of the boto3 script (heet / boto3)",
        tool("boto3").and_then(|b| Some(secs(0, 0)? / secs(b, 0)?)),
        1.5,
        "×",
        false,
    );
    row(
        "≤ 6 AWS calls for a no-op up",
        results.get(&(n, 0, 1)).map(|ms| ms[0].calls as f64),
        6.0,
        " calls",
        false,
    );
    let _ = writeln!(
        out,
        "| < 2 µs per warm hook call | not measured here (plugin microbenchmarks) | - |"
    );
}
