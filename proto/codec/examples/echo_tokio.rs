//! The echo server and client of `echo_blocking`, with tokio: a task per
//! connection, and `Framed` turning the socket into a stream and a sink of
//! frames.
//!
//! Run the server, then the client in another terminal:
//!
//! ```text
//! cargo run -p framekit-codec --example echo_tokio -- server 127.0.0.1:7001
//! cargo run -p framekit-codec --example echo_tokio -- client 127.0.0.1:7001 hello world
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The client prints the replies it gets: that is its output.
#![allow(clippy::print_stdout)]

use bytes::Bytes;
use framekit_codec::frame::FrameCodec;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::time::Duration;
use std::{env, process};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

#[tokio::main]
async fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, addr] if mode == "server" => match TcpListener::bind(addr).await {
            Ok(listener) => serve(listener).await.map_err(framekit_codec::Error::from),
            Err(e) => Err(e.into()),
        },
        [mode, addr, messages @ ..] if mode == "client" => {
            client(addr, messages).await.map(|replies| {
                for reply in replies {
                    println!("{}", String::from_utf8_lossy(&reply));
                }
            })
        }
        _ => {
            eprintln!("usage: echo_tokio server ADDR | echo_tokio client ADDR MESSAGE...");
            process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        process::exit(1);
    }
}

/// Accepts connections forever and echoes each one in its own task.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Failing to accept one connection (say, out of file
            // descriptors) is no reason to stop serving the others.
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// Sends every frame back until the client closes the connection.
async fn echo(stream: TcpStream) -> Result<(), framekit_codec::Error> {
    let mut frames = Framed::new(stream, FrameCodec::new());
    // The stream ends cleanly when the client closes between frames; a close
    // in the middle of a frame comes out as an error, never a short frame.
    while let Some(frame) = frames.next().await {
        // `send` writes the whole frame and flushes it.
        frames.send(frame?).await?;
    }
    Ok(())
}

/// Sends each message as a frame, waits for its echo, and returns the
/// echoes.
pub async fn client(
    addr: impl ToSocketAddrs,
    messages: &[String],
) -> Result<Vec<Bytes>, framekit_codec::Error> {
    let mut frames = Framed::new(TcpStream::connect(addr).await?, FrameCodec::new());
    let mut replies = Vec::new();
    for message in messages {
        frames
            .send(Bytes::copy_from_slice(message.as_bytes()))
            .await?;
        match frames.next().await {
            Some(reply) => replies.push(reply?),
            None => {
                let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "server closed early");
                return Err(closed.into());
            }
        }
    }
    Ok(replies)
}
