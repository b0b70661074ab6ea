//! Process-wide server state: live or draining, health check failed or not,
//! shutdown requested or not — the flags `/ready`, `/healthcheck/*`,
//! `/quitquitquit` and signal handling flip, and that shards and the main
//! thread read.
//!
//! Every flag is an atomic, so a shard may check `is_draining()` between tasks
//! for the cost of a load of a line nobody writes.  The only lock is the
//! `Mutex`+`Condvar` the main thread parks on in `wait_for_shutdown`; nothing
//! on the request path ever takes it.
//!
//! This file owns no sockets and no policy: *what* draining means (stop
//! accepting, close idle connections, `connection: close` on responses) is
//! decided by the shards; *when* the process exits is decided by the binary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What `/ready` and `/server_info` report (Envoy's `ServerInfo.State`, minus
/// the initialising states a static bootstrap never shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStateKind {
    Live,
    Draining,
}

impl ServerStateKind {
    /// `LIVE` / `DRAINING`, as Envoy spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStateKind::Live => "LIVE",
            ServerStateKind::Draining => "DRAINING",
        }
    }

    /// The `server.state` gauge value (Envoy's enum numbering).
    pub fn gauge_value(self) -> i64 {
        match self {
            ServerStateKind::Live => 0,
            ServerStateKind::Draining => 1,
        }
    }
}

/// See the module essay.
#[derive(Debug)]
pub struct ServerState {
    started: Instant,
    started_wall: SystemTime,
    draining: AtomicBool,
    healthcheck_failed: AtomicBool,
    /// Shared as an `Arc` so a signal handler can own it directly
    /// (`signal_hook::flag::register`), see `shutdown_flag`.
    shutdown: Arc<AtomicBool>,
    admin_stop: AtomicBool,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
}

/// How often `wait_for_shutdown` re-checks the flag on its own.  Needed only
/// when the flag was set by something that cannot notify the condvar (an
/// async-signal handler); `request_shutdown` wakes the waiter at once.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

impl ServerState {
    pub fn new() -> Arc<Self> {
        Arc::new(ServerState {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            draining: AtomicBool::new(false),
            healthcheck_failed: AtomicBool::new(false),
            shutdown: Arc::new(AtomicBool::new(false)),
            admin_stop: AtomicBool::new(false),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Wall-clock start time (for `/server_info`-style reporting).
    pub fn started_wall(&self) -> SystemTime {
        self.started_wall
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Enters draining for good (there is no way back, as in Envoy).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn healthcheck_failed(&self) -> bool {
        self.healthcheck_failed.load(Ordering::Relaxed)
    }

    /// `/healthcheck/fail` (true) and `/healthcheck/ok` (false).
    pub fn set_healthcheck_failed(&self, failed: bool) {
        self.healthcheck_failed.store(failed, Ordering::Relaxed);
    }

    /// Asks the process to shut down (`/quitquitquit`, SIGTERM/SIGINT through
    /// a signal-handling thread).  Wakes `wait_for_shutdown`.  Not
    /// async-signal-safe (it takes a mutex to avoid a lost wake-up); a raw
    /// signal handler should set `shutdown_flag()` instead.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Taking the lock orders this store before the waiter's next check:
        // either it sees the flag before waiting, or it is already waiting and
        // gets the notification.
        drop(self.wait_lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.wait_cv.notify_all();
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// The shutdown flag itself, for `signal_hook::flag::register(SIGTERM, …)`:
    /// setting it is async-signal-safe, and `wait_for_shutdown` notices within
    /// 100 ms.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Blocks the calling (main) thread until shutdown is requested.
    pub fn wait_for_shutdown(&self) {
        let mut guard = self.wait_lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.shutdown_requested() {
            guard = self.wait_cv.wait_timeout(guard, SHUTDOWN_POLL).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// `wait_for_shutdown` with a deadline; true if shutdown was requested.
    pub fn wait_for_shutdown_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.wait_lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.shutdown_requested() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(SHUTDOWN_POLL);
            guard = self.wait_cv.wait_timeout(guard, step).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Draining if draining was started, the health check was failed by hand
    /// (Envoy's `Utility::serverState`: `health_check_failed ? DRAINING :
    /// LIVE`), or shutdown was requested (a server on its way out is not
    /// ready for new traffic).
    pub fn state(&self) -> ServerStateKind {
        if self.is_draining() || self.healthcheck_failed() || self.shutdown_requested() {
            ServerStateKind::Draining
        } else {
            ServerStateKind::Live
        }
    }

    /// Tells the admin server's accept loop to stop (the last step of an
    /// orderly exit, after draining: admin keeps answering `/ready` with
    /// `DRAINING` while shards drain).
    pub fn stop_admin(&self) {
        self.admin_stop.store(true, Ordering::SeqCst);
    }

    pub fn admin_stop_requested(&self) -> bool {
        self.admin_stop.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_flags() {
        let s = ServerState::new();
        assert_eq!(s.state(), ServerStateKind::Live);
        s.set_healthcheck_failed(true);
        assert_eq!(s.state(), ServerStateKind::Draining);
        s.set_healthcheck_failed(false);
        assert_eq!(s.state(), ServerStateKind::Live);
        s.start_draining();
        assert!(s.is_draining());
        assert_eq!(s.state(), ServerStateKind::Draining);
        assert_eq!(s.state().as_str(), "DRAINING");
    }

    #[test]
    fn shutdown_wakes_waiter() {
        let s = ServerState::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            s2.wait_for_shutdown();
            true
        });
        assert!(!s.wait_for_shutdown_timeout(Duration::from_millis(20)));
        s.request_shutdown();
        assert!(t.join().unwrap());
        assert!(s.shutdown_requested());
        assert!(s.wait_for_shutdown_timeout(Duration::ZERO));
    }

    #[test]
    fn raw_flag_is_noticed() {
        let s = ServerState::new();
        let flag = s.shutdown_flag();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            flag.store(true, Ordering::SeqCst);
        });
        s.wait_for_shutdown();
        t.join().unwrap();
    }
}
