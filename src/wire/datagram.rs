//! Sans-IO encoding of UDP datagrams between agents and the hub.
//!
//! A datagram travels either as a QUIC DATAGRAM frame, `varint flow | varint seq | payload`,
//! or — when it is larger than the path allows, or on TLS/TCP transports — as a frame on its
//! flow's stream, `u32 length | varint seq | payload`. The sequence number lets the receiver
//! drop anything older than what it already delivered, so the two paths never reorder a flow.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Largest stream frame body: sequence number plus the largest payload.
pub const MAX_FRAME_BODY: usize = MAX_UDP_PAYLOAD + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatagramError {
    #[error("truncated varint")]
    Varint,
    #[error("datagram frame of {0} bytes exceeds the {MAX_FRAME_BODY}-byte limit")]
    TooLarge(usize),
}

/// QUIC-style variable-length integer (RFC 9000 §16): 1, 2, 4 or 8 bytes.
pub fn put_varint(buf: &mut BytesMut, v: u64) {
    match v {
        0..=0x3f => buf.put_u8(v as u8),
        0x40..=0x3fff => buf.put_u16(0x4000 | v as u16),
        0x4000..=0x3fff_ffff => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | (v & 0x3fff_ffff_ffff_ffff)),
    }
}

pub fn get_varint(buf: &mut Bytes) -> Result<u64, DatagramError> {
    let first = *buf.first().ok_or(DatagramError::Varint)?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return Err(DatagramError::Varint);
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    buf.advance(len);
    Ok(v)
}

/// A QUIC DATAGRAM payload for `flow`.
pub fn encode_datagram(flow: u64, seq: u64, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 16);
    put_varint(&mut buf, flow);
    put_varint(&mut buf, seq);
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// Splits a QUIC DATAGRAM payload into flow, sequence number and UDP payload (zero-copy).
pub fn decode_datagram(mut datagram: Bytes) -> Result<(u64, u64, Bytes), DatagramError> {
    let flow = get_varint(&mut datagram)?;
    let seq = get_varint(&mut datagram)?;
    Ok((flow, seq, datagram))
}

/// A stream frame carrying one datagram.
pub fn encode_frame(seq: u64, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 12);
    put_frame(&mut frame, seq, payload);
    frame.freeze()
}

/// Appends a stream frame carrying one datagram to `buf`.
pub fn put_frame(buf: &mut BytesMut, seq: u64, payload: &[u8]) {
    let start = buf.len();
    buf.put_u32(0); // length, patched below
    put_varint(buf, seq);
    buf.extend_from_slice(payload);
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Validates a frame length read from a stream before its body is allocated.
pub fn frame_body_len(prefix: [u8; 4]) -> Result<usize, DatagramError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BODY {
        return Err(DatagramError::TooLarge(len));
    }
    Ok(len)
}

/// Splits a frame body into sequence number and payload.
pub fn decode_frame_body(mut body: Bytes) -> Result<(u64, Bytes), DatagramError> {
    let seq = get_varint(&mut body)?;
    Ok((seq, body))
}

/// Takes the first whole frame off the front of `buf` (bytes read from a stream or lane):
/// `None` until all of it has arrived.
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<(u64, Bytes)>, DatagramError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = frame_body_len(*prefix)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    decode_frame_body(buf.split_to(len).freeze()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [0, 63, 64, 16_383, 16_384, 1 << 30, (1 << 62) - 1] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            let mut bytes = buf.freeze();
            assert_eq!(get_varint(&mut bytes).unwrap(), v);
            assert!(bytes.is_empty());
        }
        assert_eq!(
            get_varint(&mut Bytes::from_static(&[0x80, 1])),
            Err(DatagramError::Varint)
        );
        assert_eq!(get_varint(&mut Bytes::new()), Err(DatagramError::Varint));
    }

    #[test]
    fn datagrams_and_frames_round_trip() {
        let payload = vec![9u8; 1200];
        let (flow, seq, back) = decode_datagram(encode_datagram(70_000, 5, &payload)).unwrap();
        assert_eq!((flow, seq, &back[..]), (70_000, 5, &payload[..]));

        let big = vec![3u8; MAX_UDP_PAYLOAD];
        let frame = encode_frame(u64::MAX >> 2, &big);
        let len = frame_body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        let (seq, back) = decode_frame_body(frame.slice(4..)).unwrap();
        assert_eq!((seq, back.len()), (u64::MAX >> 2, MAX_UDP_PAYLOAD));
    }

    #[test]
    fn frames_are_taken_whole_from_a_byte_stream() {
        let mut stream = BytesMut::new();
        stream.extend_from_slice(&encode_frame(1, b"first"));
        stream.extend_from_slice(&encode_frame(2, &[7u8; 300]));
        let mut buf = BytesMut::new();
        let mut taken = Vec::new();
        // Byte by byte: a frame comes out only once all of it is there.
        for b in stream.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(frame) = take_frame(&mut buf).unwrap() {
                taken.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].0, &taken[0].1[..]), (1, &b"first"[..]));
        assert_eq!((taken[1].0, taken[1].1.len()), (2, 300));
        let mut oversized = BytesMut::from(&(MAX_FRAME_BODY as u32 + 1).to_be_bytes()[..]);
        assert!(take_frame(&mut oversized).is_err());
    }

    #[test]
    fn oversized_and_truncated_input_is_an_error() {
        assert!(frame_body_len((MAX_FRAME_BODY as u32 + 1).to_be_bytes()).is_err());
        assert!(decode_datagram(Bytes::from_static(&[0x40])).is_err());
        assert!(decode_frame_body(Bytes::new()).is_err());
    }
}
