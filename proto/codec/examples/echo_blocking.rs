//! An echo server and client over blocking `std::net`, one frame per
//! message.
//!
//! This is the classic TCP server loop (bind, listen, accept, then receive
//! and send until the peer leaves) with `read_frame` and `write_frame` in
//! place of `recv` and `send`, so each message arrives whole however TCP
//! cuts or glues the bytes. Run the server, then the client in another
//! terminal:
//!
//! ```text
//! cargo run -p framekit-codec --example echo_blocking -- server 127.0.0.1:7001
//! cargo run -p framekit-codec --example echo_blocking -- client 127.0.0.1:7001 hello world
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The client prints the replies it gets: that is its output.
#![allow(clippy::print_stdout)]

use bytes::Bytes;
use framekit_codec::blocking::{read_frame, write_frame};
use framekit_codec::frame::FrameConfig;
use std::io::{self, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;
use std::{env, process, thread};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, addr] if mode == "server" => TcpListener::bind(addr)
            .and_then(serve)
            .map_err(framekit_codec::Error::from),
        [mode, addr, messages @ ..] if mode == "client" => client(addr, messages).map(|replies| {
            for reply in replies {
                println!("{}", String::from_utf8_lossy(&reply));
            }
        }),
        _ => {
            eprintln!("usage: echo_blocking server ADDR | echo_blocking client ADDR MESSAGE...");
            process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        process::exit(1);
    }
}

/// Accepts connections forever and echoes each one on its own thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    eprintln!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            // Failing to accept one connection (say, out of file
            // descriptors) is no reason to stop serving the others.
            Err(e) => {
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        thread::spawn(move || {
            if let Err(e) = echo(&stream) {
                eprintln!("{:?}: {e}", stream.peer_addr());
            }
        });
    }
    Ok(())
}

/// Sends every frame back until the client closes the connection.
fn echo(stream: &TcpStream) -> Result<(), framekit_codec::Error> {
    let config = FrameConfig::default();
    // Buffered reads, so that small frames do not cost a system call each.
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    // `Ok(None)` is a clean close between frames; a close in the middle of
    // a frame is an error, never a short message.
    while let Some(frame) = read_frame(&mut reader, &config)? {
        // Writes every byte, like `sendall`: a bare `write` may take only
        // part of the frame.
        write_frame(&mut writer, &config, &frame)?;
    }
    Ok(())
}

/// Sends each message as a frame, waits for its echo, and returns the
/// echoes.
pub fn client(
    addr: impl ToSocketAddrs,
    messages: &[String],
) -> Result<Vec<Bytes>, framekit_codec::Error> {
    let config = FrameConfig::default();
    let stream = TcpStream::connect(addr)?;
    let mut reader = BufReader::new(&stream);
    let mut replies = Vec::new();
    for message in messages {
        write_frame(&mut &stream, &config, message.as_bytes())?;
        match read_frame(&mut reader, &config)? {
            Some(reply) => replies.push(reply),
            None => {
                let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "server closed early");
                return Err(closed.into());
            }
        }
    }
    // Tell the server we are done: it reads a clean end of stream.
    stream.shutdown(Shutdown::Write)?;
    Ok(replies)
}
