//! The binary's own surface: help, exit codes of clap errors, completions. Its presence also
//! makes `cargo test --workspace` build `target/<profile>/heet`, which the `tests` crate drives.

use std::process::Command;

fn heet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_heet"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_documents_the_exit_codes() {
    let out = heet(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains(
            "Exit codes: 0 ok, 1 runtime or AWS error, 2 usage, definition or heet.lock error, 3 policy denied"
        ),
        "{help}"
    );
}

#[test]
fn a_missing_env_is_a_usage_error() {
    let out = heet(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--env <ENV>"));
}

#[test]
fn completions_cover_the_commands() {
    let out = heet(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for cmd in ["plan", "up", "down", "plugins"] {
        assert!(script.contains(cmd), "bash completion lacks {cmd}");
    }
}
