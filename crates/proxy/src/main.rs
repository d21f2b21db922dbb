//! The umproxy command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use umproxy::config::{init_logging, Config, LogFormat};
use umproxy::notify::Notifier;
use umproxy::server::{ReloadTrigger, Server};

#[derive(Parser)]
#[command(name = "umproxy", version, about = "SIP edge proxy with Exchange UM routing")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (on the built-in example configuration without CONFIG).
    Run {
        config: Option<PathBuf>,
        /// Longest wait on SIGTERM for calls and transactions in progress
        /// (overrides `[shutdown] grace_s`).
        #[arg(long)]
        grace_s: Option<u64>,
    },
    /// Validate a configuration file, with every check `run` makes before it
    /// serves, and exit (0 when valid).
    CheckConfig { config: PathBuf },
    /// Print the directory's `ha1` table for a user (the password is read
    /// from standard input; it is never stored).
    HashPassword {
        /// The user part of the SIP address (`alice` of sip:alice@contoso.test).
        user: String,
        /// The realm: the user's SIP domain.
        realm: String,
    },
    /// Look inside and control a running umproxy through its admin API.
    Ctl(umproxy::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { config: None, grace_s: None }) {
        Command::CheckConfig { config } => check_config(&config),
        Command::HashPassword { user, realm } => {
            let mut password = String::new();
            if std::io::stdin().read_line(&mut password).is_err() {
                eprintln!("cannot read the password from standard input");
                return ExitCode::from(2);
            }
            let password = password.trim_end_matches(['\r', '\n']);
            let h = umproxy::location::auth::hash_password(&user, &realm, password);
            println!(
                "ha1 = {{ md5 = \"{}\", sha256 = \"{}\", sha512_256 = \"{}\" }}",
                h.md5.unwrap_or_default(),
                h.sha256.unwrap_or_default(),
                h.sha512_256.unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Run { config, grace_s } => run(config, grace_s.map(Duration::from_secs)),
        Command::Ctl(args) => umproxy::ctl::run(&args),
    }
}

/// Validate the configuration with the checks `run` makes before serving
/// (TLS keys match their certificates, CAs, the directory with its
/// providers' CAs, `[auth]`, templates, an LDAP directory read from its
/// server). Nothing is bound.
fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = umproxy::server::preflight(&config) {
        eprintln!("{}: {e}", path.display());
        return ExitCode::from(2);
    }
    // `run` reads an LDAP directory before it serves: so does the check.
    if config.directory.backend == umproxy::config::DirectoryBackend::Ldap {
        let loaded = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), umproxy::server::load_directory(&config)).await
            })
        });
        let problem = match loaded {
            Ok(Ok(Ok(_))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(_)) => Some("the LDAP server did not answer within 30 s".to_owned()),
            Err(e) => Some(format!("cannot start the runtime: {e}")),
        };
        if let Some(problem) = problem {
            eprintln!("{}: directory.ldap: {problem}", path.display());
            return ExitCode::from(2);
        }
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// The log format a file asks for, read leniently, for reporting a
/// configuration error in the format the operator expects.
fn wanted_format(path: Option<&Path>) -> LogFormat {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else { return LogFormat::Text };
    let Ok(table) = text.parse::<toml::Table>() else { return LogFormat::Text };
    match table.get("log").and_then(|l| l.get("format")).and_then(|f| f.as_str()) {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

/// A start-up failure: as a log record when logging is up (JSON under the
/// JSON format), else on standard error as text.
fn fail_before_logging(format: LogFormat, message: &str) {
    match format {
        LogFormat::Json => {
            let record = serde_json::json!({
                "timestamp": umproxy::ctl::rfc3339_now(),
                "level": "ERROR",
                "fields": { "message": "umproxy cannot start", "error": message },
                "target": "umproxy",
            });
            eprintln!("{record}");
        }
        LogFormat::Text => eprintln!("umproxy: {message}"),
    }
}

fn run(path: Option<PathBuf>, grace: Option<Duration>) -> ExitCode {
    let config = match Config::load_or_example(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            fail_before_logging(wanted_format(path.as_deref()), &e.to_string());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config.log) {
        fail_before_logging(config.log.format, &format!("logging: {e}"));
        return ExitCode::from(2);
    }
    tune_allocator();
    let grace = grace.unwrap_or(Duration::from_secs(config.shutdown.grace_s));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let notifier = Notifier::from_env();
    runtime.block_on(async move {
        let server = match Server::start(config, path.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "umproxy cannot start");
                return ExitCode::FAILURE;
            }
        };
        let source = path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in example".into());
        tracing::info!(config = %source, "umproxy started");
        notifier.notify("READY=1\nSTATUS=serving");
        // WATCHDOG=1 only while every worker shard answers a ping: a wedged
        // core stops the pings, and systemd restarts the process.
        let watchdog = notifier.watchdog_interval().map(|every| {
            let n = Notifier::from_env();
            let core = server.liveness();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if core.is_responsive(every).await {
                        n.notify("WATCHDOG=1");
                    } else {
                        tracing::error!(
                            within_ms = every.as_millis() as u64,
                            "a worker shard did not answer; the watchdog is not fed"
                        );
                    }
                }
            })
        });
        wait_for_signals(&server, &notifier).await;
        notifier.notify(&format!("STOPPING=1\nSTATUS=draining: {} in flight", server.in_flight()));
        tracing::info!(grace_s = grace.as_secs(), "SIGTERM: shutting down");
        server
            .shutdown(grace, |left| {
                notifier.notify(&format!("STATUS=draining: {left} in flight"));
            })
            .await;
        if let Some(w) = watchdog {
            w.abort();
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
async fn wait_for_signals(server: &Server, notifier: &Notifier) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                notifier.notify("RELOADING=1\nSTATUS=reloading");
                // The reload logs its own result (once).
                let status = match server.reload(ReloadTrigger::Signal).await {
                    Ok(_) => "STATUS=serving".to_owned(),
                    // One line: sd_notify messages are KEY=VALUE lines.
                    Err(e) => format!("STATUS=serving; last reload refused: {}", e.replace('\n', "; ")),
                };
                notifier.notify(&format!("READY=1\n{status}"));
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_server: &Server, _notifier: &Notifier) {
    let _ = tokio::signal::ctrl_c().await;
}

/// glibc's malloc gives the top of a thread's heap back to the kernel as soon
/// as 128 KiB of it is free, and takes it back with `mprotect` when the next
/// burst comes: under REGISTER load that was one `mprotect` (and a page
/// fault) per four registrations, about 4 % of the CPU per REGISTER
/// (benches/README-register-exum.md). Keeping 32 MiB of slack at the top and
/// trimming only beyond 128 MiB removes them, for about 11 MB more resident
/// memory. An operator's own `GLIBC_TUNABLES` for malloc takes precedence.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc")) {
        return;
    }
    for (param, value) in [(libc::M_TOP_PAD, 32 << 20), (libc::M_TRIM_THRESHOLD, 128 << 20)] {
        // SAFETY: mallopt takes two integers and changes allocator settings
        // under glibc's arena lock; it touches no memory of ours and is
        // sound to call at any time, from any thread.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(param, value) };
        if ok == 0 {
            tracing::debug!(param, value, "mallopt refused a setting");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
