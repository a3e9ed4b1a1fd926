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
