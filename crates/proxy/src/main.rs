//! The umproxy command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use umproxy::config::{init_logging, Config};
use umproxy::server::Server;

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
        /// Seconds to let transactions finish on SIGTERM / Ctrl-C.
        #[arg(long, default_value_t = 5)]
        grace_s: u64,
    },
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig { config: PathBuf },
    /// Print the directory's `ha1` table for a user (the password is read
    /// from standard input; it is never stored).
    HashPassword {
        /// The user part of the SIP address (`alice` of sip:alice@contoso.test).
        user: String,
        /// The realm: the user's SIP domain.
        realm: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { config: None, grace_s: 5 }) {
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
        Command::Run { config, grace_s } => run(config, Duration::from_secs(grace_s)),
    }
}

/// Validate the configuration and the directory it names (file backend;
/// LDAP needs the server and is checked at start).
fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if config.directory.backend == umproxy::config::DirectoryBackend::File {
        let opts = umproxy::exum::LoadOptions {
            has_tls_listener: config.listen.iter().any(|l| l.transport == umproxy::transport::Transport::Tls),
            domains: config.proxy.domains.clone(),
        };
        let checked = match &config.directory.file {
            Some(f) => umproxy::exum::Directory::load(f, &opts).map(|_| ()),
            None => umproxy::exum::Directory::example(&opts).map(|_| ()),
        };
        if let Err(e) = checked {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

fn run(path: Option<PathBuf>, grace: Duration) -> ExitCode {
    let config = match Config::load_or_example(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config.log) {
        eprintln!("logging: {e}");
        return ExitCode::from(2);
    }
    tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("umproxy: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(config = %path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in example".into()), "umproxy started");
        wait_for_signals(&server).await;
        tracing::info!("shutting down");
        server.shutdown(grace).await;
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
async fn wait_for_signals(server: &Server) {
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
                let n = server.reload_tls();
                let directory = server.reload_directory();
                tracing::info!(tls_listeners = n, directory, "SIGHUP: reloaded");
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_server: &Server) {
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
