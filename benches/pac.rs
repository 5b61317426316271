//! PAC evaluation per request, uncached, on the engine directly, for two 600-rule PACs:
//! `large-rules.pac` scans its rules in order (asked about a URL that matches early, one that
//! matches late and one that matches no rule); `large-domains.pac` looks its rules up in a
//! table (asked about a subdomain of a listed domain, a host it does not list and a literal
//! address in a listed network). Then the proxy's cached answer for a host it has seen.

use std::sync::Arc;

use burrow::pac::pool::{CachingResolver, PacPool};
use burrow::pac::{Pac, Resolver, Sandbox};
use criterion::{criterion_group, criterion_main, Criterion};

/// Names never resolve here: the rules that need DNS are for literal addresses.
struct NoDns;
impl Resolver for NoDns {
    fn resolve(&self, _: &str) -> Vec<std::net::IpAddr> {
        Vec::new()
    }
}

fn sandbox() -> Sandbox {
    Sandbox {
        resolver: Arc::new(CachingResolver::new(NoDns)),
        ..Sandbox::system("10.1.2.3".parse().unwrap())
    }
}

const SCANNED: &str = include_str!("../tests/testdata/pac/corpus/large-rules.pac");
const LOOKED_UP: &str = include_str!("../tests/testdata/pac/corpus/large-domains.pac");

/// Labelled (url, host) pairs from a corpus `.urls` file, picked by line index.
fn pick(urls: &'static str, picks: &[(&'static str, usize)]) -> Vec<(&'static str, String, String)> {
    let urls: Vec<&str> = urls.lines().collect();
    let host = |url: &str| burrow::pac::source::host_of(url).unwrap();
    picks
        .iter()
        .map(|&(label, index)| {
            let url = urls[index];
            (label, url.to_string(), host(url))
        })
        .collect()
}

fn evaluation(c: &mut Criterion) {
    let scanned = pick(
        include_str!("../tests/testdata/pac/corpus/large-rules.urls"),
        &[("early", 0), ("late", 90), ("no rule", 91)],
    );
    let looked_up = pick(
        include_str!("../tests/testdata/pac/corpus/large-domains.urls"),
        &[("subdomain", 17), ("no rule", 43), ("network", 35)],
    );
    for (group, source, urls) in [
        ("pac 600 rules", SCANNED, &scanned),
        ("pac 600 domains", LOOKED_UP, &looked_up),
    ] {
        let pac = Pac::load(source, &sandbox()).unwrap();
        let mut group = c.benchmark_group(group);
        for (label, url, host) in urls {
            group.bench_function(*label, |b| b.iter(|| pac.find_proxy(url, host).unwrap()));
        }
        group.finish();
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let pool = PacPool::start(SCANNED, sandbox(), 1).unwrap();
    let (_, url, host) = &scanned[2];
    runtime.block_on(pool.find_proxy(url, host)).unwrap();
    c.bench_function("pac 600 rules/cached", |b| b.iter(|| pool.cached(url, host).unwrap()));
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
