//! `stun_codec`: one datagram through the whole codec.
//!
//! * `Message::parse`; on success every accessor, both attribute views, and
//!   `Attribute::decode` of every attribute;
//! * each decoded attribute is written again with `MessageWriter::attr` and
//!   decodes to the same value (the writer accepts whatever the decoder
//!   accepted);
//! * the whole message re-encoded attribute by attribute equals the input
//!   except for padding bytes;
//! * `check_sha1`, `check_sha256`, `check_fingerprint` on the input, and on
//!   the input's attributes signed anew by the writer, where all three must
//!   say `Valid` (and `Invalid` under another key);
//! * ChannelData as a datagram: parse, write the header back, parse again.

use uturn::stun::attr::{self, Attribute};
use uturn::stun::channel::{self, ChannelData};
use uturn::stun::integrity::{check_fingerprint, check_sha1, check_sha256, Integrity};
use uturn::stun::message::{classify, message_type};
use uturn::stun::{DecodeError, Message, MessageWriter, HEADER_LEN};

/// The key the checks use: a 16-byte MD5-sized one, so that a fuzzer that
/// learns it from the seeds can also produce messages that verify.
pub const KEY: &[u8] = b"uturn-fuzz-key!!";
const OTHER_KEY: &[u8] = b"another-key.....";

/// Room for the largest message plus the integrity attributes added to it.
const BUF_LEN: usize = HEADER_LEN + 0xFFFF + 128;

pub fn run(data: &[u8]) {
    let _ = classify(data);
    channel_data(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert_eq!(msg.as_bytes(), data);
    // parse checked the top two bits, so the type round-trips through
    // method and class.
    assert_eq!(message_type(msg.method(), msg.class()), msg.message_type());
    views(&msg);
    let mut buf = vec![0u8; BUF_LEN];
    for raw in msg.raw_attributes() {
        typed_round_trip(&msg, raw, &mut buf);
    }
    raw_round_trip(&msg, &mut buf);
    for key in [KEY, OTHER_KEY] {
        let _ = check_sha1(&msg, key);
        let _ = check_sha256(&msg, key);
    }
    let _ = check_fingerprint(&msg);
    resign(&msg, &mut buf);
}

fn channel_data(data: &[u8]) {
    match ChannelData::parse(data) {
        Ok(cd) => {
            assert!((channel::CHANNEL_MIN..=channel::CHANNEL_MAX).contains(&cd.number));
            assert!(cd.payload.len() + channel::CHANNEL_HEADER_LEN <= data.len());
            let mut again = vec![0u8; channel::CHANNEL_HEADER_LEN + cd.payload.len()];
            let mut header = [0u8; 4];
            channel::write_header(&mut header, cd.number, cd.payload.len() as u16);
            again[..4].copy_from_slice(&header);
            again[4..].copy_from_slice(cd.payload);
            assert_eq!(ChannelData::parse(&again), Ok(cd));
            assert_eq!(again[..], data[..again.len()]);
        }
        Err(e) => assert!(matches!(
            e,
            DecodeError::Truncated | DecodeError::BadChannel
        )),
    }
}

/// The trusted view is the raw view with some attributes left out, in the
/// same order; every attribute lies inside the message.
fn views(msg: &Message<'_>) {
    let len = msg.as_bytes().len();
    let mut raw = msg.raw_attributes();
    let mut last_end = HEADER_LEN;
    for a in msg.raw_attributes() {
        assert_eq!(a.offset, last_end, "attributes are contiguous");
        last_end = a.offset + 4 + ((a.value.len() + 3) & !3);
        assert!(last_end <= len);
    }
    assert_eq!(last_end, len, "attributes fill the message");
    for t in msg.attributes() {
        assert!(raw.any(|r| r == t), "trusted attribute not in the raw view");
    }
    let _ = msg.transaction_id();
}

fn typed_round_trip(msg: &Message<'_>, raw: attr::RawAttr<'_>, buf: &mut [u8]) {
    let tid = msg.transaction_id();
    let decoded = match Attribute::decode(raw, tid) {
        Ok(a) => a,
        Err(e) => {
            assert_eq!(e, DecodeError::BadAttribute(raw.typ));
            return;
        }
    };
    assert_eq!(decoded.typ(), raw.typ);
    match decoded {
        Attribute::PasswordAlgorithms(v) => attr::password_algorithms(v).for_each(drop),
        Attribute::UnknownAttributes(v) => attr::unknown_attributes(v).for_each(drop),
        _ => {}
    }
    let mut w = MessageWriter::new(buf, msg.method(), msg.class(), tid).expect("buffer fits");
    w.attr(&decoded)
        .unwrap_or_else(|e| panic!("{decoded:?} decoded but does not encode: {e:?}"));
    let n = w.finish();
    let again = Message::parse(&buf[..n]).expect("the writer writes valid messages");
    let first = again.raw_attributes().next().expect("one attribute");
    let redecoded = Attribute::decode(first, again.transaction_id()).expect("decodes again");
    assert_eq!(redecoded, decoded);
}

/// Writing every raw attribute back gives the input, padding aside.
fn raw_round_trip(msg: &Message<'_>, buf: &mut [u8]) {
    let mut w = MessageWriter::new(buf, msg.method(), msg.class(), msg.transaction_id())
        .expect("buffer fits");
    for a in msg.raw_attributes() {
        w.raw(a.typ, a.value)
            .expect("an attribute that parsed fits");
    }
    let n = w.finish();
    let input = msg.as_bytes();
    assert_eq!(n, input.len());
    let mut expected = input.to_vec();
    for a in msg.raw_attributes() {
        let pad_start = a.offset + 4 + a.value.len();
        let pad_end = a.offset + 4 + ((a.value.len() + 3) & !3);
        expected[pad_start..pad_end].fill(0);
    }
    assert_eq!(buf[..n], expected[..]);
}

/// The input's attributes (integrity and FINGERPRINT left out), then
/// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT by the writer:
/// the checks must accept them.
fn resign(msg: &Message<'_>, buf: &mut [u8]) {
    let mut w = MessageWriter::new(buf, msg.method(), msg.class(), msg.transaction_id())
        .expect("buffer fits");
    for a in msg.raw_attributes() {
        if matches!(
            a.typ,
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
        ) {
            continue;
        }
        w.raw(a.typ, a.value)
            .expect("an attribute that parsed fits");
    }
    let signed = w.message_integrity(KEY).is_ok()
        && w.message_integrity_sha256(KEY).is_ok()
        && w.fingerprint().is_ok();
    if !signed {
        // Only when the message is too close to 64 KiB for 68 more bytes.
        assert!(msg.as_bytes().len() - HEADER_LEN + 68 > 0xFFFC);
        return;
    }
    let n = w.finish();
    let m = Message::parse(&buf[..n]).expect("the writer writes valid messages");
    assert_eq!(check_sha1(&m, KEY), Integrity::Valid);
    assert_eq!(check_sha256(&m, KEY), Integrity::Valid);
    assert_eq!(check_fingerprint(&m), Integrity::Valid);
    assert_eq!(check_sha1(&m, OTHER_KEY), Integrity::Invalid);
    assert_eq!(check_sha256(&m, OTHER_KEY), Integrity::Invalid);
}
