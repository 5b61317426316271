//! Link options for the `burrow` binary, and the commit it is built from.

fn main() {
    // `burrow --version` names the commit, so a bug report says exactly what ran.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BURROW_COMMIT={commit}");
    // `/version` names the compiler too.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BURROW_RUSTC={rustc_version}");
    for head in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(head).exists() {
            println!("cargo:rerun-if-changed={head}");
        }
    }

    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // Opt-in link tuning for small resident memory (docs/tuning.md, scripts/release-tuned.sh):
    // lay out functions in the order of a symbol list generated from profiles of this very
    // build. Only when the list is given; a plain `cargo build` links as rustc does.
    println!("cargo:rerun-if-env-changed=BURROW_SYMBOL_ORDER");
    if let Ok(order) = std::env::var("BURROW_SYMBOL_ORDER") {
        if var("PROFILE") == "release" && std::path::Path::new(&order).exists() {
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
            println!("cargo:rerun-if-changed={order}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
