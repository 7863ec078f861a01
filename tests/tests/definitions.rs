//! The bad definition catalog: every file in `tests/tests/bad-definitions/` is a heet.toml
//! with one mistake. `heet plan` must exit 2 with the exact error, at `file:line:col` where
//! the mistake has a place, before any AWS mutation. One insta snapshot holds them all, so
//! a changed message is reviewed like code, with the source line, the caret under the place,
//! its key path and the help line shown below it.

use tests::{Project, repo_root};

#[test]
fn every_bad_definition_exits_2_with_the_place_and_the_reason() {
    // Two plugins in the folder, so plugin settings have something to be checked against.
    let p = Project::new("", &["naming", "cname"]);
    let dir = repo_root().join("tests/tests/bad-definitions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    // What the entries name beside them (a stack's template).
    for other in std::fs::read_dir(&dir).unwrap() {
        let other = other.unwrap().path();
        if other.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&other, p.path(other.file_name().unwrap().to_str().unwrap())).unwrap();
        }
    }
    assert!(files.len() >= 20, "the catalog has {} files", files.len());

    let mut report = String::new();
    let mut wrong = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        std::fs::copy(file, p.path(name)).unwrap();
        let run = p.heet(&["-f", name, "plan", "--env", "staging", "--stats"]);
        let error: Vec<&str> = run
            .0
            .stderr
            .split(|b| *b == b'\n')
            .filter_map(|l| std::str::from_utf8(l).ok())
            .filter(|l| l.starts_with("error: "))
            .collect();
        let calls = run.operations();
        if run.code() != 2
            || error.len() != 1
            || calls
                .iter()
                .any(|c| !c.contains(":List") && !c.contains(":Describe") && !c.contains(":Get"))
        {
            wrong.push(format!(
                "{name}: exit {}, {calls:?}\n{}",
                run.code(),
                run.stderr()
            ));
        }
        // The error, then what is shown below it: the line, the caret, the key, the help.
        let stderr = run.stderr();
        let shown: Vec<&str> = stderr
            .lines()
            .skip_while(|l| !l.starts_with("error: "))
            .filter(|l| !l.starts_with("aws calls:"))
            .collect();
        report.push_str(&format!("{name}\n  {}\n", shown.join("\n  ")));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    insta::assert_snapshot!(report);
}
