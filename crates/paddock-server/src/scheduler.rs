//! The automation scheduler task (spec §9.3): every `[automations] tick_interval`, and when a
//! run's status changes on this node, it runs one [`paddock_core::scheduler::tick`] at the
//! configured clock's time. Each time is claimed
//! through the store in one conditional transaction, so a time fires once whichever node or
//! process ticks, and the first tick after a start catches up missed times within the window.

use std::sync::Arc;

use paddock_core::automations::StoreFirings;
use paddock_core::scheduler::{SchedulerSettings, tick};

use crate::state::AppState;

/// Starts the scheduler loop; it ends at shutdown.
pub(crate) fn spawn(state: &AppState) {
    let state = state.clone();
    let firings = StoreFirings {
        runtime: Arc::clone(&state.runtime),
        max_active_runs: state.settings.rate_limits.max_active_runs_per_deployment,
    };
    let settings = SchedulerSettings {
        catch_up_window_secs: state.settings.automations.catch_up_window_secs,
    };
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(state.settings.automations.tick_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                // A run's status changed on this node: its thread may be free for a held
                // firing now rather than at the next tick.
                () = state.scheduler_wake.notified() => {}
                () = state.shutdown.cancelled() => return,
            }
            let clock = state.settings.automations.clock.as_ref();
            for (automation_id, outcome) in tick(&firings, clock, settings).await {
                tracing::debug!(%automation_id, outcome = outcome.as_str(), "automation");
                state.metrics.observe_firing(outcome.as_str());
            }
        }
    });
}
