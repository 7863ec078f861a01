//! Plugin microbenchmarks (criterion): a warm hook call, instantiating a plugin, loading one
//! cold (compiling) and from the compiled cache, and 10,000 instances through five plugins;
//! the same four for the JavaScript guard and the Python naming plugin (built with jco and
//! componentize-py when they are installed, as `cargo xtask setup` does).
//!
//! `cargo bench -p heet --bench plugins` (the reference plugins are built first, into a
//! temporary folder); `cargo xtask bench` runs it and puts the figures in BENCHMARKS.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use heet::definition::Definition;
use heet::plugins::build::{BuildRequest, build};
use heet::plugins::lock::Lock;
use heet::plugins::{Limits, PluginFile, PluginSet, Runtime, api, sha256_hex};

/// 20 roles of 500: the definition's largest role, twenty times over.
const ROLES: usize = 20;
const PER_ROLE: usize = 500;
/// The five plugins the 10,000 instances go through, in chain order.
const CHAIN: [&str; 5] = ["naming", "tags", "cname", "cloud-init", "guard"];

struct Fixture {
    /// Keeps the folders alive while the benchmarks run.
    _dir: tempfile::TempDir,
    plugins: PathBuf,
    cache: PathBuf,
    project: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let built = build(&BuildRequest {
        manifest_path: Some(root.join("Cargo.toml")),
        packages: Vec::new(),
        out_dir: Some(plugins.clone()),
    })
    .expect("the reference plugins build");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("plugins")).unwrap();
    let mut hashes = Vec::new();
    for name in CHAIN {
        let b = built.iter().find(|b| b.name == name).expect("built");
        std::fs::copy(
            &b.path,
            project.join("plugins").join(format!("{name}.wasm")),
        )
        .unwrap();
        hashes.push((name.to_owned(), b.sha256.clone()));
    }
    std::fs::write(project.join("heet.lock"), Lock::of(hashes).to_toml()).unwrap();
    let mut toml = format!(
        r#"[project]
name = "bench"
domain = "bench.example.com"

[plugins]
order = {CHAIN:?}
# The guard gets the whole state in one call: lifting 10,000 instances into the guest costs
# more than the default 100M fuel a call may burn (it stops with "ran out of fuel").
[plugins.limits]
fuel = 2_000_000_000
memory_mb = 512

[plugins.config.naming]
pattern = "{{env}}-{{role}}-{{index:03}}"
[plugins.config.tags]
group_key = "config-group"
[plugins.config.tags.all]
owner = "bench"
[plugins.config.cname]
patterns = ["{{env}}-{{role}}-{{index:03}}"]
[plugins.config.cloud-init]
runcmd = ["systemctl restart app"]
[plugins.config.guard]
max_count_per_role = {PER_ROLE}
require_tags = ["owner"]

[defaults]
ami = "ami-12c6146b"
instance_type = "t3.micro"

[environments.production]
"#
    );
    for r in 0..ROLES {
        toml.push_str(&format!("\n[roles.role{r:02}]\ncount = {PER_ROLE}\n"));
    }
    std::fs::write(project.join("heet.toml"), toml).unwrap();
    Fixture {
        cache: dir.path().join("cache"),
        _dir: dir,
        plugins,
        project,
    }
}

fn file(f: &Fixture, name: &str) -> (PluginFile, String) {
    let path = f.plugins.join(format!("{name}.wasm"));
    let sha = sha256_hex(&std::fs::read(&path).unwrap());
    (
        PluginFile {
            name: name.to_owned(),
            path,
        },
        sha,
    )
}

/// The instance every warm naming call is for.
fn context() -> api::InstanceContext {
    api::InstanceContext {
        project: "shop".into(),
        env: "production".into(),
        role: "www".into(),
        index: 7,
        count: 8,
        region: "us-east-1".into(),
        domain: Some("shop.example.com".into()),
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    // SAFETY: set before the runtime's epoch thread or any other thread of this process
    // starts; the compiled-plugin cache then lives in the fixture's folder.
    unsafe { std::env::set_var("HEET_CACHE_DIR", &f.cache) };
    let runtime = Runtime::new().unwrap();
    let (naming, sha) = file(&f, "naming");

    let mut group = c.benchmark_group("plugin");
    group.bench_function("load cold (compile)", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&f.cache);
            },
            |()| runtime.prepare(&naming, &sha).unwrap(),
            BatchSize::PerIteration,
        )
    });
    runtime.prepare(&naming, &sha).unwrap();
    group.bench_function("load cached", |b| {
        b.iter(|| runtime.prepare(&naming, &sha).unwrap())
    });
    let prepared = runtime.prepare(&naming, &sha).unwrap();
    group.bench_function("instantiate", |b| {
        b.iter(|| prepared.instantiate(Limits::default()).unwrap())
    });

    let mut plugin = prepared.instantiate(Limits::default()).unwrap();
    plugin
        .configure(r#"{"pattern":"{env}-{role}-{index:02}"}"#)
        .unwrap()
        .unwrap();
    let ctx = context();
    group.bench_function("warm hook call (naming)", |b| {
        b.iter(|| {
            let name = plugin.name(black_box(&ctx), "shop-production-www-07");
            assert!(matches!(name, Some(Ok(Some(_)))));
            name
        })
    });
    group.finish();

    let def = Definition::load(&f.project.join("heet.toml")).unwrap();
    let mut set = PluginSet::load(&runtime, &def).unwrap();
    let mut group = c.benchmark_group("chain");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("10,000 instances through 5 plugins", |b| {
        b.iter(|| {
            let desired =
                heet::desired::compute(&def, "production", "us-east-1", &mut set).unwrap();
            assert_eq!(desired.instances.len(), ROLES * PER_ROLE);
            desired
        })
    });
    group.finish();

    language(c, &runtime, &f.cache, "guard-js", "guard");
    language(c, &runtime, &f.cache, "naming-py", "naming");
}

/// Load cold, load cached, instantiate and one warm call of a plugin in another language.
fn language(c: &mut Criterion, runtime: &Runtime, cache: &Path, folder: &str, call: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = root.join("plugins").join(folder);
    let out = tempfile::tempdir().unwrap();
    let manifest = heet::plugins::languages::Manifest::load(&dir)
        .unwrap()
        .expect("a heet-plugin.toml");
    let built = match heet::plugins::languages::build(&dir, &manifest, out.path()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping {folder}: {e:#}");
            return;
        }
    };
    let file = PluginFile {
        name: built.name.clone(),
        path: built.path.clone(),
    };
    let mut group = c.benchmark_group(folder);
    group.sample_size(10);
    group.bench_function("load cold (compile)", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(cache);
            },
            |()| runtime.prepare(&file, &built.sha256).unwrap(),
            BatchSize::PerIteration,
        )
    });
    runtime.prepare(&file, &built.sha256).unwrap();
    group.bench_function("load cached", |b| {
        b.iter(|| runtime.prepare(&file, &built.sha256).unwrap())
    });
    let prepared = runtime.prepare(&file, &built.sha256).unwrap();
    group.bench_function("instantiate", |b| {
        b.iter(|| prepared.instantiate(Limits::default()).unwrap())
    });
    let mut plugin = prepared.instantiate(Limits::default()).unwrap();
    plugin.configure("{}").unwrap().unwrap();
    let ctx = context();
    let state = api::DesiredState {
        project: "shop".into(),
        env: "production".into(),
        region: "us-east-1".into(),
        domain: None,
        instances: (1..=8)
            .map(|index| api::DesiredInstance {
                role: "www".into(),
                index,
                name: format!("production-www-{index:02}"),
                instance_type: "t3.micro".into(),
                ami: "ami-12c6146b".into(),
                tags: Vec::new(),
                cnames: Vec::new(),
                user_data: String::new(),
            })
            .collect(),
        firewall: Vec::new(),
    };
    group.bench_function(format!("warm hook call ({call})"), |b| {
        b.iter(|| match call {
            "naming" => assert!(matches!(
                plugin.name(black_box(&ctx), "x"),
                Some(Ok(Some(_)))
            )),
            _ => assert!(matches!(plugin.validate(black_box(&state)), Some(Ok(_)))),
        })
    });
    group.finish();
}

criterion_group!(plugins, benches);
criterion_main!(plugins);
