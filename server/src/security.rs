//! Access control and encryption: access tokens, throttling of failed
//! attempts, and TLS.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::{Choice, ConstantTimeEq};

/// What a connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everything.
    ReadWrite,
    /// get, list and stat only.
    ReadOnly,
}

/// Why the security configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The token file could not be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The token file's permissions let other users read it.
    #[error(
        "the token file {} is accessible to other users (mode {mode:03o}); restrict it, e.g. chmod 600",
        path.display()
    )]
    TokenFileExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file holds no token.
    #[error("the token file {} holds no token", path.display())]
    NoTokens {
        /// The file.
        path: PathBuf,
    },
    /// A certificate or key file could not be used.
    #[error("cannot load {what} from {}: {reason}", path.display())]
    Pem {
        /// "the certificate" or "the private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a valid TLS configuration.
    #[error("invalid TLS certificate or key: {0}")]
    Tls(#[from] rustls::Error),
    /// A self-signed certificate could not be made.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The accepted access tokens. Only their BLAKE3 digests are kept.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<([u8; 32], Access)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.digests.len())
    }
}

impl Tokens {
    /// Reads tokens from a file: one per line; blank lines and lines
    /// starting with `#` are ignored; a line `ro:TOKEN` grants read-only
    /// access. The file must not be readable by other users.
    pub fn load(path: &Path) -> Result<Tokens, SecurityError> {
        let error = |source| SecurityError::TokenFile {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(error)?.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                return Err(SecurityError::TokenFileExposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let text = io::read_to_string(file).map_err(error)?;
        let tokens = Tokens::parse(&text);
        if tokens.digests.is_empty() {
            return Err(SecurityError::NoTokens {
                path: path.to_owned(),
            });
        }
        Ok(tokens)
    }

    /// Parses the token file format (see [`Tokens::load`]).
    pub fn parse(text: &str) -> Tokens {
        let digests = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| match line.strip_prefix("ro:") {
                // An empty token would let in anyone who sends one.
                Some(token) if token.trim().is_empty() => None,
                Some(token) => Some((digest(token.trim()), Access::ReadOnly)),
                None => Some((digest(line), Access::ReadWrite)),
            })
            .collect();
        Tokens { digests }
    }

    /// The access a presented token grants, if any. The comparison takes
    /// the same time whichever token matches, or none, and whatever the
    /// presented token's length: digests of equal length are compared in
    /// constant time.
    pub(crate) fn check(&self, presented: Option<&str>) -> Option<Access> {
        let presented = digest(presented?);
        let mut read_write = Choice::from(0);
        let mut read_only = Choice::from(0);
        for (known, access) in &self.digests {
            let matches = presented.ct_eq(known);
            match access {
                Access::ReadWrite => read_write |= matches,
                Access::ReadOnly => read_only |= matches,
            }
        }
        if bool::from(read_write) {
            Some(Access::ReadWrite)
        } else if bool::from(read_only) {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Slows down repeated authentication failures: each failure is answered
/// after a delay that doubles with the recent failures of its address, or
/// of the first bytes of the token it presented, whichever has more. So
/// tokens cannot be guessed quickly from one address, nor a token whose
/// start is known from many.
#[derive(Debug, Default)]
pub(crate) struct FailureLimiter {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
    by_prefix: Mutex<HashMap<[u8; 32], Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Counts a failure under `key` at `now` in `failures`, the recent ones by
/// what they are counted under; returns the count.
fn count<K: std::hash::Hash + Eq + Copy>(
    failures: &mut HashMap<K, Failures>,
    key: K,
    now: Instant,
) -> u32 {
    if failures.len() >= FailureLimiter::MAX_TRACKED && !failures.contains_key(&key) {
        failures.retain(|_, f| now.duration_since(f.last) < FailureLimiter::FORGET_AFTER);
        if failures.len() >= FailureLimiter::MAX_TRACKED
            && let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(key, _)| *key)
        {
            failures.remove(&oldest);
        }
    }
    let entry = failures.entry(key).or_insert(Failures {
        count: 0,
        last: now,
    });
    if now.duration_since(entry.last) >= FailureLimiter::FORGET_AFTER {
        entry.count = 0;
    }
    entry.count = entry.count.saturating_add(1);
    entry.last = now;
    entry.count
}

impl FailureLimiter {
    /// The delay before the first failure is answered.
    pub(crate) const BASE_DELAY: Duration = Duration::from_millis(200);
    /// The longest delay.
    pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);
    /// Failures older than this are forgotten.
    pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);
    /// How many addresses (and token prefixes) are remembered; the oldest
    /// is forgotten first.
    const MAX_TRACKED: usize = 4096;
    /// Failures are also counted by this many first bytes of the token.
    pub(crate) const PREFIX_LEN: usize = 4;

    /// Records a failure from `ip` (if known) presenting `token` at `now`;
    /// returns how long to wait before answering it.
    pub(crate) fn failure(
        &self,
        ip: Option<IpAddr>,
        token: Option<&str>,
        now: Instant,
    ) -> Duration {
        let by_address = ip.map_or(1, |ip| {
            let mut failures = self
                .by_address
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            count(&mut failures, ip, now)
        });
        let mut failures = self
            .by_prefix
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let by_prefix = count(&mut failures, prefix_key(token), now);
        drop(failures);
        Self::delay_for(by_address.max(by_prefix))
    }

    /// Forgets the failures of an address that authenticated with full
    /// access.
    pub(crate) fn success(&self, ip: IpAddr) {
        self.by_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&ip);
    }

    fn delay_for(count: u32) -> Duration {
        let doublings = count.saturating_sub(1).min(16);
        Self::BASE_DELAY
            .saturating_mul(1 << doublings)
            .min(Self::MAX_DELAY)
    }
}

/// What failures with `token` are counted under: a digest of its first
/// bytes (no part of a token is kept), or of nothing for a missing one.
fn prefix_key(token: Option<&str>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    match token {
        Some(token) => {
            let bytes = token.as_bytes();
            hasher.update(b"token prefix ");
            hasher.update(bytes.get(..FailureLimiter::PREFIX_LEN).unwrap_or(bytes));
        }
        None => {
            hasher.update(b"no token");
        }
    }
    *hasher.finalize().as_bytes()
}

/// Loads a TLS server configuration from PEM files: a certificate chain
/// (the server's certificate first) and its private key.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
    fn pem_error<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl Fn(rustls::pki_types::pem::Error) -> SecurityError + 'a {
        move |e| SecurityError::Pem {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(pem_error("the certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("the certificate", cert))?;
    if certs.is_empty() {
        return Err(SecurityError::Pem {
            what: "the certificate",
            path: cert.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error("the private key", key))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Writes a self-signed certificate valid for `localhost`, `127.0.0.1`,
/// `::1` and the extra `names`, and its private key, as `cert.pem` and
/// `key.pem` in `dir` (created if needed; existing files are not
/// replaced). Returns their paths.
pub fn generate_self_signed(
    dir: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf), SecurityError> {
    let mut subject_alt_names: Vec<String> =
        ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for name in names {
        if !subject_alt_names.contains(name) {
            subject_alt_names.push(name.clone());
        }
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(subject_alt_names)?;
    std::fs::create_dir_all(dir).map_err(|source| SecurityError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    write_new(&key_path, signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

fn write_new(path: &Path, content: &[u8], mode: u32) -> Result<(), SecurityError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut file| file.write_all(content).and_then(|()| file.sync_all()))
        .map_err(|source| SecurityError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_access_and_nothing_else() {
        let tokens = Tokens::parse("# admins\nsecret-1\n\n  ro: reader-2  \nro:secret-1\n");
        assert_eq!(tokens.check(Some("secret-1")), Some(Access::ReadWrite));
        assert_eq!(tokens.check(Some("reader-2")), Some(Access::ReadOnly));
        assert_eq!(tokens.check(Some("secret-")), None);
        assert_eq!(tokens.check(Some("secret-12")), None);
        assert_eq!(tokens.check(Some("")), None);
        assert_eq!(tokens.check(Some("# admins")), None);
        // `ro:` alone grants nothing.
        assert_eq!(Tokens::parse("ro:\nro:  \n").check(Some("")), None);
        assert_eq!(tokens.check(None), None);
    }

    #[test]
    fn token_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "t\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Tokens::load(&path).unwrap_err();
        assert!(
            matches!(err, SecurityError::TokenFileExposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Tokens::load(&path).unwrap().check(Some("t")),
            Some(Access::ReadWrite)
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            Tokens::load(&path),
            Err(SecurityError::NoTokens { .. })
        ));
    }

    #[test]
    fn failure_delays_grow_per_address_and_are_forgotten() {
        let limiter = FailureLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let delays: Vec<_> = (0..8)
            .map(|i| {
                limiter.failure(
                    Some(a),
                    Some(&format!("{i}-guess")),
                    t0 + Duration::from_secs(i),
                )
            })
            .collect();
        assert_eq!(delays[0], FailureLimiter::BASE_DELAY);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(delays[1], FailureLimiter::BASE_DELAY * 2);
        assert_eq!(
            *delays.last().unwrap(),
            FailureLimiter::MAX_DELAY.min(FailureLimiter::BASE_DELAY * 128)
        );
        // Another address starts from scratch.
        assert_eq!(
            limiter.failure(Some(b), Some("other"), t0),
            FailureLimiter::BASE_DELAY
        );
        // Long after, the first address is forgiven.
        let later = t0 + FailureLimiter::FORGET_AFTER + Duration::from_secs(10);
        assert_eq!(
            limiter.failure(Some(a), Some("later"), later),
            FailureLimiter::BASE_DELAY
        );
        // And a success forgets at once.
        limiter.failure(Some(b), Some("again"), t0);
        limiter.success(b);
        assert_eq!(
            limiter.failure(Some(b), Some("fresh"), t0),
            FailureLimiter::BASE_DELAY
        );
    }

    #[test]
    fn many_failures_are_capped() {
        let limiter = FailureLimiter::default();
        let ip: IpAddr = "::1".parse().unwrap();
        let now = Instant::now();
        let last = (0..100)
            .map(|i| limiter.failure(Some(ip), Some(&i.to_string()), now))
            .last()
            .unwrap();
        assert_eq!(last, FailureLimiter::MAX_DELAY);
    }

    #[test]
    fn failures_are_also_counted_by_the_start_of_the_token() {
        let limiter = FailureLimiter::default();
        let now = Instant::now();
        // From a new address each time, the same first bytes.
        let delays: Vec<_> = (0..4u8)
            .map(|i| {
                let ip = IpAddr::from([192, 0, 2, i]);
                limiter.failure(Some(ip), Some(&format!("fk_live_{i}")), now)
            })
            .collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600].map(Duration::from_millis).to_vec()
        );
        // Other first bytes, from yet another address: from scratch.
        let ip = IpAddr::from([192, 0, 2, 9]);
        assert_eq!(
            limiter.failure(Some(ip), Some("other"), now),
            FailureLimiter::BASE_DELAY
        );
        // A success of the address does not forgive the prefix.
        let ip = IpAddr::from([192, 0, 2, 0]);
        limiter.success(ip);
        assert_eq!(
            limiter.failure(Some(ip), Some("fk_live_x"), now),
            Duration::from_millis(3200)
        );
    }

    #[test]
    fn generated_certificate_loads_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate_self_signed(dir.path(), &["files.example".into()]).unwrap();
        load_tls(&cert, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            generate_self_signed(dir.path(), &[]),
            Err(SecurityError::Write { .. })
        ));
    }

    #[test]
    fn unusable_pem_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = load_tls(&empty, &empty).unwrap_err();
        assert!(err.to_string().contains("the certificate"), "{err}");
        let (cert, _) = generate_self_signed(&dir.path().join("g"), &[]).unwrap();
        let err = load_tls(&cert, &empty).unwrap_err();
        assert!(err.to_string().contains("the private key"), "{err}");
    }
}
