//! Credit holds (spec §16.1): concurrent runs of one account may not together hold more than
//! its balance, a charge ends its call's hold, and a hold lapses when another node takes its
//! run over. Each test runs on SQLite and on PostgreSQL.

use paddock_protocol::RunUsage;
use paddock_store::{CreditHold, ModelResponse, Store, StoreError};
use serde_json::json;

use crate::common::Backend;
use crate::leases::{lease, new_run, store_with_balance};

/// Records a text answer for the leased run, charging it `micros`.
async fn charge(store: &dyn Store, run_id: &str, node: &str, micros: i64, now: i64) {
    store
        .record_model_response(
            &lease(run_id, node),
            ModelResponse {
                step: 1,
                item: json!({"type": "assistant", "text": "ok", "tool_calls": []}),
                agent_message: None,
                tool_calls: Vec::new(),
                usage: RunUsage {
                    input_tokens: 1,
                    output_tokens: 1,
                    credits: micros as f64 / 1e6,
                },
                events: Vec::new(),
                now,
            },
        )
        .await
        .unwrap();
}

async fn hold(store: &dyn Store, run_id: &str, node: &str, micros: i64) -> CreditHold {
    store
        .hold_credits(&lease(run_id, node), micros as f64 / 1e6)
        .await
        .unwrap()
}

async fn calls_in_flight_may_not_hold_more_than_the_balance(backend: Backend) {
    let (_db, store) = store_with_balance(backend, Some(1_000)).await;
    let store = &*store;
    let mut runs = Vec::new();
    for n in 0..4 {
        runs.push(new_run(store, n).await);
    }
    let claimed = store
        .claim_runnable_runs("node_a", 3, 100, 1_100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let (r0, r1, r2) = (&runs[0], &runs[1], &runs[2]);

    // The first call finds the balance free; the second finds 200 of it not held.
    assert_eq!(hold(store, r0, "node_a", 800).await, CreditHold::Held);
    assert_eq!(hold(store, r1, "node_a", 800).await, CreditHold::Held);
    // The third finds all of it held: it waits.
    assert_eq!(hold(store, r2, "node_a", 800).await, CreditHold::Wait);

    // r0's call is charged 300: its hold ends, the balance is 700, r1 still holds 800.
    charge(store, r0, "node_a", 300, 102).await;
    assert_eq!(hold(store, r2, "node_a", 800).await, CreditHold::Wait);
    // r1's is charged 500: balance 200, nothing held; r2 may call.
    charge(store, r1, "node_a", 500, 103).await;
    assert_eq!(hold(store, r2, "node_a", 800).await, CreditHold::Held);
    // A waiting run held nothing: r0 asking again sees only r2's hold.
    assert_eq!(hold(store, r0, "node_a", 700).await, CreditHold::Wait);

    // A run holds what its call adds to what it was already charged: r1 (charged 500) asking
    // for up to 500 holds nothing, so r0 is not held up by it.
    charge(store, r2, "node_a", 100, 104).await; // balance 100
    assert_eq!(hold(store, r1, "node_a", 500).await, CreditHold::Held);
    assert_eq!(hold(store, r0, "node_a", 700).await, CreditHold::Held);

    // Once the balance is spent, no call is let through, however little it holds.
    charge(store, r0, "node_a", 400, 105).await; // r0 now charged 700: balance -300
    for r in [r0, r1, r2] {
        let refused = store.hold_credits(&lease(r, "node_a"), 0.001).await;
        assert!(
            matches!(refused, Err(StoreError::InsufficientCredits)),
            "{refused:?}"
        );
    }
}

async fn a_hold_lapses_when_another_node_takes_its_run_over(backend: Backend) {
    let (_db, store) = store_with_balance(backend, Some(1_000)).await;
    let store = &*store;
    let first = new_run(store, 0).await;
    store
        .claim_runnable_runs("node_a", 1, 100, 200)
        .await
        .unwrap();
    assert_eq!(hold(store, &first, "node_a", 1_000).await, CreditHold::Held);
    let second = new_run(store, 1).await;
    store
        .claim_runnable_runs("node_b", 1, 150, 1_000)
        .await
        .unwrap();
    assert_eq!(hold(store, &second, "node_b", 10).await, CreditHold::Wait);
    // Node A's lease has expired, but until the run is claimed again A may still record (and
    // be charged for) its call: the hold still counts.
    assert_eq!(hold(store, &second, "node_b", 10).await, CreditHold::Wait);
    let claimed = store
        .claim_runnable_runs("node_b", 1, 201, 1_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Taken over: A's call can no longer be charged, and its hold is gone.
    let late = store
        .charge_usage(
            &lease(&first, "node_a"),
            RunUsage {
                input_tokens: 1,
                output_tokens: 1,
                credits: 0.000_5,
            },
            202,
        )
        .await;
    assert!(late.is_err(), "{late:?}");
    assert_eq!(hold(store, &second, "node_b", 10).await, CreditHold::Held);
}

async fn a_call_charged_before_its_record_ends_its_hold(backend: Backend) {
    let (_db, store) = store_with_balance(backend, Some(1_000)).await;
    let store = &*store;
    let runs = [new_run(store, 0).await, new_run(store, 1).await];
    store
        .claim_runnable_runs("node_a", 2, 100, 1_000)
        .await
        .unwrap();
    let (r0, r1) = (&runs[0], &runs[1]);
    assert_eq!(hold(store, r0, "node_a", 1_000).await, CreditHold::Held);
    assert_eq!(hold(store, r1, "node_a", 100).await, CreditHold::Wait);
    store
        .charge_usage(
            &lease(r0, "node_a"),
            RunUsage {
                input_tokens: 10,
                output_tokens: 5,
                credits: 0.000_6,
            },
            101,
        )
        .await
        .unwrap();
    // Balance 400, nothing held: r1 may hold all of it, and r0 must then wait.
    assert_eq!(hold(store, r1, "node_a", 400).await, CreditHold::Held);
    assert_eq!(hold(store, r0, "node_a", 700).await, CreditHold::Wait);
    // r0's next call holds only what it adds to the 600 it was charged (40, not 640): with
    // r1 holding 350, r0 gets through, and r1 asking again is not held up by r0.
    assert_eq!(hold(store, r1, "node_a", 350).await, CreditHold::Held);
    assert_eq!(hold(store, r0, "node_a", 600 + 40).await, CreditHold::Held);
    assert_eq!(hold(store, r1, "node_a", 359).await, CreditHold::Held);
    let account = store.get_account("acct_1").await.unwrap();
    assert_eq!(account.balance_micros, Some(400));
}

async fn an_unlimited_balance_holds_nothing(backend: Backend) {
    let (_db, store) = store_with_balance(backend, None).await;
    let store = &*store;
    let runs = [new_run(store, 0).await, new_run(store, 1).await];
    store
        .claim_runnable_runs("node_a", 2, 100, 1_000)
        .await
        .unwrap();
    for r in &runs {
        assert_eq!(
            hold(store, r, "node_a", i64::MAX / 2).await,
            CreditHold::Held
        );
    }
}

on_both_backends!(
    calls_in_flight_may_not_hold_more_than_the_balance,
    a_hold_lapses_when_another_node_takes_its_run_over,
    a_call_charged_before_its_record_ends_its_hold,
    an_unlimited_balance_holds_nothing,
);
