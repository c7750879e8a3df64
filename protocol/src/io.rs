//! Thin tokio adapters around the sans-IO codec in [`crate::frame`]: read messages from any
//! `AsyncRead`, write them to any `AsyncWrite`.

use crate::frame::{FrameDecoder, FrameError, decode_payload, encode_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a control channel failed.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("control channel I/O failed")]
    Io(#[from] std::io::Error),
}

/// Reads messages of type `T` from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            decoder: FrameDecoder::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// The next message; `Ok(None)` when the stream ended cleanly between frames.
    ///
    /// Cancel-safe: bytes read before a cancellation stay in the decoder.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ChannelError> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(Some(decode_payload(&payload)?));
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }
}

/// Writes one message as a frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ChannelError> {
    let bytes = encode_frame(msg)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}
