//! The S3 requests `object_store` does not make: listings that give keys
//! exactly as stored (with `encoding-type=url`, so that a marker `d/` or a
//! key another tool wrote with odd characters is seen as it is, where
//! `object_store`'s listing folds `d/` into `d` and fails a whole page on a
//! key it cannot parse), empty-directory markers (keys ending in `/`,
//! which an `object_store` path cannot name), a conditional completion of
//! a multipart upload (`If-None-Match: *`, which `object_store` 0.14 does
//! not send), and the listing of multipart uploads in progress.
//!
//! Each request is signed with `object_store`'s own SigV4 signer and
//! credentials, and sent through an HTTP client built from the same
//! client options as the store's, so both reach the store alike.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpErrorKind, HttpRequestBody};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use std::time::Duration;

/// What S3 leaves unencoded in a key or a query value; everything else is
/// percent-encoded, as SigV4 requires.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The same for a key, whose `/` stay as they are.
const STRICT_PATH: &AsciiSet = &STRICT.remove(b'/');

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum RawError {
    /// The store could not be reached, or the answer was cut short.
    #[error("cannot reach the store: {0}")]
    Http(#[from] object_store::client::HttpError),
    /// The store answered with an error.
    #[error("the store answered {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// S3's error code (`NoSuchUpload`, `PreconditionFailed`...), if
        /// the body said.
        code: Option<String>,
        /// The body, or its message.
        message: String,
    },
    /// The request could not be signed or built, or the answer not read.
    #[error("{0}")]
    Other(String),
}

impl RawError {
    /// The HTTP status the store answered, if it answered.
    pub(super) fn status(&self) -> Option<StatusCode> {
        match self {
            RawError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub(super) struct Answer {
    /// Its status.
    pub(super) status: StatusCode,
    /// Its body, whole (these answers are small).
    pub(super) body: Bytes,
}

/// The signed requests of one store.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    http: HttpClient,
    credentials: AwsCredentialProvider,
    region: String,
    /// The bucket's URL, without the final `/`.
    base: String,
    sign_payload: bool,
    /// How long a request that failed for a reason worth retrying is tried
    /// again.
    retry_timeout: Duration,
}

impl Raw {
    pub(super) fn new(
        http: HttpClient,
        credentials: AwsCredentialProvider,
        region: String,
        base: String,
        sign_payload: bool,
        retry_timeout: Duration,
    ) -> Raw {
        Raw {
            http,
            credentials,
            region,
            base: base.trim_end_matches('/').to_owned(),
            sign_payload,
            retry_timeout,
        }
    }

    /// Sends a request for the object `key` (the bucket itself if empty),
    /// with `query` and `headers`, and reads the answer whole. Connection
    /// failures, timeouts of `idempotent` requests, 5xx, 429 and 408 are
    /// tried again, a little later each time, within the retry timeout.
    pub(super) async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&'static str, &str)],
        body: Bytes,
        idempotent: bool,
    ) -> Result<Answer, RawError> {
        let mut url = format!("{}/{}", self.base, utf8_percent_encode(key, STRICT_PATH));
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        utf8_percent_encode(k, STRICT),
                        utf8_percent_encode(v, STRICT)
                    )
                })
                .collect();
            url.push('?');
            url.push_str(&pairs.join("&"));
        }
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = self
                .attempt(method.clone(), &url, headers, body.clone())
                .await;
            let retry = match &result {
                Ok(_) => false,
                Err(RawError::Http(e)) => match e.kind() {
                    HttpErrorKind::Connect | HttpErrorKind::Request => true,
                    HttpErrorKind::Timeout | HttpErrorKind::Interrupted => idempotent,
                    _ => false,
                },
                Err(RawError::Status { status, .. }) => {
                    status.is_server_error()
                        || *status == StatusCode::TOO_MANY_REQUESTS
                        || *status == StatusCode::REQUEST_TIMEOUT
                }
                Err(RawError::Other(_)) => false,
            };
            if !retry || started.elapsed() + delay > self.retry_timeout {
                return result;
            }
            tracing::debug!(error = ?result.err(), attempt, "retrying a store request");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<Answer, RawError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .body(HttpRequestBody::from(body))
            .map_err(|e| RawError::Other(format!("cannot build a request for {url}: {e}")))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| RawError::Other(format!("bad header {name}: {e}")))?;
            request.headers_mut().insert(*name, value);
        }
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| RawError::Other(format!("no credentials: {e}")))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(self.sign_payload)
            .try_authorize(&mut request, None)
            .map_err(|e| RawError::Other(format!("cannot sign a request: {e}")))?;
        let response = self.http.execute(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.bytes().await?;
        if !parts.status.is_success() {
            let error = quick_xml::de::from_str::<ErrorBody>(&String::from_utf8_lossy(&body)).ok();
            return Err(RawError::Status {
                status: parts.status,
                code: error.as_ref().map(|e| e.code.clone()),
                message: error.map_or_else(
                    || String::from_utf8_lossy(&body).chars().take(200).collect(),
                    |e| e.message,
                ),
            });
        }
        Ok(Answer {
            status: parts.status,
            body,
        })
    }

    /// One page of a listing (ListObjectsV2) of the keys that start with
    /// `prefix`: after `start_after`, or where `token` says the previous
    /// page ended; at most `max` keys.
    pub(super) async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
        max: usize,
    ) -> Result<Page, RawError> {
        self.list(prefix, None, start_after, token, max).await
    }

    /// The same, one directory level only: keys under a further `/` come
    /// as the common prefix of their directory (`prefixes`).
    pub(super) async fn list_dir_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
        max: usize,
    ) -> Result<Page, RawError> {
        self.list(prefix, Some("/"), start_after, token, max).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        token: Option<&str>,
        max: usize,
    ) -> Result<Page, RawError> {
        let max = max.to_string();
        let mut query = vec![
            ("list-type", "2"),
            ("encoding-type", "url"),
            ("prefix", prefix),
            ("max-keys", max.as_str()),
        ];
        if let Some(delimiter) = delimiter {
            query.push(("delimiter", delimiter));
        }
        if let Some(token) = token {
            query.push(("continuation-token", token));
        } else if let Some(after) = start_after {
            query.push(("start-after", after));
        }
        let answer = self
            .send(Method::GET, "", &query, &[], Bytes::new(), true)
            .await?;
        let page: ListPage = parse(&answer.body)?;
        let decode = |key: &str| {
            percent_decode_str(key)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|e| RawError::Other(format!("a listed key is not UTF-8: {e}")))
        };
        let prefixes = page
            .common_prefixes
            .iter()
            .map(|p| decode(&p.prefix))
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = Vec::with_capacity(page.contents.len());
        for object in page.contents {
            let key = decode(&object.key)?;
            keys.push(Listed {
                key,
                size: object.size,
                last_modified: object.last_modified,
                e_tag: object.e_tag.unwrap_or_default(),
            });
        }
        let token = page
            .next_continuation_token
            .filter(|_| page.is_truncated)
            .filter(|t| !t.is_empty());
        Ok(Page {
            keys,
            prefixes,
            token,
        })
    }

    /// Writes the empty object `key`.
    pub(super) async fn put_empty(&self, key: &str) -> Result<(), RawError> {
        self.send(Method::PUT, key, &[], &[], Bytes::new(), true)
            .await
            .map(drop)
    }

    /// Deletes the object `key` (fine if it is not there).
    pub(super) async fn delete(&self, key: &str) -> Result<(), RawError> {
        match self
            .send(Method::DELETE, key, &[], &[], Bytes::new(), true)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Completes the multipart upload `upload_id` of `key` with `etags`
    /// (parts 1, 2...), only if no object has that key: `Ok(Some(etag))`
    /// if it was completed, `Ok(None)` if the key was taken (412).
    pub(super) async fn complete_if_absent(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<Option<String>, RawError> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let answer = self
            .send(
                Method::POST,
                key,
                &[("uploadId", upload_id)],
                &[("if-none-match", "*")],
                Bytes::from(body),
                false,
            )
            .await;
        match answer {
            Ok(answer) => {
                let text = String::from_utf8_lossy(&answer.body);
                // S3 may answer 200 and report an error in the body.
                if let Ok(error) = quick_xml::de::from_str::<ErrorBody>(&text) {
                    if error.code == "PreconditionFailed" {
                        return Ok(None);
                    }
                    return Err(RawError::Status {
                        status: answer.status,
                        code: Some(error.code),
                        message: error.message,
                    });
                }
                let done: Completed = parse(&answer.body)?;
                Ok(Some(done.e_tag))
            }
            Err(e) if e.status() == Some(StatusCode::PRECONDITION_FAILED) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of the multipart uploads in progress whose keys start with
    /// `prefix`, after the markers of the previous page.
    pub(super) async fn uploads_page(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
    ) -> Result<UploadsPage, RawError> {
        let mut query = vec![("uploads", ""), ("prefix", prefix)];
        if let Some((key, id)) = after {
            query.push(("key-marker", key));
            query.push(("upload-id-marker", id));
        }
        let answer = self
            .send(Method::GET, "", &query, &[], Bytes::new(), true)
            .await?;
        let page: UploadsList = parse(&answer.body)?;
        let next = match (
            page.is_truncated,
            page.next_key_marker,
            page.next_upload_id_marker,
        ) {
            (true, Some(key), Some(id)) if !key.is_empty() => Some((key, id)),
            _ => None,
        };
        Ok(UploadsPage {
            uploads: page.upload,
            next,
        })
    }
}

/// Escapes text for an XML element.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn parse<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, RawError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| RawError::Other(format!("the store's answer is not UTF-8: {e}")))?;
    quick_xml::de::from_str(text)
        .map_err(|e| RawError::Other(format!("cannot read the store's answer: {e}")))
}

/// An object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    /// Its key, as stored.
    pub(super) key: String,
    /// Its size.
    pub(super) size: u64,
    /// When it was written, as the store says (RFC 3339).
    pub(super) last_modified: String,
    /// Its ETag.
    pub(super) e_tag: String,
}

/// A page of a listing.
#[derive(Debug)]
pub(super) struct Page {
    /// The keys, in byte order.
    pub(super) keys: Vec<Listed>,
    /// With a delimiter, the common prefixes (ending with it), in byte
    /// order.
    pub(super) prefixes: Vec<String>,
    /// Where the next page starts; `None` after the last.
    pub(super) token: Option<String>,
}

/// A page of multipart uploads in progress.
#[derive(Debug)]
pub(super) struct UploadsPage {
    /// The uploads.
    pub(super) uploads: Vec<InProgress>,
    /// The markers of the next page, if there is one.
    pub(super) next: Option<(String, String)>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InProgress {
    /// The key it will publish.
    pub(super) key: String,
    /// Its id.
    pub(super) upload_id: String,
    /// When it was started (RFC 3339).
    pub(super) initiated: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPage {
    #[serde(default)]
    contents: Vec<ListedObject>,
    #[serde(default)]
    common_prefixes: Vec<CommonPrefix>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommonPrefix {
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedObject {
    key: String,
    size: u64,
    last_modified: String,
    #[serde(rename = "ETag")]
    e_tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadsList {
    #[serde(default)]
    upload: Vec<InProgress>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Completed {
    #[serde(rename = "ETag")]
    e_tag: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_the_url_as_sigv4_wants() {
        let key = "dir/a b+c%d~e.f_g-h/é?&=";
        assert_eq!(
            utf8_percent_encode(key, STRICT_PATH).to_string(),
            "dir/a%20b%2Bc%25d~e.f_g-h/%C3%A9%3F%26%3D"
        );
    }

    #[test]
    fn a_listing_page_is_read_with_its_keys_decoded_later() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>
<Contents><Key>a%2F</Key><LastModified>2026-12-07T04:10:13.737Z</LastModified><ETag>&quot;9d&quot;</ETag><Size>0</Size></Contents>
<Contents><Key>a%20b</Key><LastModified>2026-12-07T04:10:13.735Z</LastModified><ETag>"9e"</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass></Contents>
<CommonPrefixes><Prefix>d%2F</Prefix></CommonPrefixes><CommonPrefixes><Prefix>e%2F</Prefix></CommonPrefixes>
<NextContinuationToken>abc</NextContinuationToken></ListBucketResult>"#;
        let page: ListPage = parse(xml.as_bytes()).unwrap();
        let prefixes: Vec<&str> = page
            .common_prefixes
            .iter()
            .map(|p| p.prefix.as_str())
            .collect();
        assert_eq!(prefixes, ["d%2F", "e%2F"]);
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("abc"));
        assert_eq!(page.contents.len(), 2);
        assert_eq!(page.contents[0].key, "a%2F");
        assert_eq!(page.contents[0].e_tag.as_deref(), Some("\"9d\""));
        assert_eq!(page.contents[1].size, 5);
        let empty: ListPage = parse(
            br#"<ListBucketResult><Name>b</Name><IsTruncated>false</IsTruncated></ListBucketResult>"#,
        )
        .unwrap();
        assert!(empty.contents.is_empty() && !empty.is_truncated);
    }

    #[test]
    fn an_error_body_gives_its_code() {
        let error: ErrorBody = quick_xml::de::from_str(
            "<Error><Code>PreconditionFailed</Code><Message>At least one</Message><Resource>/b/k</Resource></Error>",
        )
        .unwrap();
        assert_eq!(error.code, "PreconditionFailed");
        assert!(
            quick_xml::de::from_str::<ErrorBody>(
                "<CompleteMultipartUploadResult><ETag>x</ETag></CompleteMultipartUploadResult>"
            )
            .is_err()
        );
    }
}
