//! Request-rate buckets in the store (spec §1.11), which several nodes share: a key's bucket
//! holds `burst` tokens, refills at `rate` per second, and is one bucket whichever node asks.
//! Each test runs on SQLite and on PostgreSQL (`common`); times are passed in explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use common::Backend;

async fn a_bucket_gives_its_burst_then_refills_at_its_rate(backend: Backend) {
    let (_db, store) = common::open(backend).await;
    let t0 = 1_700_000_000_000;
    for i in 0..3 {
        assert_eq!(
            store.take_request_token("key_a", 1.0, 3, t0).await.unwrap(),
            None,
            "token {i} of the burst"
        );
    }
    assert_eq!(
        store.take_request_token("key_a", 1.0, 3, t0).await.unwrap(),
        Some(1000),
        "empty: the next token is a second away"
    );
    // Another key has its own bucket.
    assert_eq!(
        store.take_request_token("key_b", 1.0, 3, t0).await.unwrap(),
        None
    );
    // Half a second refills half a token: still empty, half a second to wait.
    assert_eq!(
        store
            .take_request_token("key_a", 1.0, 3, t0 + 500)
            .await
            .unwrap(),
        Some(500)
    );
    assert_eq!(
        store
            .take_request_token("key_a", 1.0, 3, t0 + 1000)
            .await
            .unwrap(),
        None,
        "a second after emptying, one token"
    );
    // A clock behind the last take (another node's) refills nothing and never drains.
    assert_eq!(
        store
            .take_request_token("key_a", 1.0, 3, t0 - 60_000)
            .await
            .unwrap(),
        Some(1000)
    );
    // Idle for a long time: full again, never more than the burst.
    let later = t0 + 86_400_000 * 30;
    for _ in 0..3 {
        assert_eq!(
            store
                .take_request_token("key_a", 1.0, 3, later)
                .await
                .unwrap(),
            None
        );
    }
    assert!(
        store
            .take_request_token("key_a", 1.0, 3, later)
            .await
            .unwrap()
            .is_some()
    );
}

async fn concurrent_takes_never_give_more_than_the_burst(backend: Backend) {
    let (_db, store) = common::open(backend).await;
    let now = 1_700_000_000_000;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .take_request_token("key_c", 0.001, 5, now)
                .await
                .unwrap()
                .is_none()
        }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 5, "exactly the burst");
}

on_both_backends!(
    a_bucket_gives_its_burst_then_refills_at_its_rate,
    concurrent_takes_never_give_more_than_the_burst,
);
