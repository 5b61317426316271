//! The PAC engine against pacparser, the reference implementation: every file of
//! `tests/testdata/pac/corpus/` evaluated for every URL of its `.urls` list by both, with
//! the same `myIpAddress()`, must give identical results. pacparser runs from the Python
//! in `BURROW_PACPARSER_PYTHON` (`.ci/run` installs it into a virtualenv).

use std::path::{Path, PathBuf};
use std::process::Command;

const MY_IP: &str = "10.1.2.3";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/pac/corpus")
}

fn pacparser_python() -> String {
    let python = std::env::var("BURROW_PACPARSER_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/ci-tools/pacparser/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let works = Command::new(&python)
        .args(["-c", "import pacparser"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "pacparser is not installed for {python}: python3 -m venv target/ci-tools/pacparser && \
         target/ci-tools/pacparser/bin/pip install pacparser==1.5.3 (.ci/run does), or set BURROW_PACPARSER_PYTHON"
    );
    python
}

fn lines(output: std::process::Output, who: &str) -> Vec<String> {
    assert!(
        output.status.success(),
        "{who} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Both implementations' answers for every URL of `name`.
fn both(python: &str, name: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let pac = corpus().join(format!("{name}.pac"));
    let urls: Vec<String> = std::fs::read_to_string(corpus().join(format!("{name}.urls")))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let reference = Command::new(python)
        .arg(corpus().join("../pacparser_eval.py"))
        .arg(&pac)
        .arg(MY_IP)
        .args(&urls)
        .output()
        .unwrap();
    let ours = Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(["pac", "eval", "--my-ip", MY_IP, "--pac"])
        .arg(&pac)
        .args(&urls)
        .output()
        .unwrap();
    (urls, lines(reference, "pacparser"), lines(ours, "burrow pac eval"))
}

#[test]
fn every_corpus_file_gives_pacparsers_results() {
    let python = pacparser_python();
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "pac").then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 6, "the corpus is {names:?}");
    let mut compared = 0;
    for name in &names {
        let (urls, mut reference, mut ours) = both(&python, name);
        // The two run a moment apart on a live clock: a range boundary crossed in between
        // shows as a difference once, never twice in a row.
        if reference != ours && name.starts_with("time") {
            (_, reference, ours) = both(&python, name);
        }
        assert_eq!(reference.len(), urls.len(), "{name}: pacparser answered {reference:?}");
        for ((url, theirs), mine) in urls.iter().zip(&reference).zip(&ours) {
            assert_eq!(mine, theirs, "{name}: {url}");
        }
        assert_eq!(ours.len(), urls.len(), "{name}");
        compared += urls.len();
    }
    assert!(compared >= 200, "compared {compared} URLs");
}
