//! Graceful shutdown as an explicit object: a "draining" flag every accept loop watches and a
//! count of in-flight connections the process waits on before it exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

#[derive(Clone)]
pub struct Shutdown {
    draining: Arc<watch::Sender<bool>>,
    active: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            draining: Arc::new(watch::channel(false).0),
            active: Arc::default(),
            idle: Arc::default(),
        }
    }

    /// Stop accepting: every accept loop waiting on [`Shutdown::draining`] wakes up.
    pub fn begin(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The listener's next connection, or `None` once draining has begun: every accept loop
    /// stops here. Accept errors (out of file descriptors and the like) are logged and
    /// retried after a pause instead of spinning.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
        what: &str,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.draining() => return None,
            };
            match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Counts one in-flight connection until the guard drops.
    pub fn track(&self) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard { shutdown: self.clone() }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits until no connection is in flight, at most `limit`. True when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

pub struct ConnectionGuard {
    shutdown: Shutdown,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.shutdown.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shutdown.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_the_last_connection_ends_or_at_the_limit() {
        let shutdown = Shutdown::new();
        let guard = shutdown.track();
        assert!(
            !shutdown.wait_idle(Duration::from_secs(1)).await,
            "times out while busy"
        );
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.wait_idle(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        drop(guard);
        assert!(waiter.await.unwrap());
        shutdown.begin();
        shutdown.draining().await;
        assert!(shutdown.is_draining());
    }
}
