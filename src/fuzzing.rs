//! Fuzz targets: every parser of network input in `sniff/` and `wire/`, and of what a PAC
//! script or a user hands the forward proxy (`pac_result`), each fed arbitrary
//! bytes and checked for the properties its callers rely on (no panic, lengths within the
//! input, what is written reads back). Driven by cargo-fuzz (`fuzz/`) for long runs and by
//! `tests/fuzz_pass.rs` for a short pass in every test run.

use bytes::{Bytes, BytesMut};

use crate::sniff::{self, proxy, Parsed, MAX_SNIFF};
use crate::wire::{self, datagram, AgentMsg, HeaderRead, HubMsg, StreamHeader};

/// A fuzz target: takes any bytes, panics on a broken property.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and the short pass know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("sniff", sniff_classify),
    ("client_hello", client_hello),
    ("request_head", request_head),
    ("proxy_header", proxy_header),
    ("stream_header", stream_header),
    ("control_frame", control_frame),
    ("udp_datagram", udp_datagram),
    ("pac_result", pac_result),
    ("http_framing", http_framing),
];

/// The main port's and the public ports' classifiers, on every prefix a reader could see.
pub fn sniff_classify(data: &[u8]) {
    let _ = sniff::classify(data);
    let detected = sniff::detect(data);
    if data.len() >= 3 && data.len() < MAX_SNIFF {
        let tls = data[0] == 0x16 && data[1] == 3 && data[2] <= 4;
        assert_eq!(
            detected == Some(sniff::Detected::Tls),
            tls,
            "TLS is told by its record header"
        );
    }
}

pub fn client_hello(data: &[u8]) {
    if let Parsed::Complete(hello) = sniff::tls::parse_client_hello(data, MAX_SNIFF) {
        if let Some(sni) = hello.sni {
            assert!(sni.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
        }
        assert!(hello.alpn.iter().all(|p| !p.is_empty() && p.len() < 256));
    }
}

pub fn request_head(data: &[u8]) {
    let _ = sniff::http::parse_head(data);
    if sniff::http::starts_like_http(data) == Some(true) {
        // Once decided, more bytes do not undecide it.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\r\n\r\n");
        assert_ne!(sniff::http::starts_like_http(&longer), None);
    }
}

pub fn proxy_header(data: &[u8]) {
    if let proxy::ProxyStart::Header(header) = proxy::parse(data) {
        assert!(header.len <= data.len(), "a header is within what was read");
        for version in [proxy::ProxyVersion::V1, proxy::ProxyVersion::V2] {
            let written = proxy::encode(version, header.addresses);
            let proxy::ProxyStart::Header(read) = proxy::parse(&written) else {
                panic!("a written header does not read back")
            };
            assert_eq!(read.len, written.len());
        }
    }
}

pub fn stream_header(data: &[u8]) {
    match StreamHeader::decode(data) {
        Ok(HeaderRead::Complete(header, len)) => {
            assert!(len <= data.len());
            let again = header.encode();
            assert_eq!(
                StreamHeader::decode(&again).ok(),
                Some(HeaderRead::Complete(header, again.len()))
            );
        }
        Ok(HeaderRead::Need(more)) => assert!(more >= 1),
        Err(_) => {}
    }
}

pub fn control_frame(data: &[u8]) {
    if data.len() >= 4 {
        let _ = wire::frame_len(data[..4].try_into().expect("4 bytes"));
    }
    let _ = wire::decode_body::<AgentMsg>(data);
    let _ = wire::decode_body::<HubMsg>(data);
}

pub fn udp_datagram(data: &[u8]) {
    let _ = datagram::decode_datagram(Bytes::copy_from_slice(data));
    let mut frames = BytesMut::from(data);
    while let Ok(Some(_)) = datagram::take_frame(&mut frames) {}
}

/// A PAC result string, a `--proxy` URL and a request's authority: parsed routes print back
/// to the same routes.
pub fn pac_result(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(routes) = crate::pac::result::parse(text) {
        assert!(!routes.is_empty(), "an empty result means DIRECT");
        let printed: Vec<String> = routes.iter().map(ToString::to_string).collect();
        assert_eq!(crate::pac::result::parse(&printed.join("; ")).ok(), Some(routes));
    }
    let _ = text.parse::<crate::proxy::upstream::ProxyUrl>();
    let (host, _) = crate::proxy::route::split_authority(text);
    assert!(host.len() <= text.len());
    let _ = crate::proxy::route::pac_url(true, text, text);
    let _ = crate::proxy::route::pac_url(false, text, text);
}

/// A share's HTTP/1.1 framing (`hub/http_framing.rs`): a head is found at the same place
/// however its bytes arrive, heads parse without panicking, and a body ends at the same
/// place whether its bytes come at once or in two pieces.
pub fn http_framing(data: &[u8]) {
    use crate::hub::http_framing::{self as framing, BodyFramer, BodyKind, HeadScan};
    if let Ok(Some(len)) = HeadScan::default().find(data) {
        let mut scan = HeadScan::default();
        let found = (1..=data.len())
            .step_by(5)
            .chain([data.len()])
            .find_map(|end| scan.find(&data[..end]).ok().flatten());
        assert_eq!(found, Some(len), "found at the same place in pieces");
        let _ = framing::parse_request(&data[..len]);
        let _ = framing::parse_response(&data[..len], false);
    }
    for kind in [BodyKind::Chunked, BodyKind::Length(data.len() as u64 / 2)] {
        let whole = BodyFramer::new(kind).advance(data);
        let mut framer = BodyFramer::new(kind);
        let (first, second) = data.split_at(data.len() / 3);
        let pieces = framer.advance(first).and_then(|a| match a.done {
            true => Ok(a),
            false => framer.advance(second).map(|b| framing::Advance {
                used: a.used + b.used,
                done: b.done,
            }),
        });
        match (whole, pieces) {
            (Ok(whole), Ok(pieces)) => {
                assert!(whole.used <= data.len());
                assert_eq!(whole, pieces, "the same end in pieces");
            }
            (Err(_), Err(_)) => {}
            (whole, pieces) => panic!("at once {whole:?}, in pieces {pieces:?}"),
        }
    }
}
