//! Purpose-built actors and helpers for tests of supervised code (feature `testsuite`).
//!
//! [`TestChild`] panics, errors, exits or freezes on command, fails its startup a set
//! number of times, and writes every start and stop to a shared [`Journal`], so that a
//! test can assert which children restarted and in what order.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::health::{HealthReport, Status};
use crate::supervisor::ChildSpec;

/// An ordered record of lifecycle events, shared by the children of a test.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn write(&self, entry: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Returns the entries and starts afresh.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub enum TestMsg {
    Panic,
    Fail,
    /// Stop normally (a clean exit).
    Exit,
    /// Block the mailbox for this long (a busy actor).
    Freeze(Duration),
    /// Answers with this incarnation's number: 1 for the first start, 2 after a restart...
    Incarnation(RpcReplyPort<u32>),
    Observe(RpcReplyPort<HealthReport>),
}

crate::observable!(TestMsg::Observe);

/// What a [`TestChild`] is told at start; shared across its restarts.
#[derive(Debug, Clone)]
pub struct TestChildArgs {
    pub name: String,
    pub journal: Journal,
    /// How many of the next starts fail in `pre_start`.
    pub failing_starts: Arc<AtomicU32>,
    pub incarnations: Arc<AtomicU32>,
    /// How long `post_stop` takes (to test shutdown timeouts).
    pub stop_delay: Duration,
}

impl TestChildArgs {
    pub fn new(name: impl Into<String>, journal: &Journal) -> Self {
        Self {
            name: name.into(),
            journal: journal.clone(),
            failing_starts: Arc::new(AtomicU32::new(0)),
            incarnations: Arc::new(AtomicU32::new(0)),
            stop_delay: Duration::ZERO,
        }
    }
}

pub struct TestChild;

pub struct TestChildState {
    args: TestChildArgs,
    incarnation: u32,
}

impl TestChild {
    /// A supervised child spec for a test child, observable for health.
    pub fn spec(args: TestChildArgs) -> ChildSpec {
        let id = args.name.clone();
        ChildSpec::actor(id, "test", move || (TestChild, args.clone())).observed_with::<TestMsg>()
    }
}

impl Actor for TestChild {
    type Msg = TestMsg;
    type State = TestChildState;
    type Arguments = TestChildArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: TestChildArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let failing = args
            .failing_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            args.journal.write(format!("failed-start:{}", args.name));
            return Err(format!("{} refused to start", args.name).into());
        }
        let incarnation = args.incarnations.fetch_add(1, Ordering::SeqCst) + 1;
        args.journal.write(format!("start:{}", args.name));
        Ok(TestChildState { args, incarnation })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        tokio::time::sleep(state.args.stop_delay).await;
        state
            .args
            .journal
            .write(format!("stop:{}", state.args.name));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TestMsg::Panic => panic!("{} panicked on purpose", state.args.name),
            TestMsg::Fail => return Err(format!("{} failed on purpose", state.args.name).into()),
            TestMsg::Exit => myself.stop(None),
            TestMsg::Freeze(duration) => tokio::time::sleep(duration).await,
            TestMsg::Incarnation(reply) => {
                let _ = reply.send(state.incarnation);
            }
            TestMsg::Observe(reply) => {
                let report = HealthReport::new(&state.args.name, "test", Status::Running)
                    .with_detail("incarnation", state.incarnation);
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
}

/// Lets spawned tasks and actors run until `condition` holds, advancing paused time in
/// small steps; panics after `within` of (virtual) time.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut condition: F) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
