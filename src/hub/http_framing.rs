//! Where HTTP/1.1 messages begin and end in a byte stream, without I/O: the boundaries a share
//! needs to check each request of a kept-alive connection while the bytes themselves pass
//! through untouched.
//!
//! Requests are the access-control boundary of a share: the hub admits what it parsed here and
//! the origin acts on what it parses from the same bytes. A request whose framing two
//! compliant parsers could read differently would let a refused request ride inside an
//! admitted one (request smuggling). So request heads are read strictly (RFC 9112): CRLF
//! line ends only, one well-formed `Content-Length` or exactly `Transfer-Encoding: chunked`,
//! never both, and no header names that some servers fold into those two. Anything else is
//! refused and the connection closed. Responses come from the tunnel's own origin and are
//! read as leniently as RFC 9112 section 6.3 allows.

use thiserror::Error;

/// The most a message head may take: the forward proxy's bound.
pub(crate) use crate::proxy::MAX_HEAD;
/// The most headers a message may have.
const MAX_HEADERS: usize = 100;
/// The most a chunk's size line (with extensions) may take.
const MAX_CHUNK_LINE: usize = 4096;
/// The most the trailer section of a chunked body may take.
const MAX_TRAILERS: usize = 16 << 10;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("the message head is longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed message head: {0}")]
    Head(&'static str),
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// What the hub needs to know of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub body: BodyKind,
    /// It asks to switch protocols (`Connection: upgrade` with `Upgrade`).
    pub upgrade: bool,
    /// The connection ends after this exchange (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`).
    pub close: bool,
}

impl RequestHead {
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// What the hub needs to know of a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub body: BodyKind,
}

impl ResponseHead {
    /// A 1xx other than 101: the final response to the same request follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Finds the end of a message head as bytes arrive, scanning each byte once.
#[derive(Debug, Default)]
pub struct HeadScan {
    scanned: usize,
}

impl HeadScan {
    /// The head's length (through its empty line) once `buf` holds all of it. `buf` must
    /// only grow between calls; start a new scan for the next message.
    pub fn find(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        // An empty line is an LF followed by LF or CRLF; resume just before the last LF seen.
        let from = self.scanned.saturating_sub(2);
        for (at, _) in buf[from..].iter().enumerate().filter(|(_, &b)| b == b'\n') {
            let at = from + at;
            match &buf[at + 1..] {
                [b'\n', ..] => return Ok(Some(at + 2)),
                [b'\r', b'\n', ..] => return Ok(Some(at + 3)),
                _ => {}
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(FrameError::HeadTooLarge);
        }
        self.scanned = buf.len();
        Ok(None)
    }
}

/// Reads a request head of exactly `head.len()` bytes (as [`HeadScan`] found it).
pub fn parse_request(head: &[u8]) -> Result<RequestHead, FrameError> {
    if head.len() > MAX_HEAD {
        return Err(FrameError::HeadTooLarge);
    }
    // Every line ends in CRLF: a parser that splits lines on a bare LF, and one that does
    // not, would see different headers.
    for (at, &b) in head.iter().enumerate() {
        let bare_lf = b == b'\n' && (at == 0 || head[at - 1] != b'\r');
        let bare_cr = b == b'\r' && head.get(at + 1) != Some(&b'\n');
        if bare_lf || bare_cr {
            return Err(FrameError::Head("a line does not end in CRLF"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Err(FrameError::Head("not one request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(FrameError::Head("too many headers")),
        Err(_) => return Err(FrameError::Head("not an HTTP/1.x request")),
    }
    let method = request.method.unwrap_or_default().to_owned();
    let http10 = request.version == Some(0);
    let fields = Fields::read(request.headers, true)?;
    let body = match (fields.transfer_encoding, fields.content_length) {
        (Some(_), Some(_)) => return Err(FrameError::Head("both Content-Length and Transfer-Encoding")),
        (Some(_), None) if http10 => return Err(FrameError::Head("Transfer-Encoding in an HTTP/1.0 request")),
        (Some(Coding::Chunked), None) => BodyKind::Chunked,
        (Some(Coding::Other), None) => return Err(FrameError::Head("a Transfer-Encoding other than chunked")),
        (None, Some(0)) | (None, None) => BodyKind::Empty,
        (None, Some(length)) => BodyKind::Length(length),
    };
    let close = fields.connection_close || (http10 && !fields.connection_keep_alive);
    Ok(RequestHead {
        method,
        body,
        upgrade: fields.connection_upgrade && fields.upgrade,
        close,
    })
}

/// Reads a response head of exactly `head.len()` bytes, to a request with method `HEAD` if
/// `to_head`.
pub fn parse_response(head: &[u8], to_head: bool) -> Result<ResponseHead, FrameError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Err(FrameError::Head("not one response head")),
        Err(_) => return Err(FrameError::Head("not an HTTP/1.x response")),
    }
    let status = response.code.unwrap_or_default();
    let fields = Fields::read(response.headers, false)?;
    let body = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::Empty
    } else {
        match (fields.transfer_encoding, fields.content_length) {
            (Some(Coding::Chunked), _) => BodyKind::Chunked,
            (Some(Coding::Other), _) => BodyKind::UntilClose,
            (None, Some(0)) => BodyKind::Empty,
            (None, Some(length)) => BodyKind::Length(length),
            (None, None) => BodyKind::UntilClose,
        }
    };
    Ok(ResponseHead { status, body })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Chunked,
    Other,
}

/// The header fields that decide framing and the connection's fate.
#[derive(Debug, Default)]
struct Fields {
    content_length: Option<u64>,
    transfer_encoding: Option<Coding>,
    connection_close: bool,
    connection_keep_alive: bool,
    connection_upgrade: bool,
    upgrade: bool,
}

impl Fields {
    fn read(headers: &[httparse::Header<'_>], strict: bool) -> Result<Self, FrameError> {
        let mut fields = Fields::default();
        let mut codings = 0;
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let length = parse_length(header.value).ok_or(FrameError::Head("a bad Content-Length"))?;
                if fields.content_length.is_some_and(|seen| seen != length) {
                    return Err(FrameError::Head("differing Content-Length values"));
                }
                fields.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                codings += 1;
                let value =
                    std::str::from_utf8(header.value).map_err(|_| FrameError::Head("a bad Transfer-Encoding"))?;
                let last = value.rsplit(',').next().unwrap_or_default().trim();
                let only_chunked = value.trim().eq_ignore_ascii_case("chunked");
                // A request's one coding must be chunked and nothing else; a response's
                // body is chunked when its last coding is.
                let chunked = if strict {
                    only_chunked && codings == 1
                } else {
                    last.eq_ignore_ascii_case("chunked")
                };
                fields.transfer_encoding = Some(if chunked { Coding::Chunked } else { Coding::Other });
            } else if name.eq_ignore_ascii_case("connection") {
                for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    fields.connection_close |= token.eq_ignore_ascii_case(b"close");
                    fields.connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    fields.connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                fields.upgrade = true;
            } else if strict && is_framing_lookalike(name) {
                // Some servers (CGI gateways among them) read `_` as `-`.
                return Err(FrameError::Head(
                    "a header name that imitates Content-Length or Transfer-Encoding",
                ));
            }
        }
        Ok(fields)
    }
}

fn is_framing_lookalike(name: &str) -> bool {
    let folded = name.replace('_', "-");
    folded.eq_ignore_ascii_case("content-length") || folded.eq_ignore_ascii_case("transfer-encoding")
}

/// A `Content-Length` value: digits only (at most 19, so it fits), surrounding spaces aside.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// How much of some input belongs to the body being framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// Bytes of the input that are body (framing included), from its start.
    pub used: usize,
    /// The body ended with them; what follows is the next message.
    pub done: bool,
}

/// Follows one message body through the bytes that carry it.
#[derive(Debug)]
pub struct BodyFramer {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Length(u64),
    UntilClose,
    /// Reading a chunk's size: its hex digits so far.
    Size {
        digits: u8,
        size: u64,
        line: usize,
    },
    /// Spaces or tabs after the size, before `;` or CR.
    SizeSpace {
        size: u64,
        line: usize,
    },
    Extension {
        size: u64,
        line: usize,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the empty line that ends the body).
    TrailerStart {
        total: usize,
    },
    TrailerLine {
        total: usize,
    },
    TrailerLf {
        total: usize,
    },
    EndLf,
}

impl BodyFramer {
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => State::Done,
            BodyKind::Length(length) => State::Length(length),
            BodyKind::Chunked => State::Size {
                digits: 0,
                size: 0,
                line: 0,
            },
            BodyKind::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Takes as much of `input` as belongs to the body.
    pub fn advance(&mut self, input: &[u8]) -> Result<Advance, FrameError> {
        let mut used = 0;
        while used < input.len() && self.state != State::Done {
            match self.state {
                State::Length(left) | State::Data(left) => {
                    let take = left.min((input.len() - used) as u64);
                    used += take as usize;
                    let left = left - take;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataCr,
                        _ => State::Data(left),
                    };
                }
                State::UntilClose => used = input.len(),
                _ => {
                    self.state = self.step(input[used])?;
                    used += 1;
                }
            }
        }
        Ok(Advance {
            used,
            done: self.state == State::Done,
        })
    }

    /// One byte of a chunked body's framing.
    fn step(&self, b: u8) -> Result<State, FrameError> {
        use FrameError::Chunked as Bad;
        let line_ok = |line: usize| {
            if line < MAX_CHUNK_LINE {
                Ok(line + 1)
            } else {
                Err(Bad("a chunk-size line is too long"))
            }
        };
        Ok(match self.state {
            State::Size { digits, size, line } => match (b as char).to_digit(16) {
                Some(digit) if digits < 16 => State::Size {
                    digits: digits + 1,
                    size: size << 4 | u64::from(digit),
                    line: line_ok(line)?,
                },
                Some(_) => return Err(Bad("a chunk size of more than 16 digits")),
                None if digits == 0 => return Err(Bad("a chunk size without digits")),
                None => after_size(size, line_ok(line)?, b)?,
            },
            State::SizeSpace { size, line } => after_size(size, line_ok(line)?, b)?,
            State::Extension { size, line } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(Bad("a chunk extension with a bare LF")),
                _ => State::Extension {
                    size,
                    line: line_ok(line)?,
                },
            },
            State::SizeLf { size: 0 } if b == b'\n' => State::TrailerStart { total: 0 },
            State::SizeLf { size } if b == b'\n' => State::Data(size),
            State::SizeLf { .. } => return Err(Bad("a chunk-size line without CRLF")),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                digits: 0,
                size: 0,
                line: 0,
            },
            State::DataCr | State::DataLf => return Err(Bad("chunk data not followed by CRLF")),
            State::TrailerStart { .. } if b == b'\r' => State::EndLf,
            State::EndLf if b == b'\n' => State::Done,
            State::EndLf => return Err(Bad("the last chunk not followed by CRLF")),
            State::TrailerStart { total } | State::TrailerLine { total } => {
                if total >= MAX_TRAILERS {
                    return Err(Bad("the trailers are too long"));
                }
                match b {
                    b'\r' => State::TrailerLf { total: total + 1 },
                    b'\n' => return Err(Bad("a trailer line with a bare LF")),
                    _ => State::TrailerLine { total: total + 1 },
                }
            }
            State::TrailerLf { total } if b == b'\n' => State::TrailerStart { total: total + 1 },
            State::TrailerLf { .. } => return Err(Bad("a trailer line without CRLF")),
            // `advance` moves through these itself and never hands them a byte.
            state @ (State::Done | State::Length(_) | State::Data(_) | State::UntilClose) => state,
        })
    }
}

/// A byte after a chunk's size (`line` bytes into its line): spaces or tabs, then `;` and
/// extensions, or the CR that ends the line.
fn after_size(size: u64, line: usize, b: u8) -> Result<State, FrameError> {
    Ok(match b {
        b' ' | b'\t' => State::SizeSpace { size, line },
        b';' => State::Extension { size, line },
        b'\r' => State::SizeLf { size },
        _ => return Err(FrameError::Chunked("a chunk size that is not hex")),
    })
}

#[cfg(test)]
#[path = "http_framing_tests.rs"]
mod tests;
