//! Tests of `Authenticator`: requests built with `MessageWriter`, signed the
//! way a client would, then authenticated.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use uturn_stun::{Class, Method};

const REALM: &str = "example.org";
const NOW: u64 = 1_700_000_000;
const NONCE_KEY: [u8; 32] = [0x5a; 32];
const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const SECRET_OLD: &[u8] = b"old-secret";
const SECRET_NEW: &[u8] = b"new-secret";

fn client() -> SocketAddr {
    "198.51.100.20:40000".parse().expect("address")
}

fn static_user(name: &str, password: &str, md5: bool, sha256: bool) -> StaticUser {
    let k = |alg| {
        derive_key(alg, name.as_bytes(), REALM.as_bytes(), password.as_bytes())
            .as_bytes()
            .to_vec()
    };
    StaticUser {
        name: name.to_owned(),
        key_md5: md5.then(|| k(PasswordAlgorithm::Md5).try_into().expect("16 bytes")),
        key_sha256: sha256.then(|| k(PasswordAlgorithm::Sha256).try_into().expect("32 bytes")),
    }
}

fn config(offer_sha256: bool) -> AuthConfig {
    AuthConfig {
        realm: REALM.to_owned(),
        users: vec![
            static_user("alice", "wonderland", true, true),
            static_user("md5only", "pw", true, false),
        ],
        rest_secrets: vec![SECRET_NEW.to_vec(), SECRET_OLD.to_vec()],
        offer_sha256,
        nonce_lifetime_secs: 600,
    }
}

fn auth(offer_sha256: bool) -> Authenticator {
    Authenticator::new(config(offer_sha256), NONCE_KEY)
}

/// A nonce `a` issues to `client` at `now`.
fn nonce_for(a: &Authenticator, client: SocketAddr, now: u64) -> Vec<u8> {
    let mut buf = [0u8; nonce::MAX_NONCE_LEN];
    let n = a.nonces.issue(client, Transport::Udp, now, &mut buf);
    buf[..n].to_vec()
}

/// How the test client identifies and signs itself.
#[derive(Clone)]
struct Req<'r> {
    username: Option<&'r [u8]>,
    userhash: Option<[u8; 32]>,
    realm: Option<&'r [u8]>,
    nonce: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHMS value to send.
    algorithms: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHM number to send.
    algorithm: Option<u16>,
    /// Extra attribute placed before the integrity attribute.
    before: Option<(u16, &'r [u8])>,
    /// Extra attribute placed after the integrity attribute.
    after: Option<(u16, &'r [u8])>,
    /// Key to sign with; None sends no integrity attribute.
    key: Option<Key>,
    sha256_mac: bool,
}

impl<'r> Req<'r> {
    fn new(a: &Authenticator, username: &'r [u8], key: Key) -> Self {
        Req {
            username: Some(username),
            userhash: None,
            realm: Some(REALM.as_bytes()),
            nonce: Some(nonce_for(a, client(), NOW)),
            algorithms: None,
            algorithm: None,
            before: Some((attr::LIFETIME, &[0, 0, 2, 88])),
            after: None,
            key: Some(key),
            sha256_mac: false,
        }
    }

    fn sha256(mut self) -> Self {
        self.algorithms = Some(PASSWORD_ALGORITHMS_VALUE.to_vec());
        self.algorithm = Some(attr::PASSWORD_ALGORITHM_SHA256);
        self.sha256_mac = true;
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Request, &TID)
            .expect("header fits");
        w.raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .expect("fits");
        if let Some(u) = self.username {
            w.raw(attr::USERNAME, u).expect("fits");
        }
        if let Some(h) = &self.userhash {
            w.raw(attr::USERHASH, h).expect("fits");
        }
        if let Some(r) = self.realm {
            w.raw(attr::REALM, r).expect("fits");
        }
        if let Some(n) = &self.nonce {
            w.raw(attr::NONCE, n).expect("fits");
        }
        if let Some(l) = &self.algorithms {
            w.raw(attr::PASSWORD_ALGORITHMS, l).expect("fits");
        }
        if let Some(a) = self.algorithm {
            let mut v = [0u8; 4];
            v[..2].copy_from_slice(&a.to_be_bytes());
            w.raw(attr::PASSWORD_ALGORITHM, &v).expect("fits");
        }
        if let Some((t, v)) = self.before {
            w.raw(t, v).expect("fits");
        }
        if let Some(k) = &self.key {
            if self.sha256_mac {
                w.message_integrity_sha256(k.as_bytes()).expect("fits");
            } else {
                w.message_integrity(k.as_bytes()).expect("fits");
            }
        }
        if let Some((t, v)) = self.after {
            w.raw(t, v).expect("fits");
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }
}

fn run(
    a: &Authenticator,
    bytes: &[u8],
    from: SocketAddr,
    now: u64,
    check_expiry: bool,
) -> Result<(Vec<u8>, Vec<u8>, Key, MacKind), AuthError> {
    let msg = Message::parse(bytes).expect("test request parses");
    a.authenticate(&msg, from, Transport::Udp, now, check_expiry)
        .map(|ok| (ok.username.to_vec(), ok.quota_id.to_vec(), ok.key, ok.mac))
}

fn key(alg: PasswordAlgorithm, user: &str, password: &[u8]) -> Key {
    derive_key(alg, user.as_bytes(), REALM.as_bytes(), password)
}

fn alice_md5() -> Key {
    key(PasswordAlgorithm::Md5, "alice", b"wonderland")
}

fn alice_sha256() -> Key {
    key(PasswordAlgorithm::Sha256, "alice", b"wonderland")
}

fn rest_key(alg: PasswordAlgorithm, secret: &[u8], username: &str) -> Key {
    let pw = key::rest_password(secret, username.as_bytes());
    key(alg, username, &pw)
}

#[test]
fn authenticator_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Authenticator>();
    check::<Arc<Authenticator>>();
}

#[test]
fn md5_static_user_happy_path() {
    let a = auth(false);
    let bytes = Req::new(&a, b"alice", alice_md5()).build();
    let (user, quota, k, mac) = run(&a, &bytes, client(), NOW, true).expect("authenticates");
    assert_eq!(user, b"alice");
    assert_eq!(quota, b"alice");
    assert_eq!(k, alice_md5());
    assert_eq!(mac, MacKind::Sha1);
}

#[test]
fn rfc5389_client_against_sha256_offering_server() {
    // The nonce advertises password algorithms, the client sends neither
    // attribute: MD5, as for any RFC 5389 client.
    let a = auth(true);
    let bytes = Req::new(&a, b"alice", alice_md5()).build();
    let (_, _, k, mac) = run(&a, &bytes, client(), NOW, true).expect("authenticates");
    assert_eq!(k, alice_md5());
    assert_eq!(mac, MacKind::Sha1);
}

#[test]
fn sha256_algorithm_with_sha256_mac() {
    let a = auth(true);
    let bytes = Req::new(&a, b"alice", alice_sha256()).sha256().build();
    let (user, _, k, mac) = run(&a, &bytes, client(), NOW, true).expect("authenticates");
    assert_eq!(user, b"alice");
    assert_eq!(k, alice_sha256());
    assert_eq!(k.as_bytes().len(), 32);
    assert_eq!(mac, MacKind::Sha256);
}

#[test]
fn sha256_algorithm_with_sha1_mac() {
    let a = auth(true);
    let mut r = Req::new(&a, b"alice", alice_sha256()).sha256();
    r.sha256_mac = false;
    let (_, _, k, mac) = run(&a, &r.build(), client(), NOW, true).expect("authenticates");
    assert_eq!(k, alice_sha256());
    assert_eq!(mac, MacKind::Sha1);
}

#[test]
fn md5_algorithm_chosen_explicitly() {
    let a = auth(true);
    let mut r = Req::new(&a, b"alice", alice_md5()).sha256();
    r.algorithm = Some(attr::PASSWORD_ALGORITHM_MD5);
    let (_, _, k, mac) = run(&a, &r.build(), client(), NOW, true).expect("authenticates");
    assert_eq!(k, alice_md5());
    assert_eq!(mac, MacKind::Sha256);
}

#[test]
fn static_user_without_needed_key() {
    let a = auth(true);
    let k = key(PasswordAlgorithm::Sha256, "md5only", b"pw");
    let bytes = Req::new(&a, b"md5only", k).sha256().build();
    assert!(matches!(
        run(&a, &bytes, client(), NOW, true),
        Err(AuthError::Unauthorized(_))
    ));
}

#[test]
fn userhash_identifies_static_user() {
    let a = auth(true);
    let mut r = Req::new(&a, b"", alice_sha256()).sha256();
    r.username = None;
    r.userhash = Some(userhash(b"alice", REALM.as_bytes()));
    let (user, quota, k, _) = run(&a, &r.build(), client(), NOW, true).expect("authenticates");
    assert_eq!(user, b"alice");
    assert_eq!(quota, b"alice");
    assert_eq!(k, alice_sha256());

    // A hash of an unknown name, or of the right name in another realm.
    for h in [
        userhash(b"mallory", REALM.as_bytes()),
        userhash(b"alice", b"other.realm"),
    ] {
        r.userhash = Some(h);
        assert_eq!(
            run(&a, &r.build(), client(), NOW, true),
            Err(AuthError::Unauthorized(AuthFailure::UnknownUser))
        );
    }
}

/// The security feature set a challenge's nonce carries (RFC 8489 §9.2).
fn challenge_features(a: &Authenticator) -> u32 {
    use base64::Engine as _;
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Error, &TID).unwrap();
    a.write_challenge(&mut w, client(), Transport::Udp, NOW)
        .unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    let nonce = msg.get(attr::NONCE).expect("a NONCE").value;
    let cookie = nonce.strip_prefix(nonce::NONCE_COOKIE.as_slice()).unwrap();
    let mut bits = [0u8; 3];
    base64::engine::general_purpose::STANDARD
        .decode_slice(&cookie[..4], &mut bits)
        .unwrap();
    u32::from_be_bytes([0, bits[0], bits[1], bits[2]])
}

#[test]
fn username_anonymity_is_advertised_only_with_static_users() {
    let both = nonce::FEATURE_PASSWORD_ALGORITHMS | nonce::FEATURE_USERNAME_ANONYMITY;
    assert_eq!(challenge_features(&auth(true)), both);
    assert_eq!(
        challenge_features(&auth(false)),
        nonce::FEATURE_USERNAME_ANONYMITY
    );
    // REST secrets only: a USERHASH could not be mapped back, so no bit 1.
    let mut rest_only = config(true);
    rest_only.users.clear();
    let a = Authenticator::new(rest_only, NONCE_KEY);
    assert_eq!(challenge_features(&a), nonce::FEATURE_PASSWORD_ALGORITHMS);
}

#[test]
fn userhash_of_wrong_length_is_bad_request() {
    let a = auth(true);
    let mut r = Req::new(&a, b"", alice_md5());
    r.username = None;
    r.before = Some((attr::USERHASH, &[1; 20]));
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
}

#[test]
fn rest_credentials_with_rotated_secrets() {
    let a = auth(true);
    let username = format!("{}:bob", NOW + 3600);
    for secret in [SECRET_OLD, SECRET_NEW] {
        for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            let k = rest_key(alg, secret, &username);
            let mut r = Req::new(&a, username.as_bytes(), k);
            if alg == PasswordAlgorithm::Sha256 {
                r = r.sha256();
            }
            let (user, quota, got, _) =
                run(&a, &r.build(), client(), NOW, true).expect("authenticates");
            assert_eq!(user, username.as_bytes());
            assert_eq!(quota, b"bob");
            assert_eq!(got, k);
        }
    }
    // A secret that is not configured.
    let k = rest_key(PasswordAlgorithm::Md5, b"retired", &username);
    let r = Req::new(&a, username.as_bytes(), k);
    assert_eq!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::Unauthorized(AuthFailure::BadIntegrity))
    );
}

#[test]
fn rest_credential_without_id_counts_against_itself() {
    let a = auth(false);
    let username = format!("{}", NOW + 60);
    let k = rest_key(PasswordAlgorithm::Md5, SECRET_NEW, &username);
    let r = Req::new(&a, username.as_bytes(), k);
    let (user, quota, _, _) = run(&a, &r.build(), client(), NOW, true).expect("authenticates");
    assert_eq!(user, username.as_bytes());
    assert_eq!(quota, username.as_bytes());
}

#[test]
fn expired_rest_credential_refused_only_when_checked() {
    let a = auth(false);
    let username = format!("{}:carol", NOW - 1);
    let k = rest_key(PasswordAlgorithm::Md5, SECRET_OLD, &username);
    let bytes = Req::new(&a, username.as_bytes(), k).build();
    assert_eq!(
        run(&a, &bytes, client(), NOW, true),
        Err(AuthError::Unauthorized(AuthFailure::ExpiredCredential))
    );
    let (_, quota, _, _) = run(&a, &bytes, client(), NOW, false).expect("refresh still works");
    assert_eq!(quota, b"carol");
    // Expiring exactly now is still valid.
    let username = format!("{}:carol", NOW);
    let k = rest_key(PasswordAlgorithm::Md5, SECRET_OLD, &username);
    let bytes = Req::new(&a, username.as_bytes(), k).build();
    assert!(run(&a, &bytes, client(), NOW, true).is_ok());
}

#[test]
fn rest_usernames_need_secrets_and_form() {
    let mut cfg = config(false);
    cfg.rest_secrets.clear();
    let a = Authenticator::new(cfg, NONCE_KEY);
    let username = format!("{}:bob", NOW + 3600);
    let k = rest_key(PasswordAlgorithm::Md5, SECRET_NEW, &username);
    let r = Req::new(&a, username.as_bytes(), k);
    assert_eq!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::Unauthorized(AuthFailure::UnknownUser))
    );

    let a = auth(false);
    for bad in [
        "bob",
        ":bob",
        "12a4:bob",
        "-5:bob",
        "+5",
        "99999999999999999999999:x",
        "",
    ] {
        let k = rest_key(PasswordAlgorithm::Md5, SECRET_NEW, bad);
        let r = Req::new(&a, bad.as_bytes(), k);
        assert_eq!(
            run(&a, &r.build(), client(), NOW, true),
            Err(AuthError::Unauthorized(AuthFailure::UnknownUser)),
            "{bad:?}"
        );
    }
}

#[test]
fn parse_rest_username_forms() {
    assert_eq!(parse_rest_username(b"123"), Some((123, &b""[..])));
    assert_eq!(parse_rest_username(b"123:"), Some((123, &b""[..])));
    assert_eq!(parse_rest_username(b"123:a:b"), Some((123, &b"a:b"[..])));
    assert_eq!(
        parse_rest_username(b"18446744073709551615"),
        Some((u64::MAX, &b""[..]))
    );
    assert_eq!(parse_rest_username(b"18446744073709551616"), None);
    assert_eq!(parse_rest_username(b""), None);
    assert_eq!(parse_rest_username(b":x"), None);
    assert_eq!(parse_rest_username(b"1 2"), None);
}

#[test]
fn wrong_password_is_unauthorized() {
    let a = auth(true);
    for (k, sha) in [
        (key(PasswordAlgorithm::Md5, "alice", b"guess"), false),
        (key(PasswordAlgorithm::Sha256, "alice", b"guess"), true),
    ] {
        let mut r = Req::new(&a, b"alice", k);
        if sha {
            r = r.sha256();
        }
        assert_eq!(
            run(&a, &r.build(), client(), NOW, true),
            Err(AuthError::Unauthorized(AuthFailure::BadIntegrity))
        );
    }
}

#[test]
fn unknown_user_is_unauthorized() {
    let a = auth(false);
    let r = Req::new(&a, b"mallory", alice_md5());
    assert_eq!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::Unauthorized(AuthFailure::UnknownUser))
    );
}

#[test]
fn nonce_from_another_client_is_stale() {
    let a = auth(false);
    let bytes = Req::new(&a, b"alice", alice_md5()).build();
    for other in [
        "198.51.100.21:40000",
        "198.51.100.20:40001",
        "[2001:db8::1]:40000",
    ] {
        let other: SocketAddr = other.parse().expect("address");
        assert_eq!(
            run(&a, &bytes, other, NOW, true),
            Err(AuthError::StaleNonce),
            "{other}"
        );
    }
}

#[test]
fn foreign_or_garbage_nonce_is_stale() {
    let a = auth(true);
    let mut r = Req::new(&a, b"alice", alice_md5());
    for n in [
        b"obMatJos2AAABnot-ours".to_vec(),
        b"x".to_vec(),
        nonce_for(&Authenticator::new(config(true), [9; 32]), client(), NOW),
    ] {
        r.nonce = Some(n);
        assert_eq!(
            run(&a, &r.build(), client(), NOW, true),
            Err(AuthError::StaleNonce)
        );
    }
}

#[test]
fn expired_nonce_is_stale_after_credentials_check() {
    let a = auth(true);
    let bytes = Req::new(&a, b"alice", alice_md5()).build();
    let later = NOW + 601;
    assert_eq!(
        run(&a, &bytes, client(), later, true),
        Err(AuthError::StaleNonce)
    );
    assert!(run(&a, &bytes, client(), NOW + 600, true).is_ok());
    // With wrong credentials the expired nonce is not what gets reported.
    let bytes = Req::new(&a, b"alice", key(PasswordAlgorithm::Md5, "alice", b"x")).build();
    assert_eq!(
        run(&a, &bytes, client(), later, true),
        Err(AuthError::Unauthorized(AuthFailure::BadIntegrity))
    );
    // An expired SHA-256 exchange still gets its bid-down checks.
    let bytes = Req::new(&a, b"alice", alice_sha256()).sha256().build();
    assert_eq!(
        run(&a, &bytes, client(), later, true),
        Err(AuthError::StaleNonce)
    );
}

#[test]
fn missing_attributes_are_bad_request() {
    let a = auth(false);
    let base = Req::new(&a, b"alice", alice_md5());

    let mut r = base.clone();
    r.realm = None;
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
    let mut r = base.clone();
    r.nonce = None;
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
    let mut r = base.clone();
    r.username = None;
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
}

#[test]
fn wrong_realm_is_unauthorized() {
    let a = auth(false);
    let mut r = Req::new(&a, b"alice", alice_md5());
    r.realm = Some(b"evil.example");
    assert_eq!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::Unauthorized(AuthFailure::WrongRealm))
    );
}

#[test]
fn no_integrity_is_challenge() {
    let a = auth(true);
    let mut r = Req::new(&a, b"alice", alice_md5());
    r.key = None;
    assert_eq!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::Challenge)
    );
    // Even with nothing else at all.
    let mut r = r.clone();
    r.username = None;
    r.realm = None;
    r.nonce = None;
    assert_eq!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::Challenge)
    );
}

#[test]
fn bid_down_is_bad_request() {
    let a = auth(true);
    let good = Req::new(&a, b"alice", alice_sha256()).sha256();

    // PASSWORD-ALGORITHMS altered: SHA-256 stripped, or the order changed.
    for list in [
        vec![0, 1, 0, 0],
        vec![0, 1, 0, 0, 0, 2, 0, 0],
        vec![0, 2, 0, 0],
    ] {
        let mut r = good.clone();
        r.algorithms = Some(list);
        assert!(matches!(
            run(&a, &r.build(), client(), NOW, true),
            Err(AuthError::BadRequest(_))
        ));
    }
    // PASSWORD-ALGORITHM not in the list.
    let mut r = good.clone();
    r.algorithm = Some(0x7777);
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
    // Only one of the two attributes.
    let mut r = good.clone();
    r.algorithms = None;
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
    let mut r = good.clone();
    r.algorithm = None;
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
}

#[test]
fn algorithm_attributes_without_advertising_nonce_are_refused() {
    // Server does not offer SHA-256: its nonces do not set the bit.
    let a = auth(false);
    let r = Req::new(&a, b"alice", alice_sha256()).sha256();
    assert!(matches!(
        run(&a, &r.build(), client(), NOW, true),
        Err(AuthError::BadRequest(_))
    ));
}

#[test]
fn tampering_after_integrity_is_ignored() {
    let a = auth(true);
    for sha in [false, true] {
        let mut r = Req::new(&a, b"alice", if sha { alice_sha256() } else { alice_md5() });
        if sha {
            r = r.sha256();
        }
        r.after = Some((attr::SOFTWARE, b"appended-by-attacker"));
        let mut bytes = r.build();
        // Flip a byte in the trailing attribute's value.
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(run(&a, &bytes, client(), NOW, true).is_ok(), "sha={sha}");
        // A USERNAME appended after the MAC does not replace the real one.
        r.after = Some((attr::USERNAME, b"mallory"));
        let (user, _, _, _) = run(&a, &r.build(), client(), NOW, true).expect("authenticates");
        assert_eq!(user, b"alice");
    }
}

#[test]
fn tampering_before_integrity_fails() {
    let a = auth(true);
    for sha in [false, true] {
        let mut r = Req::new(&a, b"alice", if sha { alice_sha256() } else { alice_md5() });
        if sha {
            r = r.sha256();
        }
        let bytes = r.build();
        assert!(run(&a, &bytes, client(), NOW, true).is_ok());
        // The LIFETIME value sits just before the integrity attribute.
        let mi_len = if sha { 4 + 32 } else { 4 + 20 };
        let mut t = bytes.clone();
        let i = t.len() - mi_len - 1;
        t[i] ^= 0x01;
        assert_eq!(
            run(&a, &t, client(), NOW, true),
            Err(AuthError::Unauthorized(AuthFailure::BadIntegrity)),
            "sha={sha}"
        );
        // And in the transaction id.
        let mut t = bytes.clone();
        t[10] ^= 0x80;
        assert_eq!(
            run(&a, &t, client(), NOW, true),
            Err(AuthError::Unauthorized(AuthFailure::BadIntegrity))
        );
    }
}

#[test]
fn write_challenge_contents() {
    for offer in [false, true] {
        let a = auth(offer);
        let mut buf = vec![0u8; 512];
        let mut w =
            MessageWriter::new(&mut buf, Method::Allocate, Class::Error, &TID).expect("fits");
        w.error_code(401, "Unauthorized").expect("fits");
        a.write_challenge(&mut w, client(), Transport::Udp, NOW)
            .expect("fits");
        let n = w.finish();
        let msg = Message::parse(&buf[..n]).expect("challenge parses");
        assert_eq!(
            msg.get(attr::REALM).map(|r| r.value),
            Some(REALM.as_bytes())
        );
        let nonce = msg.get(attr::NONCE).expect("has NONCE").value;
        assert!(nonce.starts_with(nonce::NONCE_COOKIE));
        assert_eq!(
            a.nonces.check(nonce, client(), Transport::Udp, NOW),
            NonceCheck::Valid {
                password_algorithms: offer
            }
        );
        let algs = msg.get(attr::PASSWORD_ALGORITHMS).map(|r| r.value);
        if offer {
            let algs = algs.expect("has PASSWORD-ALGORITHMS");
            assert_eq!(algs, PASSWORD_ALGORITHMS_VALUE);
            let listed: Vec<(u16, Vec<u8>)> = attr::password_algorithms(algs)
                .map(|(a, p)| (a, p.to_vec()))
                .collect();
            assert_eq!(
                listed,
                vec![
                    (attr::PASSWORD_ALGORITHM_SHA256, Vec::new()),
                    (attr::PASSWORD_ALGORITHM_MD5, Vec::new())
                ]
            );
        } else {
            assert!(algs.is_none());
        }
    }
}

#[test]
fn full_exchange_from_challenge() {
    // A client echoes exactly what the 401 gave it.
    let a = auth(true);
    let mut buf = vec![0u8; 512];
    let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Error, &TID).expect("fits");
    a.write_challenge(&mut w, client(), Transport::Udp, NOW)
        .expect("fits");
    let n = w.finish();
    let challenge = Message::parse(&buf[..n]).expect("parses");
    let nonce = challenge.get(attr::NONCE).expect("nonce").value.to_vec();
    let algs = challenge
        .get(attr::PASSWORD_ALGORITHMS)
        .expect("algorithms")
        .value
        .to_vec();

    let mut r = Req::new(&a, b"alice", alice_sha256()).sha256();
    r.nonce = Some(nonce);
    r.algorithms = Some(algs);
    let bytes = r.build();
    let msg = Message::parse(&bytes).expect("parses");
    let ok = a
        .authenticate(&msg, client(), Transport::Udp, NOW + 10, true)
        .expect("authenticates");

    // The success response it signs verifies with the same key and MAC kind.
    let mut out = vec![0u8; 256];
    let mut w = MessageWriter::new(&mut out, Method::Allocate, Class::Success, &TID).expect("fits");
    w.u32(attr::LIFETIME, 600).expect("fits");
    ok.sign(&mut w).expect("fits");
    let n = w.finish();
    let resp = Message::parse(&out[..n]).expect("parses");
    assert_eq!(
        check_sha256(&resp, alice_sha256().as_bytes()),
        Integrity::Valid
    );
    assert_eq!(
        check_sha1(&resp, alice_sha256().as_bytes()),
        Integrity::Missing
    );

    let bytes = Req::new(&a, b"alice", alice_md5()).build();
    let msg = Message::parse(&bytes).expect("parses");
    let ok = a
        .authenticate(&msg, client(), Transport::Udp, NOW, true)
        .expect("authenticates");
    let mut out = vec![0u8; 256];
    let mut w = MessageWriter::new(&mut out, Method::Allocate, Class::Success, &TID).expect("fits");
    ok.sign(&mut w).expect("fits");
    let n = w.finish();
    let resp = Message::parse(&out[..n]).expect("parses");
    assert_eq!(check_sha1(&resp, alice_md5().as_bytes()), Integrity::Valid);
}

#[test]
fn duplicate_credential_attributes_use_the_first() {
    let a = auth(false);
    let mut r = Req::new(&a, b"alice", alice_md5());
    r.before = Some((attr::USERNAME, b"mallory"));
    let (user, _, _, _) = run(&a, &r.build(), client(), NOW, true).expect("authenticates");
    assert_eq!(user, b"alice");
}

#[test]
fn auth_failures_index_their_counters_and_have_distinct_labels() {
    let mut labels = std::collections::HashSet::new();
    for (i, f) in AuthFailure::ALL.iter().enumerate() {
        assert_eq!(f.index(), i, "{f:?}");
        assert!(labels.insert(f.label()), "{f:?}: label used twice");
    }
    assert_eq!(AuthError::Challenge.failure(), None);
    assert_eq!(
        AuthError::StaleNonce.failure(),
        Some(AuthFailure::StaleNonce)
    );
}
