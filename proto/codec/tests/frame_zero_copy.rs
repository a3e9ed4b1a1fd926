//! The vectored write path hands the writer the caller's payload memory
//! itself, never a copy; decoded frames share the receive buffer.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use framekit_codec::frame::{FrameCodec, FrameConfig};
use proptest::prelude::*;
use std::io::{self, IoSlice, Write};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Where a slice lives in memory.
fn span(bytes: &[u8]) -> Range<usize> {
    let start = bytes.as_ptr().addr();
    start..start + bytes.len()
}

/// A writer that remembers the memory of every slice it is handed, accepts
/// a few bytes per call (the sizes used in turn), and keeps what it took.
#[derive(Debug)]
struct SpanRecorder {
    /// The slices of each call, and how many bytes the call took.
    calls: Vec<(Vec<Range<usize>>, usize)>,
    written: Vec<u8>,
    sizes: Vec<usize>,
    vectored: bool,
}

impl SpanRecorder {
    fn new(sizes: &[usize], vectored: bool) -> Self {
        SpanRecorder {
            calls: Vec::new(),
            written: Vec::new(),
            sizes: sizes.to_vec(),
            vectored,
        }
    }

    fn take(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let mut limit = self.sizes[self.calls.len() % self.sizes.len()];
        let mut n = 0;
        for buf in bufs {
            let take = limit.min(buf.len());
            self.written.extend_from_slice(&buf[..take]);
            n += take;
            limit -= take;
        }
        self.calls.push((bufs.iter().map(|b| span(b)).collect(), n));
        n
    }

    /// Checks that every payload byte was handed over from the payload's own
    /// memory: in each call, the slices carry the frame from where the last
    /// call stopped, head bytes first (from anywhere), then payload bytes,
    /// each at its own address in `payload`.
    fn check_no_copy(&self, payload: &[u8], head_len: usize) -> Result<(), String> {
        let payload_start = span(payload).start;
        let mut offset = 0;
        for (i, (spans, taken)) in self.calls.iter().enumerate() {
            let mut pos = offset;
            for s in spans.iter().filter(|s| !s.is_empty()) {
                if pos >= head_len {
                    let at = payload_start + (pos - head_len);
                    if *s != (at..at + s.len()) {
                        return Err(format!(
                            "call {i}: frame byte {pos} passed from {s:?}, not the payload's {at:#x}"
                        ));
                    }
                } else if pos + s.len() > head_len {
                    return Err(format!(
                        "call {i}: one slice of {} bytes holds head and payload bytes",
                        s.len()
                    ));
                }
                pos += s.len();
            }
            offset += taken;
        }
        Ok(())
    }
}

impl Write for SpanRecorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.take(&[IoSlice::new(buf)]))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(self.take(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncWrite for SpanRecorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.take(&[IoSlice::new(buf)])))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.take(bufs)))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn config_and_payload() -> impl Strategy<Value = (FrameConfig, Vec<u8>)> {
    any_config().prop_flat_map(|config| (Just(config), payload(&config)))
}

proptest! {
    #[test]
    fn blocking_write_frame_hands_over_the_payload_memory_itself(
        (config, payload) in config_and_payload(),
        sizes in chunk_sizes(),
    ) {
        let mut writer = SpanRecorder::new(&sizes, true);
        framekit_codec::blocking::write_frame(&mut writer, &config, &payload).unwrap();
        prop_assert_eq!(&writer.written, &reference_frame(&config, &payload));
        let head_len = reference_head(&config, payload.len()).len();
        prop_assert_eq!(writer.check_no_copy(&payload, head_len), Ok(()));
    }

    #[test]
    fn async_write_frame_hands_over_the_payload_memory_itself(
        (config, payload) in config_and_payload(),
        sizes in chunk_sizes(),
        vectored in any::<bool>(),
    ) {
        let payload = Bytes::from(payload);
        let mut writer = SpanRecorder::new(&sizes, vectored);
        tokio_test::block_on(framekit_codec::frame::write_frame(&mut writer, &config, payload.clone()))
            .unwrap();
        prop_assert_eq!(&writer.written, &reference_frame(&config, &payload));
        let head_len = reference_head(&config, payload.len()).len();
        prop_assert_eq!(writer.check_no_copy(&payload, head_len), Ok(()));
    }
}

#[test]
fn the_check_catches_a_copied_payload() {
    // The copy path puts the payload into a new buffer: the check must see
    // that, or it proves nothing about the vectored path.
    let payload = vec![0x42; 1000];
    let mut copy = BytesMut::new();
    FrameCodec::new().encode(&payload, &mut copy).unwrap();
    let mut writer = SpanRecorder::new(&[300], true);
    writer.write_all(&copy).unwrap();
    assert_eq!(writer.written, &copy[..]);
    assert!(writer.check_no_copy(&payload, 4).is_err());
}

#[test]
fn decoded_frames_share_the_receive_buffer() {
    let config = FrameConfig::default();
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 50]).collect();
    let mut buf = BytesMut::from(&reference_stream(&config, &payloads)[..]);
    let received = span(&buf);
    let mut codec = FrameCodec::with_config(config);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode_frame(&mut buf).unwrap() {
        let frame_span = span(&frame);
        assert!(
            received.start <= frame_span.start && frame_span.end <= received.end,
            "frame at {frame_span:?} outside the receive buffer {received:?}"
        );
        frames.push(frame);
    }
    assert_eq!(frames, to_bytes(&payloads));
}
