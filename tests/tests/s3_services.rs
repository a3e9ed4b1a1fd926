//! The S3 services that the tests start (`framekit_tests::s3`) work with
//! real clients, and behave as the server's S3 store expects: rclone copies
//! files through them byte for byte; a three-node Garage cluster serves a
//! read with one node stopped; and through `object_store` (the client of
//! the server's S3 store) what each service does with conditional writes,
//! user metadata, ranges, listings and bad configurations.
//!
//! Also: BLAKE3 subtree hashes of power-of-two parts, merged, give the hash
//! of the whole file (how a resumed upload can verify a file whose earlier
//! parts another server received).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use framekit_tests::s3::{Bucket, Garage, Moto};
use framekit_tests::{assert_success, hash_file, random_bytes, stderr, write_random_file};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, CopyMode, CopyOptions, GetOptions,
    GetRange, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};
use std::process::Output;
use std::time::Duration;

// ---------------------------------------------------------------------------
// The harness, with rclone.

/// Copies a small file and a multipart-sized one into `bucket` and back with
/// rclone; both come back byte for byte.
fn rclone_round_trip(bucket: &Bucket) {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("small.bin", 4_321u64), ("big.bin", 12 * 1024 * 1024 + 17)] {
        let source = dir.path().join(name);
        let hash = write_random_file(&source, len, len);
        let key = format!("dir/{name}");
        rclone_ok(
            bucket
                .rclone()
                .args([
                    "copyto",
                    "--s3-upload-cutoff",
                    "5M",
                    "--s3-chunk-size",
                    "5M",
                ])
                .arg(&source)
                .arg(bucket.rclone_path(&key))
                .output()
                .expect("run rclone"),
        );
        let back = dir.path().join(format!("{name}.back"));
        rclone_ok(
            bucket
                .rclone()
                .arg("copyto")
                .arg(bucket.rclone_path(&key))
                .arg(&back)
                .output()
                .expect("run rclone"),
        );
        assert_eq!(hash_file(&back), hash, "{name} came back different");
    }
    let listed = bucket
        .rclone()
        .args(["lsf", "-R"])
        .arg(bucket.rclone_path(""))
        .output()
        .expect("run rclone");
    let mut listed: Vec<String> = rclone_ok(listed).lines().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, ["dir/", "dir/big.bin", "dir/small.bin"]);
}

fn rclone_ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "rclone failed ({:?}): {}",
        output.status,
        stderr(&output)
    );
    assert_success(&output)
}

#[test]
fn rclone_copies_files_into_a_garage_bucket_and_back_byte_for_byte() {
    rclone_round_trip(&Garage::shared().bucket());
}

#[test]
fn rclone_copies_files_into_a_moto_bucket_and_back_byte_for_byte() {
    rclone_round_trip(&Moto::shared().bucket());
}

#[test]
fn a_three_node_garage_cluster_serves_a_read_with_the_writing_node_stopped() {
    let mut cluster = Garage::start_cluster();
    assert_eq!(cluster.node_count(), 3);
    let bucket = cluster.bucket();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("file");
    let hash = write_random_file(&source, 7, 3 * 1024 * 1024 + 5);
    rclone_ok(
        bucket
            .rclone()
            .arg("copyto")
            .arg(&source)
            .arg(bucket.rclone_path("file"))
            .output()
            .expect("run rclone"),
    );

    cluster.stop(0);
    assert_eq!(cluster.pid(0), None);
    let through_another = bucket.via(&cluster.endpoint(1));
    let back = dir.path().join("back");
    rclone_ok(
        through_another
            .rclone()
            .arg("copyto")
            .arg(through_another.rclone_path("file"))
            .arg(&back)
            .output()
            .expect("run rclone"),
    );
    assert_eq!(hash_file(&back), hash);
}

#[test]
fn a_stopped_garage_node_serves_again_after_a_restart() {
    let mut garage = Garage::start();
    let bucket = garage.bucket();
    let rt = runtime();
    let store = store(&bucket, &[]);
    let path = StorePath::from("kept");
    rt.block_on(store.put(&path, PutPayload::from_static(b"kept")))
        .unwrap();
    garage.stop(0);
    let stopped = rt.block_on(store_without_retries(&bucket).head(&path));
    assert!(stopped.is_err(), "a stopped node answered: {stopped:?}");
    garage.restart(0);
    let back = rt.block_on(async { store.get(&path).await?.bytes().await });
    assert_eq!(back.unwrap().as_ref(), b"kept");
}

#[test]
fn dropping_a_garage_stops_its_node_and_removes_its_directory() {
    let garage = Garage::start();
    let pid = garage.pid(0).unwrap();
    let dir = garage.dir().to_owned();
    assert!(dir.join("node0/meta").is_dir());
    drop(garage);
    assert!(!dir.exists(), "{} is left", dir.display());
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty(),
        "Garage (pid {pid}) still runs or is unreaped: {state}"
    );
}

#[test]
fn a_command_configured_for_a_bucket_sees_its_aws_variables_and_no_others() {
    let bucket = Moto::shared().bucket();
    let mut cmd = std::process::Command::new("env");
    cmd.env("AWS_SESSION_TOKEN", "stale")
        .env("AWS_PROFILE", "dev");
    let output = bucket.configure(&mut cmd).output().unwrap();
    let mut seen: Vec<String> = assert_success(&output)
        .lines()
        .filter(|line| line.starts_with("AWS_"))
        .map(str::to_owned)
        .collect();
    seen.sort();
    let mut expected: Vec<String> = bucket
        .env()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(expected.contains(&format!("AWS_ENDPOINT={}", Moto::shared().endpoint())));
    assert_eq!(
        bucket.url(Some("/team/")),
        format!("s3://{}/team", bucket.name)
    );
}

#[test]
fn each_test_bucket_starts_empty_and_apart_from_the_others() {
    for bucket in [
        [Garage::shared().bucket(), Garage::shared().bucket()],
        [Moto::shared().bucket(), Moto::shared().bucket()],
    ] {
        assert_ne!(bucket[0].name, bucket[1].name);
        let rt = runtime();
        let (first, second) = (store(&bucket[0], &[]), store(&bucket[1], &[]));
        rt.block_on(first.put(&"a".into(), PutPayload::from_static(b"a")))
            .unwrap();
        let listed: Vec<_> = rt.block_on(second.list(None).try_collect()).unwrap();
        assert!(listed.is_empty(), "{listed:?}");
        let listed: Vec<_> = rt.block_on(first.list(None).try_collect()).unwrap();
        assert_eq!(listed.len(), 1);
    }
}

// ---------------------------------------------------------------------------
// object_store against the services.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A store on `bucket` configured from [`Bucket::env`] exactly as
/// `AmazonS3Builder::from_env` reads the process environment (each `AWS_*`
/// variable, lower-cased, as a configuration key), plus `extra` keys.
fn builder(bucket: &Bucket, extra: &[(&str, &str)]) -> AmazonS3Builder {
    // reqwest built with `rustls-no-provider` panics when it builds a client
    // (even for plain HTTP) unless a provider is installed: the server
    // installs ring, as it does for its own TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::new().with_bucket_name(&bucket.name);
    for (key, value) in bucket.env() {
        let key: AmazonS3ConfigKey = key.to_ascii_lowercase().parse().unwrap();
        builder = builder.with_config(key, value);
    }
    for (key, value) in extra {
        builder = builder.with_config(key.parse().unwrap(), *value);
    }
    builder
}

fn store(bucket: &Bucket, extra: &[(&str, &str)]) -> AmazonS3 {
    builder(bucket, extra).build().unwrap()
}

/// A store that fails at once rather than retrying for minutes, as a
/// server's check of its configuration at startup must.
fn store_without_retries(bucket: &Bucket) -> AmazonS3 {
    builder(bucket, &[])
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: Duration::from_secs(5),
        })
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap()
}

/// What a conditional write did to an existing object.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Refused (412 Precondition Failed): the old content stays.
    Refused,
    /// Accepted: the new content replaced the old.
    Overwrote,
}

async fn content(store: &AmazonS3, path: &StorePath) -> Vec<u8> {
    store
        .get(path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Judges a conditional write of `new` over `old` at `path`: refused with
/// the old content kept, or accepted with the new content in place.
async fn judge<T: std::fmt::Debug>(
    store: &AmazonS3,
    path: &StorePath,
    result: object_store::Result<T>,
    old: &[u8],
    new: &[u8],
) -> Outcome {
    let now = content(store, path).await;
    match result {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) if now == old => Outcome::Refused,
        Ok(_) if now == new => Outcome::Overwrote,
        other => panic!(
            "unexpected: {other:?}, content now {} bytes (old {}, new {})",
            now.len(),
            old.len(),
            new.len()
        ),
    }
}

/// PutObject with `If-None-Match: *` (`PutMode::Create`) on an existing key.
async fn put_if_none_match(bucket: &Bucket) -> Outcome {
    let store = store(bucket, &[]);
    let path = StorePath::from("put-if-none-match");
    store
        .put(&path, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let result = store
        .put_opts(
            &path,
            PutPayload::from_static(b"new"),
            PutOptions::from(PutMode::Create),
        )
        .await;
    judge(&store, &path, result, b"old", b"new").await
}

/// PutObject with `If-Match: <etag>` (`PutMode::Update`) after the object
/// was replaced, so that the ETag is stale.
async fn put_if_match_stale(bucket: &Bucket) -> Outcome {
    let store = store(bucket, &[]);
    let path = StorePath::from("put-if-match");
    let first = store
        .put(&path, PutPayload::from_static(b"first"))
        .await
        .unwrap();
    store
        .put(&path, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let stale = UpdateVersion {
        e_tag: first.e_tag,
        version: None,
    };
    let result = store
        .put_opts(
            &path,
            PutPayload::from_static(b"new"),
            PutOptions::from(PutMode::Update(stale)),
        )
        .await;
    judge(&store, &path, result, b"old", b"new").await
}

/// PutObject with `If-Match: <current etag>`: accepted everywhere.
async fn put_if_match_current(bucket: &Bucket) -> Outcome {
    let store = store(bucket, &[]);
    let path = StorePath::from("put-if-match-current");
    let current = store
        .put(&path, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let result = store
        .put_opts(
            &path,
            PutPayload::from_static(b"new"),
            PutOptions::from(PutMode::Update(current.into())),
        )
        .await;
    judge(&store, &path, result, b"old", b"new").await
}

/// Uploads `parts` as a multipart upload of `path` (object_store's
/// low-level API) and returns the upload id and the parts' ids (ETags).
async fn upload_parts(
    store: &AmazonS3,
    path: &StorePath,
    parts: &[Vec<u8>],
    attributes: Attributes,
) -> (String, Vec<PartId>) {
    let id = store
        .create_multipart_opts(
            path,
            PutMultipartOptions {
                attributes,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        ids.push(
            store
                .put_part(path, &id, i, PutPayload::from(part.clone()))
                .await
                .unwrap(),
        );
    }
    (id, ids)
}

/// Sends CompleteMultipartUpload with `header` (e.g. `If-None-Match: *`)
/// bound to a presigned URL: object_store 0.14 completes uploads only
/// unconditionally (its conditional completion is internal to
/// `copy_if_not_exists = multipart`). Returns the response's status.
async fn complete_with_header(
    store: &AmazonS3,
    path: &StorePath,
    upload_id: &str,
    parts: &[PartId],
    header: (&'static str, &str),
) -> u16 {
    let (name, value) = header;
    let url = store
        .signed_url_opts(
            reqwest::Method::POST,
            path,
            Duration::from_secs(300),
            &SignedUrlOptions::new()
                .with_query([("uploadId", upload_id)])
                .with_signed_header(
                    reqwest::header::HeaderName::from_static(name),
                    reqwest::header::HeaderValue::from_str(value).unwrap(),
                ),
        )
        .await
        .unwrap();
    let body: String = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                part.content_id
            )
        })
        .collect();
    reqwest::Client::new()
        .post(url)
        .header(name, value)
        .body(format!(
            "<CompleteMultipartUpload>{body}</CompleteMultipartUpload>"
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Two parts: the first of S3's minimum part size, the second short.
fn two_parts(seed: u64) -> Vec<Vec<u8>> {
    vec![
        random_bytes(seed, 5 * 1024 * 1024),
        random_bytes(seed + 1, 1000),
    ]
}

/// CompleteMultipartUpload with `If-None-Match: *` on an existing key.
async fn complete_if_none_match(bucket: &Bucket) -> Outcome {
    let store = store(bucket, &[]);
    let path = StorePath::from("complete-if-none-match");
    store
        .put(&path, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let parts = two_parts(1);
    let (id, ids) = upload_parts(&store, &path, &parts, Attributes::new()).await;
    let status = complete_with_header(&store, &path, &id, &ids, ("if-none-match", "*")).await;
    let now = content(&store, &path).await;
    match status {
        412 if now == b"old" => {
            store.abort_multipart(&path, &id).await.unwrap();
            Outcome::Refused
        }
        200 if now == parts.concat() => Outcome::Overwrote,
        _ => panic!("status {status}, content now {} bytes", now.len()),
    }
}

/// CompleteMultipartUpload with `If-Match: <stale etag>`.
async fn complete_if_match_stale(bucket: &Bucket) -> Outcome {
    let store = store(bucket, &[]);
    let path = StorePath::from("complete-if-match");
    let first = store
        .put(&path, PutPayload::from_static(b"first"))
        .await
        .unwrap();
    store
        .put(&path, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let parts = two_parts(2);
    let (id, ids) = upload_parts(&store, &path, &parts, Attributes::new()).await;
    let stale = first.e_tag.unwrap();
    let status = complete_with_header(&store, &path, &id, &ids, ("if-match", &stale)).await;
    let now = content(&store, &path).await;
    match status {
        412 if now == b"old" => {
            store.abort_multipart(&path, &id).await.unwrap();
            Outcome::Refused
        }
        200 if now == parts.concat() => Outcome::Overwrote,
        _ => panic!("status {status}, content now {} bytes", now.len()),
    }
}

/// object_store's `copy_if_not_exists = multipart`: a multipart upload of
/// the destination whose one part is copied from the source, completed
/// with `If-None-Match: *`. (Garage copies no part smaller than 5 MiB,
/// even the only one, so the source is bigger.)
async fn copy_create_by_multipart(bucket: &Bucket) -> Outcome {
    let store = store(bucket, &[("aws_copy_if_not_exists", "multipart")]);
    let (from, to) = (StorePath::from("copy-source"), StorePath::from("copy-mp"));
    let new = random_bytes(10, 5 * 1024 * 1024 + 3);
    store.put(&from, new.clone().into()).await.unwrap();
    store
        .put(&to, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let result = store
        .copy_opts(&from, &to, CopyOptions::new().with_mode(CopyMode::Create))
        .await;
    judge(&store, &to, result, b"old", &new).await
}

/// CopyObject with `If-None-Match: *` (`copy_if_not_exists =
/// header:If-None-Match:*`).
async fn copy_create_by_header(bucket: &Bucket) -> Outcome {
    let store = store(
        bucket,
        &[("aws_copy_if_not_exists", "header: If-None-Match: *")],
    );
    let (from, to) = (StorePath::from("copy-source"), StorePath::from("copy-hdr"));
    store
        .put(&from, PutPayload::from_static(b"new"))
        .await
        .unwrap();
    store
        .put(&to, PutPayload::from_static(b"old"))
        .await
        .unwrap();
    let result = store
        .copy_opts(&from, &to, CopyOptions::new().with_mode(CopyMode::Create))
        .await;
    judge(&store, &to, result, b"old", b"new").await
}

#[test]
fn garage_ignores_conditional_headers_on_writes_and_overwrites() {
    let bucket = Garage::shared().bucket();
    runtime().block_on(async {
        assert_eq!(put_if_none_match(&bucket).await, Outcome::Overwrote);
        assert_eq!(put_if_match_stale(&bucket).await, Outcome::Overwrote);
        assert_eq!(put_if_match_current(&bucket).await, Outcome::Overwrote);
        assert_eq!(complete_if_none_match(&bucket).await, Outcome::Overwrote);
        assert_eq!(complete_if_match_stale(&bucket).await, Outcome::Overwrote);
        assert_eq!(copy_create_by_multipart(&bucket).await, Outcome::Overwrote);
        assert_eq!(copy_create_by_header(&bucket).await, Outcome::Overwrote);
    });
}

#[test]
fn moto_refuses_conditional_puts_and_a_conditional_create_on_completion() {
    let bucket = Moto::shared().bucket();
    runtime().block_on(async {
        assert_eq!(put_if_none_match(&bucket).await, Outcome::Refused);
        assert_eq!(put_if_match_stale(&bucket).await, Outcome::Refused);
        assert_eq!(put_if_match_current(&bucket).await, Outcome::Overwrote);
        assert_eq!(complete_if_none_match(&bucket).await, Outcome::Refused);
        assert_eq!(complete_if_match_stale(&bucket).await, Outcome::Overwrote);
        assert_eq!(copy_create_by_multipart(&bucket).await, Outcome::Refused);
        assert_eq!(copy_create_by_header(&bucket).await, Outcome::Overwrote);
    });
}

#[test]
fn a_conditional_create_of_a_new_key_succeeds_on_both_services() {
    for bucket in [Garage::shared().bucket(), Moto::shared().bucket()] {
        runtime().block_on(async {
            let store = store(&bucket, &[]);
            let path = StorePath::from("new");
            store
                .put_opts(
                    &path,
                    PutPayload::from_static(b"new"),
                    PutOptions::from(PutMode::Create),
                )
                .await
                .unwrap();
            assert_eq!(content(&store, &path).await, b"new");
        });
    }
}

// ---------------------------------------------------------------------------
// Metadata, multipart state, ranges, listings.

fn hash_attribute(value: &str) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata("blake3".into()),
        value.to_owned().into(),
    );
    attributes
}

/// User metadata set on a put and on a multipart upload comes back with a
/// get, a head-only get and a range get.
async fn metadata_round_trip(bucket: &Bucket) {
    let store = store(bucket, &[]);
    let value = blake3::hash(b"x").to_hex().to_string();
    let small = StorePath::from("meta/small");
    store
        .put_opts(
            &small,
            PutPayload::from_static(b"x"),
            PutOptions {
                attributes: hash_attribute(&value),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let big = StorePath::from("meta/big");
    let (id, ids) = upload_parts(&store, &big, &two_parts(3), hash_attribute(&value)).await;
    store.complete_multipart(&big, &id, ids).await.unwrap();

    let key = Attribute::Metadata("blake3".into());
    for path in [&small, &big] {
        for options in [
            GetOptions::default(),
            GetOptions::new().with_head(true),
            GetOptions::new().with_range(Some(0..1)),
        ] {
            let got = store.get_opts(path, options.clone()).await.unwrap();
            assert_eq!(
                got.attributes.get(&key).map(|v| v.as_ref()),
                Some(value.as_str()),
                "{path} with {options:?}: {:?}",
                got.attributes
            );
        }
    }
}

#[test]
fn user_metadata_comes_back_from_garage_on_get_and_head() {
    runtime().block_on(metadata_round_trip(&Garage::shared().bucket()));
}

#[test]
fn user_metadata_comes_back_from_moto_on_get_and_head() {
    runtime().block_on(metadata_round_trip(&Moto::shared().bucket()));
}

/// An upload created by one client is continued and completed by another
/// that knows only the upload id and the ETags of the parts so far; the
/// upload is invisible until completed.
async fn multipart_continued_by_another_client(bucket: &Bucket) {
    let (first, second) = (store(bucket, &[]), store(bucket, &[]));
    let path = StorePath::from("resumed");
    let parts = [
        random_bytes(4, 5 * 1024 * 1024),
        random_bytes(5, 5 * 1024 * 1024),
        random_bytes(6, 77),
    ];
    let id = first.create_multipart(&path).await.unwrap();
    let part0 = first
        .put_part(&path, &id, 0, parts[0].clone().into())
        .await
        .unwrap();
    let head = first.head(&path).await;
    assert!(
        matches!(head, Err(object_store::Error::NotFound { .. })),
        "an incomplete upload is visible: {head:?}"
    );
    drop(first);
    let resumed_part0 = PartId {
        content_id: part0.content_id.clone(),
    };
    let mut ids = vec![resumed_part0];
    for (i, part) in parts.iter().enumerate().skip(1) {
        ids.push(
            second
                .put_part(&path, &id, i, part.clone().into())
                .await
                .unwrap(),
        );
    }
    second.complete_multipart(&path, &id, ids).await.unwrap();
    assert_eq!(content(&second, &path).await, parts.concat());
}

#[test]
fn a_multipart_upload_is_continued_by_another_client_on_garage() {
    runtime().block_on(multipart_continued_by_another_client(
        &Garage::shared().bucket(),
    ));
}

#[test]
fn a_multipart_upload_is_continued_by_another_client_on_moto() {
    runtime().block_on(multipart_continued_by_another_client(
        &Moto::shared().bucket(),
    ));
}

/// GETs `path` with `query` through a presigned URL: for the requests
/// object_store has no call for. Returns the status and the body.
async fn presigned_get(store: &AmazonS3, path: &str, query: &[(&str, &str)]) -> (u16, String) {
    let url = store
        .signed_url_opts(
            reqwest::Method::GET,
            &StorePath::from(path),
            Duration::from_secs(300),
            &SignedUrlOptions::new().with_query(query.iter().copied()),
        )
        .await
        .unwrap();
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// ListMultipartUploads names an upload in progress, and ListParts its
/// parts with their ETags and sizes (both through presigned URLs).
async fn uploads_in_progress_are_listed(bucket: &Bucket) {
    let store = store(bucket, &[]);
    let path = StorePath::from("staging/upload");
    let (id, ids) = upload_parts(&store, &path, &two_parts(12), Attributes::new()).await;

    let (status, body) =
        presigned_get(&store, "", &[("uploads", ""), ("prefix", "staging/")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("<UploadId>{id}</UploadId>")),
        "{body}"
    );
    assert!(body.contains("<Key>staging/upload</Key>"), "{body}");

    let (status, body) = presigned_get(&store, "staging/upload", &[("uploadId", &id)]).await;
    assert_eq!(status, 200, "{body}");
    for (i, (part, size)) in ids.iter().zip([5 * 1024 * 1024, 1000]).enumerate() {
        assert!(
            body.contains(&format!("<PartNumber>{}</PartNumber>", i + 1)),
            "{body}"
        );
        let etag = part.content_id.trim_matches('"');
        assert!(body.contains(etag), "{etag} not in {body}");
        assert!(body.contains(&format!("<Size>{size}</Size>")), "{body}");
    }
    store.abort_multipart(&path, &id).await.unwrap();
    let (_, body) = presigned_get(&store, "", &[("uploads", ""), ("prefix", "staging/")]).await;
    assert!(!body.contains(&id), "an aborted upload is listed: {body}");
}

#[test]
fn uploads_in_progress_are_listed_by_garage() {
    runtime().block_on(uploads_in_progress_are_listed(&Garage::shared().bucket()));
}

#[test]
fn uploads_in_progress_are_listed_by_moto() {
    runtime().block_on(uploads_in_progress_are_listed(&Moto::shared().bucket()));
}

/// Range reads return the bytes asked for, and a read bound to an ETag
/// fails once the object is replaced.
async fn ranges_and_etags(bucket: &Bucket) {
    let store = store(bucket, &[]);
    let path = StorePath::from("ranged");
    let data = random_bytes(8, 100_000);
    let put = store.put(&path, data.clone().into()).await.unwrap();
    let etag = put.e_tag.clone().expect("an ETag");
    let part = store.get_range(&path, 1_000..2_345).await.unwrap();
    assert_eq!(part.as_ref(), &data[1_000..2_345]);
    let tail = store
        .get_opts(
            &path,
            GetOptions::new()
                .with_range(Some(GetRange::Offset(99_990)))
                .with_if_match(Some(etag.clone())),
        )
        .await
        .unwrap();
    assert_eq!(tail.meta.e_tag.as_deref(), Some(etag.as_str()));
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &data[99_990..]);

    store
        .put(&path, random_bytes(9, 100_000).into())
        .await
        .unwrap();
    let replaced = store
        .get_opts(
            &path,
            GetOptions::new()
                .with_range(Some(GetRange::Offset(50_000)))
                .with_if_match(Some(etag)),
        )
        .await;
    assert!(
        matches!(replaced, Err(object_store::Error::Precondition { .. })),
        "{replaced:?}"
    );
}

#[test]
fn garage_serves_ranges_and_refuses_a_read_bound_to_a_replaced_etag() {
    runtime().block_on(ranges_and_etags(&Garage::shared().bucket()));
}

#[test]
fn moto_serves_ranges_and_refuses_a_read_bound_to_a_replaced_etag() {
    runtime().block_on(ranges_and_etags(&Moto::shared().bucket()));
}

/// A directory listed one page at a time, in name order, resuming after
/// the last name seen: files and subdirectories (common prefixes).
async fn paged_listing(bucket: &Bucket) {
    let store = store(bucket, &[]);
    let mut expected = Vec::new();
    for i in 0..7 {
        let name = format!("d/f{i}");
        store
            .put(&name.as_str().into(), PutPayload::from_static(b"."))
            .await
            .unwrap();
        expected.push(name);
    }
    for sub in ["d/s1/x", "d/s2/y"] {
        store
            .put(&sub.into(), PutPayload::from_static(b"."))
            .await
            .unwrap();
    }
    expected.extend(["d/s1/".to_owned(), "d/s2/".to_owned()]);
    let mut seen = Vec::new();
    let mut page_token = None;
    loop {
        let page = store
            .list_paginated(
                Some("d/"),
                PaginatedListOptions {
                    delimiter: Some("/".into()),
                    max_keys: Some(3),
                    page_token: page_token.take(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            page.result.objects.len() + page.result.common_prefixes.len() <= 3,
            "a page larger than asked"
        );
        seen.extend(page.result.objects.iter().map(|o| o.location.to_string()));
        seen.extend(page.result.common_prefixes.iter().map(|p| format!("{p}/")));
        match page.page_token {
            Some(token) => page_token = Some(token),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, expected);

    let after: Vec<_> = store
        .list_with_offset(Some(&"d".into()), &"d/f4".into())
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(after, ["d/f5", "d/f6", "d/s1/x", "d/s2/y"]);
}

#[test]
fn garage_lists_a_directory_in_pages_and_after_a_name() {
    runtime().block_on(paged_listing(&Garage::shared().bucket()));
}

#[test]
fn moto_lists_a_directory_in_pages_and_after_a_name() {
    runtime().block_on(paged_listing(&Moto::shared().bucket()));
}

// ---------------------------------------------------------------------------
// Bad configurations, as a server's startup check meets them.

#[test]
fn garage_refuses_a_wrong_secret_as_permission_denied() {
    let mut bucket = Garage::shared().bucket();
    bucket.secret_access_key = "0".repeat(64);
    let store = store_without_retries(&bucket);
    let rt = runtime();
    let head = rt.block_on(store.head(&"probe".into()));
    assert!(
        matches!(head, Err(object_store::Error::PermissionDenied { .. })),
        "{head:?}"
    );
    let put = rt.block_on(store.put(&"probe".into(), PutPayload::from_static(b"p")));
    assert!(
        matches!(put, Err(object_store::Error::PermissionDenied { .. })),
        "{put:?}"
    );
}

#[test]
fn garage_reports_a_missing_bucket_as_not_found_on_put() {
    let mut bucket = Garage::shared().bucket();
    bucket.name = "fk-no-such-bucket".to_owned();
    let store = store_without_retries(&bucket);
    let put = runtime().block_on(store.put(&"probe".into(), PutPayload::from_static(b"p")));
    assert!(
        matches!(put, Err(object_store::Error::NotFound { .. })),
        "{put:?}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_fast_without_retries() {
    let mut bucket = Garage::shared().bucket();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    bucket.endpoint = format!("http://{closed}");
    let store = store_without_retries(&bucket);
    let head = runtime().block_on(store.head(&"probe".into()));
    let err = head.expect_err("nothing listens there");
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut kinds = Vec::new();
    while let Some(e) = source {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            kinds.push(http.kind());
        }
        source = e.source();
    }
    assert_eq!(
        kinds,
        [object_store::client::HttpErrorKind::Connect],
        "{err:?}"
    );
}

#[test]
fn https_works_with_the_ring_provider_installed_for_rustls() {
    let moto = Moto::start_tls();
    let bucket = moto.bucket();
    let store = builder(&bucket, &[("aws_allow_invalid_certificates", "true")])
        .build()
        .unwrap();
    let rt = runtime();
    rt.block_on(store.put(&"tls".into(), PutPayload::from_static(b"over tls")))
        .unwrap();
    assert_eq!(rt.block_on(content(&store, &"tls".into())), b"over tls");
}

// ---------------------------------------------------------------------------
// BLAKE3 across parts.

/// What a server keeps of a part it received, at `offset` (a multiple of
/// the part size): its chaining value, and for the first part its root
/// hash too (the file's hash if it is the only part). An empty part (an
/// empty file) has no chaining value.
fn part_state(offset: u64, part: &[u8]) -> (Option<ChainingValue>, Option<blake3::Hash>) {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(part);
    let root = (offset == 0).then(|| hasher.finalize());
    let cv = (!part.is_empty()).then(|| hasher.finalize_non_root());
    (cv, root)
}

/// The hash of a file of `len` bytes cut into parts of `part_len` (a power
/// of two, at least one chunk) from the parts' chaining values, following
/// BLAKE3's tree: the left subtree of `n` bytes holds `left_subtree_len(n)`.
fn merged_hash(
    len: u64,
    part_len: u64,
    cvs: &[ChainingValue],
    first_root: blake3::Hash,
) -> blake3::Hash {
    fn subtree(start: u64, len: u64, part_len: u64, cvs: &[ChainingValue]) -> ChainingValue {
        if len <= part_len {
            return cvs[usize::try_from(start / part_len).unwrap()];
        }
        let left = left_subtree_len(len);
        merge_subtrees_non_root(
            &subtree(start, left, part_len, cvs),
            &subtree(start + left, len - left, part_len, cvs),
            Mode::Hash,
        )
    }
    if len <= part_len {
        return first_root;
    }
    let left = left_subtree_len(len);
    merge_subtrees_root(
        &subtree(0, left, part_len, cvs),
        &subtree(left, len - left, part_len, cvs),
        Mode::Hash,
    )
}

#[test]
fn blake3_of_parts_hashed_apart_and_merged_is_the_hash_of_the_whole() {
    for part_len in [1024u64, 4096, 1 << 16] {
        for len in [
            0,
            1,
            part_len - 1,
            part_len,
            part_len + 1,
            2 * part_len,
            3 * part_len,
            3 * part_len + 17,
            4 * part_len,
            5 * part_len - 1,
            7 * part_len + part_len / 2,
            8 * part_len,
            13 * part_len + 1,
        ] {
            let data = random_bytes(len ^ part_len, usize::try_from(len).unwrap());
            let mut cvs = Vec::new();
            let mut first_root = None;
            let chunks: Vec<&[u8]> = if data.is_empty() {
                vec![&[]]
            } else {
                data.chunks(usize::try_from(part_len).unwrap()).collect()
            };
            for (i, part) in chunks.into_iter().enumerate() {
                let (cv, root) = part_state(i as u64 * part_len, part);
                cvs.extend(cv);
                first_root = first_root.or(root);
            }
            assert_eq!(
                merged_hash(len, part_len, &cvs, first_root.unwrap()),
                blake3::hash(&data),
                "{len} bytes in parts of {part_len}"
            );
        }
    }
}

/// Completes a multipart upload, then sends the same completion again (as
/// object_store's retry of a completion whose response was lost would);
/// returns what the second completion gave.
async fn complete_twice(bucket: &Bucket) -> object_store::Result<()> {
    let store = store(bucket, &[]);
    let path = StorePath::from("completed-twice");
    let parts = two_parts(11);
    let (id, ids) = upload_parts(&store, &path, &parts, Attributes::new()).await;
    let again: Vec<PartId> = ids
        .iter()
        .map(|p| PartId {
            content_id: p.content_id.clone(),
        })
        .collect();
    store.complete_multipart(&path, &id, ids).await.unwrap();
    let second = store.complete_multipart(&path, &id, again).await;
    assert_eq!(content(&store, &path).await, parts.concat());
    second.map(|_| ())
}

#[test]
fn completing_an_upload_again_is_not_found_on_garage_and_succeeds_on_moto() {
    let rt = runtime();
    let garage = rt.block_on(complete_twice(&Garage::shared().bucket()));
    assert!(
        matches!(garage, Err(object_store::Error::NotFound { .. })),
        "{garage:?}"
    );
    let moto = rt.block_on(complete_twice(&Moto::shared().bucket()));
    assert!(moto.is_ok(), "{moto:?}");
}
