//! The live status `expose` and `reach` show on a terminal, redrawn in place once a second
//! as ngrok's console is: the tunnel, where it is reachable, the link to the hub, and the
//! connections and traffic with their current rates. Only when stdout is a terminal and
//! `--json` is off; otherwise the agent prints its plain lines and nothing else. It owns the
//! screen: logs (stderr) are best sent elsewhere (`2>burrow.log`) while it runs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::AgentView;
use crate::shutdown::Shutdown;

const REFRESH: Duration = Duration::from_secs(1);

/// Draws the status of `view` on stdout until the agent starts to drain. `forwarding` says
/// where the tunnel leads (`URL -> target`, or `local address -> tunnel`).
pub fn spawn(view: Arc<AgentView>, role: &'static str, forwarding: String, shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64, 0u64);
        let mut ticks = tokio::time::interval(REFRESH);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.draining() => return,
            }
            let now = Instant::now();
            let link = &view.link;
            let (bytes_in, bytes_out) = (
                link.bytes_in.load(Ordering::Relaxed),
                link.bytes_out.load(Ordering::Relaxed),
            );
            let seconds = now.duration_since(last.0).as_secs_f64().max(0.001);
            let rates = (
                (bytes_in.saturating_sub(last.1)) as f64 / seconds,
                (bytes_out.saturating_sub(last.2)) as f64 / seconds,
            );
            last = (now, bytes_in, bytes_out);
            let screen = render(&view, role, &forwarding, (bytes_in, bytes_out), rates);
            // The whole screen, from its top: log lines on the same terminal (stderr) would
            // throw a redraw counted in lines off.
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b[H\x1b[J{screen}");
            let _ = out.flush();
        }
    });
}

fn render(view: &AgentView, role: &str, forwarding: &str, bytes: (u64, u64), rates: (f64, f64)) -> String {
    let link = &view.link;
    let tunnel = view.tunnel.lock().expect("agent view lock").clone();
    let mut s = String::new();
    let _ = writeln!(s, "burrow {role}{:>52}", "(Ctrl+C to quit)");
    if let Some(tunnel) = &tunnel {
        let _ = writeln!(
            s,
            "tunnel        {} ({}, {})",
            tunnel.name,
            tunnel.id,
            tunnel.protocol.as_str()
        );
    }
    let _ = writeln!(s, "forwarding    {forwarding}");
    let state = match link.transport() {
        Some(transport) => format!("online over {transport}"),
        None if view.shutdown.is_draining() => "draining".to_string(),
        None => "reconnecting".to_string(),
    };
    let _ = writeln!(
        s,
        "hub           {}  {state}, {} reconnects",
        view.hub,
        link.reconnects()
    );
    let _ = writeln!(
        s,
        "connections   open {}   total {}",
        link.connections_open.load(Ordering::Relaxed),
        link.connections_total.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "traffic       in {} ({}/s)   out {} ({}/s)",
        human_bytes(bytes.0 as f64),
        human_bytes(rates.0),
        human_bytes(bytes.1 as f64),
        human_bytes(rates.1)
    );
    s
}

/// `1.2 MB`, `512 B`: decimal units, as network rates are read.
fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_decimal_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1_234_567.0), "1.2 MB");
        assert_eq!(human_bytes(34_100.0), "34.1 kB");
    }
}
