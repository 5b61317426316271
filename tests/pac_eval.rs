//! `burrow pac eval`: one result line per URL, verbatim; a script that does not load exits 2
//! before any output; a call that throws, loops or returns no string stops the batch with
//! exit 1 and the reason; `alert()` goes to the log, never stdout.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn eval(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(["pac", "eval"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SPLIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/pac/split-tunnel.pac");

#[test]
fn results_are_printed_verbatim_one_line_per_url() {
    let out = eval(
        &[
            "--pac",
            SPLIT,
            "http://intranet/",
            "https://wiki.corp.example/page",
            "http://10.20.30.40:8080/x",
            "https://img.cdn.example/a.png",
            "https://static.example/app.js",
            "ftp://files.example/pub",
            "http://WWW.Example.ORG/",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "TUNNEL\nTUNNEL\nTUNNEL corp\nDIRECT\nDIRECT\nSOCKS5 socks.example:1080\nPROXY proxy.example:3128; DIRECT\n"
    );
    assert!(!text(&out.stdout).contains("default route"), "alert() is not output");
}

#[test]
fn scripts_come_from_files_stdin_and_data_urls() {
    let script = "function FindProxyForURL(u, h) { return 'PROXY ' + h + ':1 ' + myIpAddress(); }";
    let out = eval(
        &["--pac", "-", "--my-ip", "10.1.2.3", "http://a.example/"],
        Some(script),
    );
    assert_eq!(
        text(&out.stdout),
        "PROXY a.example:1 10.1.2.3\n",
        "{}",
        text(&out.stderr)
    );
    let out = eval(
        &[
            "--pac",
            "data:,function%20FindProxyForURL(u,h){return%20'DIRECT';}",
            "http://x/",
        ],
        None,
    );
    assert_eq!(text(&out.stdout), "DIRECT\n", "{}", text(&out.stderr));
}

#[test]
fn a_script_that_does_not_load_exits_2_before_any_output() {
    for (script, why) in [
        ("function FindProxyForURL(u, h) {\n  return 'DIRECT';\n", "(line 3)"),
        ("var notAnEntryPoint = 1;", "no FindProxyForURL"),
        ("throw new Error('at load');", "at load"),
    ] {
        let out = eval(&["--pac", "-", "http://x/"], Some(script));
        assert_eq!(out.status.code(), Some(2), "{script}");
        assert!(out.stdout.is_empty());
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(why) && stderr.lines().count() == 1,
            "{script}: {stderr}"
        );
    }
    let out = eval(&["--pac", "/no/such/file.pac", "http://x/"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_failing_call_stops_the_batch_with_exit_1_and_the_reason() {
    let script = "function FindProxyForURL(u, h) {
        if (h == 'throws') throw new Error('no rule for ' + h);
        if (h == 'loops') while (true) {}
        if (h == 'number') return 7;
        return 'DIRECT';
    }";
    for (host, why) in [
        ("throws", "no rule for throws"),
        ("loops", "deadline"),
        ("number", "not a string"),
    ] {
        let url = format!("http://{host}/");
        let out = eval(&["--pac", "-", "http://first/", &url, "http://never/"], Some(script));
        assert_eq!(out.status.code(), Some(1), "{host}");
        assert_eq!(text(&out.stdout), "DIRECT\n", "the batch stops at {host}");
        assert!(text(&out.stderr).contains(why), "{host}: {}", text(&out.stderr));
    }
}
