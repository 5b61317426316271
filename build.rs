//! Link options for the `burrow` binary.

fn main() {
    // Pack the binary's relative relocations (DT_RELR, glibc >= 2.36, GNU ld >= 2.38): the
    // loader then reads a few kB of them at start instead of ~390 kB of RELA entries, which
    // stayed resident in every process (idle hub + agent RSS 18.2-18.7 vs 19.0-19.2 MB,
    // docs/benchmarks.md, eighth session).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
