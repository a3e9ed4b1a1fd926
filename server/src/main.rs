//! `server`: serves a directory, or an S3 bucket, over the framekit
//! protocol.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT or SIGTERM), 1 on an
//! unexpected runtime failure, 2 on a usage error, 3 when the address
//! cannot be listened on, 4 when the root directory cannot be used, 5 when
//! the TLS or token files cannot be used; with `--store`: 6 when the S3
//! store cannot be reached or used, 7 when it refuses the credentials, 8
//! when the bucket does not exist, 9 when it does not enforce conditional
//! creates (and `--no-atomic-create` was not given).

use clap::Parser;
use framekit_server::security::{Tokens, generate_self_signed, load_tls};
use framekit_server::storage::s3::{OpenError, S3Config};
use framekit_server::storage::{MinFree, Retention, S3Store, Storage};
use framekit_server::{Config, Server};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The longest time any of the options in seconds may say: a year. Every
/// deadline is the time now plus one of them, which must not overflow.
const MAX_SECS: u64 = 365 * 86_400;

/// Serve a directory, or an S3 bucket, over the framekit file-transfer
/// protocol.
///
/// The first line printed on stdout is `listening on ADDR`, with the actual
/// port when 0 was asked for. Logs go to stderr (set RUST_LOG, e.g.
/// RUST_LOG=debug, for more detail).
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: String,

    /// Directory to serve; created if missing.
    #[arg(long, value_name = "DIR", default_value = "storage")]
    root: PathBuf,

    /// Serve an S3 bucket (or the keys under PREFIX in it) instead of a
    /// directory: s3://BUCKET or s3://BUCKET/PREFIX. The store is configured
    /// by the AWS_* environment variables (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP...).
    #[arg(long, value_name = "URL", conflicts_with = "root")]
    store: Option<String>,

    /// With --store: start even if the store does not enforce conditional
    /// creates (Garage 2.5). A put without --force then checks that the
    /// name is free and writes: two such puts of one new name through
    /// different servers at the same moment may both succeed, the later
    /// replacing the earlier (through one server, they never do).
    #[arg(long, requires = "store")]
    no_atomic_create: bool,

    /// With --store: the most memory that the part buffers of uploads may
    /// hold together (each upload over 8 MiB needs at least one part of 8
    /// MiB in memory). K, M, G and T suffixes are accepted.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_size)]
    store_memory: u64,

    /// With --store: seconds a failing request to the store (unreachable,
    /// 5xx, throttled) is tried again before the client is told it failed.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    store_retry_timeout: u64,

    /// Largest file accepted, in bytes; K, M, G and T suffixes (powers of
    /// 1024) are accepted.
    #[arg(long, value_name = "BYTES", default_value = "64G", value_parser = parse_size)]
    max_file_size: u64,

    /// Connections served at once, once they said hello; more are refused
    /// with a busy error.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Connections served at once from one address.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: u32,

    /// Connections saying hello at once (TLS handshake, hello, token
    /// check), an eighth of them from one address; a newer connection
    /// pushes out the oldest that has not finished in a second.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_pending: u32,

    /// Seconds a new connection has to say hello, TLS handshake included
    /// (at most the idle timeout).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    hello_timeout: u64,

    /// Seconds a silent peer is waited for before being dropped.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    idle_timeout: u64,

    /// On SIGINT or SIGTERM, seconds that transfers in flight may take to
    /// finish before they are aborted.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(..=MAX_SECS))]
    grace_period: u64,

    /// Seconds an interrupted upload is kept for its client to resume it,
    /// after it was last interrupted.
    #[arg(long, value_name = "SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    partial_ttl: u64,

    /// The most bytes interrupted uploads may hold together, counting each
    /// resumable upload in progress at its whole size (with --store: at
    /// the parts it stored); keeping one more removes the oldest first, and
    /// an upload that does not fit is not kept when interrupted. K, M, G
    /// and T suffixes are accepted. Default: a quarter of the space free
    /// when the server starts (with --store: 64G).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    staging_quota: Option<u64>,

    /// Free space every upload must leave on the disk, in bytes (K, M, G,
    /// T suffixes) or as a share of the disk (e.g. 5%). An upload that
    /// would leave less is refused before its body, once interrupted
    /// uploads kept for resuming have been dropped, oldest first, to make
    /// room. Default: 1% of the disk, at most 256 MiB. Not with --store:
    /// the bucket's space is the store's to manage.
    #[arg(long, value_name = "BYTES|PERCENT", value_parser = parse_min_free, conflicts_with = "store")]
    min_free: Option<MinFree>,

    /// Encrypt connections with TLS, using this certificate chain (PEM,
    /// the server's certificate first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require an access token: one per line, `ro:TOKEN` for read-only
    /// access (get, list, stat). The file must not be readable by other
    /// users.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// Allow listening on a non-loopback address without TLS (traffic and
    /// tokens then cross the network in clear text).
    #[arg(long)]
    insecure: bool,

    /// Write a self-signed certificate and key (cert.pem, key.pem) into DIR
    /// for localhost, 127.0.0.1 and ::1 plus any --cert-name, print how to
    /// use them, and exit.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["tls_cert", "tls_key"])]
    generate_cert: Option<PathBuf>,

    /// An extra host name or address for --generate-cert (repeatable).
    #[arg(long, value_name = "NAME", requires = "generate_cert")]
    cert_name: Vec<String>,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  clean shutdown
  1  unexpected failure
  2  usage error
  3  cannot listen on the address
  4  cannot use the root directory
  5  cannot use the TLS certificate, key or token file
  6  cannot reach or use the S3 store (--store)
  7  the S3 store refused the credentials, or they are missing
  8  the S3 bucket does not exist
  9  the S3 store does not enforce conditional creates (see --no-atomic-create)";

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        Some((i, 't' | 'T')) => (&text[..i], 40),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size in bytes (e.g. 1048576, 512M, 10G)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A `--min-free`: a size, or a percentage with up to two decimals.
fn parse_min_free(text: &str) -> Result<MinFree, String> {
    let Some(percent) = text.trim().strip_suffix('%') else {
        return parse_size(text).map(MinFree::Bytes);
    };
    let invalid = || format!("'{text}' is not a share of the disk (e.g. 1%, 0.5%, 10%)");
    let (whole, decimals) = percent.split_once('.').unwrap_or((percent, ""));
    if decimals.len() > 2 || !decimals.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let whole: u16 = whole.parse().map_err(|_| invalid())?;
    let decimals: u16 = format!("{decimals:0<2}").parse().map_err(|_| invalid())?;
    let share = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(decimals))
        .filter(|&share| share <= 10_000)
        .ok_or_else(invalid)?;
    Ok(MinFree::Share(share))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> ExitCode {
    if let Some(dir) = &args.generate_cert {
        return generate_cert(dir, &args.cert_name, &args.listen);
    }
    let tokens = match &args.token_file {
        Some(path) => match Tokens::load(path) {
            Ok(tokens) => Some(tokens),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(5);
            }
        },
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match load_tls(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(5);
            }
        },
        _ => None,
    };

    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(3);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(3);
        }
    };
    if !addr.ip().is_loopback() && tls.is_none() && !args.insecure {
        eprintln!(
            "error: refusing to listen on {addr} without TLS: files and tokens would cross the network unencrypted; \
             use --tls-cert and --tls-key (see --generate-cert), or --insecure to accept the risk"
        );
        return ExitCode::from(2);
    }
    let config = Config {
        root: args.root.clone(),
        max_file_size: args.max_file_size,
        max_connections: args.max_connections as usize,
        max_connections_per_ip: args.max_connections_per_ip as usize,
        max_pending: args.max_pending as usize,
        hello_timeout: Duration::from_secs(args.hello_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        grace_period: Duration::from_secs(args.grace_period),
        tokens,
        tls,
        retention: Retention {
            ttl: Duration::from_secs(args.partial_ttl),
            quota: args.staging_quota,
        },
        min_free: args.min_free.unwrap_or_default(),
    };
    let Some(url) = args.store.clone() else {
        let root = config.root.clone();
        return match Server::new(config) {
            Ok(server) => run(server, listener, root.display().to_string()).await,
            Err(e) => {
                eprintln!(
                    "error: cannot use {} as the root directory: {e}",
                    root.display()
                );
                ExitCode::from(4)
            }
        };
    };
    serve_bucket(config, listener, url, &args).await
}

/// Serves the bucket of `--store` `url`.
async fn serve_bucket(
    config: Config,
    listener: tokio::net::TcpListener,
    url: String,
    args: &Args,
) -> ExitCode {
    let s3 = S3Config {
        url: url.clone(),
        no_atomic_create: args.no_atomic_create,
        memory: args.store_memory,
        retention: config.retention,
        retry_timeout: Duration::from_secs(args.store_retry_timeout),
    };
    match S3Store::open(s3).await {
        Ok(store) => {
            if !store.atomic_create() {
                tracing::warn!(
                    "the store does not enforce conditional creates: puts without overwrite of one new name through different servers may both succeed"
                );
            }
            run(Server::with_storage(config, store), listener, url).await
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                OpenError::Config(_) => 2,
                OpenError::Unreachable { .. } | OpenError::Store(_) => 6,
                OpenError::Denied { .. } => 7,
                OpenError::NoBucket(_) => 8,
                OpenError::NotAtomic(_) => 9,
            })
        }
    }
}

/// Announces the address and serves until SIGINT or SIGTERM.
async fn run<B: Storage>(
    server: Server<B>,
    listener: tokio::net::TcpListener,
    serving: String,
) -> ExitCode {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: cannot listen: {e}");
            return ExitCode::from(3);
        }
    };
    // Installed before the address is announced: a signal sent as soon as
    // the first line is read must already mean a graceful shutdown.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };

    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening on {addr}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        // Nobody is reading stdout; keep serving.
    }
    drop(stdout);
    tracing::info!(%addr, serving = %serving, "serving");

    server.run(listener, shutdown).await;
    ExitCode::SUCCESS
}

fn generate_cert(dir: &std::path::Path, names: &[String], listen: &str) -> ExitCode {
    let port = listen.rsplit_once(':').map_or("7878", |(_, port)| port);
    match generate_self_signed(dir, names) {
        Ok((cert, key)) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "wrote {cert} and {key}\n\n\
                 serve with:   server --tls-cert {cert} --tls-key {key}\n\
                 connect with: client --tls --ca {cert} --server localhost:{port} list\n\n\
                 The certificate is self-signed: clients must be given it with --ca.",
                cert = cert.display(),
                key = key.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(5)
        }
    }
}

/// Registers for SIGINT and SIGTERM now; the returned future completes on
/// the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Registers for Ctrl-C now; the returned future completes on it.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
    Ok(async move {
        ctrl_c.recv().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_suffixes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn times_in_seconds_are_at_most_a_year() {
        let parse = |flag: &str, secs: &str| Args::try_parse_from(["server", flag, secs]);
        for flag in [
            "--hello-timeout",
            "--idle-timeout",
            "--grace-period",
            "--partial-ttl",
        ] {
            assert!(parse(flag, "31536000").is_ok(), "{flag}");
            assert!(parse(flag, "31536001").is_err(), "{flag}");
            assert!(parse(flag, "18446744073709551615").is_err(), "{flag}");
        }
    }

    #[test]
    fn min_free_is_a_size_or_a_percentage() {
        assert_eq!(parse_min_free("512M"), Ok(MinFree::Bytes(512 << 20)));
        assert_eq!(parse_min_free("0"), Ok(MinFree::Bytes(0)));
        assert_eq!(parse_min_free("1%"), Ok(MinFree::Share(100)));
        assert_eq!(parse_min_free("0.5%"), Ok(MinFree::Share(50)));
        assert_eq!(parse_min_free("12.34%"), Ok(MinFree::Share(1234)));
        assert_eq!(parse_min_free("100%"), Ok(MinFree::Share(10_000)));
        for bad in ["101%", "1.234%", "%", "-1%", "x%", "1.x%", "12X"] {
            assert!(parse_min_free(bad).is_err(), "{bad}");
        }
    }
}
