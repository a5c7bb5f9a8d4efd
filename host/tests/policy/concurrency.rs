//! Many threads evaluating at once give exactly the decisions one thread gives.

use std::thread;

use crate::common::*;
use crate::contract::{case_failure, contract_table};

#[test]
fn eight_threads_agree_with_one() {
    let policy = default_policy();
    let inputs: Vec<_> = contract_table().iter().map(case_failure).collect();
    let evaluate_all = || {
        inputs
            .iter()
            .map(|f| {
                engine()
                    .evaluate(&policy, f, &vec![], NOON_MS)
                    .expect("evaluates")
            })
            .collect::<Vec<_>>()
    };
    let expected = evaluate_all();
    let results: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| (0..5).map(|_| evaluate_all()).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (thread, rounds) in results.iter().enumerate() {
        for round in rounds {
            assert_eq!(round, &expected, "thread {thread}");
        }
    }
}

#[test]
fn more_threads_than_pool_slots_wait_instead_of_failing() {
    use retryguard::policy::{EngineConfig, PolicyEngine};
    let small = PolicyEngine::new(EngineConfig {
        max_concurrent_evaluations: 2,
        ..EngineConfig::default()
    })
    .expect("engine");
    let policy = small.load_builtin().expect("loads");
    let f = failure("app.tasks.pay", "ValueError: nope");
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    small
                        .evaluate(&policy, &f, &vec![], NOON_MS)
                        .expect("waits for a slot");
                }
            });
        }
    });
}
