//! Log setup: `tracing` to standard error, as text or JSON lines.

use super::{LogConfig, LogFormat};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// `[log] level` (or `RUST_LOG`) is not a valid filter.
    #[error("log level: {0}")]
    Filter(String),
    /// A global subscriber was already installed (a bug of ours).
    #[error("logging already initialised")]
    AlreadySet,
}

/// Install the global `tracing` subscriber. `RUST_LOG`, when set, overrides
/// `[log] level` so an operator can raise verbosity without editing the
/// file. Call once, early in `main`.
pub fn init_logging(log: &LogConfig) -> Result<(), LoggingError> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| LoggingError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_refused_and_good_one_installs() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // RUST_LOG overrides the configured level.
        }
        let bad = LogConfig { format: LogFormat::Json, level: "umproxy=loud".to_owned() };
        assert!(matches!(init_logging(&bad), Err(LoggingError::Filter(_))));
        let good = LogConfig { format: LogFormat::Json, level: "warn".to_owned() };
        // Another test may have installed a subscriber first.
        assert!(matches!(init_logging(&good), Ok(()) | Err(LoggingError::AlreadySet)));
        assert!(matches!(init_logging(&good), Err(LoggingError::AlreadySet)));
    }
}
