//! Runs the echo examples' server and client against each other on
//! loopback, so the examples keep working.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The examples' `main` functions are not used here.
#[allow(dead_code)]
#[path = "../examples/echo_blocking.rs"]
mod echo_blocking;
#[allow(dead_code)]
#[path = "../examples/echo_tokio.rs"]
mod echo_tokio;

/// Messages of every size class: empty, small, and larger than a TCP
/// segment and than a socket buffer.
fn messages() -> Vec<String> {
    vec![
        "hello".into(),
        String::new(),
        "world".into(),
        "x".repeat(3000),
        "y".repeat(300_000),
    ]
}

#[test]
fn blocking_echo_server_returns_every_message() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server runs until the test process exits.
    std::thread::spawn(move || echo_blocking::serve(listener));
    let messages = messages();
    let replies = echo_blocking::client(addr, &messages).unwrap();
    assert_eq!(replies.len(), messages.len());
    for (reply, message) in replies.iter().zip(&messages) {
        assert!(reply == message.as_bytes(), "{} bytes", message.len());
    }
}

#[tokio::test]
async fn tokio_echo_server_returns_every_message() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(echo_tokio::serve(listener));
    let messages = messages();
    let replies = echo_tokio::client(addr, &messages).await.unwrap();
    assert_eq!(replies.len(), messages.len());
    for (reply, message) in replies.iter().zip(&messages) {
        assert!(reply == message.as_bytes(), "{} bytes", message.len());
    }
}
