//! `burrow ROLE config-file` prints a template of every setting that a hub started with
//! `--config` reads back; a key that is no setting is refused, named.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_config_file_template_round_trips_and_unknown_keys_are_named() {
    for role in ["hub", "expose", "reach"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
            .args([role, "config-file"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{role}: {}", String::from_utf8_lossy(&out.stderr));
        let template = String::from_utf8(out.stdout).unwrap();
        assert!(template.contains("# log-level = \"info\""), "{role}: {template}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(["hub", "config-file"])
        .output()
        .unwrap();
    let template = String::from_utf8(out.stdout).unwrap();
    assert!(template.contains("# domain = \"localhost\""), "{template}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    let data = dir.path().join("data");
    let edited = template
        .replace("# domain = \"localhost\"", "domain = \"from-file.test\"")
        .replace("# listen = \"0.0.0.0:7443\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "# data-dir = \"./burrow-data\"",
            &format!("data-dir = {:?}", data.to_str().unwrap()),
        );
    std::fs::write(&path, edited).unwrap();
    let args: Vec<String> = [
        "hub",
        "--config",
        path.to_str().unwrap(),
        "--json",
        "--port-range",
        "26950-26959",
    ]
    .map(String::from)
    .to_vec();
    let mut hub = Proc::spawn(&args);
    let ready = hub.ready().await;
    assert_eq!(ready["domain"], "from-file.test", "{ready}");
    hub.kill().await;

    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nlisten_adress = \"typo\"\n").unwrap();
    let mut hub = Proc::spawn(&args);
    let status = hub.exit_status(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(2));
    assert!(
        hub.stderr_text().contains("unknown key \"listen_adress\""),
        "{}",
        hub.stderr_text()
    );
}
