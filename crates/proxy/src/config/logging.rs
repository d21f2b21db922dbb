//! Log setup: `tracing` to standard error, as text or JSON lines, with a
//! level that can be changed while running (SIGHUP reload, admin API).
//!
//! JSON lines keep the event's fields under `fields`, apart from the
//! record's own `timestamp`, `level` and `target`: a field that happens to
//! be called `target` (the ExUM target) cannot shadow the module path, and
//! `jq` sees every key once. Text logs carry ANSI colour only when standard
//! error is a terminal, never in files or pipes.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

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
    /// The level cannot change: logging was not set up by [`init_logging`].
    #[error("logging is not initialised")]
    NotInitialised,
}

/// The installed filter and whether `RUST_LOG` overrides the file.
struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
    level: std::sync::Mutex<String>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(level).map_err(|e| LoggingError::Filter(e.to_string()))
}

/// Whether `level` is a valid filter (`info`, `umproxy=debug,warn` …);
/// for validation before anything changes.
pub fn check_level(level: &str) -> Result<(), LoggingError> {
    filter(level).map(|_| ())
}

/// Install the global `tracing` subscriber. `RUST_LOG`, when set, overrides
/// `[log] level` so an operator can raise verbosity without editing the
/// file. Call once, early in `main`.
pub fn init_logging(log: &LogConfig) -> Result<(), LoggingError> {
    let env = std::env::var("RUST_LOG").ok().filter(|e| !e.trim().is_empty());
    let from_env = env.is_some();
    let level = env.unwrap_or_else(|| log.level.clone());
    let (layer, handle) = reload::Layer::new(filter(&level)?);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            tracing_subscriber::registry().with(layer).with(fmt.with_ansi(ansi)).try_init()
        }
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer)
            .with(fmt.json().flatten_event(false).with_current_span(true).with_span_list(false))
            .try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)?;
    let _ = INSTALLED.set(Installed { handle, from_env, level: std::sync::Mutex::new(level) });
    Ok(())
}

/// The filter in force.
pub fn current_level() -> Option<String> {
    INSTALLED.get().map(|i| i.level.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Change the level at run time (a reload of `[log] level`, or the admin
/// API). Returns whether it changed. While `RUST_LOG` is set, a reload of
/// the file does not override it (`force` = false); the admin API does.
pub fn set_level(level: &str, force: bool) -> Result<bool, LoggingError> {
    let installed = INSTALLED.get().ok_or(LoggingError::NotInitialised)?;
    let new = filter(level)?;
    if installed.from_env && !force {
        return Ok(false);
    }
    let mut current = installed.level.lock().unwrap_or_else(|p| p.into_inner());
    if *current == level {
        return Ok(false);
    }
    installed.handle.reload(new).map_err(|_| LoggingError::NotInitialised)?;
    *current = level.to_owned();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_refused_and_good_one_installs_and_changes() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // RUST_LOG overrides the configured level.
        }
        let bad = LogConfig { format: LogFormat::Json, level: "umproxy=loud".to_owned() };
        assert!(matches!(init_logging(&bad), Err(LoggingError::Filter(_))));
        assert!(matches!(check_level("umproxy=loud"), Err(LoggingError::Filter(_))));
        let good = LogConfig { format: LogFormat::Json, level: "warn".to_owned() };
        // Another test may have installed a subscriber first.
        match init_logging(&good) {
            Ok(()) => {
                assert_eq!(current_level().as_deref(), Some("warn"));
                assert!(matches!(set_level("debug", false), Ok(true)));
                assert!(matches!(set_level("debug", false), Ok(false)), "unchanged");
                assert!(matches!(set_level("nonsense=x", false), Err(LoggingError::Filter(_))));
                assert_eq!(current_level().as_deref(), Some("debug"), "a bad level keeps the one in force");
            }
            Err(e) => assert!(matches!(e, LoggingError::AlreadySet), "{e}"),
        }
        assert!(matches!(init_logging(&good), Err(LoggingError::AlreadySet)));
    }
}
