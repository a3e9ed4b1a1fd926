//! Frames over a real loopback TCP connection: a writer that sends the
//! stream in small random pieces with flushes in between, and readers that
//! must get every frame intact and in order.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::SplitMix;
use framekit_codec::frame::{FrameCodec, FrameConfig};
use futures_util::StreamExt;
use std::io::BufReader;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

/// About 3 MB of frames: half of them tiny (down to empty), half up to
/// 100 KiB.
fn random_frames(rng: &mut SplitMix) -> Vec<Bytes> {
    (0..120)
        .map(|_| {
            let len = if rng.below(2) == 0 {
                rng.below(64)
            } else {
                rng.below(100 * 1024)
            };
            Bytes::from(rng.bytes(len))
        })
        .collect()
}

/// Connects to `addr` and sends `frames`: mostly encoded and written in
/// random pieces of 1 byte to 4 KiB, each flushed, with yields to let the
/// reader run; sometimes whole with the vectored `write_frame`.
async fn send(
    addr: SocketAddr,
    frames: Vec<Bytes>,
    seed: u64,
) -> Result<(), framekit_codec::Error> {
    let mut rng = SplitMix::new(seed);
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let config = FrameConfig::default();
    for frame in frames {
        if rng.below(4) == 0 {
            framekit_codec::frame::write_frame(&mut stream, &config, frame).await?;
            continue;
        }
        let mut encoded = BytesMut::new();
        config.encode(&frame, &mut encoded)?;
        while !encoded.is_empty() {
            let piece = encoded.split_to((1 + rng.below(4096)).min(encoded.len()));
            stream.write_all(&piece).await?;
            stream.flush().await?;
            if rng.below(3) == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    stream.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_read_gets_every_frame_over_loopback_tcp() {
    let frames = random_frames(&mut SplitMix::new(1));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let writer = tokio::spawn(send(listener.local_addr().unwrap(), frames.clone(), 2));

    let (stream, _) = listener.accept().await.unwrap();
    let mut framed = FramedRead::new(stream, FrameCodec::new());
    let mut received = Vec::new();
    while let Some(frame) = framed.next().await {
        received.push(frame.unwrap());
    }
    writer.await.unwrap().unwrap();

    assert_eq!(received.len(), frames.len());
    for (i, (got, sent)) in received.iter().zip(&frames).enumerate() {
        assert!(
            got == sent,
            "frame {i}: {} bytes, sent {}",
            got.len(),
            sent.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_read_frame_gets_every_frame_over_loopback_tcp() {
    let frames = random_frames(&mut SplitMix::new(3));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = tokio::spawn(send(addr, frames.clone(), 4));

    let received = tokio::task::spawn_blocking(move || {
        let (stream, _) = listener.accept().unwrap();
        let config = FrameConfig::default();
        let mut reader = BufReader::new(stream);
        let mut received = Vec::new();
        while let Some(frame) = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap()
        {
            received.push(frame);
        }
        received
    })
    .await
    .unwrap();
    writer.await.unwrap().unwrap();

    assert_eq!(received.len(), frames.len());
    for (i, (got, sent)) in received.iter().zip(&frames).enumerate() {
        assert!(
            got == sent,
            "frame {i}: {} bytes, sent {}",
            got.len(),
            sent.len()
        );
    }
}
