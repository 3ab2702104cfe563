//! TURN over DTLS (RFC 7350) through uturn with coturn's
//! `turnutils_uclient -S` over UDP.
//!
//! uclient picks, for each connection, one of two OpenSSL contexts at random:
//! DTLS 1.2 or DTLS 1.0. uturn refuses DTLS 1.0 (RFC 8996 deprecates it;
//! SECURITY.md rule 5: TLS 1.2 and later only) with a protocol_version
//! alert, on which uclient tries the connection again, picking anew: so
//! every client ends up on DTLS 1.2, and every message must come back. The
//! refusals show in `uturn_dtls_handshakes_total{outcome="failed"}`.

use super::*;

fn turnutils_uclient_over_dtls_through_uturn() {
    let t = "turnutils_uclient_over_dtls_through_uturn";
    let (Some(uclient), Some(peer_bin)) = (tool(t, "turnutils_uclient"), tool(t, "turnutils_peer"))
    else {
        return;
    };
    let Some(cert) = test_cert(t) else {
        return;
    };
    let server = uturn_for_interop_with_cert(
        &cert,
        &["--listen-dtls", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let dtls = stream_listener(&server, "dtls");
    let (_peer, peer_port) = start_turnutils_peer(&peer_bin);
    // -S without -t: DTLS over UDP. Send indications (-s), as over TLS.
    let cmd = uclient_cmd_over(
        &uclient,
        &["-S"],
        dtls,
        peer_port,
        3,
        100,
        true,
        STATIC_CREDS,
    );
    run_uclient_expect_all(cmd, 300, "uturn over DTLS");
    let ok = metric(&server, "uturn_dtls_handshakes_total{outcome=\"ok\"}").unwrap_or(0);
    assert!(ok >= 3, "{ok} DTLS handshakes for 3 clients");
    // uclient allocates twice per client (an RTP and an RTCP leg).
    let made = metric(
        &server,
        "uturn_allocations_created_total{transport=\"dtls\"}",
    );
    assert!(
        made >= Some(3),
        "{made:?} allocations over DTLS for 3 clients"
    );
}

on_both_backends!(turnutils_uclient_over_dtls_through_uturn);
