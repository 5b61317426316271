//! The async runtime the binary runs on: how many threads, and (opt-in, `--busy-poll DUR`)
//! brief busy-polling before its thread goes to sleep.
//!
//! Polling is off by default: a laptop running `expose` or a hub on a small cloud VM pays for
//! every spinning microsecond in CPU time and battery. It pays off where a CPU woken from
//! idle is slow and traffic is request/response (the loopback benchmark VM): request/response traffic through a tunnel crosses three processes each way
//! (visitor → hub → agent → target and back), and each hop wakes a sleeping thread. On the
//! 2-core VM this was measured on, waking an idle CPU costs 30–60 µs, far more than the
//! relay's own work: a sequential UDP round trip took 95 µs through the tunnel against 11–55 µs
//! direct. A thread that keeps polling for a few tens of microseconds after its last piece of
//! work catches the reply without sleeping, and keeps its CPU awake for the next hop. Measured
//! with a 50 µs window against none (docs/benchmarks.md): sequential
//! UDP request/response 2.6× the rate, sequential connections +24%, for more tunnel CPU
//! while traffic flows (a polling thread is busy by definition) and none while idle.
//!
//! How: tokio calls `before_park` when its single thread has nothing to run. While the poll
//! window is open, the hook wakes a do-nothing `spinner` task; the runtime then checks its
//! sockets and timers without blocking, runs whatever became ready, and comes back. The window
//! opens again whenever a round did real work. Each round also yields the CPU
//! (`sched_yield`), so a polling thread steps aside for any other runnable process: without
//! that, polling took CPU from the processes at either end of the tunnel and sequential
//! connections got slower instead of faster.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The busy-poll window to turn on where polling pays (`--busy-poll 50us`): 30, 100 and
/// 200 µs measured the same; this is the cheapest of the windows that kept the gain.
pub const MEASURED_BUSY_POLL: Duration = Duration::from_micros(50);

/// A round that spent longer than this running tasks did real work (the spinner alone takes
/// well under a microsecond), so the window opens again. Wall time: a round the OS preempted
/// also looks like work and keeps the thread polling for one more window. Timed from the
/// runtime's return from parking, so the `block_on` future's work counts too: it runs before
/// the spinner, and a round timed from the spinner missed it (a `reach` agent's UDP socket
/// is served there).
const WORK_ROUND: Duration = Duration::from_micros(2);

/// The runtime: `BURROW_WORKER_THREADS=N` workers, else one thread on machines with at most
/// two cores and one worker per core above that. On 2 cores a single thread measured +29%
/// single-stream and +22% 8-stream throughput through a tcp tunnel, with less CPU and 19% less
/// memory, than two workers (measured 2026-11-24): the relay is bound by wake-ups, and a
/// second worker mostly adds cross-thread ones.
///
/// The single-thread runtime busy-polls for `busy_poll` (zero: never, the default) before
/// sleeping; the multi-thread one does not (not measured: a spinner task cannot be kept on
/// each worker).
pub fn build(busy_poll: Duration) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = env_number("BURROW_WORKER_THREADS").unwrap_or(if cores <= 2 { 1 } else { cores as u64 });
    match workers {
        0 | 1 => single_thread(busy_poll),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n as usize)
            .enable_all()
            .build(),
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// A runtime on the calling thread that busy-polls for `window` before sleeping (none when
/// `window` is zero). Busy-poll state is per thread: call `block_on` on the thread that built
/// it, as `#[tokio::main(flavor = "current_thread")]` does.
pub fn single_thread(window: Duration) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if window.is_zero() {
        return builder.build();
    }
    builder
        .on_thread_park(move || before_park(window))
        .on_thread_unpark(after_unpark);
    let runtime = builder.build()?;
    runtime.spawn(spinner());
    Ok(runtime)
}

/// Where this thread's busy-polling stands.
#[derive(Default)]
struct PollState {
    /// Polling goes on until then.
    until: Option<Instant>,
    /// When the runtime last came back from parking (blocking or not): the round began.
    unparked_at: Option<Instant>,
    /// The spinner, waiting to be woken for another round.
    spinner: Option<Waker>,
}

thread_local! {
    static STATE: RefCell<PollState> = RefCell::default();
    /// Rounds polled without sleeping on this thread (for tests).
    static ROUNDS: Cell<u64> = const { Cell::new(0) };
}

fn after_unpark() {
    STATE.with_borrow_mut(|state| state.unparked_at = Some(Instant::now()));
}

fn before_park(window: Duration) {
    let spinner = STATE.with_borrow_mut(|state| {
        let now = Instant::now();
        if state.unparked_at.is_none_or(|at| now.duration_since(at) > WORK_ROUND) {
            state.until = Some(now + window);
        }
        if state.until.is_some_and(|until| now < until) {
            state.spinner.take()
        } else {
            None
        }
    });
    if let Some(spinner) = spinner {
        ROUNDS.set(ROUNDS.get() + 1);
        // Let any other runnable process have this CPU first; the round follows.
        std::thread::yield_now();
        // The woken spinner is work, so the runtime checks its driver without blocking.
        spinner.wake();
    }
}

/// A task that never finishes and does nothing when polled but leave its waker where
/// `before_park` finds it.
fn spinner() -> impl Future<Output = ()> {
    std::future::poll_fn(|cx| {
        STATE.with_borrow_mut(|state| state.spinner = Some(cx.waker().clone()));
        Poll::Pending
    })
}

/// Rounds this thread has polled without sleeping so far.
pub fn busy_poll_rounds() -> u64 {
    ROUNDS.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time this thread has used (the scheduler's own account, in nanoseconds).
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("cpu ns");
        Duration::from_nanos(ns)
    }

    /// One datagram to itself: a readiness event from the I/O driver, which is the work
    /// that opens the window.
    async fn one_io_event() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(socket.local_addr().unwrap()).await.unwrap();
        socket.send(b"ping").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(socket.recv(&mut buf).await.unwrap(), 4);
    }

    #[test]
    fn polls_after_work_and_then_sleeps() {
        let window = Duration::from_micros(200);
        let runtime = single_thread(window).unwrap();
        runtime.block_on(async {
            let before = busy_poll_rounds();
            one_io_event().await;
            // Let the window that work opened run out.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let after_work = busy_poll_rounds();
            assert!(
                after_work > before,
                "the thread polled without sleeping after the I/O event"
            );

            // Idle: the only work left is this task's own timer, which opens one more window
            // (a few more where the OS preempts a round, as it does under a loaded test run),
            // so far less CPU than the 300 ms of wall time is spent.
            let (cpu, rounds) = (thread_cpu(), busy_poll_rounds());
            tokio::time::sleep(Duration::from_millis(300)).await;
            let spent = thread_cpu() - cpu;
            assert!(
                spent < Duration::from_millis(30),
                "an idle runtime must stop polling, but spent {spent:?} of CPU over 300 ms ({} rounds)",
                busy_poll_rounds() - rounds
            );
        });
    }

    #[test]
    fn a_zero_window_never_polls() {
        let runtime = single_thread(Duration::ZERO).unwrap();
        runtime.block_on(async {
            let before = busy_poll_rounds();
            one_io_event().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(busy_poll_rounds(), before);
        });
    }
}
