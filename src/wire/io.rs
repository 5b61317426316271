//! The two async edges of the wire format: read and write one control frame or stream header.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{decode_body, encode_frame, frame_len, StreamHeader, TunnelRef, WireError};
use crate::types::TunnelId;

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
    let mut kind = [0u8; 1];
    read_exact_or_truncated(r, &mut kind).await?;
    let (kind, named) = StreamHeader::decode_kind(kind[0])?;
    let tunnel = if named {
        let name = read_short_string(r).await?;
        TunnelRef::Name(String::from_utf8(name).map_err(|_| WireError::BadTunnelName)?)
    } else {
        let mut id = [0u8; 16];
        read_exact_or_truncated(r, &mut id).await?;
        TunnelRef::Id(TunnelId(id))
    };
    let peer = read_short_string(r).await?;
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

/// A length byte, then that many bytes.
async fn read_short_string<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 1];
    read_exact_or_truncated(r, &mut len).await?;
    let mut bytes = vec![0u8; len[0] as usize];
    read_exact_or_truncated(r, &mut bytes).await?;
    Ok(bytes)
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(e.into()),
    }
}
