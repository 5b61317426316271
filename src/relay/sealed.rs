//! TLS 1.3 records on a TLS lane after its handshake, sealed and opened here with the traffic
//! keys rustls hands over (`dangerous_extract_secrets`), the way kernel TLS would do it (this
//! kernel has no `CONFIG_TLS`). rustls' buffered API copies every record it decrypts into a
//! fresh `Vec`, then again into the reader's buffer (15% of TLS bulk CPU in `profile.sh`).
//! Here a socket read lands straight in the record slots and is sealed in place, and records
//! read from the lane are opened in place and written out from where they lie.
//!
//! The record layer is sans-IO ([`Outbound`], [`Inbound`]); [`SealedLane`] and the relays
//! drive it. Only what a lane needs is supported: application data, close_notify (which ends
//! one direction, as TLS 1.3 allows), and the NewSessionTicket messages a server sends after
//! its handshake (skipped). A KeyUpdate, any other alert or handshake message, a record that
//! does not open, or a lane that ends without close_notify ends the lane with an error.
//!
//! A lane whose connection ended with close_notify both ways is used again (both peers are
//! burrow): records after a close_notify wait unopened until [`SealedLane::rearm`], and then
//! begin the next connection with its stream header. So a TLS lane costs one handshake for
//! many connections, not one each.
//! Instead of rekeying, a direction stops at its cipher's confidentiality limit (2^24
//! records for AES-GCM: 256 GiB of full records).

use std::io::{self, IoSlice, IoSliceMut};
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN};
use bytes::BytesMut;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::{read_ready, Transferred};
use crate::mux::MuxStream;

const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 16;
/// What sealing adds to each record: header, content type and tag.
pub const RECORD_OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
/// Largest plaintext of one record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest ciphertext a peer may send in one record (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Records sealed from one socket read: 64 KiB of plaintext, like the other relays.
const SLOTS: usize = 4;
const SLOT_LEN: usize = HEADER_LEN + MAX_PLAINTEXT + 1 + TAG_LEN;
/// Bytes one `seal_copy` takes at most.
pub const SEAL_CAPACITY: usize = SLOTS * MAX_PLAINTEXT;
const INBOUND_LEN: usize = 4 * (HEADER_LEN + MAX_CIPHERTEXT);

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const NEW_SESSION_TICKET: u8 = 4;
const CLOSE_NOTIFY: u8 = 0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealedError {
    #[error("the negotiated cipher suite is not supported on lanes")]
    UnsupportedSuite,
    #[error("a record did not open (corrupt, reordered or replayed)")]
    BadRecord,
    #[error("malformed record header")]
    BadHeader,
    #[error("the peer sent alert {0}")]
    Alert(u8),
    #[error("handshake message {0} after the handshake (key updates are not supported on lanes)")]
    Handshake(u8),
    #[error("this key's record limit is reached")]
    KeyExhausted,
}

impl From<SealedError> for io::Error {
    fn from(e: SealedError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// One direction's key, IV and record sequence number.
struct RecordKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
    limit: u64,
}

impl RecordKey {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Self, SealedError> {
        let (algorithm, key, iv, limit) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv, 1 << 24),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv, 1 << 24),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv, u64::MAX),
            _ => return Err(SealedError::UnsupportedSuite),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| SealedError::UnsupportedSuite)?;
        let iv = iv.as_ref().try_into().map_err(|_| SealedError::UnsupportedSuite)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
            limit,
        })
    }

    /// The per-record nonce: the IV XOR the sequence number (RFC 8446 §5.3).
    fn next_nonce(&mut self) -> Result<Nonce, SealedError> {
        if self.seq >= self.limit {
            return Err(SealedError::KeyExhausted);
        }
        let mut nonce = self.iv;
        for (byte, seq) in nonce[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

fn record_header(ciphertext_len: usize) -> [u8; HEADER_LEN] {
    let [hi, lo] = (ciphertext_len as u16).to_be_bytes();
    [APPLICATION_DATA, 3, 3, hi, lo]
}

/// The sending half: plaintext in, records out. Its buffer is allocated on first use.
pub struct Outbound {
    key: RecordKey,
    buf: Vec<u8>,
}

impl Outbound {
    /// Where the next socket read should land: the payload slots of up to four records.
    pub fn slots(&mut self) -> [IoSliceMut<'_>; SLOTS] {
        self.allocate();
        let mut slots = self.buf.chunks_exact_mut(SLOT_LEN);
        std::array::from_fn(|_| {
            let slot = slots.next().expect("SLOTS slots");
            IoSliceMut::new(&mut slot[HEADER_LEN..HEADER_LEN + MAX_PLAINTEXT])
        })
    }

    /// The record buffer exists only once something is sent (an idle lane holds none).
    fn allocate(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; SLOTS * SLOT_LEN];
        }
    }

    /// Seals the `n` bytes a read put into [`Self::slots`]; returns the records, contiguous.
    pub fn seal_read(&mut self, n: usize) -> Result<&[u8], SealedError> {
        debug_assert!(n <= SEAL_CAPACITY);
        let mut end = 0;
        for (slot, start) in (0..n).step_by(MAX_PLAINTEXT).enumerate() {
            end = self.seal_at(slot * SLOT_LEN, (n - start).min(MAX_PLAINTEXT), APPLICATION_DATA)?;
        }
        Ok(&self.buf[..end])
    }

    /// Seals up to [`SEAL_CAPACITY`] bytes of `data` (copied into the slots); returns the
    /// records and how many bytes of `data` they carry.
    pub fn seal_copy(&mut self, data: &[u8]) -> Result<(&[u8], usize), SealedError> {
        let n = data.len().min(SEAL_CAPACITY);
        let mut slots = self.slots();
        for (slot, chunk) in slots.iter_mut().zip(data[..n].chunks(MAX_PLAINTEXT)) {
            slot[..chunk.len()].copy_from_slice(chunk);
        }
        Ok((self.seal_read(n)?, n))
    }

    /// The close_notify alert: no more data in this direction.
    pub fn close_notify(&mut self) -> Result<&[u8], SealedError> {
        self.allocate();
        self.buf[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&[1, CLOSE_NOTIFY]);
        let end = self.seal_at(0, 2, ALERT)?;
        Ok(&self.buf[..end])
    }

    /// Seals the `len` bytes at `at + HEADER_LEN` as one record of `content_type`; returns
    /// where the record ends.
    fn seal_at(&mut self, at: usize, len: usize, content_type: u8) -> Result<usize, SealedError> {
        let inner_end = at + HEADER_LEN + len + 1;
        let header = record_header(len + 1 + TAG_LEN);
        self.buf[at..at + HEADER_LEN].copy_from_slice(&header);
        self.buf[inner_end - 1] = content_type;
        let nonce = self.key.next_nonce()?;
        let tag = self
            .key
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.buf[at + HEADER_LEN..inner_end])
            .map_err(|_| SealedError::BadRecord)?;
        self.buf[inner_end..inner_end + TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(inner_end + TAG_LEN)
    }
}

/// The receiving half: bytes from the lane in, plaintext out, opened in place.
pub struct Inbound {
    key: RecordKey,
    buf: Vec<u8>,
    /// Ciphertext not yet opened.
    unopened: Range<usize>,
    /// Opened application data not yet handed on, in order.
    plaintext: Vec<Range<usize>>,
    closed: bool,
}

impl Inbound {
    /// Where the next socket read should land. Only called once all plaintext is handed on.
    pub fn space(&mut self) -> &mut [u8] {
        debug_assert!(self.plaintext.is_empty());
        if self.buf.is_empty() {
            self.buf = vec![0; INBOUND_LEN];
        }
        if self.unopened.is_empty() {
            self.unopened = 0..0;
        } else if INBOUND_LEN - self.unopened.end < HEADER_LEN + MAX_CIPHERTEXT {
            // Room for less than a whole record: move the partial one to the front.
            self.buf.copy_within(self.unopened.clone(), 0);
            self.unopened = 0..self.unopened.len();
        }
        &mut self.buf[self.unopened.end..]
    }

    /// Takes in `n` bytes read into [`Self::space`] and opens every complete record up to a
    /// close_notify (what follows it belongs to the lane's next connection).
    pub fn filled(&mut self, n: usize) -> Result<(), SealedError> {
        self.unopened.end += n;
        while !self.closed && self.unopened.len() >= HEADER_LEN {
            let at = self.unopened.start;
            let header: [u8; HEADER_LEN] = self.buf[at..at + HEADER_LEN].try_into().expect("header length");
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            if header[..3] != [APPLICATION_DATA, 3, 3] || !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len) {
                return Err(SealedError::BadHeader);
            }
            if self.unopened.len() < HEADER_LEN + len {
                break;
            }
            self.unopened.start += HEADER_LEN + len;
            let nonce = self.key.next_nonce()?;
            let body = at + HEADER_LEN..at + HEADER_LEN + len;
            let inner = self
                .key
                .key
                .open_in_place(nonce, Aad::from(header), &mut self.buf[body.clone()])
                .map_err(|_| SealedError::BadRecord)?;
            // The inner plaintext is content, its type, then zero padding (RFC 8446 §5.4).
            let type_at = inner.iter().rposition(|&b| b != 0).ok_or(SealedError::BadRecord)?;
            let content_type = inner[type_at];
            self.take_record(content_type, body.start..body.start + type_at)?;
        }
        Ok(())
    }

    fn take_record(&mut self, content_type: u8, content: Range<usize>) -> Result<(), SealedError> {
        match content_type {
            APPLICATION_DATA if content.is_empty() => {}
            APPLICATION_DATA => self.plaintext.push(content),
            ALERT => match &self.buf[content] {
                [_, CLOSE_NOTIFY] => self.closed = true,
                [_, description] => return Err(SealedError::Alert(*description)),
                _ => return Err(SealedError::BadRecord),
            },
            HANDSHAKE => {
                // Session tickets the server sent after its handshake: a lane never resumes.
                let mut messages = &self.buf[content];
                while let [kind, l0, l1, l2, rest @ ..] = messages {
                    let len = u32::from_be_bytes([0, *l0, *l1, *l2]) as usize;
                    if *kind != NEW_SESSION_TICKET || rest.len() < len {
                        return Err(SealedError::Handshake(*kind));
                    }
                    messages = &rest[len..];
                }
                if !messages.is_empty() {
                    return Err(SealedError::BadRecord);
                }
            }
            _ => return Err(SealedError::BadRecord),
        }
        Ok(())
    }

    /// Opened application data waiting to be handed on.
    pub fn plaintext(&self) -> Vec<IoSlice<'_>> {
        self.plaintext
            .iter()
            .map(|r| IoSlice::new(&self.buf[r.clone()]))
            .collect()
    }

    pub fn has_plaintext(&self) -> bool {
        !self.plaintext.is_empty()
    }

    /// Marks `n` bytes of [`Self::plaintext`] as handed on.
    pub fn consume(&mut self, mut n: usize) {
        let mut done = 0;
        for range in &mut self.plaintext {
            let step = n.min(range.len());
            range.start += step;
            n -= step;
            if range.start < range.end {
                break;
            }
            done += 1;
        }
        self.plaintext.drain(..done);
    }

    /// Takes in all of `wire` and returns the plaintext it carries (for tests).
    #[cfg(test)]
    pub(crate) fn open_all(&mut self, mut wire: &[u8]) -> Result<Vec<u8>, SealedError> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let space = self.space();
            let n = space.len().min(wire.len());
            space[..n].copy_from_slice(&wire[..n]);
            self.filled(n)?;
            wire = &wire[n..];
            let mut taken = 0;
            for plaintext in self.plaintext() {
                out.extend_from_slice(&plaintext);
                taken += plaintext.len();
            }
            self.consume(taken);
        }
        Ok(out)
    }

    /// The peer sent close_notify and everything before it was handed on.
    pub fn is_finished(&self) -> bool {
        self.closed && self.plaintext.is_empty()
    }

    /// What a lane's end of file means: the end, after close_notify; else truncation.
    fn at_eof(&self) -> io::Result<()> {
        if self.closed {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "lane closed without close_notify",
            ))
        }
    }
}

/// Both halves of a record layer, from a finished handshake's secrets.
pub fn record_layer(secrets: ExtractedSecrets) -> Result<(Outbound, Inbound), SealedError> {
    let outbound = Outbound {
        key: RecordKey::new(secrets.tx)?,
        buf: Vec::new(),
    };
    let inbound = Inbound {
        key: RecordKey::new(secrets.rx)?,
        buf: Vec::new(),
        unopened: 0..0,
        plaintext: Vec::new(),
        closed: false,
    };
    Ok((outbound, inbound))
}

/// A TLS lane after its handshake: the TCP socket and this module's record layer.
pub struct SealedLane {
    pub(super) tcp: TcpStream,
    pub(super) outbound: Outbound,
    pub(super) inbound: Inbound,
}

impl SealedLane {
    pub fn new(tcp: TcpStream, secrets: ExtractedSecrets) -> Result<Self, SealedError> {
        let (outbound, inbound) = record_layer(secrets)?;
        Ok(Self { tcp, outbound, inbound })
    }

    /// The socket and both halves of the record layer, for a UDP flow's lane.
    pub fn into_parts(self) -> (TcpStream, Outbound, Inbound) {
        (self.tcp, self.outbound, self.inbound)
    }

    /// The socket, to check an idle lane for liveness.
    pub fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    /// Once a relay ended with close_notify both ways: ready for the lane's next connection,
    /// holding no buffer while idle. Records of that connection that already arrived are
    /// opened now.
    pub fn rearm(&mut self) -> Result<(), SealedError> {
        debug_assert!(self.inbound.is_finished());
        self.outbound.buf = Vec::new();
        let inbound = &mut self.inbound;
        inbound.closed = false;
        if inbound.unopened.is_empty() {
            inbound.buf = Vec::new();
            inbound.unopened = 0..0;
        }
        inbound.filled(0)
    }

    /// Seals and writes `data` (a stream header and the first bytes), outside the relay.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let (records, n) = self.outbound.seal_copy(data)?;
            self.tcp.write_all(records).await?;
            data = &data[n..];
        }
        Ok(())
    }
}

/// Reads plaintext (a copy; the relays hand plaintext on without one). For the stream header
/// an agent reads before it relays; what it leaves stays queued for the relay.
impl AsyncRead for SealedLane {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(first) = this.inbound.plaintext().first() {
                let n = first.len().min(buf.remaining());
                buf.put_slice(&first[..n]);
                this.inbound.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.inbound.is_finished() {
                return Poll::Ready(Ok(()));
            }
            let mut space = ReadBuf::new(this.inbound.space());
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut space))?;
            let n = space.filled().len();
            if n == 0 {
                return Poll::Ready(this.inbound.at_eof());
            }
            this.inbound.filled(n)?;
        }
    }
}

/// Relays between a TCP connection and a sealed lane: what a read from the socket puts in the
/// record slots is sealed in place, and records from the lane are opened in place and
/// written to the socket from where they lie. End of file becomes close_notify and back.
/// Returns the lane, ready for another connection, when both directions ended that way.
pub async fn relay_sealed(plain: TcpStream, lane: SealedLane) -> io::Result<(Transferred, Option<SealedLane>)> {
    let SealedLane {
        tcp,
        mut outbound,
        mut inbound,
    } = lane;
    let (plain_read, mut plain_write) = plain.into_split();
    let (lane_read, mut lane_write) = tcp.into_split();
    let up = async {
        let mut total = 0u64;
        loop {
            // The slots hold SEAL_CAPACITY bytes in all.
            let read = || plain_read.try_read_vectored(&mut outbound.slots());
            let n = match read_ready(plain_read.as_ref(), SEAL_CAPACITY, read).await? {
                0 => break,
                n => n,
            };
            total += n as u64;
            lane_write.write_all(outbound.seal_read(n)?).await?;
        }
        lane_write.write_all(outbound.close_notify()?).await?;
        Ok::<_, io::Error>(total)
    };
    let down = async {
        let mut total = 0u64;
        loop {
            while inbound.has_plaintext() {
                let n = plain_write.write_vectored(&inbound.plaintext()).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                inbound.consume(n);
                total += n as u64;
            }
            if inbound.is_finished() {
                break;
            }
            read_records(&lane_read, &mut inbound).await?;
        }
        plain_write.shutdown().await?;
        Ok::<_, io::Error>(total)
    };
    let (a_to_b, b_to_a) = tokio::try_join!(up, down)?;
    let lane = reassemble(lane_read, lane_write, outbound, inbound);
    Ok((Transferred { a_to_b, b_to_a }, lane))
}

/// Relays between a multiplexed stream (a `reach` visitor's) and a sealed lane; the
/// stream's chunks are copied into records, which the TCP relay avoids. Returns the lane as
/// [`relay_sealed`] does.
pub async fn relay_sealed_stream(stream: MuxStream, lane: SealedLane) -> io::Result<(Transferred, Option<SealedLane>)> {
    let SealedLane {
        tcp,
        mut outbound,
        mut inbound,
    } = lane;
    let (mut mux_read, mut mux_write) = stream.into_split();
    let (lane_read, mut lane_write) = tcp.into_split();
    let up = async {
        let mut total = 0u64;
        while let Some(chunk) = mux_read.chunk().await? {
            total += chunk.len() as u64;
            let mut data = &chunk[..];
            while !data.is_empty() {
                let (records, n) = outbound.seal_copy(data)?;
                lane_write.write_all(records).await?;
                data = &data[n..];
            }
        }
        lane_write.write_all(outbound.close_notify()?).await?;
        Ok::<_, io::Error>(total)
    };
    let down = async {
        let mut total = 0u64;
        loop {
            if inbound.has_plaintext() {
                let mut chunk = BytesMut::new();
                for slice in inbound.plaintext() {
                    chunk.extend_from_slice(&slice);
                }
                inbound.consume(chunk.len());
                total += chunk.len() as u64;
                mux_write.send(chunk.freeze()).await?;
            }
            if inbound.is_finished() {
                break;
            }
            read_records(&lane_read, &mut inbound).await?;
        }
        mux_write.finish()?;
        Ok::<_, io::Error>(total)
    };
    let (a_to_b, b_to_a) = tokio::try_join!(up, down)?;
    let lane = reassemble(lane_read, lane_write, outbound, inbound);
    Ok((Transferred { a_to_b, b_to_a }, lane))
}

/// The lane after a relay whose directions both ended with close_notify, rearmed.
fn reassemble(
    read: OwnedReadHalf,
    write: tokio::net::tcp::OwnedWriteHalf,
    outbound: Outbound,
    inbound: Inbound,
) -> Option<SealedLane> {
    let tcp = read.reunite(write).ok()?;
    let mut lane = SealedLane { tcp, outbound, inbound };
    lane.rearm().ok()?;
    Some(lane)
}

/// One read from the lane into the record layer (which opens what is complete).
async fn read_records(lane: &OwnedReadHalf, inbound: &mut Inbound) -> io::Result<()> {
    let room = inbound.space().len();
    match read_ready(lane.as_ref(), room, || lane.try_read(inbound.space())).await? {
        0 => inbound.at_eof(),
        n => Ok(inbound.filled(n)?),
    }
}

#[cfg(test)]
#[path = "sealed_tests.rs"]
mod tests;
