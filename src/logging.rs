//! Logging set-up of the binary: the filter (this project's crates at `info`, every
//! dependency at `warn`, so a start prints what the operator needs and not seven
//! `lsm_tree` lines) and the line format (`text` for people, `json` for log shippers).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`s).
    Json,
}

/// The filter when `RUST_LOG` is not set: dependencies are quiet unless something is
/// wrong; blocknode's own state changes are logged.
pub const DEFAULT_FILTER: &str = "warn,blocknode=info,blocknode_actors=info";

/// The filter in force: `RUST_LOG` when set and valid, else [`DEFAULT_FILTER`].
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Install the global subscriber writing to stderr. Called once, first thing in `main`.
pub fn init(format: LogFormat) {
    // Colour only for a terminal: a log file or journald should not hold escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_keeps_our_info_and_quiets_dependencies() {
        let f: EnvFilter = DEFAULT_FILTER.parse().expect("default filter parses");
        let text = f.to_string();
        for want in ["warn", "blocknode=info", "blocknode_actors=info"] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }
}
