//! Prometheus metrics (spec §17). Labels never carry ids, customer ids or secret names.

use paddock_protocol::{EventType, StoredEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RunFinishedLabels {
    pub status: String,
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub provider: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ToolCallLabels {
    pub origin_kind: String,
    pub outcome: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The server's metric families and the registry that renders them. Owned by [`AppState`].
///
/// [`AppState`]: crate::AppState
pub struct Metrics {
    registry: Registry,
    pub(crate) http_requests: Family<HttpLabels, Counter>,
    pub(crate) http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) runs_active: Family<StatusLabels, Gauge>,
    pub(crate) deployments: Family<StatusLabels, Gauge>,
    pub(crate) sse_connections: Gauge,
    /// Labelled `type`, a keyword in Rust, hence a pair list instead of a struct.
    events: Family<Vec<(&'static str, &'static str)>, Counter>,
    runs_finished: Family<RunFinishedLabels, Counter>,
    tool_calls: Family<ToolCallLabels, Counter>,
    model_tokens: Family<TokenLabels, Counter>,
    automation_firings: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "paddock_http_requests",
            "HTTP requests answered",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "paddock_http_request_duration_seconds",
            "Time to answer HTTP requests (to the first byte for streams)",
            http_duration.clone(),
        );
        let runs_active = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "paddock_runs_active",
            "Runs executing on this node",
            runs_active.clone(),
        );
        let deployments = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "paddock_deployments",
            "Deployments by status",
            deployments.clone(),
        );
        let sse_connections = Gauge::default();
        registry.register(
            "paddock_sse_connections",
            "Open event streams on this node",
            sse_connections.clone(),
        );
        let events = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "paddock_events",
            "Events committed, by type",
            events.clone(),
        );
        let runs_finished = Family::<RunFinishedLabels, Counter>::default();
        registry.register(
            "paddock_runs_finished",
            "Runs that ended, by status and error code",
            runs_finished.clone(),
        );
        let tool_calls = Family::<ToolCallLabels, Counter>::default();
        registry.register(
            "paddock_tool_calls",
            "Tool calls that finished, by origin kind and outcome",
            tool_calls.clone(),
        );
        let model_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "paddock_model_tokens",
            "Model tokens, by provider and direction (input/output)",
            model_tokens.clone(),
        );
        let automation_firings = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "paddock_automation_firings",
            "Automation firings, by outcome",
            automation_firings.clone(),
        );
        Self {
            automation_firings,
            registry,
            model_tokens,
            events,
            runs_finished,
            tool_calls,
            http_requests,
            http_duration,
            runs_active,
            deployments,
            sse_connections,
        }
    }

    /// Counts one scheduler decision (`fired`, `deferred`, `dropped`, `missed`,
    /// `deferred_started`).
    pub(crate) fn observe_firing(&self, outcome: &str) {
        self.automation_firings
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts the tokens of one model call.
    pub(crate) fn observe_tokens(&self, provider: &str, input: u64, output: u64) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.model_tokens
                .get_or_create(&TokenLabels {
                    provider: provider.to_owned(),
                    direction: direction.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Counts one committed event, and what it says about runs and tool calls.
    pub(crate) fn observe_event(&self, e: &StoredEvent) {
        self.events
            .get_or_create(&vec![("type", e.kind.as_str())])
            .inc();
        match e.kind {
            EventType::RunStatus => {
                let Ok(data) = serde_json::from_str::<serde_json::Value>(&e.data) else {
                    return;
                };
                let status = data["status"].as_str().unwrap_or("");
                if status == "completed" || status == "error" {
                    self.runs_finished
                        .get_or_create(&RunFinishedLabels {
                            status: status.to_owned(),
                            error_code: data["error"]["code"].as_str().unwrap_or("").to_owned(),
                        })
                        .inc();
                }
            }
            EventType::ToolResult => {
                let Ok(data) = serde_json::from_str::<serde_json::Value>(&e.data) else {
                    return;
                };
                let origin_kind = if data["origin"] == "builtin" {
                    "builtin"
                } else {
                    "mcp"
                };
                let outcome = if data["result"]["reason"] == "skipped_after_rejection" {
                    "skipped"
                } else if data["result"]["executed"] == false {
                    "refused"
                } else if data["is_error"] == true {
                    "error"
                } else {
                    "ok"
                };
                self.tool_calls
                    .get_or_create(&ToolCallLabels {
                        origin_kind: origin_kind.to_owned(),
                        outcome: outcome.to_owned(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not render metrics");
        }
        out
    }
}
