//! The two async edges of the wire format: read and write one control frame or stream header.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{decode_body, encode_frame, frame_len, StreamHeader, WireError};

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

pub async fn read_stream_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<StreamHeader, WireError> {
    let mut fixed = [0u8; StreamHeader::FIXED_LEN];
    read_exact_or_truncated(r, &mut fixed).await?;
    let (kind, tunnel, peer_len) = StreamHeader::decode_fixed(&fixed)?;
    let mut peer = vec![0u8; peer_len];
    read_exact_or_truncated(r, &mut peer).await?;
    let peer = String::from_utf8(peer).map_err(|_| WireError::BadPeerAddr)?;
    let mut flow = [0u8; 8];
    if kind.has_flow() {
        read_exact_or_truncated(r, &mut flow).await?;
    }
    Ok(StreamHeader {
        kind,
        tunnel,
        peer,
        flow: u64::from_be_bytes(flow),
    })
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(e.into()),
    }
}
