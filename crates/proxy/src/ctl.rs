//! `umproxy ctl`: the admin API from the command line, as `kamcmd` is for
//! Kamailio. It finds the admin listener (and its token) in the
//! configuration file, or takes them as options, sends one request and
//! prints the JSON answer; the exit status is 0 for a 2xx answer, 1 for
//! any other answer and 2 when the proxy cannot be reached.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

/// Default admin address (the example configuration's).
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
/// Connect, write and read timeout.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_ANSWER: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The admin listener (default: `[admin] address` of --config, else 127.0.0.1:9090).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The proxy's configuration file, to find the admin address and token.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// A file holding the bearer token (default: `[admin] token_file` of --config).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Version, uptime, draining, calls and transactions in progress.
    Status,
    /// Registrations: list AORs, show one, remove bindings.
    #[command(subcommand)]
    Reg(RegCommand),
    /// Next hops out of service (503 with Retry-After).
    NextHops,
    /// UM servers and whether they answer OPTIONS.
    UmServers,
    /// TLS connections open and handshake failures.
    Tls,
    /// Reload the configuration (as SIGHUP) and print what changed.
    Reload,
    /// Print the log filter, or set it (e.g. `debug`, `umproxy::core=trace,info`).
    LogLevel { level: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum RegCommand {
    /// AORs with bindings.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// The bindings of one AOR (`sip:alice@example.test`).
    Show { aor: String },
    /// Remove every binding of an AOR, or one with --contact.
    Rm {
        aor: String,
        #[arg(long)]
        contact: Option<String>,
    },
}

/// Run one `ctl` command.
pub fn run(args: &CtlArgs) -> ExitCode {
    let (addr, token) = match target(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("umproxy ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let (method, path) = request_for(&args.command);
    match call(addr, method, &path, token.as_deref()) {
        Ok((status, body)) => {
            let shown = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            if (200..300).contains(&status) {
                println!("{shown}");
                ExitCode::SUCCESS
            } else {
                eprintln!("umproxy ctl: {status}: {shown}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("umproxy ctl: {addr}: {e}");
            ExitCode::from(2)
        }
    }
}

/// The admin address and token: options first, then the configuration
/// file's `[admin]` table. Only that table is read, so that `ctl reload`
/// still reaches the proxy when the rest of the file is being fixed.
fn target(args: &CtlArgs) -> Result<(SocketAddr, Option<String>), String> {
    let mut from_file: (Option<SocketAddr>, Option<PathBuf>) = (None, None);
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(admin) = table.get("admin").and_then(|a| a.as_table()) else {
            return Err(format!("{}: no [admin] section", path.display()));
        };
        let address = admin.get("address").and_then(|a| a.as_str()).unwrap_or_default();
        let address =
            address.parse().map_err(|_| format!("{}: admin.address: not an address: {address:?}", path.display()))?;
        let token = admin.get("token_file").and_then(|t| t.as_str()).map(|t| {
            let t = PathBuf::from(t);
            // Relative paths start at the configuration file's directory.
            match path.parent() {
                Some(dir) if t.is_relative() => dir.join(t),
                _ => t,
            }
        });
        from_file = (Some(address), token);
    }
    let addr = match (args.admin, from_file.0) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => DEFAULT_ADMIN.parse().map_err(|_| "bad default address".to_owned())?,
    };
    let token_file = args.token_file.clone().or(from_file.1);
    let token = token_file.as_deref().map(crate::admin::read_token).transpose()?;
    Ok((addr, token))
}

fn request_for(cmd: &CtlCommand) -> (&'static str, String) {
    match cmd {
        CtlCommand::Status => ("GET", "/api/status".into()),
        CtlCommand::Reg(RegCommand::List { limit }) => ("GET", format!("/api/registrations?limit={limit}")),
        CtlCommand::Reg(RegCommand::Show { aor }) => ("GET", format!("/api/registrations/{}", encode(aor))),
        CtlCommand::Reg(RegCommand::Rm { aor, contact }) => {
            let q = contact.as_deref().map(|c| format!("?contact={}", encode(c))).unwrap_or_default();
            ("DELETE", format!("/api/registrations/{}{q}", encode(aor)))
        }
        CtlCommand::NextHops => ("GET", "/api/next-hops".into()),
        CtlCommand::UmServers => ("GET", "/api/um-servers".into()),
        CtlCommand::Tls => ("GET", "/api/tls".into()),
        CtlCommand::Reload => ("POST", "/api/reload".into()),
        CtlCommand::LogLevel { level: None } => ("GET", "/api/log-level".into()),
        CtlCommand::LogLevel { level: Some(l) } => ("PUT", format!("/api/log-level?level={}", encode(l))),
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and body.
pub fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((status, body.trim_end().to_owned()))
}

/// The current time as RFC 3339 UTC with microseconds (for log records
/// written before logging is set up).
pub fn rfc3339_now() -> String {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aors_and_levels_are_encoded_into_the_path() {
        let (m, p) = request_for(&CtlCommand::Reg(RegCommand::Rm {
            aor: "sip:alice@example.test".into(),
            contact: Some("sip:a@192.0.2.1:5060;transport=tcp".into()),
        }));
        assert_eq!(m, "DELETE");
        assert_eq!(
            p,
            "/api/registrations/sip%3Aalice%40example.test?contact=sip%3Aa%40192.0.2.1%3A5060%3Btransport%3Dtcp"
        );
        assert_eq!(
            request_for(&CtlCommand::LogLevel { level: Some("umproxy=debug".into()) }).1,
            "/api/log-level?level=umproxy%3Ddebug"
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
