//! Opening a store: its URL, its configuration from the environment, the
//! HTTP clients and their timeouts, and the startup probe.

use super::keys::Keys;
use super::raw::Raw;
use super::{Active, Inner, NameLocks, S3Store, TOKEN_META, token};
use crate::storage::Retention;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpConnector, HttpErrorKind, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    pub url: String,
    /// Start even if the store does not enforce conditional creates, with
    /// the weaker guarantee that implies (see the module's docs).
    pub no_atomic_create: bool,
    /// The most bytes the part buffers of uploads may hold at once.
    pub memory: u64,
    /// How long interrupted uploads are kept, and how much of them.
    pub retention: Retention,
    /// How long a failing request to the store is tried again before the
    /// operation fails.
    pub retry_timeout: Duration,
}

/// Why a store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL or the environment does not describe a usable store.
    #[error("{0}")]
    Config(String),
    /// Nothing answers at the endpoint.
    #[error("cannot reach the S3 store at {endpoint}: {detail}")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The store refused the credentials, or access to the bucket.
    #[error(
        "the S3 store refused access to bucket {bucket} (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions): {detail}"
    )]
    Denied {
        /// The bucket.
        bucket: String,
        /// What the store said.
        detail: String,
    },
    /// The bucket does not exist.
    #[error("the S3 bucket {0} does not exist")]
    NoBucket(String),
    /// The store accepts a conditional create of an existing key and
    /// overwrites it.
    #[error(
        "the S3 store at {0} does not enforce conditional creates (If-None-Match: *): two servers could both publish one new name; start with --no-atomic-create to accept that"
    )]
    NotAtomic(String),
    /// Anything else the store answered.
    #[error("cannot use the S3 store: {0}")]
    Store(String),
}

/// How long a connection to the store may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request (without a download's body) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a download's body may go without a byte from the store.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Retries of a failed request: a few, within `timeout` (20 s by default,
/// so that a client waiting for its answer, the idle timeout plus a minute
/// for the Rust client, hears a clear error rather than a timeout when the
/// store is down).
fn retry(timeout: Duration) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: timeout,
    }
}

/// The bucket and the prefix of `s3://BUCKET[/PREFIX]`.
fn parse_url(url: &str) -> Result<(String, Keys), OpenError> {
    let bad = |why: &str| OpenError::Config(format!("--store {url:?}: {why}"));
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("expected s3://BUCKET or s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty()
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad("not a bucket name"));
    }
    let keys = Keys::new(prefix.trim_end_matches('/'))
        .map_err(|e| bad(&format!("the prefix is not a valid name: {e}")))?;
    Ok((bucket.to_owned(), keys))
}

/// Client options from the `AWS_*` variables (as `from_env` reads them)
/// over `defaults`.
fn client_options(defaults: ClientOptions) -> ClientOptions {
    let mut options = defaults;
    for (key, value) in std::env::vars() {
        if !key.starts_with("AWS_") {
            continue;
        }
        if let Ok(AmazonS3ConfigKey::Client(key)) = key.to_ascii_lowercase().parse() {
            options = options.with_config(key, value);
        }
    }
    options
}

/// A store on `bucket` configured from the environment, with `options`
/// and `retry`.
fn build(bucket: &str, options: &ClientOptions, retry: RetryConfig) -> Result<AmazonS3, OpenError> {
    AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_client_options(options.clone())
        .with_retry(retry)
        .build()
        .map_err(|e| OpenError::Config(format!("cannot configure the S3 store: {e}")))
}

/// The clients of one store: for requests, for download bodies, for
/// what `object_store` does not send, and quick ones for the probe.
struct Clients {
    store: AmazonS3,
    reader: AmazonS3,
    raw: Raw,
    probe: AmazonS3,
    probe_raw: Raw,
    endpoint: String,
}

/// The clients of the store on `bucket`, configured from the environment.
async fn clients(bucket: &str, retry_timeout: Duration) -> Result<Clients, OpenError> {
    let env = AmazonS3Builder::from_env();
    let has = |key| {
        env.get_config_value(&key)
            .is_some_and(|value| !value.is_empty())
    };
    // Without a key, object_store would ask the instance metadata service,
    // which off AWS takes long to fail.
    if !has(AmazonS3ConfigKey::AccessKeyId) || !has(AmazonS3ConfigKey::SecretAccessKey) {
        return Err(OpenError::Denied {
            bucket: bucket.to_owned(),
            detail: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set".into(),
        });
    }
    let region = env
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = env
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let sign_payload = env
        .get_config_value(&AmazonS3ConfigKey::UnsignedPayload)
        .is_none_or(|v| v != "true");

    let requests = client_options(
        ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT),
    );
    // Downloads take a new connection each (unless AWS_POOL_MAX_IDLE_PER_HOST
    // says otherwise): Garage writes a GET's head and body in two segments
    // with Nagle's algorithm on, and on a reused connection the body then
    // waits for the kernel's delayed ACK, 40 ms. Measured: 50 files of 4
    // KiB fetched one after the other in 2.6 s with reuse, 0.24 s without.
    // A new connection costs little next to a body.
    let bodies = client_options(
        ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout_disabled()
            .with_read_timeout(READ_TIMEOUT)
            .with_pool_max_idle_per_host(0),
    );
    let quick = client_options(ClientOptions::new())
        .with_config(ClientConfigKey::ConnectTimeout, "2s")
        .with_config(ClientConfigKey::Timeout, "5s");
    let no_retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 0,
        retry_timeout: Duration::from_secs(5),
    };
    let store = build(bucket, &requests, retry(retry_timeout))?;

    // The bucket's URL, as object_store spells it (path or virtual-hosted
    // style, custom endpoint or AWS): a signed URL of a known key, cut.
    let signed = store
        .signed_url(
            http::Method::GET,
            &object_store::path::Path::from("k"),
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| OpenError::Config(format!("cannot configure the S3 store: {e}")))?;
    let base = signed
        .as_str()
        .split('?')
        .next()
        .and_then(|url| url.strip_suffix("/k"))
        .ok_or_else(|| OpenError::Config(format!("unexpected bucket URL {signed}")))?
        .to_owned();
    let raw = |options: &ClientOptions, attempts| {
        let http = ReqwestConnector::default()
            .connect(options)
            .map_err(|e| OpenError::Config(format!("cannot configure the S3 store: {e}")))?;
        Ok::<Raw, OpenError>(Raw::new(
            http,
            Arc::clone(store.credentials()),
            region.clone(),
            base.clone(),
            sign_payload,
            attempts,
        ))
    };
    Ok(Clients {
        raw: raw(&requests, retry_timeout)?,
        probe_raw: raw(&quick, Duration::ZERO)?,
        reader: build(bucket, &bodies, retry(retry_timeout))?,
        probe: build(bucket, &quick, no_retry)?,
        store,
        endpoint,
    })
}

pub(super) async fn open(config: S3Config) -> Result<S3Store, OpenError> {
    let (bucket, keys) = parse_url(&config.url)?;
    // reqwest is built without a TLS provider of its own: it uses the
    // process's, ring, as the server's TLS does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clients = clients(&bucket, config.retry_timeout).await?;
    let atomic_create = probe(
        &clients.probe,
        &clients.probe_raw,
        &keys,
        &bucket,
        &clients.endpoint,
    )
    .await?;
    if !atomic_create && !config.no_atomic_create {
        return Err(OpenError::NotAtomic(clients.endpoint));
    }
    let memory_mib = u32::try_from((config.memory >> 20).max(1))
        .unwrap_or(u32::MAX)
        .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
    Ok(S3Store {
        inner: Arc::new(Inner {
            store: clients.store,
            reader: clients.reader,
            raw: clients.raw,
            keys,
            atomic_create,
            memory: Arc::new(Semaphore::new(memory_mib as usize)),
            memory_mib,
            retention: config.retention,
            quota: config.retention.quota.unwrap_or(super::DEFAULT_QUOTA),
            active: Mutex::new(Active::default()),
            ended: tokio::sync::Notify::new(),
            locks: NameLocks::default(),
            cleanup: tokio_util::task::TaskTracker::new(),
        }),
    })
}

/// What an `object_store` failure at startup means.
fn classify(error: object_store::Error, bucket: &str, endpoint: &str) -> OpenError {
    let text = error.to_string();
    match &error {
        // A bare 404 (no S3 error code) comes from something that is not
        // an S3 store at all.
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
            return OpenError::NoBucket(bucket.to_owned());
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            return OpenError::Denied {
                bucket: bucket.to_owned(),
                detail: summary(&text),
            };
        }
        _ => {}
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>()
            && matches!(
                http.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout
            )
        {
            return OpenError::Unreachable {
                endpoint: endpoint.to_owned(),
                detail: summary(&http.to_string()),
            };
        }
        source = e.source();
    }
    OpenError::Store(format!("{endpoint}: {}", summary(&text)))
}

/// What a store's error says, in one short line: S3's code and message
/// when the answer had them, else the start of the text.
fn summary(text: &str) -> String {
    let element = |tag: &str| {
        let open = format!("<{tag}>");
        let (_, rest) = text.split_once(open.as_str())?;
        let (value, _) = rest.split_once(&format!("</{tag}>"))?;
        Some(value.trim().to_owned())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => {
            let line = text.lines().next().unwrap_or_default().trim();
            let mut short: String = line.chars().take(300).collect();
            if short.len() < line.len() {
                short.push_str("...");
            }
            short
        }
    }
}

/// Checks that the store can be used, and whether it refuses a conditional
/// create of an existing key: writes a probe object twice with
/// `If-None-Match: *`, completes a multipart upload of the same key with
/// it, and removes the probe. Returns whether both were refused.
async fn probe(
    store: &AmazonS3,
    raw: &Raw,
    keys: &Keys,
    bucket: &str,
    endpoint: &str,
) -> Result<bool, OpenError> {
    let path = keys.private_path(&format!("probe/{}", token()));
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::Metadata(TOKEN_META.into()), "probe".into());
    let create = || PutOptions {
        mode: PutMode::Create,
        attributes: attributes.clone(),
        ..Default::default()
    };
    store
        .put_opts(&path, PutPayload::from_static(b"probe"), create())
        .await
        .map_err(|e| classify(e, bucket, endpoint))?;
    let put_refused = match store
        .put_opts(&path, PutPayload::from_static(b"again"), create())
        .await
    {
        Ok(_) => false,
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => true,
        Err(e) => return Err(classify(e, bucket, endpoint)),
    };
    let complete_refused = async {
        let id = store.create_multipart(&path).await?;
        let part = store
            .put_part(&path, &id, 0, PutPayload::from_static(b"part"))
            .await?;
        let done = raw
            .complete_if_absent(path.as_ref(), &id, &[part.content_id])
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        if done.is_none() {
            store.abort_multipart(&path, &id).await?;
        }
        Ok::<bool, object_store::Error>(done.is_none())
    }
    .await
    .map_err(|e| classify(e, bucket, endpoint))?;
    if let Err(e) = store.delete(&path).await {
        tracing::warn!(error = %e, "cannot remove the startup probe object");
    }
    Ok(put_refused && complete_refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_are_summed_up_in_one_short_line() {
        let text = "Error performing PUT http://x/b/k - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Forbidden: Invalid signature</Message></Error>";
        assert_eq!(summary(text), "AccessDenied: Forbidden: Invalid signature");
        assert_eq!(summary("a\nb"), "a");
        assert_eq!(summary(&"x".repeat(400)).len(), 303);
    }

    #[test]
    fn store_urls_name_a_bucket_and_maybe_a_prefix() {
        let (bucket, keys) = parse_url("s3://files").unwrap();
        assert_eq!((bucket.as_str(), keys.prefix()), ("files", ""));
        let (bucket, keys) = parse_url("s3://files/team/a/").unwrap();
        assert_eq!((bucket.as_str(), keys.prefix()), ("files", "team/a/"));
        for bad in [
            "files",
            "s3://",
            "s3:///x",
            "http://files",
            "s3://files/a//b",
            "s3://fi les",
        ] {
            assert!(matches!(parse_url(bad), Err(OpenError::Config(_))), "{bad}");
        }
    }
}
