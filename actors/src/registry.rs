//! Stable names for actors whose `ActorRef` changes on every restart.
//!
//! The supervisor names each child in ractor's registry, which is global to the
//! process; a per-instance prefix keeps two daemons (or two tests) in one process from
//! claiming the same names. Callers hold names, not refs, and look the current actor up
//! when they need it.

use std::sync::Arc;

use ractor::{ActorCell, ActorRef, Message};

#[derive(Debug, Clone)]
pub struct Registry {
    prefix: Arc<str>,
}

impl Registry {
    /// A registry whose names all start with `prefix` (for example a daemon's instance id).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: Arc::from(prefix.into()),
        }
    }

    /// A registry with a prefix no other instance in this process has.
    pub fn unique() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::new(format!("{}.{n}/", std::process::id()))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The process-wide name of `name` in this registry.
    pub fn qualify(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The actor currently running under `name`, if any.
    pub fn lookup_cell(&self, name: &str) -> Option<ActorCell> {
        ractor::registry::where_is(self.qualify(name))
    }

    /// As [`Registry::lookup_cell`], typed. The caller names the message type the actor
    /// was spawned with; a wrong type is caught by ractor when a message is sent.
    pub fn lookup<M: Message>(&self, name: &str) -> Option<ActorRef<M>> {
        self.lookup_cell(name).map(ActorRef::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_registries_never_share_a_name() {
        let a = Registry::unique();
        let b = Registry::unique();
        assert_ne!(a.qualify("vault"), b.qualify("vault"));
        assert!(a.qualify("vault").ends_with("vault"));
    }
}
