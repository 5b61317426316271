//! Tests of the lane record layer: in memory against itself, and over loopback against rustls.

use super::*;
use rustls::crypto::cipher::{AeadKey, Iv};

fn secrets(key_byte: u8) -> ConnectionTrafficSecrets {
    ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([key_byte; 32]),
        iv: Iv::new([key_byte ^ 0x5a; 12]),
    }
}

/// Two ends of one connection: what `a` seals, `b` opens, and back.
fn pair() -> ((Outbound, Inbound), (Outbound, Inbound)) {
    let a = ExtractedSecrets {
        tx: (0, secrets(1)),
        rx: (0, secrets(2)),
    };
    let b = ExtractedSecrets {
        tx: (0, secrets(2)),
        rx: (0, secrets(1)),
    };
    (record_layer(a).unwrap(), record_layer(b).unwrap())
}

/// Feeds `wire` to `inbound` in pieces of `piece` bytes, handing on plaintext as it opens.
fn feed(inbound: &mut Inbound, wire: &[u8], piece: usize) -> Result<Vec<u8>, SealedError> {
    let mut out = Vec::new();
    for chunk in wire.chunks(piece) {
        out.extend(inbound.open_all(chunk)?);
    }
    Ok(out)
}

#[test]
fn records_round_trip_whatever_the_read_sizes() {
    let ((mut seal, _), _) = pair();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut wire = Vec::new();
    // Writes of every size class: tiny, one record, several records, the 64 KiB maximum.
    for size in [1, 100, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 40_000, SEAL_CAPACITY] {
        let mut rest = &data[..size];
        while !rest.is_empty() {
            let (records, n) = seal.seal_copy(rest).unwrap();
            wire.extend_from_slice(records);
            rest = &rest[n..];
        }
    }
    wire.extend_from_slice(seal.close_notify().unwrap());
    let expected: Vec<u8> = [1, 100, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 40_000, SEAL_CAPACITY]
        .iter()
        .flat_map(|&size| data[..size].to_vec())
        .collect();
    for piece in [1, 7, 5000, wire.len()] {
        let (_, (_, mut open)) = pair();
        let got = feed(&mut open, &wire, piece).unwrap();
        assert_eq!(got, expected, "read in pieces of {piece}");
        assert!(open.is_finished(), "close_notify ends the direction");
    }
}

#[test]
fn altered_reordered_or_foreign_records_do_not_open() {
    let ((mut seal, _), _) = pair();
    let first = seal.seal_copy(b"first").unwrap().0.to_vec();
    let second = seal.seal_copy(b"second").unwrap().0.to_vec();

    let mut altered = first.clone();
    altered[HEADER_LEN + 2] ^= 1;
    let (_, (_, mut open)) = pair();
    assert_eq!(feed(&mut open, &altered, 64).unwrap_err(), SealedError::BadRecord);

    let (_, (_, mut open)) = pair();
    assert_eq!(
        feed(&mut open, &second, 64).unwrap_err(),
        SealedError::BadRecord,
        "out of order"
    );

    // Its own direction's records (a reflected record) do not open either.
    let ((_, mut own_inbound), _) = pair();
    assert_eq!(feed(&mut own_inbound, &first, 64).unwrap_err(), SealedError::BadRecord);
}

#[test]
fn garbage_headers_are_refused_and_records_after_close_wait_for_the_next_connection() {
    let (_, (_, mut open)) = pair();
    assert_eq!(
        feed(&mut open, &[22, 3, 1, 0, 40], 5).unwrap_err(),
        SealedError::BadHeader
    );
    let (_, (_, mut open)) = pair();
    let oversize = (MAX_CIPHERTEXT as u16 + 1).to_be_bytes();
    let header = [APPLICATION_DATA, 3, 3, oversize[0], oversize[1]];
    assert_eq!(feed(&mut open, &header, 5).unwrap_err(), SealedError::BadHeader);

    let ((mut seal, _), (_, mut open)) = pair();
    let mut wire = seal.seal_copy(b"one").unwrap().0.to_vec();
    wire.extend_from_slice(seal.close_notify().unwrap());
    wire.extend_from_slice(seal.seal_copy(b"next").unwrap().0);
    assert_eq!(feed(&mut open, &wire, 4096).unwrap(), b"one");
    assert!(open.is_finished(), "the first connection ends at close_notify");
    open.closed = false; // what SealedLane::rearm does
    open.filled(0).unwrap();
    assert_eq!(&*open.plaintext()[0], b"next");
}

/// Seals `content` as one record of `content_type` (what only a peer other than burrow sends).
fn seal_typed(seal: &mut Outbound, content: &[u8], content_type: u8) -> Vec<u8> {
    seal.allocate();
    seal.buf[HEADER_LEN..HEADER_LEN + content.len()].copy_from_slice(content);
    let end = seal.seal_at(0, content.len(), content_type).unwrap();
    seal.buf[..end].to_vec()
}

#[test]
fn session_tickets_are_skipped_and_key_updates_and_alerts_end_the_lane() {
    let ((mut seal, _), (_, mut open)) = pair();
    let mut wire = seal_typed(&mut seal, &[NEW_SESSION_TICKET, 0, 0, 3, 9, 9, 9], HANDSHAKE);
    wire.extend_from_slice(seal.seal_copy(b"data").unwrap().0);
    assert_eq!(feed(&mut open, &wire, 4096).unwrap(), b"data");

    let ((mut seal, _), (_, mut open)) = pair();
    let key_update = seal_typed(&mut seal, &[24, 0, 0, 1, 0], HANDSHAKE);
    assert_eq!(
        feed(&mut open, &key_update, 4096).unwrap_err(),
        SealedError::Handshake(24)
    );

    let ((mut seal, _), (_, mut open)) = pair();
    let alert = seal_typed(&mut seal, &[2, 40], ALERT);
    assert_eq!(feed(&mut open, &alert, 4096).unwrap_err(), SealedError::Alert(40));
}

#[test]
fn a_key_stops_at_its_record_limit() {
    let ((mut seal, _), _) = pair();
    seal.key.seq = seal.key.limit;
    assert_eq!(seal.seal_copy(b"x").unwrap_err(), SealedError::KeyExhausted);
}

/// The record layer against rustls itself: an agent-style client leaves rustls after its
/// first write, and relays a TCP connection to a server that stays on tokio-rustls. The
/// server's session tickets (sent after the handshake) are skipped, and close_notify works
/// both ways.
#[tokio::test]
async fn a_sealed_lane_speaks_tls_with_rustls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    crate::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    crate::tls::generate_certs(dir.path(), &["localhost".into()]).unwrap();
    let server_config = crate::tls::server_config(
        &dir.path().join(crate::tls::SERVER_CERT),
        &dir.path().join(crate::tls::SERVER_KEY),
    )
    .unwrap();
    let client_config = crate::tls::client_config(Some(&dir.path().join(crate::tls::CA_CERT)))
        .unwrap()
        .config;

    let to_server: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
    let to_client: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (expected_up, reply) = (to_server.clone(), to_client.clone());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server_config)
            .accept(tcp)
            .await
            .unwrap();
        let mut hello = [0u8; 5];
        tls.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        tls.write_all(&reply).await.unwrap();
        tls.shutdown().await.unwrap(); // close_notify, then FIN
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap(); // rustls wants close_notify before EOF
        assert_eq!(got, expected_up);
    });

    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"hello").await.unwrap();
    tls.flush().await.unwrap();
    let (tcp, conn) = tls.into_inner();
    let lane = SealedLane::new(tcp, conn.dangerous_extract_secrets().unwrap()).unwrap();

    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = TcpStream::connect(local.local_addr().unwrap()).await.unwrap();
    let (relay_side, _) = local.accept().await.unwrap();
    let relay = tokio::spawn(relay_sealed(relay_side, lane));
    let (mut app_read, mut app_write) = app.split();
    let send = async {
        app_write.write_all(&to_server).await.unwrap();
        app_write.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let (_, read) = tokio::join!(send, app_read.read_to_end(&mut got));
    read.unwrap();
    assert_eq!(
        got, to_client,
        "the server's bytes arrive after its tickets, then its close_notify"
    );
    server.await.unwrap();
    let (moved, lane) = relay.await.unwrap().unwrap();
    assert!(lane.is_some(), "both directions ended with close_notify");
    assert_eq!(
        moved,
        Transferred {
            a_to_b: to_server.len() as u64,
            b_to_a: to_client.len() as u64
        }
    );
}
