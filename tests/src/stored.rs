//! What a server stores, seen without the server: its root directory, or
//! its bucket on an S3 service. Tests check what was published, place
//! files behind the server's back, and watch uploads in progress through
//! [`Stored`], whichever backend the server runs on.

use crate::s3::Bucket;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredential,
};
use object_store::path::Path as StorePath;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
    WriteMultipart,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// What S3 leaves unencoded in a key (SigV4's rule).
const STRICT_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A server's storage, reached directly.
#[derive(Debug, Clone)]
pub enum Stored {
    /// The root directory of a server with `--root`.
    Local(PathBuf),
    /// The bucket of a server with `--store s3://BUCKET`.
    S3(S3Bucket),
}

/// A bucket, with a client for it.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    /// The bucket.
    pub bucket: Bucket,
    store: AmazonS3,
}

/// The runtime the S3 inspection runs on (one for the test binary).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the S3 inspection")
    })
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

impl S3Bucket {
    /// A client of `bucket`.
    pub fn new(bucket: Bucket) -> S3Bucket {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new().with_bucket_name(&bucket.name);
        for (key, value) in bucket.env() {
            let key: AmazonS3ConfigKey = key
                .to_ascii_lowercase()
                .parse()
                .expect("an object_store configuration key");
            builder = builder.with_config(key, value);
        }
        let store = builder.build().expect("a client of the test bucket");
        S3Bucket { bucket, store }
    }

    /// The client.
    pub fn store(&self) -> &AmazonS3 {
        &self.store
    }

    fn path(key: &str) -> StorePath {
        StorePath::parse(key).unwrap_or_else(|e| panic!("{key:?} is not a path: {e}"))
    }

    /// A GET of the bucket with `query`, signed; returns the body.
    fn signed_get(&self, key: &str, query: &[(&str, &str)]) -> String {
        block_on(async {
            let url = self
                .store
                .signed_url_opts(
                    http::Method::GET,
                    &StorePath::from(key),
                    Duration::from_secs(300),
                    &SignedUrlOptions::new().with_query(query.iter().copied()),
                )
                .await
                .expect("a signed URL");
            let response = reqwest::get(url).await.expect("a signed GET");
            let status = response.status();
            let body = response.text().await.expect("the body of a signed GET");
            assert!(status.is_success(), "GET {key}?{query:?}: {status} {body}");
            body
        })
    }

    /// Every key under `prefix`, with its size.
    pub fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Page {
            #[serde(default)]
            contents: Vec<Object>,
            next_continuation_token: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Object {
            key: String,
            size: u64,
        }
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type", "2"),
                ("encoding-type", "url"),
                ("prefix", prefix),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token", token));
            }
            let page: Page =
                quick_xml::de::from_str(&self.signed_get("", &query)).expect("a listing");
            keys.extend(page.contents.into_iter().map(|object| {
                let key = percent_encoding::percent_decode_str(&object.key)
                    .decode_utf8()
                    .expect("a UTF-8 key")
                    .into_owned();
                (key, object.size)
            }));
            token = page.next_continuation_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return keys;
            }
        }
    }

    /// The multipart uploads in progress: key and upload id.
    pub fn uploads(&self) -> Vec<(String, String)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Uploads {
            #[serde(default)]
            upload: Vec<Upload>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Upload {
            key: String,
            upload_id: String,
        }
        let uploads: Uploads =
            quick_xml::de::from_str(&self.signed_get("", &[("uploads", "")])).expect("uploads");
        uploads
            .upload
            .into_iter()
            .map(|u| (u.key, u.upload_id))
            .collect()
    }

    /// The bytes the parts of an upload in progress hold (0 if it is gone).
    pub fn upload_bytes(&self, key: &str, id: &str) -> u64 {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Parts {
            #[serde(default)]
            part: Vec<Part>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Part {
            size: u64,
        }
        let body = block_on(async {
            let url = self
                .store
                .signed_url_opts(
                    http::Method::GET,
                    &StorePath::from(key),
                    Duration::from_secs(300),
                    &SignedUrlOptions::new().with_query([("uploadId", id)]),
                )
                .await
                .expect("a signed URL");
            let response = reqwest::get(url).await.expect("ListParts");
            let ok = response.status().is_success();
            (ok, response.text().await.unwrap_or_default())
        });
        match body {
            (true, body) => quick_xml::de::from_str::<Parts>(&body)
                .expect("a list of parts")
                .part
                .iter()
                .map(|p| p.size)
                .sum(),
            (false, _) => 0,
        }
    }

    /// The object `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match block_on(async { self.store.get(&Self::path(key)).await?.bytes().await }) {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("GET {key}: {e}"),
        }
    }

    /// The user metadata `name` of the object `key`, if both exist.
    pub fn metadata(&self, key: &str, name: &str) -> Option<String> {
        let head = block_on(
            self.store
                .get_opts(&Self::path(key), GetOptions::new().with_head(true)),
        );
        match head {
            Ok(head) => head
                .attributes
                .get(&Attribute::Metadata(name.to_owned().into()))
                .map(|v| v.to_string()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("HEAD {key}: {e}"),
        }
    }

    /// Writes the object `key`, with user metadata.
    pub fn put(&self, key: &str, bytes: Vec<u8>, metadata: &[(&str, &str)]) {
        let mut attributes = Attributes::new();
        for (name, value) in metadata {
            attributes.insert(
                Attribute::Metadata((*name).to_owned().into()),
                (*value).to_owned().into(),
            );
        }
        let options = PutOptions {
            attributes,
            ..Default::default()
        };
        block_on(
            self.store
                .put_opts(&Self::path(key), PutPayload::from(bytes), options),
        )
        .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }

    /// Writes the empty directory marker `dir/` (a key that ends with `/`,
    /// which object_store cannot name).
    pub fn put_marker(&self, dir: &str) {
        self.put_raw(&format!("{dir}/"), Vec::new());
    }

    /// Writes the object `key` whatever it is (empty components, a final
    /// `/`...), as another S3 client could: signed by hand.
    pub fn put_raw(&self, key: &str, body: Vec<u8>) {
        let url = format!(
            "{}/{}/{}",
            self.bucket.endpoint,
            self.bucket.name,
            percent_encoding::utf8_percent_encode(key, STRICT_PATH)
        );
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(&url)
            .body(object_store::client::HttpRequestBody::from(body.clone()))
            .expect("a request");
        let credential = AwsCredential {
            key_id: self.bucket.access_key_id.clone(),
            secret_key: self.bucket.secret_access_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", &self.bucket.region)
            .try_authorize(&mut request, None)
            .expect("sign a request");
        let (parts, _) = request.into_parts();
        let status = block_on(async {
            let mut put = reqwest::Client::new().put(&url).body(body);
            for (name, value) in &parts.headers {
                put = put.header(name, value);
            }
            put.send().await.expect("PUT an object").status()
        });
        assert!(status.is_success(), "PUT {url}: {status}");
    }

    /// Deletes the object `key`.
    pub fn delete(&self, key: &str) {
        block_on(self.store.delete(&Self::path(key)))
            .unwrap_or_else(|e| panic!("DELETE {key}: {e}"));
    }
}

/// The key of a private object of the server's S3 store: a kind of object
/// (`digests`; for `kept`, what the states of the name's uploads start
/// with) and a name.
pub fn s3_private_key(kind: &str, name: &str) -> String {
    format!(
        ".framekit/{kind}/{}",
        blake3::hash(name.as_bytes()).to_hex()
    )
}

impl Stored {
    /// The local root, for a test about the local file system; panics on
    /// an S3 store.
    pub fn root(&self) -> &Path {
        match self {
            Stored::Local(root) => root,
            Stored::S3(s3) => panic!(
                "this test looks into a local root, and the server stores in bucket {}",
                s3.bucket.name
            ),
        }
    }

    /// The content of the file `name`, if it is there.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Stored::Local(root) => std::fs::read(root.join(name)).ok(),
            Stored::S3(s3) => s3.get(name),
        }
    }

    /// The BLAKE3 hash of the file `name`; panics if it is not there.
    pub fn hash(&self, name: &str) -> blake3::Hash {
        match self {
            Stored::Local(root) => crate::hash_file(&root.join(name)),
            Stored::S3(s3) => block_on(async {
                let mut hasher = blake3::Hasher::new();
                let mut stream = s3
                    .store
                    .get(&S3Bucket::path(name))
                    .await
                    .unwrap_or_else(|e| panic!("GET {name}: {e}"))
                    .into_stream();
                while let Some(bytes) = stream.next().await {
                    hasher.update(&bytes.expect("the object's bytes"));
                }
                hasher.finalize()
            }),
        }
    }

    /// The size of the file `name`, if it is there.
    pub fn size(&self, name: &str) -> Option<u64> {
        match self {
            Stored::Local(root) => std::fs::metadata(root.join(name)).ok().map(|m| m.len()),
            Stored::S3(s3) => match block_on(s3.store.head(&S3Bucket::path(name))) {
                Ok(meta) => Some(meta.size),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("HEAD {name}: {e}"),
            },
        }
    }

    /// Whether a file or a directory `name` is there.
    pub fn exists(&self, name: &str) -> bool {
        match self {
            Stored::Local(root) => root.join(name).exists(),
            Stored::S3(_) => self.size(name).is_some() || self.is_dir(name),
        }
    }

    /// Whether the directory `name` is there (on S3: a marker, or keys
    /// under it).
    pub fn is_dir(&self, name: &str) -> bool {
        match self {
            Stored::Local(root) => root.join(name).is_dir(),
            Stored::S3(s3) => !s3.keys(&format!("{name}/")).is_empty(),
        }
    }

    /// Writes the file `name` behind the server's back, as another program
    /// would (on S3, without the metadata the server adds).
    pub fn write(&self, name: &str, bytes: &[u8]) {
        match self {
            Stored::Local(root) => {
                let path = root.join(name);
                std::fs::create_dir_all(path.parent().expect("a parent")).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Stored::S3(s3) => s3.put(name, bytes.to_vec(), &[]),
        }
    }

    /// Writes `len` pseudo-random bytes as the file `name` behind the
    /// server's back (streamed), and returns their hash.
    pub fn write_random(&self, name: &str, seed: u64, len: u64) -> blake3::Hash {
        match self {
            Stored::Local(root) => {
                let path = root.join(name);
                std::fs::create_dir_all(path.parent().expect("a parent")).unwrap();
                crate::write_random_file(&path, seed, len)
            }
            Stored::S3(s3) => block_on(async {
                let upload = s3
                    .store
                    .put_multipart(&S3Bucket::path(name))
                    .await
                    .unwrap_or_else(|e| panic!("start an upload of {name}: {e}"));
                let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
                let mut hasher = blake3::Hasher::new();
                let mut written = 0u64;
                let mut block = 0u64;
                // The same bytes as write_random_file writes.
                while written < len {
                    let n = usize::try_from((len - written).min(1 << 20)).unwrap();
                    let chunk = crate::random_bytes(seed ^ block.wrapping_mul(0x1000_0000_01B3), n);
                    hasher.update(&chunk);
                    writer.wait_for_capacity(4).await.expect("upload a part");
                    writer.put(Bytes::from(chunk));
                    written += n as u64;
                    block += 1;
                }
                writer.finish().await.expect("complete an upload");
                hasher.finalize()
            }),
        }
    }

    /// Writes new content into the file `name` behind the server's back,
    /// as furtively as the storage allows: on a local disk in place, with
    /// its modification time put back (only its change time tells); on S3
    /// as another client's PutObject. Returns the new content's hash.
    pub fn rewrite_behind(&self, name: &str, seed: u64, len: u64) -> blake3::Hash {
        match self {
            Stored::Local(root) => {
                let path = root.join(name);
                let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
                let hash = crate::write_random_file(&path, seed, len);
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(modified)
                    .unwrap();
                hash
            }
            Stored::S3(_) => self.write_random(name, seed, len),
        }
    }

    /// Removes the file `name` behind the server's back.
    pub fn remove(&self, name: &str) {
        match self {
            Stored::Local(root) => std::fs::remove_file(root.join(name)).unwrap(),
            Stored::S3(s3) => s3.delete(name),
        }
    }

    /// Makes the empty directory `name` behind the server's back.
    pub fn make_dir(&self, name: &str) {
        match self {
            Stored::Local(root) => std::fs::create_dir_all(root.join(name)).unwrap(),
            Stored::S3(s3) => s3.put_marker(name),
        }
    }

    /// Every published file and directory, as [`crate::tree`] lists a
    /// directory, the server's private area left out.
    pub fn names(&self) -> Vec<String> {
        match self {
            Stored::Local(root) => crate::tree(root)
                .into_iter()
                .filter(|name| name != ".framekit" && !name.starts_with(".framekit/"))
                .collect(),
            Stored::S3(s3) => {
                let mut names = std::collections::BTreeSet::new();
                for (key, _) in s3.keys("") {
                    if key.starts_with(".framekit/") {
                        continue;
                    }
                    let name = key.trim_end_matches('/');
                    let mut at = 0;
                    while let Some(i) = name[at..].find('/') {
                        names.insert(name[..at + i].to_owned());
                        at += i + 1;
                    }
                    names.insert(name.to_owned());
                }
                names.into_iter().collect()
            }
        }
    }

    /// What [`Stored::names`] lists under the directory `dir`, relative to
    /// it (as [`crate::tree`] lists a directory).
    pub fn names_under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.names()
            .into_iter()
            .filter_map(|name| name.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// The files under the directory `dir` (at any depth, relative to it)
    /// with their sizes: one listing, without reading any file.
    pub fn file_sizes_under(&self, dir: &str) -> std::collections::BTreeMap<String, u64> {
        match self {
            Stored::Local(root) => crate::tree(&root.join(dir))
                .into_iter()
                .filter_map(|name| {
                    let meta = std::fs::metadata(root.join(dir).join(&name)).ok()?;
                    meta.is_file().then_some((name, meta.len()))
                })
                .collect(),
            Stored::S3(s3) => {
                let prefix = format!("{dir}/");
                s3.keys(&prefix)
                    .into_iter()
                    .filter(|(key, _)| !key.ends_with('/'))
                    .filter_map(|(key, size)| Some((key.strip_prefix(&prefix)?.to_owned(), size)))
                    .collect()
            }
        }
    }

    /// The multipart uploads in progress, with the bytes of their parts
    /// (on S3).
    fn s3_uploads(s3: &S3Bucket) -> Vec<(String, String, u64)> {
        s3.uploads()
            .into_iter()
            .map(|(key, id)| {
                let bytes = s3.upload_bytes(&key, &id);
                (key, id, bytes)
            })
            .collect()
    }

    /// The upload ids that kept uploads' states name (on S3).
    fn s3_kept_ids(s3: &S3Bucket) -> Vec<String> {
        s3.keys(".framekit/kept/")
            .into_iter()
            .filter_map(|(key, _)| {
                let state = s3.get(&key)?;
                let value: serde_json::Value = serde_json::from_slice(&state).ok()?;
                Some(value.get("upload_id")?.as_str()?.to_owned())
            })
            .collect()
    }

    /// How many uploads are in progress that would not be kept if they were
    /// interrupted: files in the local staging area, multipart uploads no
    /// kept state names. (On S3, an upload of 8 MiB or less is in the
    /// server's memory, and not counted.)
    pub fn uploads_in_progress(&self) -> usize {
        match self {
            Stored::Local(root) => crate::staging(root).len(),
            Stored::S3(s3) => {
                let kept = Self::s3_kept_ids(s3);
                s3.uploads()
                    .into_iter()
                    .filter(|(_, id)| !kept.contains(id))
                    .count()
            }
        }
    }

    /// The bytes of the file that the upload kept for `name` holds, as its
    /// state says: where a resumed upload starts (S3 only).
    pub fn kept_offset(&self, name: &str) -> Option<u64> {
        let Stored::S3(s3) = self else {
            panic!("kept_offset reads the state of an upload kept in a bucket")
        };
        let (key, _) = s3
            .keys(&format!("{}/", s3_private_key("kept", name)))
            .into_iter()
            .next()?;
        let state = s3.get(&key)?;
        let value: serde_json::Value = serde_json::from_slice(&state).ok()?;
        let size = value.get("size")?.as_u64()?;
        let part = value.get("part_size")?.as_u64()?;
        let parts = value.get("parts")?.as_array()?.len() as u64;
        Some((parts * part).min(size))
    }

    /// The bytes the parts of the multipart uploads of `name` hold (S3
    /// only).
    pub fn uploading_bytes(&self, name: &str) -> u64 {
        let Stored::S3(s3) = self else {
            panic!("uploading_bytes looks at multipart uploads in a bucket")
        };
        s3.uploads()
            .into_iter()
            .filter(|(key, _)| key == name)
            .map(|(key, id)| s3.upload_bytes(&key, &id))
            .sum()
    }

    /// How many interrupted uploads are kept for resuming (or, on S3, are
    /// resumable uploads in progress, whose state is kept all along).
    pub fn kept(&self) -> usize {
        match self {
            Stored::Local(root) => crate::partials(root)
                .iter()
                .filter(|name| name.ends_with(".meta"))
                .count(),
            Stored::S3(s3) => s3.keys(".framekit/kept/").len(),
        }
    }

    /// The bytes received so far for uploads in progress or kept (on S3:
    /// the parts stored, in whole parts).
    pub fn staged_bytes(&self) -> u64 {
        match self {
            Stored::Local(root) => crate::staged_bytes(root),
            Stored::S3(s3) => Self::s3_uploads(s3).iter().map(|(_, _, bytes)| bytes).sum(),
        }
    }

    /// Whether an upload is under way (or kept): on a local disk, once its
    /// first bytes are written; on S3, as soon as its multipart upload
    /// exists (its parts show only once whole).
    pub fn uploading(&self) -> bool {
        match self {
            Stored::Local(root) => crate::staged_bytes(root) > 0,
            Stored::S3(s3) => !s3.uploads().is_empty(),
        }
    }

    /// Whether nothing is stored at all: no file, no directory, nothing
    /// staged, kept or recorded.
    pub fn is_empty(&self) -> bool {
        match self {
            Stored::Local(root) => crate::tree(root) == crate::RESERVED_TREE,
            Stored::S3(s3) => s3.keys("").is_empty() && s3.uploads().is_empty(),
        }
    }

    /// What a test sees of the storage when it asserts that something left
    /// no trace: every key or path.
    pub fn everything(&self) -> Vec<String> {
        match self {
            Stored::Local(root) => crate::tree(root),
            Stored::S3(s3) => {
                let mut all: Vec<String> = s3.keys("").into_iter().map(|(key, _)| key).collect();
                all.extend(
                    s3.uploads()
                        .into_iter()
                        .map(|(key, id)| format!("upload {key} {id}")),
                );
                all
            }
        }
    }

    /// How often to look at the storage while waiting for it to change:
    /// a local directory is cheap to look at, a bucket takes requests.
    pub fn poll(&self) -> Duration {
        match self {
            Stored::Local(_) => Duration::from_millis(1),
            Stored::S3(_) => Duration::from_millis(25),
        }
    }

    /// The hash the server recorded for `name` when it published it, if
    /// any: in `.framekit/digests` on a local disk; in the object's
    /// metadata, or for a file written by a multipart upload in
    /// `.framekit/digests`, on S3.
    pub fn recorded_hash(&self, name: &str) -> Option<blake3::Hash> {
        match self {
            Stored::Local(root) => {
                let record = std::fs::read(root.join(crate::digest_record(name))).ok()?;
                let bytes: [u8; 32] = record.get(8..40)?.try_into().ok()?;
                Some(blake3::Hash::from_bytes(bytes))
            }
            Stored::S3(s3) => {
                let hex = s3.metadata(name, "blake3").or_else(|| {
                    let record = s3.get(&s3_private_key("digests", name))?;
                    let value: serde_json::Value = serde_json::from_slice(&record).ok()?;
                    Some(value.get("blake3")?.as_str()?.to_owned())
                })?;
                blake3::Hash::from_hex(hex).ok()
            }
        }
    }

    /// Changes the hash recorded for `name` (one bit of it), the file left
    /// as it is: as if the file had changed without the record noticing.
    pub fn damage_recorded_hash(&self, name: &str) {
        match self {
            Stored::Local(root) => {
                let record = root.join(crate::digest_record(name));
                let mut bytes = std::fs::read(&record).unwrap();
                bytes[8] ^= 1;
                std::fs::write(&record, &bytes).unwrap();
            }
            Stored::S3(s3) => {
                let hash = self.recorded_hash(name).expect("a recorded hash");
                let mut bytes = *hash.as_bytes();
                bytes[0] ^= 1;
                let damaged = blake3::Hash::from_bytes(bytes).to_hex().to_string();
                let content = s3.get(name).expect("the file");
                let token = s3.metadata(name, "framekit-upload").unwrap_or_default();
                s3.put(
                    name,
                    content,
                    &[("blake3", &damaged), ("framekit-upload", &token)],
                );
            }
        }
    }

    /// Removes the hash recorded for `name`, the file left as it is.
    pub fn forget_recorded_hash(&self, name: &str) {
        match self {
            Stored::Local(root) => {
                std::fs::remove_file(root.join(crate::digest_record(name))).unwrap();
            }
            Stored::S3(s3) => {
                let content = s3.get(name).expect("the file");
                s3.put(name, content, &[]);
            }
        }
    }
}
