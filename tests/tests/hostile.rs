//! The hostile plugin catalog: every way a plugin can misbehave or be the wrong bytes, run
//! through `heet up` against moto. Each must end in an error naming the plugin (and the hook,
//! once one runs), a non-zero exit, no AWS mutation, in bounded time and host memory. The
//! catalog prints one line per case.

use std::time::{Duration, Instant};

use tests::{Project, Run, component_from_wit, moto};

const DEF: &str = r#"
[project]
name = "{project}"
domain = "{project}.heet.test"
create_zone = true

{plugins}

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 2
ports = [443]
allow_cidr = ["0.0.0.0/0"]

[environments.staging]
"#;

/// How a case gets its plugin into `./plugins`.
enum Plugin {
    /// A built fixture or reference plugin, with its config table.
    Built(&'static str, &'static str),
    /// Bytes written as `<name>.wasm` and pinned in heet.lock as they are.
    Bytes(&'static str, Vec<u8>),
    /// A built plugin whose bytes change after heet.lock pinned them.
    Swapped(&'static str),
}

struct Case {
    name: &'static str,
    plugin: Plugin,
    limits: &'static str,
    exit: i32,
    error: &'static str,
}

fn trap(mode: &'static str) -> Plugin {
    Plugin::Built("trap", mode)
}

fn lie(lie: &'static str) -> Plugin {
    Plugin::Built("liar", lie)
}

/// A component exporting heet's naming hook that also imports WASI.
fn wasi_importer() -> Vec<u8> {
    component_from_wit(
        "package wasi:cli@0.2.0;
         interface environment {
             get-environment: func() -> list<tuple<string, string>>;
         }
         world plugin {
             import environment;
             export heet:plugin/naming@0.1.2;
         }",
        "plugin",
    )
}

/// A component built against a future heet WIT, 1.0.0.
fn other_major() -> Vec<u8> {
    component_from_wit(
        "package heet:plugin@1.0.0;
         interface naming {
             name: func(role: string, index: u32) -> option<string>;
         }
         world plugin {
             export naming;
         }",
        "plugin",
    )
}

fn catalog() -> Vec<Case> {
    let case = |name, plugin, limits, exit, error| Case {
        name,
        plugin,
        limits,
        exit,
        error,
    };
    vec![
        case("panic", trap("panic"), "", 1, "plugin trap: hook naming: "),
        case(
            "infinite loop",
            trap("spin"),
            "fuel = 1_000_000",
            1,
            "plugin trap: hook naming: ran out of fuel (1000000 units, plugins.limits.fuel)",
        ),
        case(
            "slow loop past the deadline",
            trap("spin"),
            "fuel = 100_000_000_000\ntimeout_ms = 300",
            1,
            "plugin trap: hook naming: did not finish within 300 ms (plugins.limits.timeout_ms)",
        ),
        case(
            "1 GiB allocation",
            trap("alloc"),
            "",
            1,
            "plugin trap: hook naming: tried to grow its memory to",
        ),
        case(
            "4 GiB allocation, 64 MiB at a time",
            trap("alloc4g"),
            "",
            1,
            "plugin trap: hook naming: tried to grow its memory to",
        ),
        case(
            "deep recursion",
            trap("recurse"),
            "",
            1,
            "plugin trap: hook naming: overflowed its stack",
        ),
        case(
            "10 MB string",
            trap("huge"),
            "",
            1,
            "plugin trap: hook naming: invalid answer: ",
        ),
        case(
            "invalid DNS name",
            lie("dns-label"),
            "",
            1,
            "plugin liar: hook cnames: invalid answer: ",
        ),
        case(
            "17 KB user_data",
            lie("user-data"),
            "",
            1,
            "plugin liar: hook user-data: invalid answer: ",
        ),
        case(
            "aws: tag",
            lie("aws-tag"),
            "",
            1,
            "plugin liar: hook tags: invalid answer: ",
        ),
        case(
            "imports WASI",
            Plugin::Bytes("wasi", wasi_importer()),
            "",
            1,
            "plugin wasi (plugins/wasi.wasm): imports wasi:cli/environment@0.2.0, which heet does not provide",
        ),
        case(
            "malformed bytes",
            Plugin::Bytes(
                "junk",
                b"\0asm\x0d\0\x01\0garbage that is no component".to_vec(),
            ),
            "",
            1,
            "plugin junk (plugins/junk.wasm): ",
        ),
        case(
            "built against heet:plugin@1.0.0",
            Plugin::Bytes("future", other_major()),
            "",
            1,
            "plugin future (plugins/future.wasm): built against heet:plugin@1.0.0, but this heet speaks heet:plugin@0.1.2",
        ),
        case(
            "bytes differ from heet.lock",
            Plugin::Swapped("naming"),
            "",
            2,
            "plugin naming: sha256 ",
        ),
    ]
}

/// The calls of `run` that could have changed something in AWS.
fn mutating(run: &Run) -> Vec<String> {
    run.operations()
        .into_iter()
        .filter(|op| !op.contains(":Describe") && !op.contains(":List") && !op.contains(":Get"))
        .collect()
}

/// The largest resident set of any child process waited for so far, in MiB.
fn peak_child_rss_mib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is a valid `who`.
    let usage = unsafe {
        assert_eq!(
            libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()),
            0
        );
        usage.assume_init()
    };
    usage.ru_maxrss / 1024
}

#[test]
fn every_hostile_plugin_is_stopped_named_and_changes_nothing() {
    let mut failures = Vec::new();
    eprintln!("{:<38} {:>4} {:>8}  error", "case", "exit", "ms");
    for c in catalog() {
        let config = match &c.plugin {
            Plugin::Built("trap", mode) => format!("[plugins.config.trap]\nmode = \"{mode}\"\n"),
            Plugin::Built("liar", lie) => format!("[plugins.config.liar]\nlie = \"{lie}\"\n"),
            _ => String::new(),
        };
        let limits = if c.limits.is_empty() {
            String::new()
        } else {
            format!("[plugins.limits]\n{}\n", c.limits)
        };
        let def = DEF.replace("{plugins}", &format!("{config}{limits}"));
        let p = match &c.plugin {
            Plugin::Built(name, _) => Project::new(&def, &[name]),
            Plugin::Bytes(name, bytes) => {
                let p = Project::new(&def, &[]);
                std::fs::create_dir_all(p.path("plugins")).unwrap();
                std::fs::write(p.path(&format!("plugins/{name}.wasm")), bytes).unwrap();
                p.lock();
                p
            }
            Plugin::Swapped(name) => {
                let p = Project::new(&def, &[name]);
                let file = p.path(&format!("plugins/{name}.wasm"));
                let mut bytes = std::fs::read(&file).unwrap();
                bytes.extend_from_slice(b"\0");
                std::fs::write(&file, bytes).unwrap();
                p
            }
        };
        let started = Instant::now();
        let run = p.heet(&["up", "--env", "staging", "--yes", "--stats"]);
        let elapsed = started.elapsed();
        let err = run.stderr();
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("")
            .to_owned();
        eprintln!(
            "{:<38} {:>4} {:>8}  {}",
            c.name,
            run.code(),
            elapsed.as_millis(),
            line.chars().take(110).collect::<String>()
        );
        let mutating = mutating(&run);
        let checks = [
            (
                run.code() == c.exit,
                format!("exit {} (want {})", run.code(), c.exit),
            ),
            (
                line.contains(c.error) || err.lines().any(|l| l.trim_start().starts_with(c.error)),
                format!("error {line:?} lacks {:?}", c.error),
            ),
            (
                elapsed < Duration::from_secs(20),
                format!("took {elapsed:?}"),
            ),
            (mutating.is_empty(), format!("mutating calls {mutating:?}")),
            (
                moto().leftovers(&p.name).is_empty(),
                "left resources on moto".to_owned(),
            ),
        ];
        for (ok, what) in checks {
            if !ok {
                failures.push(format!("{}: {what}", c.name));
            }
        }
    }
    let rss = peak_child_rss_mib();
    eprintln!("peak resident memory of any heet run (or other child): {rss} MiB");
    // The memory cap is 64 MiB per plugin: a 4 GiB ask must not reach the host.
    assert!(rss < 1024, "a child used {rss} MiB");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a hostile plugin writes must reach neither terminal raw: no ESC, CR or BEL byte, no
/// bidi override or zero-width character, from the plugin, on stdout or stderr.
fn raw_control(out: &str) -> Vec<char> {
    out.chars()
        .filter(|c| {
            matches!(
                c,
                '\x1b' | '\r' | '\x07' | '\u{9b}' | '\u{202e}' | '\u{200b}'
            )
        })
        .collect()
}

#[test]
fn what_a_plugin_says_reaches_the_terminal_escaped_and_bounded() {
    // (mode, exit, what stderr must say, its most bytes)
    let cases: [(&str, i32, &[&str], usize); 5] = [
        (
            "escapes",
            3,
            &[
                "plugin loud: rule\\x1b[2K\\r\\x1b[32mno changes\\x1b[0m \\x1b]8;;https://evil.example/\\x07click",
                "\\u{202e}txt.exe\\u{202c} zero\\u{200b}width",
                "log line \\x1b[2K\\r",
            ],
            4_000,
        ),
        (
            "configure",
            2,
            &["rejected its config: bad config \\x1b[2K\\r"],
            4_000,
        ),
        (
            "panic",
            1,
            &["plugin loud: hook guard: ", "guard gave up \\x1b[2K\\r"],
            4_000,
        ),
        (
            "many",
            3,
            &[
                "policy denied the plan (10000 violation(s))",
                "\n  and 9950 more",
            ],
            16_000,
        ),
        ("huge", 3, &["more bytes cut]"], 4_000),
    ];
    let mut failures = Vec::new();
    for (mode, exit, says, bound) in cases {
        let def = DEF.replace(
            "{plugins}",
            &format!("[plugins.config.loud]\nmode = \"{mode}\"\n"),
        );
        let p = Project::new(&def, &["loud"]);
        let run = p.heet(&["up", "--env", "staging", "--yes", "--stats"]);
        let (out, err) = (run.stdout(), run.stderr());
        let mutating = mutating(&run);
        eprintln!(
            "{mode:<10} exit {} stderr {:>6} bytes, stdout {:>4}",
            run.code(),
            err.len(),
            out.len()
        );
        let checks = [
            (
                run.code() == exit,
                format!("exit {} (want {exit})", run.code()),
            ),
            (
                says.iter().all(|s| err.contains(s)),
                format!("stderr lacks one of {says:?}"),
            ),
            (
                raw_control(&out).is_empty() && raw_control(&err).is_empty(),
                format!(
                    "raw control characters: {:?}",
                    [raw_control(&out), raw_control(&err)].concat()
                ),
            ),
            (
                err.len() + out.len() <= bound,
                format!("{} bytes of output", err.len() + out.len()),
            ),
            (mutating.is_empty(), format!("mutating calls {mutating:?}")),
        ];
        for (ok, what) in checks {
            if !ok {
                failures.push(format!("{mode}: {what}\n{err}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
