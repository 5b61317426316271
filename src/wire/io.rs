//! The two async edges of the wire format: read and write one control frame or stream header.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{decode_body, encode_frame, frame_len, HeaderRead, StreamHeader, WireError};

pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    w.write_all(&encode_frame(msg)).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before its first byte.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, WireError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    read_exact_or_truncated(r, &mut prefix[1..]).await?;
    let mut body = vec![0u8; frame_len(prefix)?];
    read_exact_or_truncated(r, &mut body).await?;
    decode_body(&body).map(Some)
}

/// Reads one stream header, and not a byte of the payload after it.
pub async fn read_stream_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<StreamHeader, WireError> {
    let mut buf = Vec::with_capacity(64);
    let mut need = 1;
    loop {
        let at = buf.len();
        buf.resize(at + need, 0);
        read_exact_or_truncated(r, &mut buf[at..]).await?;
        match StreamHeader::decode(&buf)? {
            HeaderRead::Complete(header, _) => return Ok(header),
            HeaderRead::Need(more) => need = more,
        }
    }
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(e.into()),
    }
}
