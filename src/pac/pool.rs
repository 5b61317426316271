//! A PAC script serving a proxy: worker threads that each hold the compiled script (QuickJS
//! runtimes are not `Send`), a bounded cache of results, and name resolution that is
//! bounded in time and cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Pac, PacError, Resolver, Sandbox};

/// How long a result, or a name's addresses, is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Results (and names) kept at most; a full cache starts over.
const CACHE_ENTRIES: usize = 10_000;
/// How long one name lookup may take before the name counts as unresolvable.
pub const DNS_DEADLINE: Duration = Duration::from_secs(2);

/// A small map whose entries expire, emptied when full: bounded memory, no eviction order.
struct Expiring<V> {
    entries: Mutex<HashMap<(String, String), (Instant, V)>>,
}

impl<V: Clone> Expiring<V> {
    fn new() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }

    fn get(&self, key: &(String, String)) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    fn insert(&self, key: (String, String), value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// The system resolver behind a deadline and a cache: a script that resolves many names,
/// or one that hangs, costs at most [`DNS_DEADLINE`] per new name.
pub struct CachingResolver<R> {
    inner: Arc<R>,
    cache: Expiring<Vec<IpAddr>>,
}

impl<R: Resolver + Send + Sync + 'static> CachingResolver<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner: Arc::new(inner),
            cache: Expiring::new(),
        }
    }
}

impl<R: Resolver + Send + Sync + 'static> Resolver for CachingResolver<R> {
    fn resolve(&self, host: &str) -> Vec<IpAddr> {
        let key = (host.to_ascii_lowercase(), String::new());
        if let Some(addresses) = self.cache.get(&key) {
            return addresses;
        }
        // getaddrinfo cannot be cancelled: a lookup past its deadline finishes on its own
        // thread and is forgotten.
        let (tx, rx) = mpsc::sync_channel(1);
        let (inner, name) = (self.inner.clone(), key.0.clone());
        let spawned = std::thread::Builder::new().name("pac-dns".into()).spawn(move || {
            let _ = tx.send(inner.resolve(&name));
        });
        let addresses = match spawned {
            Ok(_) => rx.recv_timeout(DNS_DEADLINE).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        self.cache.insert(key, addresses.clone());
        addresses
    }
}

struct Job {
    url: String,
    host: String,
    reply: tokio::sync::oneshot::Sender<Result<String, PacError>>,
}

/// A loaded script, asked from async code.
pub struct PacPool {
    jobs: mpsc::SyncSender<Job>,
    /// Keyed by (host, url), or (host, "") when the script cannot see the URL.
    results: Arc<Expiring<String>>,
    reads_url: bool,
    script: String,
}

impl PacPool {
    /// Compiles `script` once to report its errors, then on each of `workers` threads.
    pub fn start(script: &str, sandbox: Sandbox, workers: usize) -> Result<Self, PacError> {
        let reads_url = Pac::load(script, &sandbox)?.reads_url();
        let (jobs, queue) = mpsc::sync_channel::<Job>(1024);
        let queue = Arc::new(Mutex::new(queue));
        let results = Arc::new(Expiring::new());
        for n in 0..workers.max(1) {
            let (script, sandbox, queue, results) =
                (script.to_string(), sandbox.clone(), queue.clone(), results.clone());
            std::thread::Builder::new()
                .name(format!("pac-{n}"))
                .spawn(move || {
                    let pac = match Pac::load(&script, &sandbox) {
                        Ok(pac) => pac,
                        Err(e) => return tracing::error!("PAC worker cannot load the script: {e}"),
                    };
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let answer = pac.find_proxy(&job.url, &job.host);
                        if let Ok(result) = &answer {
                            if !pac.last_call_read_clock() {
                                results.insert(key(reads_url, &job.url, &job.host), result.clone());
                            }
                        }
                        let _ = job.reply.send(answer);
                    }
                })
                .map_err(|e| PacError::Engine(format!("starting a PAC worker: {e}")))?;
        }
        Ok(Self {
            jobs,
            results,
            reads_url,
            script: script.to_string(),
        })
    }

    /// The script's text, as loaded.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// The script's answer for `url` and `host`, from the cache when it holds one.
    pub async fn find_proxy(&self, url: &str, host: &str) -> Result<String, PacError> {
        if let Some(hit) = self.cached(url, host) {
            return Ok(hit);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            url: url.to_string(),
            host: host.to_string(),
            reply,
        };
        // A full queue means every worker is busy with slow calls: wait for room off the
        // runtime's threads.
        let jobs = self.jobs.clone();
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await
            .map_err(|e| PacError::Engine(e.to_string()))?
            .map_err(|_| PacError::Engine("the PAC workers have stopped".into()))?;
        answer
            .await
            .map_err(|_| PacError::Engine("a PAC worker stopped".into()))?
    }

    /// A cached answer, if there is one.
    pub fn cached(&self, url: &str, host: &str) -> Option<String> {
        self.results.get(&key(self.reads_url, url, host))
    }
}

fn key(reads_url: bool, url: &str, host: &str) -> (String, String) {
    let url = if reads_url { url } else { "" };
    (host.to_string(), url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(Arc<AtomicUsize>);
    impl Resolver for Counting {
        fn resolve(&self, host: &str) -> Vec<IpAddr> {
            self.0.fetch_add(1, Ordering::Relaxed);
            if host == "slow.test" {
                std::thread::sleep(DNS_DEADLINE * 2);
            }
            vec!["10.1.2.3".parse().unwrap()]
        }
    }

    #[test]
    fn names_are_cached_and_slow_ones_give_up() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver = CachingResolver::new(Counting(lookups.clone()));
        assert_eq!(resolver.resolve("a.test").len(), 1);
        assert_eq!(resolver.resolve("A.test").len(), 1);
        assert_eq!(lookups.load(Ordering::Relaxed), 1);
        let started = Instant::now();
        assert!(resolver.resolve("slow.test").is_empty());
        assert!(started.elapsed() < DNS_DEADLINE * 2);
    }

    fn sandbox() -> Sandbox {
        Sandbox {
            resolver: Arc::new(CachingResolver::new(Counting(Arc::default()))),
            ..Sandbox::system("192.0.2.1".parse().unwrap())
        }
    }

    #[tokio::test]
    async fn results_are_cached_by_host_when_the_script_ignores_the_url() {
        let pool = PacPool::start(
            "var n = 0; function FindProxyForURL(url, host) { n++; return 'PROXY p:' + n; }",
            sandbox(),
            1,
        )
        .unwrap();
        let first = pool.find_proxy("http://a/1", "a").await.unwrap();
        assert_eq!(pool.find_proxy("http://a/2", "a").await.unwrap(), first);
        assert_ne!(pool.find_proxy("http://b/", "b").await.unwrap(), first);

        let by_url = PacPool::start(
            "var n = 0; function FindProxyForURL(url, host) { n++; return shExpMatch(url, '*') ? 'PROXY p:' + n : ''; }",
            sandbox(),
            1,
        )
        .unwrap();
        let one = by_url.find_proxy("http://a/1", "a").await.unwrap();
        assert_ne!(by_url.find_proxy("http://a/2", "a").await.unwrap(), one);
        assert_eq!(by_url.find_proxy("http://a/1", "a").await.unwrap(), one);

        let timed = PacPool::start(
            "var n = 0; function FindProxyForURL(url, host) { n++; return timeRange(0, 23) ? 'PROXY p:' + n : ''; }",
            sandbox(),
            1,
        )
        .unwrap();
        let one = timed.find_proxy("http://a/", "a").await.unwrap();
        assert_ne!(timed.find_proxy("http://a/", "a").await.unwrap(), one);
    }

    #[tokio::test]
    async fn a_looping_call_fails_alone() {
        let pool = PacPool::start(
            "function FindProxyForURL(url, host) { if (host == 'loop') { for (;;) {} } return 'DIRECT'; }",
            sandbox(),
            1,
        )
        .unwrap();
        let looping = pool.find_proxy("http://loop/", "loop");
        let after = pool.find_proxy("http://ok/", "ok");
        let (looped, ok) = tokio::join!(looping, after);
        assert!(matches!(looped, Err(PacError::Deadline(_))));
        assert_eq!(ok.unwrap(), "DIRECT");
        assert!(PacPool::start("function (", sandbox(), 1).is_err());
    }
}
