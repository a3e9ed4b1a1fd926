//! The handshake.

use super::*;

#[test]
fn handshake_sends_the_hello_and_keeps_the_welcome() {
    let session = Session::handshake(Script::welcome().peer(), Some("tok".into())).unwrap();
    assert_eq!(session.welcome().idle_timeout_ms, 30_000);
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    assert_eq!(sent.msg::<Hello>(), Hello::new(Some("tok".into())));
    assert!(sent.rest().is_empty());
}

#[test]
fn handshake_error_reply_is_a_refusal() {
    let script = Script::default().error(ErrorCode::Unauthorized, "wrong token");
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Unauthorized);
    assert_eq!(err.exit(), Exit::Refused);
    assert_eq!(
        err.report(),
        "the server refused the handshake: unauthorized: wrong token"
    );
}

#[test]
fn handshake_answered_by_something_else_is_a_handshake_failure() {
    let script = Script::default().raw(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert!(
        matches!(err, ClientError::Handshake(ProtocolError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Connection);
}

#[test]
fn handshake_answered_with_another_message_is_a_handshake_failure() {
    let script = Script::default().msg(&Response::Deleted);
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Handshake(ProtocolError::Unexpected { got: "Deleted", .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Connection);
}

#[test]
fn handshake_with_another_version_is_a_handshake_failure() {
    let script = Script::default().msg(&Response::Welcome(Welcome {
        version: VERSION + 1,
        max_file_size: 0,
        max_message_len: 0,
        idle_timeout_ms: 0,
        read_only: false,
    }));
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert!(
        matches!(err, ClientError::Handshake(ProtocolError::Version { .. })),
        "{err:?}"
    );
}

#[test]
fn handshake_closed_by_the_server_is_a_connection_failure() {
    for input in [&b""[..], b"\0\0"] {
        let script = Script::default().raw(input);
        let err = Session::handshake(script.peer(), None).unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert_eq!(err.exit(), Exit::Connection);
    }
}

#[test]
fn handshake_refused_before_the_hello_is_read_reports_the_reason() {
    let mut peer = Script::default()
        .error(ErrorCode::Busy, "too many connections")
        .peer();
    peer.write_limit = Some(0);
    let err = Session::handshake(peer, None).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Busy);
}
