//! What commands print: the plain lines, and the JSON records of
//! `--json`, one object per line, with field names scripts may rely on
//! (README.md lists them).

use crate::error::{ClientError, hex};
use crate::escape::Escaped;
use crate::session::{Remote, TreeEntry};
use framekit_transfer::{Entry, Hash};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// How a command speaks: the global options that shape its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ui {
    /// Progress, result lines, summaries and notes (not `--quiet`).
    pub(crate) status: bool,
    /// Results as JSON records on stdout.
    pub(crate) json: bool,
}

/// A time in nanoseconds since the Unix epoch, as RFC 3339 in UTC.
pub(crate) fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// A name on the server, as list and stat report it.
#[derive(Debug, Serialize)]
pub(crate) struct NameRecord<'a> {
    name: &'a str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modified_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blake3: Option<String>,
}

impl<'a> NameRecord<'a> {
    pub(crate) fn dir(name: &'a str) -> Self {
        NameRecord {
            name,
            kind: "dir",
            size: None,
            modified: None,
            modified_ns: None,
            blake3: None,
        }
    }

    pub(crate) fn file(name: &'a str, size: u64, modified_ns: u64, hash: Option<&Hash>) -> Self {
        NameRecord {
            name,
            kind: "file",
            size: Some(size),
            modified: Some(rfc3339(modified_ns)),
            modified_ns: Some(modified_ns),
            blake3: hash.map(hex),
        }
    }

    pub(crate) fn of_entry(entry: &'a Entry) -> Self {
        NameRecord::file(&entry.name, entry.size, entry.modified_ns, None)
    }

    pub(crate) fn of_tree(entry: &'a TreeEntry) -> Self {
        match entry {
            TreeEntry::Dir(name) => NameRecord::dir(name),
            TreeEntry::File(entry) => NameRecord::of_entry(entry),
        }
    }

    pub(crate) fn of_remote(remote: &'a Remote) -> Self {
        match remote {
            Remote::Dir(name) => NameRecord::dir(name),
            Remote::File(file) => {
                NameRecord::file(&file.name, file.size, file.modified_ns, Some(&file.hash))
            }
        }
    }

    /// The plain list line: `SIZE<TAB>NAME`, or `-<TAB>NAME/` for a
    /// directory, the name escaped.
    pub(crate) fn list_line(&self) -> String {
        match self.size {
            Some(size) if self.kind == "file" => format!("{size}\t{}", Escaped(self.name)),
            _ => format!("-\t{}/", Escaped(self.name)),
        }
    }

    /// The plain stat lines: `key: value`, one per line.
    pub(crate) fn stat_lines(&self) -> String {
        let mut text = format!("name: {}\nkind: {}\n", Escaped(self.name), self.kind);
        if let Some(size) = self.size {
            text.push_str(&format!("size: {size}\n"));
        }
        if let Some(modified) = &self.modified {
            text.push_str(&format!("modified: {modified}\n"));
        }
        if let Some(hash) = &self.blake3 {
            text.push_str(&format!("blake3: {hash}\n"));
        }
        text
    }
}

/// What became of one file of a put or get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// Uploaded.
    Sent,
    /// Downloaded.
    Received,
    /// Already identical on the other side: not transferred.
    Unchanged,
    /// A directory made on the other side.
    Created,
    /// Left out on purpose (a symbolic link, a special file).
    Skipped,
    /// It failed; `error` says why.
    Failed,
}

/// One file (or directory) of a put or get, as `--json` reports it.
#[derive(Debug, Serialize)]
pub(crate) struct TransferRecord<'a> {
    pub(crate) op: &'static str,
    /// The remote name (absent for a local file that has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<&'a str>,
    /// The local path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    pub(crate) kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) blake3: Option<String>,
    pub(crate) outcome: Outcome,
    /// Body bytes that travelled for it.
    pub(crate) bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Writes `value` as one line of JSON.
pub(crate) fn json_line(out: &mut dyn Write, value: &impl Serialize) -> Result<(), ClientError> {
    let line =
        serde_json::to_string(value).map_err(|e| ClientError::Output(std::io::Error::other(e)))?;
    writeln!(out, "{line}").map_err(ClientError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc_to_the_nanosecond() {
        assert_eq!(
            rfc3339(1_717_243_200_123_456_789),
            "2024-06-01T12:00:00.123456789Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn records_have_stable_fields_and_plain_lines_escape_names() {
        let entry = Entry {
            name: "a\tb".into(),
            size: 3,
            modified_ns: 0,
        };
        let record = NameRecord::of_entry(&entry);
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"name":"a\tb","kind":"file","size":3,"modified":"1970-01-01T00:00:00.000000000Z","modified_ns":0}"#
        );
        assert_eq!(record.list_line(), "3\ta\\tb");
        let dir = NameRecord::dir("d");
        assert_eq!(
            serde_json::to_string(&dir).unwrap(),
            r#"{"name":"d","kind":"dir"}"#
        );
        assert_eq!(dir.list_line(), "-\td/");
        assert_eq!(dir.stat_lines(), "name: d\nkind: dir\n");
    }
}
