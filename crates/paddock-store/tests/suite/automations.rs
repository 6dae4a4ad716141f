//! The automation firing contract at the store's interface (spec §9.3): a scheduled time is
//! claimed once, whoever asks; a busy thread holds one firing and drops the rest; a change
//! that does not reschedule never writes back a claimed time. What every implementation must
//! do: each test runs on SQLite and on PostgreSQL (`common`). Times are passed in explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_protocol::{DeploymentConfig, Features, Sandbox};
use paddock_store::{
    AccountRecord, AutomationRecord, DeploymentRecord, FireAutomation, FiringKind, FiringResult,
    SendMessage, Store, ThreadTarget,
};

use crate::common;
use common::{Backend, TestDatabase};

const DEP: &str = "dep_autos";
const THREAD: &str = "thr_default_autos";

async fn store(backend: Backend) -> (TestDatabase, Arc<dyn Store>) {
    let (db, store) = common::open(backend).await;
    store
        .create_account(&AccountRecord {
            id: "acct_1".into(),
            name: "default".into(),
            balance_micros: None,
            created_at: 0,
        })
        .await
        .unwrap();
    let config = DeploymentConfig {
        model: "fake/m".into(),
        system_prompt: "Test.".into(),
        sandbox: Sandbox {
            enabled: false,
            kind: "bubblewrap".into(),
            persistent_filesystem: true,
            image: None,
            cpus: 1.0,
            memory_mb: 2048,
            network: "none".into(),
        },
        features: Features::default(),
        mcp_servers: Vec::new(),
        skills: Vec::new(),
        secrets: BTreeMap::new(),
        tool_policies: BTreeMap::new(),
        disabled_tools: Default::default(),
    };
    store
        .create_deployment(&DeploymentRecord {
            id: DEP.into(),
            account_id: "acct_1".into(),
            customer_id: "cus_1".into(),
            name: "Autos".into(),
            runtime: "paddock".into(),
            status: "ready".into(),
            error: None,
            default_thread_id: "thr_default_autos".into(),
            config,
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    (db, store)
}

fn automation(next_run_at: i64) -> AutomationRecord {
    AutomationRecord {
        id: "auto_1".into(),
        deployment_id: DEP.into(),
        name: "a".into(),
        schedule: "0 * * * *".into(),
        schedule_text: None,
        instructions: "Do it.".into(),
        thread_id: THREAD.into(),
        enabled: true,
        created_by: "api".into(),
        next_run_at: Some(next_run_at),
        deferred_at: None,
        last_run_at: None,
        last_run_status: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn scheduled(expected: i64, n: u32) -> FireAutomation {
    FireAutomation {
        automation_id: "auto_1".into(),
        kind: FiringKind::Scheduled {
            expected,
            next: Some(expected + 3600),
            fire: Some(expected),
        },
        run_id: format!("run_fire{n}"),
        message_id: format!("msg_fire{n}"),
        max_active_runs: 8,
        now: expected,
    }
}

async fn a_time_is_claimed_once_and_a_stale_change_does_not_reopen_it(backend: Backend) {
    let (_dir, store) = store(backend).await;
    store
        .create_automation(&automation(3600), false, 100)
        .await
        .unwrap();
    // A change read before the claim...
    let stale = store.get_automation(DEP, "auto_1").await.unwrap();
    let FiringResult::Started(started) = store.fire_automation(scheduled(3600, 1)).await.unwrap()
    else {
        panic!("the first claim starts the run");
    };
    assert_eq!(started.run.trigger, "schedule");
    assert_eq!(started.run.automation_id.as_deref(), Some("auto_1"));
    let kinds: Vec<&str> = started.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["message", "run_status"]);
    // A second claim of the same time (another node, or the process before a restart).
    assert_eq!(
        store.fire_automation(scheduled(3600, 2)).await.unwrap(),
        FiringResult::NotClaimed
    );
    // ...written after it, without rescheduling, keeps the advanced time.
    let mut renamed = stale.clone();
    renamed.name = "renamed".into();
    let after = store.update_automation(&renamed, false).await.unwrap();
    assert_eq!(after.name, "renamed");
    assert_eq!(after.next_run_at, Some(7200));
    assert_eq!(
        store.fire_automation(scheduled(3600, 3)).await.unwrap(),
        FiringResult::NotClaimed
    );
    assert_eq!(after.last_run_status.as_deref(), Some("running"));
}

async fn a_busy_thread_holds_one_firing_and_the_held_one_waits_for_the_thread(backend: Backend) {
    let (_dir, store) = store(backend).await;
    store
        .create_automation(&automation(3600), false, 100)
        .await
        .unwrap();
    // The thread's own run.
    let busy = store
        .send_message(SendMessage {
            deployment_id: DEP.into(),
            target: ThreadTarget::Default,
            message_id: "msg_busy".into(),
            content: "busy".into(),
            attachments: Vec::new(),
            new_run_id: "run_busy".into(),
            answer: paddock_store::Decision::Respond,
            new_thread_id: "thr_unused".into(),
            max_active_runs: 8,
            now: 3000,
        })
        .await
        .unwrap();
    assert!(busy.started_run);
    assert_eq!(
        store.fire_automation(scheduled(3600, 1)).await.unwrap(),
        FiringResult::Deferred
    );
    assert_eq!(
        store.fire_automation(scheduled(7200, 2)).await.unwrap(),
        FiringResult::Dropped
    );
    let held = FireAutomation {
        kind: FiringKind::Deferred,
        ..scheduled(7300, 3)
    };
    assert_eq!(
        store.fire_automation(held.clone()).await.unwrap(),
        FiringResult::NotClaimed,
        "the thread is still busy"
    );
    assert_eq!(store.deferred_automations(10).await.unwrap().len(), 1);
    store
        .fail_run(
            "run_busy",
            paddock_protocol::ErrorInfo {
                code: "cancelled".into(),
                message: "stop".into(),
            },
            serde_json::json!({"error": "cancelled"}),
            7300,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.fire_automation(held.clone()).await.unwrap(),
        FiringResult::Started(_)
    ));
    assert!(store.deferred_automations(10).await.unwrap().is_empty());
    assert_eq!(
        store.fire_automation(held).await.unwrap(),
        FiringResult::NotClaimed,
        "held once, started once"
    );
}

on_both_backends!(
    a_time_is_claimed_once_and_a_stale_change_does_not_reopen_it,
    a_busy_thread_holds_one_firing_and_the_held_one_waits_for_the_thread,
);
