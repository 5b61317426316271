//! PAC evaluation per request: a 600-rule PAC (`tests/testdata/pac/corpus/large-rules.pac`)
//! asked about a URL that matches early, one that matches late and one that matches no rule,
//! on the engine directly (uncached), and the proxy's cached answer for a host it has seen.

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

const LARGE: &str = include_str!("../tests/testdata/pac/corpus/large-rules.pac");

fn urls() -> [(&'static str, String, String); 3] {
    let urls: Vec<&str> = include_str!("../tests/testdata/pac/corpus/large-rules.urls")
        .lines()
        .collect();
    let host = |url: &str| burrow::pac::source::host_of(url).unwrap();
    let (early, late, none) = (urls[0], urls[urls.len() - 4], urls[urls.len() - 3]);
    [
        ("early", early.to_string(), host(early)),
        ("late", late.to_string(), host(late)),
        ("no rule", none.to_string(), host(none)),
    ]
}

fn evaluation(c: &mut Criterion) {
    let pac = Pac::load(LARGE, &sandbox()).unwrap();
    let mut group = c.benchmark_group("pac 600 rules");
    for (label, url, host) in urls() {
        group.bench_function(label, |b| b.iter(|| pac.find_proxy(&url, &host).unwrap()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let pool = PacPool::start(LARGE, sandbox(), 1).unwrap();
    let (_, url, host) = &urls()[2];
    runtime.block_on(pool.find_proxy(url, host)).unwrap();
    group.bench_function("cached", |b| b.iter(|| pool.cached(url, host).unwrap()));
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
