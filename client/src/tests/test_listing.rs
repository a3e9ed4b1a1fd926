//! Listings, stat, delete, directories, and answers that break the protocol.

use super::*;

fn entry(name: &str, size: u64) -> Entry {
    Entry {
        name: name.into(),
        size,
        modified_ns: 0,
    }
}

#[test]
fn list_streams_every_entry_and_checks_the_count() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("a", 1)))
        .msg(&Response::Entry(entry("b/c", 2)))
        .msg(&Response::ListEnd { count: 2 })
        .session();
    let mut seen = Vec::new();
    let count = session
        .list("", |e| {
            seen.push(e);
            Ok(())
        })
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(seen, [entry("a", 1), entry("b/c", 2)]);
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::List(List {
            prefix: String::new()
        })
    );
}

#[test]
fn list_prints_names_with_control_characters_escaped() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("x\u{1b}[31mred\u{9b}", 7)))
        .msg(&Response::Entry(entry("日本/ok.txt", 8)))
        .msg(&Response::ListEnd { count: 2 })
        .session();
    let mut out = Vec::new();
    session
        .list("pre", |e| crate::commands::print_entry(&mut out, &e))
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "7\tx\\u{1b}[31mred\\u{9b}\n8\t日本/ok.txt\n"
    );
}

#[test]
fn list_with_a_wrong_count_is_a_protocol_error() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("a", 1)))
        .msg(&Response::ListEnd { count: 3 })
        .session();
    let err = session.list("", |_| Ok(())).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol(ProtocolError::ListCount {
                announced: 3,
                received: 1
            })
        ),
        "{err:?}"
    );
}

#[test]
fn list_refused_is_reported() {
    let mut session = Script::welcome()
        .error(ErrorCode::Forbidden, "no")
        .session();
    let err = session.list("", |_| Ok(())).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Forbidden);
    assert!(matches!(
        err,
        ClientError::Refused {
            step: Step::Request(Operation::List),
            ..
        }
    ));
    assert!(session.is_usable());
}

#[test]
fn stat_prints_one_escaped_entry() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("a\tb", 12)))
        .session();
    let found = session.stat("ab").unwrap();
    let mut out = Vec::new();
    crate::commands::print_entry(&mut out, &found).unwrap();
    assert_eq!(out, b"12\ta\\tb\n");
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(sent.request(), Request::Stat(Stat { name: "ab".into() }));
}

#[test]
fn stat_and_delete_of_missing_files_are_not_found() {
    let mut session = Script::welcome()
        .error(ErrorCode::NotFound, "no a")
        .error(ErrorCode::NotFound, "no b")
        .msg(&Response::Deleted)
        .session();
    assert_eq!(session.stat("a").unwrap_err().exit(), Exit::NotFound);
    assert_eq!(session.delete("b").unwrap_err().exit(), Exit::NotFound);
    session.delete("c").unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::Stat(_)));
    assert!(matches!(sent.request(), Request::Delete(d) if d.name == "b"));
    assert!(matches!(sent.request(), Request::Delete(d) if d.name == "c"));
    assert!(sent.rest().is_empty());
}

#[test]
fn an_unexpected_answer_is_a_protocol_error_and_ends_the_session() {
    let mut session = Script::welcome()
        .msg(&Response::ListEnd { count: 0 })
        .session();
    let err = session.delete("a").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol(ProtocolError::Unexpected {
                expected: "Deleted",
                got: "ListEnd"
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
    assert!(!session.is_usable());
    assert!(matches!(
        session.stat("a").unwrap_err(),
        ClientError::Unusable
    ));
}

#[test]
fn a_malformed_answer_is_a_protocol_error() {
    let mut session = Script::welcome().raw(&[0, 0, 0, 2, 0xff, 0xff]).session();
    let err = session.stat("a").unwrap_err();
    assert!(
        matches!(err, ClientError::Protocol(ProtocolError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
}

#[test]
fn an_oversized_frame_is_refused_without_reading_it() {
    let mut session = Script::welcome().raw(&[0x7f, 0xff, 0xff, 0xff]).session();
    let err = session.stat("a").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol(ProtocolError::Malformed(
                framekit_codec::Error::FrameTooLarge { .. }
            ))
        ),
        "{err:?}"
    );
}

#[test]
fn the_server_closing_between_requests_is_a_connection_error() {
    let mut session = Script::welcome().session();
    let err = session.stat("a").unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    assert_eq!(err.exit(), Exit::Connection);
}

#[test]
fn tree_lists_directories_and_files_and_checks_the_count() {
    let mut session = Script::welcome()
        .msg(&Response::Directory { name: "d/e".into() })
        .msg(&Response::Entry(entry("d/e/f", 3)))
        .msg(&Response::ListEnd { count: 2 })
        .msg(&Response::DirMade)
        .session();
    let mut seen = Vec::new();
    assert_eq!(
        session
            .tree("d", |e| {
                seen.push(e);
                Ok(())
            })
            .unwrap(),
        2
    );
    assert_eq!(
        seen,
        [
            TreeEntry::Dir("d/e".into()),
            TreeEntry::File(entry("d/e/f", 3))
        ]
    );
    session.make_dir("d/new").unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(sent.request(), Request::Tree(Tree { dir: "d".into() }));
    assert_eq!(
        sent.request(),
        Request::MakeDir(MakeDir {
            name: "d/new".into()
        })
    );
}

fn description(name: &str, content: &[u8]) -> framekit_transfer::Description {
    framekit_transfer::Description {
        name: name.into(),
        size: content.len() as u64,
        modified_ns: 1,
        hash: hash(content),
    }
}

#[test]
fn many_names_are_described_in_order_with_each_refusal_alone() {
    use crate::session::Remote;
    let names: Vec<String> = (0..150).map(|i| format!("f{i}")).collect();
    let mut script = Script::welcome();
    for (i, name) in names.iter().enumerate() {
        script = match i % 3 {
            0 => script.msg(&Response::Described(description(name, name.as_bytes()))),
            1 => script.msg(&Response::Directory { name: name.clone() }),
            _ => script.error(ErrorCode::NotFound, "no such file"),
        };
    }
    let mut session = script.session();
    let mut names_with_bad = names.clone();
    names_with_bad.insert(1, "../bad".into());
    let mut seen = Vec::new();
    session
        .describe_each(&names_with_bad, |i, result| seen.push((i, result)))
        .unwrap();
    assert!(session.is_usable());
    assert_eq!(seen.len(), 151);
    assert!(seen.iter().enumerate().all(|(n, (i, _))| n == *i));
    assert!(matches!(&seen[0].1, Ok(Remote::File(f)) if f.hash == hash(b"f0")));
    assert!(matches!(&seen[1].1, Err(ClientError::InvalidName { .. })));
    assert!(matches!(&seen[2].1, Ok(Remote::Dir(d)) if d == "f1"));
    assert_eq!(
        refused_code(seen[3].1.as_ref().unwrap_err()),
        ErrorCode::NotFound
    );
    let mut sent = Sent::of(session);
    sent.hello();
    for name in &names {
        assert_eq!(
            sent.request(),
            Request::Describe(framekit_transfer::Describe { name: name.clone() })
        );
    }
    assert!(sent.rest().is_empty());
}

#[test]
fn a_server_that_does_not_know_a_new_request_is_too_old() {
    let mut session = Script::welcome()
        .error(ErrorCode::BadRequest, "unknown variant")
        .session();
    let err = session.describe("f").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::TooOld {
                feature: crate::error::Feature::Describe,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
    assert!(session.is_broken());
    let mut session = Script::welcome()
        .error(ErrorCode::BadRequest, "unknown variant")
        .session();
    let err = session.rename("a", "b", false).unwrap_err();
    assert!(
        err.report()
            .starts_with("the server is too old for renaming"),
        "{}",
        err.report()
    );
}

#[test]
fn list_all_reports_directories_and_files() {
    let mut session = Script::welcome()
        .msg(&Response::Directory { name: "d".into() })
        .msg(&Response::Entry(entry("d/f", 3)))
        .msg(&Response::ListEnd { count: 2 })
        .session();
    let mut seen = Vec::new();
    session
        .list_all("d", |e| {
            seen.push(e);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        seen,
        [TreeEntry::Dir("d".into()), TreeEntry::File(entry("d/f", 3))]
    );
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::ListAll(framekit_transfer::ListAll { prefix: "d".into() })
    );
}
