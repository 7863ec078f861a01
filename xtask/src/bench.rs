//! `cargo xtask bench [N...]`: heet against Terraform, Ansible and a minimal boto3 script on
//! the same estate and the same moto server, as ratios, into BENCHMARKS.md.
//!
//! Every tool talks to moto through the AWS model (`tests/src/model.rs`): `raw` (moto as it
//! is, the model only counting) and `aws` (AWS's documented throttling, pending instances,
//! eventual consistency, latency), each a table of its own; `HEET_BENCH_MODEL` picks them
//! (default `raw,aws`). Under `aws`, each operation also gets its bound: the shortest time any
//! client could take there (see [`bound`]), and each tool its ratio to it. moto and the
//! model are reset before each repetition. Results are kept in `<target>/heet-bench.json`;
//! `HEET_BENCH_MERGE=1` adds a run's measures to them (replacing those of the same model, N
//! and tool), so the slow peers can be measured at a size on their own
//! (`HEET_BENCH_TOOLS=terraform`). Wall time is the median of `HEET_BENCH_REPS` (default 3)
//! repetitions, or of `HEET_BENCH_PEER_REPS` for Terraform and Ansible, whose runs take
//! minutes at N = 300; peak memory is the tool process's maximum resident set (wait4),
//! children included for the Python tools. Then the plugin microbenchmarks (criterion,
//! `host/benches/plugins.rs`) run, and their medians go into the same file.
//! `HEET_BENCH_MICRO=0` skips them.
//!
//! `cargo xtask bench kinds` and `cargo xtask bench rollout` measure one estate each (see
//! [`kinds`], [`rollout`]); the rollout's section of BENCHMARKS.md is kept when the main
//! tables are written again. `cargo xtask bench plugins` runs the microbenchmarks alone and
//! rewrites only their section (and the warm-call target).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use tests::model::Model;

use crate::{cargo, root, run, setup, target_dir};

/// The operations measured, in the order each repetition runs them.
const OPS: [&str; 4] = ["up from empty", "no-op up", "plan (no changes)", "down"];

#[derive(Clone, Serialize, Deserialize)]
struct Measure {
    secs: f64,
    calls: u64,
    #[serde(default)]
    throttled: u64,
    rss_mib: u64,
    /// moto's service time per operation in this command: (shortest, longest) in seconds.
    #[serde(default)]
    service: BTreeMap<String, (f64, f64)>,
}

/// One tool: how to prepare its folder and run each operation.
struct Tool {
    name: &'static str,
    dir: PathBuf,
    /// Repetitions of the whole cycle.
    reps: usize,
    /// The command of each of [`OPS`].
    commands: Vec<Command>,
}

fn measure(cmd: &mut Command, model: &tests::model::AwsModel) -> anyhow::Result<Measure> {
    let before = model.stats();
    // A file, not a pipe: nobody reads while the tool runs, and a full pipe would stall it.
    let mut log = tempfile::tempfile()?;
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone()?)
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
        std::io::Seek::rewind(&mut log)?;
        std::io::Read::read_to_string(&mut log, &mut err).ok();
        bail!(
            "{cmd:?} exited {code}: {}",
            err.chars().take(2000).collect::<String>()
        );
    }
    let stats = model.stats().since(&before);
    let service = stats
        .0
        .iter()
        .filter(|(_, s)| !s.service.is_empty())
        .map(|(op, s)| {
            let secs = s.service.iter().map(|d| d.as_secs_f64());
            let (min, max) = secs.fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
            (op.clone(), (min, max))
        })
        .collect();
    Ok(Measure {
        secs,
        calls: stats.total(|s| s.calls),
        throttled: stats.total(|s| s.throttled),
        rss_mib: (usage.ru_maxrss / 1024) as u64,
        service,
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
        reps: 1,
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
        reps: 1,
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
        reps: 1,
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
        reps: 1,
        commands: vec![
            cmd("present", false),
            cmd("present", false),
            cmd("present", true),
            cmd("absent", false),
        ],
        dir,
    })
}

/// Tools in the order the tables list them; "heet" is the baseline of every ratio.
const TOOLS: [&str; 4] = ["heet", "boto3", "Terraform", "Ansible"];

/// A measure's key: (model, N, tool, operation).
type Key = (String, u32, String, usize);

/// Measures of one or more bench runs: one per repetition.
#[derive(Default)]
struct Results {
    measures: BTreeMap<Key, Vec<Measure>>,
    /// The command line of each run that contributed, in order.
    runs: Vec<String>,
    release: bool,
    /// Plugin microbenchmarks: id and median in ns.
    micro: Vec<(String, f64)>,
}

/// The results file: `Results` with each measure beside its key.
#[derive(Serialize, Deserialize)]
struct Saved {
    runs: Vec<String>,
    release: bool,
    measures: Vec<SavedMeasure>,
    micro: Vec<(String, f64)>,
}

fn raw() -> String {
    "raw".to_owned()
}

#[derive(Serialize, Deserialize)]
struct SavedMeasure {
    #[serde(default = "raw")]
    model: String,
    n: u32,
    tool: String,
    op: usize,
    #[serde(flatten)]
    measure: Measure,
}

impl Results {
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let saved = Saved {
            runs: self.runs.clone(),
            release: self.release,
            micro: self.micro.clone(),
            measures: self
                .measures
                .iter()
                .flat_map(|((model, n, tool, op), ms)| {
                    ms.iter().map(|m| SavedMeasure {
                        model: model.clone(),
                        n: *n,
                        tool: tool.clone(),
                        op: *op,
                        measure: m.clone(),
                    })
                })
                .collect(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&saved)?)?;
        Ok(())
    }

    fn load(path: &Path) -> anyhow::Result<Results> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("no earlier results at {}", path.display()))?;
        let saved: Saved = serde_json::from_slice(&bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut measures: BTreeMap<Key, Vec<Measure>> = BTreeMap::new();
        for m in saved.measures {
            measures
                .entry((m.model, m.n, m.tool, m.op))
                .or_default()
                .push(m.measure);
        }
        Ok(Results {
            measures,
            runs: saved.runs,
            release: saved.release,
            micro: saved.micro,
        })
    }

    /// The tools measured, in table order.
    fn tools(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .measures
            .keys()
            .map(|(_, _, t, _)| t.as_str())
            .collect();
        names.sort_by_key(|t| TOOLS.iter().position(|p| t.starts_with(p)));
        names.dedup();
        names
    }

    fn get(&self, model: &str, n: u32, tool: &str, op: usize) -> Option<&Vec<Measure>> {
        self.measures
            .get(&(model.to_owned(), n, tool.to_owned(), op))
    }

    fn median_secs(&self, model: &str, n: u32, tool: &str, op: usize) -> Option<f64> {
        Some(median(
            self.get(model, n, tool, op)?
                .iter()
                .map(|m| m.secs)
                .collect(),
        ))
    }

    /// The repetition of heet's whose wall time is the median.
    fn heet_median(&self, model: &str, n: u32, op: usize) -> Option<&Measure> {
        let ms = self.get(model, n, "heet", op)?;
        let mut sorted: Vec<&Measure> = ms.iter().collect();
        sorted.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        Some(sorted[sorted.len() / 2])
    }

    /// The bound of `op` at `n` under `model`, from heet's median repetition.
    fn bound(&self, model: &str, n: u32, op: usize) -> Option<f64> {
        if model == "raw" {
            return None;
        }
        let m = models(model)?;
        let service = &self.heet_median(model, n, op)?.service;
        Some(bound(op, (n / 3).max(1) * 3, &m, service))
    }
}

/// The model named `name` in `HEET_BENCH_MODEL`.
fn models(name: &str) -> Option<Model> {
    match name {
        "raw" => Some(Model::raw()),
        "aws" => Some(Model::aws()),
        _ => None,
    }
}

/// The estate's roles (heet.toml, main.tf, the playbook and the boto3 script agree).
const ROLES: u32 = 3;
/// Characters of an instance's public DNS name as moto makes them (a record's value).
const TARGET_CHARS: u32 = 42;

/// The shortest time any client could take for operation `op` on the estate of `n`
/// instances (two CNAMEs each) under `model`, given moto's service time for each operation
/// (`service`: the shortest and longest of the calls heet made in that operation). It adds,
/// along the calls the estate needs in the order they must come, the model's latency plus
/// moto's service time for each, and the waits no client can avoid: token buckets and
/// pending time.
///
/// - up from empty: one describe (the shortest: nothing is there), then the longer of (a)
///   one RunInstances per role (the longest such call: moto serves them one at a time, so
///   the last answer is no sooner), the pending time, and a describe of all (the longest) to
///   learn their DNS names; (b) the first RunInstances answer, then every instance's own
///   tags, which need one token each of CreateTags's bucket or of RunInstances' (one
///   instance per call, tags at launch), both spent from full at their burst and then at
///   their combined refill, and one CreateTags; then the records, CREATEd in as few batches
///   as Route53's 1,000 records and 32,000 value characters allow, each once Route53 has
///   processed the previous one (the model's `processing`; INSYNC is not waited for).
/// - no-op up, plan: the longer of a describe of all and finding the zone plus listing its
///   records (pages of 300).
/// - down: a describe of all, then the longer of one batch deleting the records and one
///   TerminateInstances.
fn bound(op: usize, n: u32, model: &Model, service: &BTreeMap<String, (f64, f64)>) -> f64 {
    let latency = |o: &str| {
        if o == "ec2:RunInstances" {
            model.run_latency
        } else {
            model.latency
        }
        .as_secs_f64()
    };
    let shortest = |o: &str| latency(o) + service.get(o).map_or(0.0, |s| s.0);
    let longest = |o: &str| latency(o) + service.get(o).map_or(0.0, |s| s.1);
    let records = 2 * n;
    let batches = records
        .div_ceil(1000)
        .max((records * TARGET_CHARS).div_ceil(32_000))
        .max(1);
    match op {
        0 => {
            let rates = model.rates.as_ref();
            let rate = |c: &str| rates.map(|r| r[c]);
            let own_tags = match (rate("ec2:tags"), rate("ec2:RunInstances")) {
                (Some(t), Some(r)) => {
                    let burst = t.capacity + (r.capacity - f64::from(ROLES)).max(0.0);
                    (f64::from(n) - burst).max(0.0) / (t.refill + r.refill)
                }
                _ => 0.0,
            };
            let first_answer = longest("ec2:RunInstances");
            let launched =
                first_answer + model.pending.as_secs_f64() + longest("ec2:DescribeInstances");
            let tagged = first_answer + own_tags + longest("ec2:CreateTags");
            let dns = f64::from(batches) * longest("route53:ChangeResourceRecordSets")
                + f64::from(batches - 1) * model.processing.as_secs_f64();
            shortest("ec2:DescribeInstances") + launched.max(tagged) + dns
        }
        1 | 2 => {
            let pages = f64::from((records + 2).div_ceil(300));
            longest("ec2:DescribeInstances").max(
                longest("route53:ListHostedZonesByName")
                    + pages * longest("route53:ListResourceRecordSets"),
            )
        }
        _ => {
            longest("ec2:DescribeInstances")
                + longest("route53:ChangeResourceRecordSets").max(longest("ec2:TerminateInstances"))
        }
    }
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("kinds") => return kinds(),
        Some("rollout") => return rollout(),
        Some("plugins") => return plugins(),
        _ => {}
    }
    let sizes: Vec<u32> = if args.is_empty() {
        vec![30, 102, 300]
    } else {
        args.iter()
            .map(|a| a.parse().with_context(|| format!("not a size: {a}")))
            .collect::<anyhow::Result<_>>()?
    };
    let reps = env_or("HEET_BENCH_REPS", 3usize).max(1);
    let peer_reps = env_or("HEET_BENCH_PEER_REPS", reps).max(1);
    let peer_max = env_or("HEET_BENCH_PEER_MAX", u32::MAX);
    // Terraform's destroy takes as long as its apply; skipping it saves half a peer's run.
    let peer_down = env_or("HEET_BENCH_PEER_DOWN", 1u8) != 0;
    let list = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let wanted = list("HEET_BENCH_TOOLS", "heet,boto3,terraform,ansible");
    let model_names = list("HEET_BENCH_MODEL", "raw,aws");
    for name in &model_names {
        if models(name).is_none() {
            bail!("HEET_BENCH_MODEL: no model {name:?}: raw or aws");
        }
    }
    let release = std::env::var("HEET_BENCH_PROFILE").as_deref() == Ok("release");
    let saved = target_dir()?.join("heet-bench.json");
    let mut results = if std::env::var("HEET_BENCH_MERGE").as_deref() == Ok("1") {
        Results::load(&saved)?
    } else {
        Results::default()
    };
    let mut line: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HEET_BENCH_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    line.sort();
    line.push(format!("cargo xtask bench {}", args.join(" ")));
    results.runs.push(line.join(" ").trim_end().to_owned());
    results.release = release;

    let server = setup()?;
    let heet = build_heet(release)?;
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

    for model_name in &model_names {
        let proxy = models(model_name).expect("checked").start(&moto.endpoint);
        for &n in &sizes {
            let per_role = (n / 3).max(1);
            let base = tempfile_dir()?;
            // Only the tools asked for are set up: heet's builds its plugins, Terraform's its
            // provider mirror.
            let want = |tool: &str| wanted.iter().any(|w| tool.starts_with(w.as_str()));
            let mut tools = Vec::new();
            if want("heet") {
                tools.push(heet_tool(&base, &heet, per_role, &proxy.endpoint)?);
            }
            if want("boto3") {
                tools.push(boto3_tool(
                    &base,
                    &venv.join("bin/python"),
                    per_role,
                    &proxy.endpoint,
                ));
            }
            for tool in &mut tools {
                tool.reps = reps;
            }
            let mut peers = Vec::new();
            if n > peer_max {
                eprintln!("N={n}: Terraform and Ansible skipped (HEET_BENCH_PEER_MAX={peer_max})");
            } else {
                if want("terraform") {
                    peers.extend(terraform_tool(&base, per_role, &proxy.endpoint)?);
                }
                if want("ansible") {
                    peers.extend(ansible_tool(&base, &venv, per_role, &proxy.endpoint));
                }
            }
            tools.extend(peers.into_iter().map(|t| Tool {
                reps: peer_reps,
                ..t
            }));
            for tool in &mut tools {
                let peer = !["heet", "boto3"].iter().any(|p| tool.name.starts_with(p));
                for o in 0..OPS.len() {
                    results
                        .measures
                        .remove(&(model_name.clone(), n, tool.name.to_owned(), o));
                }
                for rep in 0..tool.reps {
                    // Every repetition starts from an empty account with full buckets: moto
                    // keeps terminated instances, and describing them would slow each
                    // repetition down.
                    moto.reset();
                    proxy.reset();
                    for (o, cmd) in tool.commands.iter_mut().enumerate() {
                        if peer && o == 3 && !peer_down {
                            continue;
                        }
                        let m = measure(cmd, &proxy).with_context(|| {
                            format!("{} {} at N={n} ({model_name})", tool.name, OPS[o])
                        })?;
                        eprintln!(
                            "{model_name:<4} N={:<4} {:<28} {:<18} rep {rep}: {:>7.2} s {:>6} calls {:>4} throttled {:>5} MiB",
                            per_role * 3,
                            tool.name,
                            OPS[o],
                            m.secs,
                            m.calls,
                            m.throttled,
                            m.rss_mib
                        );
                        results
                            .measures
                            .entry((model_name.clone(), n, tool.name.to_owned(), o))
                            .or_default()
                            .push(m);
                    }
                }
                let _ = std::fs::remove_dir_all(&tool.dir);
            }
            // Saved after every size: a long run that fails later keeps what it measured.
            results.save(&saved)?;
        }
    }
    drop(moto);
    if std::env::var("HEET_BENCH_MICRO").as_deref() != Ok("0") {
        results.micro = micro()?;
    }
    results.save(&saved)?;
    let file = root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&file).unwrap_or_default();
    let report = with_section(&render(&results), section(&old).unwrap_or_default());
    std::fs::write(&file, &report)?;
    println!("{report}");
    Ok(())
}
/// Builds heet (`--release` with `release`); returns its binary.
fn build_heet(release: bool) -> anyhow::Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "-q", "-p", "heet"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    Ok(target_dir()?.join(if release {
        "release/heet"
    } else {
        "debug/heet"
    }))
}

/// `cargo xtask bench kinds`: heet's `up` from empty, no-op `up` and `down` of the network
/// and IAM estate in `xtask/bench/kinds.toml`, under the full AWS model (its consistency
/// windows are what a kind's executor waits out), `HEET_BENCH_REPS` times; prints each run
/// and the medians. Nothing is written to BENCHMARKS.md.
fn kinds() -> anyhow::Result<()> {
    const KIND_OPS: [&str; 3] = ["up from empty", "no-op up", "down"];
    let reps = env_or("HEET_BENCH_REPS", 3usize).max(1);
    let release = std::env::var("HEET_BENCH_PROFILE").as_deref() == Ok("release");
    let server = setup()?;
    let heet = build_heet(release)?;
    let moto = tests::Moto::start(&server);
    let proxy = Model::aws().start(&moto.endpoint);
    let dir = tempfile_dir()?;
    std::fs::copy(root().join("xtask/bench/kinds.toml"), dir.join("heet.toml"))?;
    let mut commands: Vec<Command> = [
        &["up", "--env", "bench", "--yes", "-q"][..],
        &["up", "--env", "bench", "--yes", "-q"][..],
        &["down", "--env", "bench", "--yes", "-q"][..],
    ]
    .iter()
    .map(|args| {
        let mut c = Command::new(&heet);
        c.args(*args).current_dir(&dir);
        with_aws(&mut c, &proxy.endpoint)
    })
    .collect();
    let mut measures: Vec<Vec<Measure>> = vec![Vec::new(); KIND_OPS.len()];
    for rep in 0..reps {
        moto.reset();
        proxy.reset();
        for (o, cmd) in commands.iter_mut().enumerate() {
            let m = measure(cmd, &proxy).with_context(|| format!("heet {}", KIND_OPS[o]))?;
            eprintln!(
                "aws  kinds {:<14} rep {rep}: {:>7.2} s {:>5} calls {:>3} throttled",
                KIND_OPS[o], m.secs, m.calls, m.throttled
            );
            measures[o].push(m);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| operation | runs | wall (s) | AWS calls | calls/s | throttled |\n|---|---:|---:|---:|---:|---:|"
    );
    for (o, ms) in measures.iter().enumerate() {
        let wall = median(ms.iter().map(|m| m.secs).collect());
        let calls = median(ms.iter().map(|m| m.calls as f64).collect());
        let throttled: u64 = ms.iter().map(|m| m.throttled).sum();
        println!(
            "| {} | {} | {wall:.2} | {calls:.0} | {:.1} | {throttled} |",
            KIND_OPS[o],
            ms.len(),
            calls / wall
        );
    }
    Ok(())
}

/// BENCHMARKS.md's rollout section is `cargo xtask bench rollout`'s, kept when the main
/// tables are written again.
const ROLLOUT_START: &str = "<!-- cargo xtask bench rollout -->";
const ROLLOUT_END: &str = "<!-- end of cargo xtask bench rollout -->";

fn section(text: &str) -> Option<&str> {
    let start = text.find(ROLLOUT_START)?;
    let end = text[start..].find(ROLLOUT_END)? + start + ROLLOUT_END.len();
    Some(&text[start..end])
}

/// `text` with its rollout section replaced by `section` (or `section` appended).
fn with_section(text: &str, section: &str) -> String {
    match text.find(ROLLOUT_START) {
        Some(start) => {
            let end = text[start..]
                .find(ROLLOUT_END)
                .map_or(text.len(), |e| e + start + ROLLOUT_END.len());
            format!("{}{section}{}", &text[..start], &text[end..])
        }
        None if section.is_empty() => text.to_owned(),
        None => format!("{}\n{section}\n", text.trim_end()),
    }
}

/// `cargo xtask bench rollout`: a role of 8 instances with two CNAMEs each is rolled to
/// another instance type (rolling's defaults: batches of 2, each new instance healthy
/// before its old one goes) under the full AWS model, `HEET_BENCH_REPS` times. Prints each
/// run and writes the median, with its bound, into BENCHMARKS.md's rollout section. The
/// bound: one round per batch, none shorter than a RunInstances, the pending time, and one
/// call each to move the names and to terminate the old instances.
fn rollout() -> anyhow::Result<()> {
    const COUNT: u32 = 8;
    let reps = env_or("HEET_BENCH_REPS", 3usize).max(1);
    let release = std::env::var("HEET_BENCH_PROFILE").as_deref() == Ok("release");
    let server = setup()?;
    let heet = build_heet(release)?;
    let moto = tests::Moto::start(&server);
    let aws = Model::aws();
    let proxy = aws.clone().start(&moto.endpoint);
    let dir = tempfile_dir()?;
    run(Command::new(&heet)
        .args(["plugins", "build", "-p", "cname", "--out"])
        .arg(dir.join("plugins"))
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .stdout(std::process::Stdio::null()))?;
    let def = |instance_type: &str| {
        std::fs::read_to_string(root().join("xtask/bench/heet.toml")).map(|d| {
            d.replace("{count}", &COUNT.to_string())
                .replace("[roles.app]\n[roles.db]\n", "")
                .replace("t3.micro", instance_type)
        })
    };
    let heet_cmd = |args: &[&str]| {
        let mut c = Command::new(&heet);
        c.args(args).current_dir(&dir);
        with_aws(&mut c, &proxy.endpoint)
    };
    let up = ["up", "--env", "bench", "--yes", "-q"];
    let mut rolls = Vec::new();
    for rep in 0..reps {
        moto.reset();
        proxy.reset();
        std::fs::write(dir.join("heet.toml"), def("t3.micro")?)?;
        run(heet_cmd(&["plugins", "lock"]).stdout(std::process::Stdio::null()))?;
        measure(&mut heet_cmd(&up), &proxy).context("heet up from empty")?;
        std::fs::write(dir.join("heet.toml"), def("t3.small")?)?;
        let m = measure(&mut heet_cmd(&up), &proxy).context("heet up (rollout)")?;
        let again = measure(&mut heet_cmd(&up), &proxy).context("heet no-op up")?;
        eprintln!(
            "aws  rollout of {COUNT} rep {rep}: {:>7.2} s {:>5} calls {:>3} throttled; the next up {:.2} s",
            m.secs, m.calls, m.throttled, again.secs
        );
        measure(
            &mut heet_cmd(&["down", "--env", "bench", "--yes", "-q"]),
            &proxy,
        )
        .context("heet down")?;
        rolls.push(m);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let rounds = COUNT.div_ceil(COUNT.div_ceil(4)) as f64;
    let bound = rounds * (aws.run_latency + aws.pending + aws.latency * 2).as_secs_f64()
        + aws.latency.as_secs_f64();
    let wall = median(rolls.iter().map(|m| m.secs).collect());
    let calls = median(rolls.iter().map(|m| m.calls as f64).collect());
    let throttled: u64 = rolls.iter().map(|m| m.throttled).sum();
    let text = format!(
        "{ROLLOUT_START}\n## Rolling replacement (aws)\n\nA role of {COUNT} instances with two CNAMEs each, rolled to another instance type under\nthe AWS model (instances pending {} s) with rolling's defaults: {rounds} batches of {}, each new\ninstance running before its names move and its old instance goes. The bound is {rounds}\nrounds of a RunInstances, the pending time and one call each to move the names and to\nterminate. heet {} build; generated by `HEET_BENCH_REPS={reps} cargo xtask bench rollout`.\n\n| operation | runs | wall (s) | × bound | AWS calls | throttled |\n|---|---:|---:|---:|---:|---:|\n| rollout of {COUNT} | **bound** | {bound:.2} | 1.0 | - | - |\n| rollout of {COUNT} | {} | {wall:.2} | {:.2} | {calls:.0} | {throttled} |\n{ROLLOUT_END}",
        aws.pending.as_secs(),
        COUNT.div_ceil(4),
        if release {
            "release"
        } else {
            "debug (dev profile)"
        },
        rolls.len(),
        wall / bound,
    );
    println!("{text}");
    let file = root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&file)?;
    std::fs::write(&file, with_section(&old, &text))?;
    Ok(())
}

/// Runs the plugin microbenchmarks; returns each benchmark's id and median time in ns, from
/// criterion's own estimates of this run.
fn micro() -> anyhow::Result<Vec<(String, f64)>> {
    let started = std::time::SystemTime::now();
    run(cargo().args(["bench", "-q", "-p", "heet", "--bench", "plugins"]))?;
    let mut found = Vec::new();
    for group in std::fs::read_dir(target_dir()?.join("criterion"))? {
        for bench in std::fs::read_dir(group?.path())? {
            let new = bench?.path().join("new");
            let estimates = new.join("estimates.json");
            let fresh = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started);
            if !fresh {
                continue;
            }
            let json = |file: &Path| -> anyhow::Result<serde_json::Value> {
                Ok(serde_json::from_slice(&std::fs::read(file)?)?)
            };
            let id = json(&new.join("benchmark.json"))?["full_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let median = json(&estimates)?["median"]["point_estimate"]
                .as_f64()
                .context("criterion estimates without a median")?;
            found.push((id, median));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// BENCHMARKS.md's plugin section (from its heading to the next one's).
const MICRO_HEADING: &str = "\n## Plugin microbenchmarks\n";

fn render_micro(micro: &[(String, f64)]) -> String {
    let mut out = format!(
        "{MICRO_HEADING}\n`cargo bench -p heet --bench plugins` (criterion, release build, median; `cargo xtask bench\nplugins` writes this section). The warm call is the naming plugin's hook on an instantiated\nplugin, fuel and deadline set as for every call; the chain is `desired::compute` of 20\nroles × 500 instances through naming, tags, cname, cloud-init and guard (four hooks per\ninstance, and the guard once over the whole state). `guard-js` (JavaScript, jco and\nQuickJS) and `naming-py` (Python, componentize-py) are the same policies in other languages,\nbuilt from `plugins/`: their guard validates a state of 8 instances, their naming answers\none instance. `plugin/` is the Rust naming plugin.\n\n| benchmark | median |\n|---|---:|\n"
    );
    for (id, ns) in micro {
        let _ = writeln!(out, "| {id} | {} |", human(*ns));
    }
    out
}

/// The Rust naming plugin's warm call, in µs: what the target row is about.
fn warm_call_us(micro: &[(String, f64)]) -> Option<f64> {
    micro
        .iter()
        .find(|(id, _)| id.starts_with("plugin/warm hook call"))
        .map(|(_, ns)| ns / 1e3)
}

fn warm_call_row(micro: &[(String, f64)]) -> String {
    let line = match warm_call_us(micro) {
        Some(us) => format!("- | {us:.2} µs | {}", if us < 2.0 { "yes" } else { "no" }),
        None => "- | not measured | -".to_owned(),
    };
    format!("| < 2 µs per warm hook call | - | {line} |")
}

/// `cargo xtask bench plugins`: the microbenchmarks alone; their section of BENCHMARKS.md
/// and the warm-call target row are replaced, the rest of the file kept as it is.
fn plugins() -> anyhow::Result<()> {
    let micro = micro()?;
    let saved = target_dir()?.join("heet-bench.json");
    if let Ok(mut results) = Results::load(&saved) {
        results.micro = micro.clone();
        results.save(&saved)?;
    }
    let file = root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&file)?;
    let text = with_micro(&old, &micro);
    std::fs::write(&file, &text)?;
    println!("{}", render_micro(&micro));
    Ok(())
}

/// `text` with its plugin section and warm-call row replaced by `micro`'s.
fn with_micro(text: &str, micro: &[(String, f64)]) -> String {
    let section = render_micro(micro);
    let mut text = match text.find(MICRO_HEADING) {
        Some(start) => {
            let rest = start + MICRO_HEADING.len();
            let end = text[rest..].find("\n## ").map_or(text.len(), |e| e + rest);
            format!("{}{}\n{}", &text[..start], section.trim_end(), &text[end..])
        }
        None => format!("{}\n{section}", text.trim_end()),
    };
    if let Some(start) = text.find("| < 2 µs per warm hook call |") {
        let end = text[start..].find('\n').map_or(text.len(), |e| e + start);
        text.replace_range(start..end, &warm_call_row(micro));
    }
    text
}

/// A duration in ns, in the unit that reads best.
fn human(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("heet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn render(results: &Results) -> String {
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
    let aws = Model::aws();
    let _ = writeln!(
        out,
        "# Benchmarks\n\nheet against Terraform, Ansible and a minimal boto3 script, on the same estate (N\ninstances over 3 roles, two CNAMEs each, in a zone the tool creates) and the same moto\nserver, reset before each repetition, in two settings: moto as it is (`raw`), and moto behind\nthe project's model of AWS (`aws`, `tests/src/model.rs`: AWS's documented token buckets,\ninstances pending {} s, eventual consistency, {} ms a call and {} ms a RunInstances; the\nnumbers are in [docs/testing.md](docs/testing.md#the-aws-model)). What a real account\ndoes is the second table: moto never throttles and launches instances `running` at once.\nGenerated by:\n\n```sh\n{}\n```\n\nMachine: {machine}, {cores} cores. heet {} build. Wall time is the median of the runs the\n`runs` column gives; calls are counted by the model in front of moto, the same for every\ntool, retries included; memory is the peak resident set of the tool's process tree. Ratios\nare a figure over heet's (or over the bound): above 1, heet (or the bound) is faster or\nmakes fewer calls. Terraform and Ansible run from their own state or inventory as their\nusers would (`plan` = `terraform plan`, `ansible-playbook --check`; the boto3 script's plan\nis its read-only pass). The Ansible playbook's `down` terminates the instances only (its\nrecords would need one task per record): it does less than the others. A row missing for a\npeer was not measured (see the commands: `HEET_BENCH_PEER_MAX` and `HEET_BENCH_PEER_DOWN=0`\nskip peers).\n\n**Route53 in the model.** A change to a zone is refused with `PriorRequestNotComplete`\nfor the model's `processing` window (300 ms) after the zone's previous change, as Route53\nrefuses while it still processes a request; a change stays `PENDING` for `insync` (2 s)\nand a new one is taken meanwhile, as Route53 takes it. Until 2026-12-02 the model refused\nfor the whole `PENDING` window, stricter than AWS, and heet waited for INSYNC between its\nchanges. Under the model, the boto3 script's rows and Terraform's at N = 102 were measured\nthen, with the earlier model (Terraform's are upper bounds); Ansible (whose `route53` module\nretries after 500 s) was not measured under it.\n",
        aws.pending.as_secs(),
        aws.latency.as_millis(),
        aws.run_latency.as_millis(),
        results.runs.join("\n"),
        if results.release {
            "release"
        } else {
            "debug (dev profile)"
        },
    );
    let tools = results.tools();
    let mut keys: Vec<(String, u32)> = results
        .measures
        .keys()
        .map(|(m, n, _, _)| (m.clone(), *n))
        .collect();
    keys.dedup();
    let mut model_names: Vec<&str> = keys.iter().map(|(m, _)| m.as_str()).collect();
    model_names.dedup();
    for model in model_names {
        let modelled = model != "raw";
        let _ = if modelled {
            writeln!(
                out,
                "\n## Under the AWS model\n\nEach operation's **bound** is the shortest time any client could take under the model:\nalong the calls the estate needs, in the order they must come, the model's latency plus\nmoto's service time for each (as measured on heet's own calls of that operation, in the\nsame repetition), and the waits no client can avoid, token buckets and pending time. Up\nfrom empty: a describe; then the longer of one RunInstances per role, the pending time and\na describe of all, or every instance's own tags at the combined rate of CreateTags' and\nRunInstances' buckets (100 + 2 at once, then 10 + 2 a second); then the records, CREATEd in\nbatches Route53 accepts. No-op up and plan: the longer of a describe of all and listing\nthe zone's records. Down: a describe, then the longer of one record batch and one\nTerminateInstances. (`xtask/src/bench.rs`, `fn bound`.)"
            )
        } else {
            writeln!(out, "\n## moto as it is")
        };
        for (_, n) in keys.iter().filter(|(m, _)| m == model) {
            let n = *n;
            let _ = writeln!(
                out,
                "\n### N = {} instances ({model})\n",
                (n / 3).max(1) * 3
            );
            let _ = writeln!(
                out,
                "| operation | tool | runs | wall (s) | × heet | × bound | AWS calls | × heet | throttled | peak MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (o, op) in OPS.iter().enumerate() {
                let Some(heet) = results.get(model, n, "heet", o) else {
                    continue;
                };
                let heet_secs = median(heet.iter().map(|m| m.secs).collect());
                let heet_calls = heet[0].calls.max(1) as f64;
                let bound = results.bound(model, n, o);
                if let Some(b) = bound {
                    let _ = writeln!(
                        out,
                        "| {op} | **bound** | - | {b:.2} | - | 1.0 | - | - | - | - |"
                    );
                }
                for name in &tools {
                    let Some(ms) = results.get(model, n, name, o) else {
                        continue;
                    };
                    let secs = median(ms.iter().map(|m| m.secs).collect());
                    let calls = ms[0].calls;
                    let throttled = ms[0].throttled;
                    let rss = ms.iter().map(|m| m.rss_mib).max().unwrap_or(0);
                    let over_bound =
                        bound.map_or_else(|| "-".to_owned(), |b| format!("{:.2}", secs / b));
                    let _ = writeln!(
                        out,
                        "| {op} | {name} | {} | {secs:.2} | {:.1} | {over_bound} | {calls} | {:.1} | {} | {rss} |",
                        ms.len(),
                        secs / heet_secs,
                        calls as f64 / heet_calls,
                        if modelled {
                            throttled.to_string()
                        } else {
                            "-".to_owned()
                        },
                    );
                }
            }
        }
    }
    if !results.micro.is_empty() {
        out.push_str(&render_micro(&results.micro));
    }
    targets(&mut out, results, &keys);
    out
}

/// Where heet stands against its targets, each at the largest N measured for it.
fn targets(out: &mut String, results: &Results, keys: &[(String, u32)]) {
    let sizes = |model: &str| -> Vec<u32> {
        keys.iter()
            .filter(|(m, _)| m == model)
            .map(|(_, n)| *n)
            .collect()
    };
    // (N, peer's time / heet's time) at the largest N measured for both.
    let ratio = |model: &str, peer: &str, op: usize| {
        let tools = results.tools();
        let t = tools.iter().find(|t| t.starts_with(peer))?;
        sizes(model).into_iter().rev().find_map(|n| {
            Some((
                n,
                results.median_secs(model, n, t, op)?
                    / results.median_secs(model, n, "heet", op)?,
            ))
        })
    };
    let over_bound = |op: usize| {
        sizes("aws").into_iter().rev().find_map(|n| {
            Some((
                n,
                results.median_secs("aws", n, "heet", op)? / results.bound("aws", n, op)?,
            ))
        })
    };
    let _ = writeln!(
        out,
        "\n## Targets\n\n| target | model | N | measured | met |\n|---|---|---:|---|---|"
    );
    let mut row =
        |target: &str, model: &str, at: Option<(u32, f64)>, want: f64, unit: &str, above: bool| {
            let line = match at {
                Some((n, m)) => format!(
                    "{} | {m:.2}{unit} | {}",
                    (n / 3).max(1) * 3,
                    if (above && m >= want) || (!above && m <= want) {
                        "yes"
                    } else {
                        "no"
                    }
                ),
                None => "- | not measured | -".to_owned(),
            };
            let _ = writeln!(out, "| {target} | {model} | {line} |");
        };
    row(
        "up within 1.5× its bound",
        "aws",
        over_bound(0),
        1.5,
        "×",
        false,
    );
    row(
        "down within 1.5× its bound",
        "aws",
        over_bound(3),
        1.5,
        "×",
        false,
    );
    let largest = |model: &str| sizes(model).into_iter().max();
    let throttled = largest("aws").and_then(|n| {
        let m = results.heet_median("aws", n, 0)?;
        Some((n, 100.0 * m.throttled as f64 / m.calls.max(1) as f64))
    });
    row(
        "≤ 2 % of up's calls throttled",
        "aws",
        throttled,
        2.0,
        " %",
        false,
    );
    for model in ["aws", "raw"] {
        let calls = largest(model)
            .and_then(|n| Some((n, results.get(model, n, "heet", 1)?[0].calls as f64)));
        row(
            "≤ 6 AWS calls for a no-op up",
            model,
            calls,
            6.0,
            " calls",
            false,
        );
    }
    for n in [30, 102] {
        let measured = results
            .tools()
            .iter()
            .find(|t| t.starts_with("Terraform"))
            .and_then(|t| results.median_secs("aws", n, t, 0))
            .and_then(|tf| Some((n, tf / results.median_secs("aws", n, "heet", 0)?)));
        row(
            "Terraform measured (up, × heet)",
            "aws",
            measured,
            0.0,
            "×",
            true,
        );
    }
    row(
        "up ≥ 5× faster than Terraform",
        "raw",
        ratio("raw", "Terraform", 0),
        5.0,
        "×",
        true,
    );
    row(
        "no-op plan ≥ 20× faster than Terraform",
        "raw",
        ratio("raw", "Terraform", 2),
        20.0,
        "×",
        true,
    );
    row(
        "up ≥ 3× faster than Ansible",
        "raw",
        ratio("raw", "Ansible", 0),
        3.0,
        "×",
        true,
    );
    row(
        "up within 1.5× of the boto3 script (heet / boto3)",
        "raw",
        ratio("raw", "boto3", 0).map(|(n, r)| (n, 1.0 / r)),
        1.5,
        "×",
        false,
    );
    let _ = writeln!(out, "{}", warm_call_row(&results.micro));
}
