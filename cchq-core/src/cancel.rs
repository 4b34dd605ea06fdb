//! Cooperative cancellation: a token the caller fires (the CLI on SIGINT, SIGTERM or SIGHUP) and
//! long-running work watches, so that it stops at a safe point and cleans up (starts again what a
//! restart stopped, releases its lock) instead of being dropped in the middle of a step.
//!
//! Dropping a future stays possible (and is what a second signal does); the cleanup that must
//! survive a drop keeps its state outside the future (`services::RestartGuard`).

use std::sync::Arc;

use tokio::sync::watch;

/// A cancellation token. Cheap to clone; clones share state. Fired once; the first reason stays.
#[derive(Clone, Debug)]
pub struct Cancel {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A token not fired yet.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Fires the token with `reason` (`SIGTERM`, `Ctrl-C`, ...), shown in the interruption error.
    /// Firing it again keeps the first reason.
    pub fn cancel(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
            true
        });
    }

    /// Whether the token was fired.
    pub fn is_cancelled(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Why the token was fired, once it was.
    pub fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Completes once the token is fired (at once if it already was).
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(Option::is_some).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_and_wakes_waiters() {
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        c.cancel("SIGTERM");
        c.cancel("SIGINT");
        waiter.await.unwrap();
        assert_eq!(c.reason().as_deref(), Some("SIGTERM"));
        // Already fired: completes at once.
        c.cancelled().await;
    }
}
