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
    for head in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(head).exists() {
            println!("cargo:rerun-if-changed={head}");
        }
    }

    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // Pack the binary's relative relocations (DT_RELR, glibc >= 2.36, GNU ld >= 2.38): the
    // loader then reads a few kB of them at start instead of ~390 kB of RELA entries, which
    // stayed resident in every process (idle hub + agent RSS 18.2-18.7 vs 19.0-19.2 MB,
    // docs/benchmarks.md, eighth session).
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Lay out the functions a hub and its agents execute together, in the order of
    // link/symbol-order.txt (scripts/symbol-order.sh): a process's resident code is every
    // 64 KiB window it touches, and spread over the whole binary that was most of its RSS
    // (docs/benchmarks.md, ninth session). lld only, the default linker of this target since
    // Rust 1.90: skipped for an older rustc and when a linker is chosen by hand. Names the
    // file lists that the binary no longer has are ignored, so a stale file costs memory,
    // never a failed build.
    let manifest_dir = std::path::PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let order = manifest_dir.join("link/symbol-order.txt");
    // link/cc (.cargo/config.toml) is `cc` with a static libc, so lld still links.
    let our_cc = manifest_dir.join("link/cc");
    let linker = var("RUSTC_LINKER");
    let linker_chosen = (!linker.is_empty() && std::path::Path::new(&linker) != our_cc)
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link");
    let lld_by_default = var("TARGET") == "x86_64-unknown-linux-gnu" && rustc_minor().is_some_and(|minor| minor >= 90);
    if var("PROFILE") == "release" && lld_by_default && !linker_chosen && order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The minor version of the rustc building this (`rustc 1.95.0 (...)` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").ok()?;
    let output = std::process::Command::new(rustc).arg("--version").output().ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    version.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}
