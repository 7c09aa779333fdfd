//! The supervisor's OTP semantics, driven with purpose-built children under paused time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::ActorRef;
use rstest::rstest;
use switchboard_actors::testing::{Journal, TestChild, TestChildArgs, TestMsg, eventually};
use switchboard_actors::{
    Backoff, ChildSpec, HealthReport, Registry, Restart, Status, Strategy, SupervisorRef,
    SupervisorSpec,
};

const PATIENCE: Duration = Duration::from_secs(120);
const OBSERVE: Duration = Duration::from_millis(200);

fn spec(name: &str, strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new(name)
        .strategy(strategy)
        .intensity(10, Duration::from_secs(60))
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
        ))
        .registry(Registry::unique())
}

fn children(journal: &Journal, names: &[&str]) -> Vec<TestChildArgs> {
    names
        .iter()
        .map(|n| TestChildArgs::new(*n, journal))
        .collect()
}

async fn start(spec: SupervisorSpec, args: &[TestChildArgs]) -> SupervisorRef {
    let spec = args
        .iter()
        .fold(spec, |spec, a| spec.child(TestChild::spec(a.clone())));
    SupervisorRef::spawn(spec)
        .await
        .expect("supervisor starts")
        .0
}

async fn child_ref(supervisor: &SupervisorRef, id: &str) -> ActorRef<TestMsg> {
    let cell = supervisor.child(id).await.expect("supervisor answers");
    ActorRef::from(cell.unwrap_or_else(|| panic!("{id} is not running")))
}

async fn send(supervisor: &SupervisorRef, id: &str, message: TestMsg) {
    child_ref(supervisor, id)
        .await
        .send_message(message)
        .unwrap_or_else(|_| panic!("{id} accepts messages"));
}

async fn node(supervisor: &SupervisorRef, id: &str) -> Option<HealthReport> {
    supervisor.observe(OBSERVE).await.find(&[id]).cloned()
}

async fn wait_for_status(supervisor: &SupervisorRef, id: &str, status: Status) -> HealthReport {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(report) = node(supervisor, id).await
            && report.status == status
        {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[rstest]
#[case::one_for_one(Strategy::OneForOne, &["start:b"])]
#[case::one_for_all(Strategy::OneForAll, &["stop:c", "stop:a", "start:a", "start:b", "start:c"])]
#[case::rest_for_one(Strategy::RestForOne, &["stop:c", "start:b", "start:c"])]
#[tokio::test(start_paused = true)]
async fn strategy_decides_which_children_restart_and_in_what_order(
    #[case] strategy: Strategy,
    #[case] expected: &[&str],
) {
    let journal = Journal::default();
    let args = children(&journal, &["a", "b", "c"]);
    let supervisor = start(spec("strategies", strategy), &args).await;
    assert_eq!(journal.take(), ["start:a", "start:b", "start:c"]);

    send(&supervisor, "b", TestMsg::Fail).await;
    eventually(PATIENCE, || journal.entries().len() >= expected.len()).await;
    // Let anything unexpected (an extra restart) show up before comparing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(journal.entries(), expected);
    for name in ["a", "b", "c"] {
        assert_eq!(
            wait_for_status(&supervisor, name, Status::Running)
                .await
                .status,
            Status::Running
        );
    }
}

#[rstest]
#[case::permanent_after_exit(Restart::Permanent, TestMsg::Exit, true)]
#[case::permanent_after_failure(Restart::Permanent, TestMsg::Fail, true)]
#[case::transient_after_exit(Restart::Transient, TestMsg::Exit, false)]
#[case::transient_after_failure(Restart::Transient, TestMsg::Fail, true)]
#[case::temporary_after_exit(Restart::Temporary, TestMsg::Exit, false)]
#[case::temporary_after_failure(Restart::Temporary, TestMsg::Fail, false)]
#[tokio::test(start_paused = true)]
async fn restart_type_decides_whether_an_exited_child_comes_back(
    #[case] restart: Restart,
    #[case] how: TestMsg,
    #[case] restarted: bool,
) {
    let journal = Journal::default();
    let args = TestChildArgs::new("worker", &journal);
    let spec = spec("restart-types", Strategy::OneForOne)
        .child(TestChild::spec(args.clone()).restart(restart));
    let supervisor = SupervisorRef::spawn(spec).await.expect("starts").0;

    send(&supervisor, "worker", how).await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    assert_eq!(
        args.incarnations.load(Ordering::SeqCst),
        if restarted { 2 } else { 1 }
    );
    let report = node(&supervisor, "worker").await;
    match (restart, restarted) {
        (_, true) => {
            let report = report.expect("still supervised");
            assert_eq!((report.status, report.restarts), (Status::Running, 1));
        }
        (Restart::Temporary, false) => assert!(report.is_none(), "temporary child is forgotten"),
        (_, false) => assert_eq!(report.expect("still listed").status, Status::Stopped),
    }
}

#[rstest]
#[case::panic_in_a_handler(TestMsg::Panic, 0)]
#[case::error_from_a_handler(TestMsg::Fail, 0)]
#[case::failure_in_startup(TestMsg::Exit, 2)]
#[tokio::test(start_paused = true)]
async fn every_kind_of_failure_is_restarted(#[case] failure: TestMsg, #[case] failing_starts: u32) {
    let journal = Journal::default();
    let args = TestChildArgs::new("fragile", &journal);
    let spec = spec("failures", Strategy::OneForOne).child(TestChild::spec(args.clone()));
    let supervisor = SupervisorRef::spawn(spec).await.expect("starts").0;

    // The startup case: the next two starts fail, then the child starts.
    args.failing_starts.store(failing_starts, Ordering::SeqCst);
    send(&supervisor, "fragile", failure).await;

    eventually(PATIENCE, || args.incarnations.load(Ordering::SeqCst) == 2).await;
    let report = wait_for_status(&supervisor, "fragile", Status::Running).await;
    // Failed start attempts count toward intensity, not as restarts: one restart happened.
    assert_eq!(report.restarts, 1);
    if failing_starts > 0 {
        let entries = journal.entries();
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.starts_with("failed-start"))
                .count(),
            2
        );
        // Running again: nothing is wrong now, and the failure is kept as history.
        assert_eq!(report.last_error, None);
        assert!(
            report
                .last_failure
                .expect("failure kept")
                .reason
                .contains("refused to start")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_escalates_to_the_parent_naming_the_child() {
    let journal = Journal::default();
    let flaky = TestChildArgs::new("flaky", &journal);
    let registry = Registry::unique();
    let inner = SupervisorSpec::new("inner")
        .intensity(2, Duration::from_secs(60))
        .backoff(Backoff::new(Duration::ZERO, Duration::ZERO))
        .registry(registry.clone())
        .child(TestChild::spec(flaky.clone()));
    let root = SupervisorRef::spawn(
        SupervisorSpec::new("root")
            .intensity(5, Duration::from_secs(60))
            .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)))
            .registry(registry.clone())
            .child(ChildSpec::supervisor(inner)),
    )
    .await
    .expect("starts")
    .0;

    for incarnation in 1..=3 {
        eventually(PATIENCE, || {
            flaky.incarnations.load(Ordering::SeqCst) == incarnation
        })
        .await;
        let child: ActorRef<TestMsg> = registry.lookup("flaky").expect("flaky registered");
        child.send_message(TestMsg::Fail).expect("delivered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // The third failure within the window is one restart too many for `inner`: it
    // gives up, and root restarts it, which brings flaky back a fourth time.
    eventually(PATIENCE, || flaky.incarnations.load(Ordering::SeqCst) == 4).await;
    let report = wait_for_status(&root, "inner", Status::Running).await;
    assert_eq!(
        report.restarts, 1,
        "root restarted the escalating supervisor once"
    );
    assert_eq!(report.last_error, None, "recovered: nothing wrong now");
    let reason = report
        .last_failure
        .clone()
        .expect("escalation reason kept")
        .reason;
    assert!(reason.contains("supervisor 'inner' gave up"), "{reason}");
    assert!(reason.contains("child 'flaky'"), "{reason}");
    // The restarted supervisor brought its child back, with a clean slate.
    assert_eq!(
        report.find(&["flaky"]).map(|f| f.status),
        Some(Status::Running)
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_root_fails_instead_of_restarting_forever() {
    let journal = Journal::default();
    let flaky = TestChildArgs::new("flaky", &journal);
    // Starting fails every time: the root gives up after two restarts.
    flaky.failing_starts.store(u32::MAX, Ordering::SeqCst);
    let spec = SupervisorSpec::new("root")
        .intensity(2, Duration::from_secs(60))
        .backoff(Backoff::new(Duration::ZERO, Duration::ZERO))
        .child(TestChild::spec(flaky));
    let (root, handle) = SupervisorRef::spawn(spec).await.expect("spawned");
    tokio::time::timeout(PATIENCE, handle)
        .await
        .expect("root gave up")
        .expect("root task ended cleanly");

    assert_eq!(
        journal.entries().len(),
        3,
        "first start and two restarts: {:?}",
        journal.entries()
    );
    let report = root.observe(OBSERVE).await;
    assert_eq!(report.status, Status::Stopped);
}

#[tokio::test(start_paused = true)]
async fn explicit_restart_touches_only_that_child_and_is_counted_apart() {
    let journal = Journal::default();
    let args = children(&journal, &["a", "b", "c"]);
    let supervisor = start(spec("explicit", Strategy::OneForAll), &args).await;
    let before_a = child_ref(&supervisor, "a").await.get_id();
    journal.take();

    supervisor.restart_child("b").await.expect("b exists");

    assert_eq!(journal.take(), ["stop:b", "start:b"]);
    assert_eq!(child_ref(&supervisor, "a").await.get_id(), before_a);
    let tree = supervisor.observe(OBSERVE).await;
    let b = tree.find(&["b"]).expect("b listed");
    assert_eq!((b.restarts, b.manual_restarts), (0, 1));
    assert!(b.last_restart_at.is_some());
    let a = tree.find(&["a"]).expect("a listed");
    assert_eq!((a.restarts, a.manual_restarts), (0, 0));
    assert!(matches!(
        supervisor.restart_child("nope").await,
        Err(switchboard_actors::SupervisorError::UnknownChild(_))
    ));

    supervisor.restart_all().await.expect("restart all");
    assert_eq!(
        journal.take(),
        [
            "stop:c", "stop:b", "stop:a", "start:a", "start:b", "start:c"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn removing_a_dynamic_child_stops_it_without_restarting_it() {
    let journal = Journal::default();
    let supervisor = start(spec("dynamic", Strategy::OneForOne), &[]).await;
    let args = TestChildArgs::new("tenant-1", &journal);
    supervisor
        .add_child(TestChild::spec(args.clone()))
        .await
        .expect("added");
    assert!(matches!(
        supervisor.add_child(TestChild::spec(args.clone())).await,
        Err(switchboard_actors::SupervisorError::DuplicateChild(_))
    ));
    assert_eq!(
        wait_for_status(&supervisor, "tenant-1", Status::Running)
            .await
            .kind,
        "test"
    );

    supervisor.remove_child("tenant-1").await.expect("removed");
    tokio::time::sleep(Duration::from_secs(10)).await;

    assert_eq!(journal.entries(), ["start:tenant-1", "stop:tenant-1"]);
    assert!(node(&supervisor, "tenant-1").await.is_none());
    assert!(
        supervisor
            .child("tenant-1")
            .await
            .expect("answers")
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn children_stop_in_reverse_order_and_slow_ones_are_killed() {
    let journal = Journal::default();
    let mut args = children(&journal, &["a", "b", "c"]);
    args[1].stop_delay = Duration::from_secs(3600);
    let spec = args
        .iter()
        .fold(spec("shutdown", Strategy::OneForOne), |spec, a| {
            spec.child(TestChild::spec(a.clone()).shutdown(Duration::from_secs(2)))
        });
    let supervisor = SupervisorRef::spawn(spec).await.expect("starts").0;
    journal.take();

    let started = tokio::time::Instant::now();
    assert!(supervisor.stop(Duration::from_secs(30)).await);
    // b never finished its post_stop: killed after its 2 s shutdown timeout.
    assert_eq!(journal.take(), ["stop:c", "stop:a"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_busy_child_is_reported_from_its_last_report_marked_stale() {
    let journal = Journal::default();
    let args = children(&journal, &["busy", "idle"]);
    let supervisor = start(spec("observe", Strategy::OneForOne), &args).await;
    let fresh = supervisor.observe(OBSERVE).await;
    assert!(!fresh.find(&["busy"]).expect("listed").stale);

    send(
        &supervisor,
        "busy",
        TestMsg::Freeze(Duration::from_secs(3600)),
    )
    .await;
    let started = tokio::time::Instant::now();
    let tree = supervisor.observe(OBSERVE).await;
    assert!(started.elapsed() <= OBSERVE * 2);

    let busy = tree.find(&["busy"]).expect("listed");
    assert!(busy.stale);
    assert_eq!(busy.details["incarnation"], 1, "last known report kept");
    assert!(!tree.find(&["idle"]).expect("listed").stale);
}

#[tokio::test(start_paused = true)]
async fn the_restart_waits_out_a_backoff_within_its_ceiling() {
    let journal = Journal::default();
    let args = TestChildArgs::new("slow", &journal);
    let spec = SupervisorSpec::new("backoff")
        .backoff(Backoff::new(Duration::from_secs(8), Duration::from_secs(8)))
        .child(TestChild::spec(args.clone()));
    let supervisor = SupervisorRef::spawn(spec).await.expect("starts").0;
    let failed_at = tokio::time::Instant::now();
    send(&supervisor, "slow", TestMsg::Fail).await;

    eventually(PATIENCE, || args.incarnations.load(Ordering::SeqCst) == 2).await;
    assert!(failed_at.elapsed() <= Duration::from_secs(8) + Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn a_failing_loader_is_retried_in_the_background_without_blocking_the_supervisor() {
    use std::sync::atomic::AtomicU32;
    let journal = Journal::default();
    let attempts = std::sync::Arc::new(AtomicU32::new(0));
    let loader_attempts = std::sync::Arc::clone(&attempts);
    let loader_journal = journal.clone();
    let spec = spec("loaded", Strategy::OneForOne).loader(move || {
        let (attempts, journal) = (
            std::sync::Arc::clone(&loader_attempts),
            loader_journal.clone(),
        );
        async move {
            if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                return Err("the database is down".into());
            }
            Ok(vec![TestChild::spec(TestChildArgs::new(
                "tenant-a", &journal,
            ))])
        }
    });
    let supervisor = SupervisorRef::spawn(spec).await.expect("starts at once").0;
    let first = supervisor.observe(OBSERVE).await;
    assert!(first.children.is_empty());

    eventually(PATIENCE, || journal.entries() == ["start:tenant-a"]).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let loaded = supervisor.observe(OBSERVE).await;
    assert_eq!(loaded.status, Status::Running);
    assert_eq!(
        loaded.find(&["tenant-a"]).map(|c| c.status),
        Some(Status::Running)
    );
}
