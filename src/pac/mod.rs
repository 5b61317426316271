//! PAC files: a script's `FindProxyForURL(url, host)` (or `FindProxyForURLEx`) evaluated on
//! QuickJS (rquickjs), sandboxed: no I/O but name resolution, a deadline per call, a memory
//! cap per script. The standard helpers are Rust (`helpers.rs`); what a result means is
//! `result.rs`.

pub mod clock;
pub mod helpers;
pub mod pool;
pub mod result;
pub mod source;

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rquickjs::convert::Coerced;
use rquickjs::{Context, Ctx, Function, Object, Runtime, Value};

pub use clock::{Clock, SystemClock};
pub use helpers::Resolver;

/// What a script may learn of the world: this host's address, names (through a resolver)
/// and the time.
#[derive(Clone)]
pub struct Sandbox {
    /// What `myIpAddress()` answers.
    pub my_ip: IpAddr,
    pub resolver: Arc<dyn Resolver + Send + Sync>,
    pub clock: Arc<dyn Clock + Send + Sync>,
}

impl Sandbox {
    /// The system's resolver (behind a deadline and a cache) and clock.
    pub fn system(my_ip: IpAddr) -> Self {
        Self {
            my_ip,
            resolver: Arc::new(pool::CachingResolver::new(SystemResolver)),
            clock: Arc::new(SystemClock),
        }
    }
}

/// How long one call of the entry point may run.
pub const CALL_DEADLINE: Duration = Duration::from_millis(500);
/// What one script's heap may hold.
pub const MEMORY_LIMIT: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PacError {
    /// The script does not load: a syntax error, an exception at top level, no entry point.
    #[error("the PAC script does not load: {0}")]
    Load(String),
    #[error("FindProxyForURL threw: {0}")]
    Threw(String),
    #[error("FindProxyForURL ran past its {0:?} deadline")]
    Deadline(Duration),
    #[error("FindProxyForURL returned {0}, not a string")]
    NotAString(String),
    #[error("the PAC engine failed: {0}")]
    Engine(String),
}

/// Name resolution by the system resolver.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str) -> Vec<IpAddr> {
        (host, 0)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .unwrap_or_default()
    }
}

/// A loaded PAC script, ready to be asked about URLs.
pub struct Pac {
    // The context borrows the runtime's heap: dropped first.
    context: Context,
    _runtime: Runtime,
    /// When the running call must stop; read by the runtime's interrupt handler.
    deadline: Arc<Mutex<Option<Instant>>>,
    entry: &'static str,
    /// Whether the entry point can see its `url` argument (else results depend on the host
    /// alone, and may be cached by host).
    reads_url: bool,
    /// Set by the time helpers: a result that read the clock is not cached.
    read_clock: Arc<std::sync::atomic::AtomicBool>,
}

impl Pac {
    /// Loads `source`, its helpers answering from `sandbox`.
    pub fn load(source: &str, sandbox: &Sandbox) -> Result<Self, PacError> {
        let engine = |e: rquickjs::Error| PacError::Engine(e.to_string());
        let runtime = Runtime::new().map_err(engine)?;
        runtime.set_memory_limit(MEMORY_LIMIT);
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let watched = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            watched
                .lock()
                .map(|d| d.is_some_and(|at| Instant::now() >= at))
                .unwrap_or(true)
        })));
        let context = Context::full(&runtime).map_err(engine)?;
        let read_clock: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (entry, reads_url) = context.with(|ctx| -> Result<(&'static str, bool), PacError> {
            install_helpers(&ctx, sandbox, &read_clock).map_err(engine)?;
            *deadline.lock().expect("deadline lock") = Some(Instant::now() + CALL_DEADLINE);
            let loaded = ctx.eval::<(), _>(source);
            *deadline.lock().expect("deadline lock") = None;
            loaded.map_err(|e| PacError::Load(describe(&ctx, e)))?;
            let globals = ctx.globals();
            let defined = |name: &str| globals.get::<_, Value>(name).is_ok_and(|v| v.is_function());
            let entry = if defined("FindProxyForURLEx") {
                "FindProxyForURLEx"
            } else if defined("FindProxyForURL") {
                "FindProxyForURL"
            } else {
                return Err(PacError::Load("it defines no FindProxyForURL function".into()));
            };
            let text: String = ctx.eval(format!("String(globalThis.{entry})")).unwrap_or_default();
            Ok((entry, reads_first_argument(&text)))
        })?;
        Ok(Self {
            context,
            _runtime: runtime,
            deadline,
            entry,
            reads_url,
            read_clock,
        })
    }

    /// Whether results may differ between URLs of one host.
    pub fn reads_url(&self) -> bool {
        self.reads_url
    }

    /// Whether the last call read the clock (`weekdayRange`, `dateRange`, `timeRange`).
    pub fn last_call_read_clock(&self) -> bool {
        self.read_clock.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the script says for `url` and `host`: its result string, verbatim.
    pub fn find_proxy(&self, url: &str, host: &str) -> Result<String, PacError> {
        self.context.with(|ctx| {
            let entry: Function = ctx
                .globals()
                .get(self.entry)
                .map_err(|e| PacError::Engine(e.to_string()))?;
            self.read_clock.store(false, std::sync::atomic::Ordering::Relaxed);
            *self.deadline.lock().expect("deadline lock") = Some(Instant::now() + CALL_DEADLINE);
            let called = entry.call::<_, Value>((url, host));
            let timed_out = self
                .deadline
                .lock()
                .expect("deadline lock")
                .take()
                .is_some_and(|at| Instant::now() >= at);
            let value = match called {
                Ok(value) => value,
                Err(_) if timed_out => return Err(PacError::Deadline(CALL_DEADLINE)),
                Err(e) => return Err(PacError::Threw(describe(&ctx, e))),
            };
            match value.as_string() {
                Some(s) => s.to_string().map_err(|e| PacError::Engine(e.to_string())),
                None => Err(PacError::NotAString(value.type_name().to_string())),
            }
        })
    }
}

/// Whether a function, from its source text, can see its first argument: its name appears
/// in the body, or the body uses `arguments`, `eval` or `Function`. Conservative: any
/// occurrence counts, in a string or a comment too; text that does not look like a function
/// counts as reading it.
fn reads_first_argument(function: &str) -> bool {
    let Some((params, body)) = function.split_once('(').and_then(|(_, rest)| rest.split_once(')')) else {
        return true;
    };
    let identifiers = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let body = identifiers(body);
    let dynamic = ["arguments", "eval", "Function"];
    if body.iter().any(|w| dynamic.contains(&w.as_str())) || body.iter().any(|w| w == "native") {
        return true;
    }
    match identifiers(params).first() {
        Some(url) => body.contains(url),
        None => false,
    }
}

/// An exception as a user reads it: its message and where it was thrown.
fn describe(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    if !error.is_exception() {
        return error.to_string();
    }
    let caught = ctx.catch();
    match caught.as_exception() {
        Some(exception) => {
            let message = exception.message().unwrap_or_default();
            // QuickJS puts the line in `lineNumber`, or only in the stack (`at <eval>:3:7`).
            let line = exception.as_object().get::<_, i32>("lineNumber").ok().or_else(|| {
                let stack = exception.stack()?;
                let frame = stack.lines().find(|l| l.contains(':'))?;
                frame.rsplit(':').nth(1)?.trim_end_matches(')').parse().ok()
            });
            match line {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            }
        }
        None => format!("{caught:?}"),
    }
}

/// The first non-loopback IPv4 address of an interface that is up, else 127.0.0.1: what
/// `myIpAddress()` answers without `--my-ip`.
pub fn my_ip_address() -> IpAddr {
    nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|mut interfaces| {
            interfaces.find_map(|interface| {
                let up = interface.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
                let v4 = interface.address?.as_sockaddr_in().map(|a| a.ip());
                v4.filter(|ip| up && !ip.is_loopback()).map(IpAddr::V4)
            })
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The helpers: the hot ones as global natives, the rest as natives under a hidden object
/// with JavaScript wrappers that coerce their arguments to strings as browsers do and shape
/// the results (null, false) as scripts expect them.
fn install_helpers(
    ctx: &Ctx<'_>,
    sandbox: &Sandbox,
    read_clock: &Arc<std::sync::atomic::AtomicBool>,
) -> rquickjs::Result<()> {
    // The helpers scripts call most take their arguments coerced to strings here, as the
    // reference's JavaScript definitions do, and are globals themselves: a JavaScript
    // wrapper per call doubled the cost of a rule.
    let globals = ctx.globals();
    type Text = Coerced<String>;
    globals.set(
        "isPlainHostName",
        Function::new(ctx.clone(), |Coerced(h): Text| helpers::is_plain_host_name(&h))?,
    )?;
    globals.set(
        "dnsDomainIs",
        Function::new(ctx.clone(), |Coerced(h): Text, Coerced(d): Text| {
            helpers::dns_domain_is(&h, &d)
        })?,
    )?;
    globals.set(
        "localHostOrDomainIs",
        Function::new(ctx.clone(), |Coerced(h): Text, Coerced(d): Text| {
            helpers::local_host_or_domain_is(&h, &d)
        })?,
    )?;
    globals.set(
        "dnsDomainLevels",
        Function::new(ctx.clone(), |Coerced(h): Text| helpers::dns_domain_levels(&h) as i32)?,
    )?;
    globals.set(
        "shExpMatch",
        Function::new(ctx.clone(), |Coerced(s): Text, Coerced(p): Text| {
            helpers::sh_exp_match(&s, &p)
        })?,
    )?;
    let resolver = sandbox.resolver.clone();
    let r = resolver.clone();
    globals.set(
        "isInNet",
        Function::new(
            ctx.clone(),
            move |Coerced(h): Text, Coerced(p): Text, Coerced(m): Text| helpers::is_in_net(&*r, &h, &p, &m),
        )?,
    )?;
    let r = resolver.clone();
    globals.set(
        "isInNetEx",
        Function::new(ctx.clone(), move |Coerced(h): Text, Coerced(p): Text| {
            helpers::is_in_net_ex(&*r, &h, &p)
        })?,
    )?;
    let natives = Object::new(ctx.clone())?;
    let r = resolver.clone();
    natives.set(
        "dnsResolve",
        Function::new(ctx.clone(), move |h: String| {
            helpers::dns_resolve(&*r, &h).unwrap_or_default()
        })?,
    )?;
    let r = resolver;
    natives.set(
        "dnsResolveEx",
        Function::new(ctx.clone(), move |h: String| helpers::dns_resolve_ex(&*r, &h))?,
    )?;
    natives.set(
        "sortIpAddressList",
        Function::new(ctx.clone(), |l: String| {
            helpers::sort_ip_address_list(&l).unwrap_or_default()
        })?,
    )?;
    natives.set(
        "alert",
        Function::new(ctx.clone(), |m: String| tracing::info!(target: "pac", "alert: {m}"))?,
    )?;
    let (c, read) = (sandbox.clock.clone(), read_clock.clone());
    natives.set(
        "weekdayRange",
        Function::new(ctx.clone(), move |a: Vec<String>| {
            read.store(true, std::sync::atomic::Ordering::Relaxed);
            clock::weekday_range(&a, &*c)
        })?,
    )?;
    let (c, read) = (sandbox.clock.clone(), read_clock.clone());
    natives.set(
        "dateRange",
        Function::new(ctx.clone(), move |a: Vec<String>| {
            read.store(true, std::sync::atomic::Ordering::Relaxed);
            clock::date_range(&a, &*c)
        })?,
    )?;
    let (c, read) = (sandbox.clock.clone(), read_clock.clone());
    // -1: the reference throws on an argument count it does not take.
    natives.set(
        "timeRange",
        Function::new(ctx.clone(), move |a: Vec<String>| {
            read.store(true, std::sync::atomic::Ordering::Relaxed);
            clock::time_range(&a, &*c).map_or(-1, i32::from)
        })?,
    )?;
    natives.set("myIpAddress", sandbox.my_ip.to_string())?;
    ctx.globals().set("__burrow_pac", natives)?;
    ctx.eval::<(), _>(PRELUDE)
}

/// The helpers that shape their results (null, false) or take any number of arguments,
/// over the natives.
const PRELUDE: &str = r#"
(function (n) {
  var g = globalThis, s = function (x) { return String(x); };
  g.dnsResolve = function (h) { var r = n.dnsResolve(s(h)); return r === "" ? null : r; };
  g.dnsResolveEx = function (h) { return n.dnsResolveEx(s(h)); };
  g.isResolvable = function (h) { return n.dnsResolve(s(h)) !== ""; };
  g.isResolvableEx = function (h) { return n.dnsResolveEx(s(h)) !== ""; };
  g.myIpAddress = function () { return n.myIpAddress; };
  g.myIpAddressEx = function () { return n.myIpAddress; };
  g.sortIpAddressList = function (l) { var r = n.sortIpAddressList(s(l)); return r === "" ? false : r; };
  g.getClientVersion = function () { return "1.0"; };
  g.alert = function (m) { n.alert(s(m)); };
  var all = function (args) { return Array.prototype.map.call(args, s); };
  g.weekdayRange = function () { return n.weekdayRange(all(arguments)); };
  g.dateRange = function () { return n.dateRange(all(arguments)); };
  g.timeRange = function () {
    var r = n.timeRange(all(arguments));
    if (r < 0) { throw "timeRange: bad number of arguments"; }
    return r === 1;
  };
})(__burrow_pac);
delete globalThis.__burrow_pac;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDns;
    impl Resolver for NoDns {
        fn resolve(&self, _: &str) -> Vec<IpAddr> {
            Vec::new()
        }
    }

    fn load(source: &str) -> Result<Pac, PacError> {
        let sandbox = Sandbox {
            resolver: Arc::new(NoDns),
            ..Sandbox::system("192.0.2.10".parse().unwrap())
        };
        Pac::load(source, &sandbox)
    }

    #[test]
    fn a_script_answers_with_its_helpers() {
        let pac = load(
            r#"function FindProxyForURL(url, host) {
                 if (isPlainHostName(host) || dnsDomainIs(host, ".corp.example")) return "DIRECT";
                 if (shExpMatch(url, "*://cdn.*")) return "DIRECT";
                 if (isInNet(host, "10.0.0.0", "255.0.0.0")) return "PROXY inner:3128";
                 return "PROXY proxy.example:8080; DIRECT " + myIpAddress();
               }"#,
        )
        .unwrap();
        assert_eq!(pac.find_proxy("http://intranet/", "intranet").unwrap(), "DIRECT");
        assert_eq!(
            pac.find_proxy("https://a.corp.example/", "a.corp.example").unwrap(),
            "DIRECT"
        );
        assert_eq!(
            pac.find_proxy("https://cdn.example/x", "cdn.example").unwrap(),
            "DIRECT"
        );
        assert_eq!(
            pac.find_proxy("http://10.2.3.4/", "10.2.3.4").unwrap(),
            "PROXY inner:3128"
        );
        assert_eq!(
            pac.find_proxy("http://www.example/", "www.example").unwrap(),
            "PROXY proxy.example:8080; DIRECT 192.0.2.10"
        );
    }

    #[test]
    fn the_ex_entry_point_wins_and_helpers_coerce_their_arguments() {
        let pac = load(
            r#"function FindProxyForURL(u, h) { return "PROXY old:1"; }
               function FindProxyForURLEx(u, h) { return "DIRECT;" + dnsDomainLevels(h) + ";" + sortIpAddressList("10.0.0.2;::1;10.0.0.1") + ";" + isPlainHostName(12); }"#,
        )
        .unwrap();
        assert_eq!(
            pac.find_proxy("http://a.b.c/", "a.b.c").unwrap(),
            "DIRECT;2;::1;10.0.0.1;10.0.0.2;true"
        );
    }

    #[test]
    fn scripts_that_fail_say_why() {
        assert!(matches!(
            load("function FindProxyForURL(u, h) {"),
            Err(PacError::Load(_))
        ));
        assert!(matches!(load("var x = 1;"), Err(PacError::Load(m)) if m.contains("no FindProxyForURL")));
        let thrower = load("function FindProxyForURL(u, h) { throw new Error('no route for ' + h); }").unwrap();
        let err = thrower.find_proxy("http://x/", "x").unwrap_err();
        assert!(
            matches!(&err, PacError::Threw(m) if m.contains("no route for x")),
            "{err}"
        );
        let number = load("function FindProxyForURL(u, h) { return 42; }").unwrap();
        assert!(matches!(
            number.find_proxy("http://x/", "x"),
            Err(PacError::NotAString(_))
        ));
        let bad_time = load("function FindProxyForURL(u, h) { return timeRange(1, 2, 3) ? 'A' : 'B'; }").unwrap();
        assert!(matches!(bad_time.find_proxy("http://x/", "x"), Err(PacError::Threw(m)) if m.contains("timeRange")),);
    }

    struct Noon;
    impl Clock for Noon {
        fn now(&self) -> (clock::Civil, clock::Civil) {
            let at = clock::Civil {
                year: 2026,
                month: 11,
                day: 7,
                weekday: 1,
                hour: 12,
                minute: 0,
                second: 0,
            };
            (at, at)
        }
    }

    #[test]
    fn time_helpers_take_numbers_and_strings() {
        let sandbox = Sandbox {
            resolver: Arc::new(NoDns),
            clock: Arc::new(Noon),
            ..Sandbox::system("192.0.2.10".parse().unwrap())
        };
        let pac = Pac::load(
            "function FindProxyForURL(u, h) { return [timeRange(9, 17), timeRange('12'), weekdayRange('MON'), \
             weekdayRange('SAT', 'SUN'), dateRange('DEC'), dateRange(1, 6), timeRange(11, 30, 12, 0, 'GMT')].join(); }",
            &sandbox,
        )
        .unwrap();
        assert_eq!(
            pac.find_proxy("http://x/", "x").unwrap(),
            "true,true,true,false,true,false,true"
        );
    }

    #[test]
    fn scripts_that_never_read_the_url_are_told_apart() {
        assert!(!reads_first_argument(
            "function FindProxyForURL(url, host) { return host == 'a' ? 'DIRECT' : 'PROXY p:1'; }"
        ));
        assert!(reads_first_argument(
            "function FindProxyForURL(url, host) { return shExpMatch(url, '*x*') ? 'DIRECT' : ''; }"
        ));
        assert!(reads_first_argument(
            "function FindProxyForURL(u, h) { return arguments[0]; }"
        ));
        assert!(reads_first_argument(
            "function FindProxyForURL(u, h) { return eval('u'); }"
        ));
        assert!(!reads_first_argument("function FindProxyForURL() { return 'DIRECT'; }"));
        assert!(reads_first_argument("function FindProxyForURL() { [native code] }"));
        let pac = load("function FindProxyForURL(url, host) { return timeRange(0, 23) ? host : url; }").unwrap();
        assert!(pac.reads_url());
        pac.find_proxy("http://x/", "x").unwrap();
        assert!(pac.last_call_read_clock());
        let pac = load("function FindProxyForURL(url, host) { return host; }").unwrap();
        assert!(!pac.reads_url());
        pac.find_proxy("http://x/", "x").unwrap();
        assert!(!pac.last_call_read_clock());
    }

    #[test]
    fn a_looping_script_stops_at_its_deadline_and_the_next_call_runs() {
        let pac =
            load("function FindProxyForURL(u, h) { if (h == 'loop') { while (true) {} } return 'DIRECT'; }").unwrap();
        let started = Instant::now();
        assert!(matches!(
            pac.find_proxy("http://loop/", "loop"),
            Err(PacError::Deadline(_))
        ));
        assert!(started.elapsed() < CALL_DEADLINE * 4);
        assert_eq!(pac.find_proxy("http://ok/", "ok").unwrap(), "DIRECT");
    }

    #[test]
    fn a_growing_script_hits_the_memory_cap_and_the_next_call_runs() {
        let pac = load(
            "function FindProxyForURL(u, h) { if (h == 'grow') { var a = []; while (true) { a.push('x'.repeat(1024)); } } return 'DIRECT'; }",
        )
        .unwrap();
        let err = pac.find_proxy("http://grow/", "grow").unwrap_err();
        assert!(matches!(err, PacError::Threw(_) | PacError::Deadline(_)), "{err}");
        assert_eq!(pac.find_proxy("http://ok/", "ok").unwrap(), "DIRECT");
    }
}
