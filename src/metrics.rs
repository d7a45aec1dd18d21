//! [`Metrics`]: the node's Prometheus metrics.
//!
//! Counters and histograms that the request paths update live here (prometheus-client's
//! atomics; they are measurements, not domain state). Gauges that mirror an actor's
//! state (blocks stored, queue length, peers up) are read from the actors at scrape time
//! and encoded from a registry built for that scrape, so they are never stale copies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the RPC latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Message kind (`put_block`, `get_block`, ...).
    pub message: String,
    /// Peer id, short hex.
    pub peer: String,
}

/// Labels of per-peer gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// Peer id, short hex.
    pub peer: String,
}

/// Labels of per-data-dir gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskLabels {
    /// The data dir's path as configured.
    pub path: String,
}

/// Labels of the resync outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Long-lived metrics, updated by the request paths.
pub struct Metrics {
    registry: Registry,
    /// Plain bytes served by `GET /v1/blocks/{hash}`.
    pub bytes_read: Counter,
    /// Plain bytes accepted by `PUT /v1/blocks`.
    pub bytes_written: Counter,
    /// RPC latency by message and peer, in seconds.
    pub rpc_duration: Family<RpcLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register the long-lived metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("blocknode");
        let bytes_read = Counter::default();
        let bytes_written = Counter::default();
        // 100 µs .. ~52 s, doubling: covers a local ping to a slow 16 MiB transfer.
        let rpc_duration = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        registry.register(
            "api_read_bytes",
            "Plain bytes served to clients",
            bytes_read.clone(),
        );
        registry.register(
            "api_written_bytes",
            "Plain bytes accepted from clients",
            bytes_written.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Latency of RPCs to peers, by message and peer",
            rpc_duration.clone(),
        );
        Metrics {
            registry,
            bytes_read,
            bytes_written,
            rpc_duration,
        }
    }

    /// Encode the long-lived metrics followed by the scrape-time `snapshot`.
    pub fn encode(&self, snapshot: &Registry) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        prometheus_client::encoding::text::encode_registry(&mut out, snapshot)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Builds the scrape-time registry of gauges read from the actors.
pub struct Snapshot {
    registry: Registry,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            registry: Registry::with_prefix("blocknode"),
        }
    }
}

impl Snapshot {
    /// Add an integer gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let g: Gauge = Gauge::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// Add a float gauge.
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// Add a counter read from an actor's own count.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }

    /// Add a labelled family of gauges.
    pub fn gauge_family<
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    >(
        &mut self,
        name: &str,
        help: &str,
        values: Vec<(L, i64)>,
    ) {
        let f = Family::<L, Gauge>::default();
        for (l, v) in values {
            f.get_or_create(&l).set(v);
        }
        self.registry.register(name, help, f);
    }

    /// Add a labelled family of counters read from an actor's own counts.
    pub fn counter_family<
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    >(
        &mut self,
        name: &str,
        help: &str,
        values: Vec<(L, u64)>,
    ) {
        let f = Family::<L, Counter>::default();
        for (l, v) in values {
            f.get_or_create(&l).inc_by(v);
        }
        self.registry.register(name, help, f);
    }

    /// The registry to encode.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
