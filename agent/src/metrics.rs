//! Setup latency, measured: every CNI call through the agent records the duration of each of
//! its phases into Prometheus histograms and its outcome into counters, served as text on
//! `--metrics-addr` (`GET /metrics`); the last calls are kept with their phase breakdown for
//! `plexus-agent trace`.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many calls `trace` remembers.
const RECENT: usize = 256;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    command: String,
    phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    command: String,
    outcome: String,
}

/// One call, as `trace` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallTrace {
    /// ADD, DEL, ...
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// `ok`, or the CNI error code.
    pub outcome: String,
    /// Whole call, seconds.
    pub total: f64,
    /// Each phase, seconds, in order.
    pub phases: Vec<(String, f64)>,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    phases: Family<PhaseLabels, Histogram>,
    calls: Family<CallLabels, Counter>,
    totals: Family<CallLabels, Histogram>,
    recent: Mutex<VecDeque<CallTrace>>,
}

fn buckets() -> Histogram {
    // 50 us to about 26 s: a sysfs read to a slow delegate.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let phases = Family::<PhaseLabels, Histogram>::new_with_constructor(buckets as fn() -> Histogram);
        let totals = Family::<CallLabels, Histogram>::new_with_constructor(buckets as fn() -> Histogram);
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "plexus_cni_phase_duration_seconds",
            "Duration of each phase of CNI calls (pod lookup, networks, each delegate, IPAM, status patch)",
            phases.clone(),
        );
        registry.register("plexus_cni_call_duration_seconds", "Duration of whole CNI calls", totals.clone());
        registry.register("plexus_cni_calls", "CNI calls by command and outcome", calls.clone());
        Self { registry, phases, calls, totals, recent: Mutex::new(VecDeque::new()) }
    }
}

impl Metrics {
    /// Records one call.
    pub fn record(&self, call: CallTrace) {
        for (phase, seconds) in &call.phases {
            let labels = PhaseLabels { command: call.command.clone(), phase: phase.clone() };
            self.phases.get_or_create(&labels).observe(*seconds);
        }
        let labels = CallLabels { command: call.command.clone(), outcome: call.outcome.clone() };
        self.calls.get_or_create(&labels).inc();
        self.totals.get_or_create(&labels).observe(call.total);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(call);
    }

    /// The remembered calls, slowest first.
    pub fn slowest(&self) -> Vec<CallTrace> {
        let mut calls: Vec<CallTrace> =
            self.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        calls.sort_by(|a, b| b.total.total_cmp(&a.total));
        calls
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Seconds of a duration, for the metrics.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Serves `GET /metrics` on `listener` until the task is dropped: a few lines of HTTP/1.0
/// rather than a web framework, since this is the only endpoint.
pub async fn serve(listener: tokio::net::TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            // The request line and headers; a scraper sends no body.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&request);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.encode()),
                _ => ("404 Not Found", "only /metrics is served\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.0 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
