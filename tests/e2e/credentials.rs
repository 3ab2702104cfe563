//! Credentials: long-term MD5, TURN REST secrets (rotation, expiry), the SHA-256
//! password algorithm, USERHASH, keys from `uturn derive-key`, demo mode.

use super::*;

#[test]
fn rest_password_is_base64_hmac_sha1() {
    // draft-uberti-behave-turn-rest: password = base64(HMAC-SHA1(secret, username)).
    // Reference value computed independently (Python: base64.b64encode(hmac.new(
    // b"north", b"1700000000:alice", "sha1").digest())).
    let pw = rest_password(b"north", b"1700000000:alice");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(pw)
        .expect("base64");
    assert_eq!(decoded.len(), 20, "HMAC-SHA1 is 20 bytes");
    assert_eq!(
        std::str::from_utf8(&pw).unwrap(),
        "Cd/49soE35ICqcJF/bCTn8Z4OyE="
    );
}

fn rest_credentials_with_two_secrets_and_expiry() {
    let server = Server::start(&[
        "--realm",
        REALM,
        "--rest-secret",
        "first-secret",
        "--rest-secret",
        "second-secret",
        "--allow-peer",
        "127.0.0.0/8",
    ]);
    let later = unix_now() + 3600;

    // Both secrets are accepted (rotation), and the whole flow works.
    for secret in ["first-secret", "second-secret"] {
        let (u, p) = rest_creds(secret, later, "alice");
        full_flow(server.addr, &u, &p, AuthMode::Legacy, Some(LOOPBACK_V4));
    }
    // A username that is only the expiry (the user id part is optional).
    let u = later.to_string();
    let p = String::from_utf8(rest_password(b"second-secret", u.as_bytes()).to_vec()).unwrap();
    TurnClient::new(server.addr, &u, &p, AuthMode::Legacy).allocate();

    // Expired: 401.
    let (u, p) = rest_creds("first-secret", unix_now() - 60, "alice");
    let mut c = TurnClient::new(server.addr, &u, &p, AuthMode::Legacy);
    assert_error(
        &c.try_allocate(|_| Ok(())),
        &[401],
        "Allocate with an expired REST credential",
    );

    // A secret the server does not know: 401.
    let (u, p) = rest_creds("third-secret", later, "alice");
    let mut c = TurnClient::new(server.addr, &u, &p, AuthMode::Legacy);
    assert_error(
        &c.try_allocate(|_| Ok(())),
        &[401],
        "Allocate with an unknown REST secret",
    );

    // The right secret for another username: 401.
    let (_, p) = rest_creds("first-secret", later, "alice");
    let mut c = TurnClient::new(server.addr, &format!("{later}:bob"), &p, AuthMode::Legacy);
    assert_error(
        &c.try_allocate(|_| Ok(())),
        &[401],
        "Allocate with alice's REST password as bob",
    );
}

fn sha256_password_algorithm_flow() {
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Sha256);
    let r = c.challenge(Method::Allocate);
    let algs = r
        .raw(attr::PASSWORD_ALGORITHMS)
        .unwrap_or_else(|| panic!("401 offers no PASSWORD-ALGORITHMS: {}", r.describe()));
    let listed: Vec<u16> = attr::password_algorithms(&algs).map(|(a, _)| a).collect();
    assert!(
        listed.contains(&attr::PASSWORD_ALGORITHM_SHA256),
        "SHA-256 not offered: {listed:?}"
    );
    assert!(
        listed.contains(&attr::PASSWORD_ALGORITHM_MD5),
        "MD5 not offered (RFC 8489 §9.2.4): {listed:?}"
    );
    let nonce = String::from_utf8_lossy(&c.nonce).into_owned();
    assert!(
        nonce.starts_with("obMatJos2"),
        "nonce {nonce:?} lacks the RFC 8489 §9.2 nonce cookie"
    );

    // full flow with MESSAGE-INTEGRITY-SHA256 (responses checked with check_sha256)
    full_flow_with(&mut c, LOOPBACK_V4, Some(LOOPBACK_V4));

    // The MD5 algorithm chosen from the list (RFC 8489 style) also works.
    full_flow(
        server.addr,
        "alice",
        "wonderland",
        AuthMode::Md5,
        Some(LOOPBACK_V4),
    );
}

/// RFC 8489 §18.1 security feature bits, numbered from the least significant.
const PASSWORD_ALGORITHMS_BIT: u32 = 1 << 0;
const USERNAME_ANONYMITY_BIT: u32 = 1 << 1;

fn userhash_instead_of_username() {
    // With static users the nonce advertises "Username anonymity", and a
    // client that follows RFC 8489 §9.2.5 sends USERHASH instead of USERNAME.
    let server = lab_server(&[]);
    for mode in [AuthMode::Sha256, AuthMode::Md5] {
        let mut c = TurnClient::new(server.addr, "alice", "wonderland", mode);
        c.challenge(Method::Allocate);
        let features = c.nonce_features().expect("a nonce with the cookie");
        assert_eq!(
            features,
            PASSWORD_ALGORITHMS_BIT | USERNAME_ANONYMITY_BIT,
            "nonce {:?}",
            String::from_utf8_lossy(&c.nonce)
        );
        c.use_userhash = features & USERNAME_ANONYMITY_BIT != 0;
        full_flow_with(&mut c, LOOPBACK_V4, Some(LOOPBACK_V4));
    }

    // REST secrets only: a hash cannot be mapped back to a REST username,
    // so the bit stays off (and the client sends USERNAME).
    let server = Server::start(&[
        "--realm",
        REALM,
        "--rest-secret",
        "only-rest-secret",
        "--allow-peer",
        "127.0.0.0/8",
    ]);
    let (u, p) = rest_creds("only-rest-secret", unix_now() + 3600, "alice");
    let mut c = TurnClient::new(server.addr, &u, &p, AuthMode::Sha256);
    c.challenge(Method::Allocate);
    assert_eq!(c.nonce_features(), Some(PASSWORD_ALGORITHMS_BIT));
    full_flow_with(&mut c, LOOPBACK_V4, Some(LOOPBACK_V4));
}

fn sha256_request_with_a_tampered_algorithm_list_is_refused() {
    // Bid-down protection (RFC 8489 §9.2.4): PASSWORD-ALGORITHMS must be the
    // list the server sent.
    let server = lab_server(&[]);
    let mut c = TurnClient::new(server.addr, "alice", "wonderland", AuthMode::Sha256);
    c.challenge(Method::Allocate);
    c.password_algorithms = Some(vec![0, 1, 0, 0]); // MD5 only
    let r = c.try_allocate(|_| Ok(()));
    assert_error(
        &r,
        &[400, 401],
        "Allocate with a PASSWORD-ALGORITHMS list the server did not send",
    );
}

fn derive_key_output_as_config_file() {
    let password = "correct-horse-battery-9";
    let out = run_bounded(
        {
            let mut c = Command::new(uturn_bin());
            c.args([
                "derive-key",
                "--user",
                "bob",
                "--realm",
                REALM,
                "--password",
                password,
            ]);
            c
        },
        Duration::from_secs(10),
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "derive-key failed: {:?}\n{}",
        out.status,
        out.stderr
    );
    let snippet = out.stdout;
    assert!(
        snippet.contains("[[users]]"),
        "derive-key output has no [[users]] table:\n{snippet}"
    );
    assert!(
        !snippet.contains(password),
        "derive-key output contains the password:\n{snippet}"
    );
    let md5 = hex(derive_key(
        PasswordAlgorithm::Md5,
        b"bob",
        REALM.as_bytes(),
        password.as_bytes(),
    )
    .as_bytes());
    let sha = hex(derive_key(
        PasswordAlgorithm::Sha256,
        b"bob",
        REALM.as_bytes(),
        password.as_bytes(),
    )
    .as_bytes());
    assert!(snippet.contains(&md5), "key_md5 {md5} not in:\n{snippet}");
    assert!(
        snippet.contains(&sha),
        "key_sha256 {sha} not in:\n{snippet}"
    );

    let path = scratch_path("derived-users.toml");
    std::fs::write(&path, &snippet).unwrap();
    let server = Server::start(&[
        "--config",
        path.to_str().unwrap(),
        "--realm",
        REALM,
        "--listen",
        "127.0.0.1:0",
        "--relay-ip",
        "127.0.0.1",
        "--allow-peer",
        "127.0.0.0/8",
    ]);
    assert!(
        server.demo_user.is_none(),
        "a configured user must switch demo credentials off"
    );
    full_flow(
        server.addr,
        "bob",
        password,
        AuthMode::Legacy,
        Some(LOOPBACK_V4),
    );
    full_flow(
        server.addr,
        "bob",
        password,
        AuthMode::Sha256,
        Some(LOOPBACK_V4),
    );
    let mut c = TurnClient::new(server.addr, "bob", "wrong", AuthMode::Legacy);
    assert_error(
        &c.try_allocate(|_| Ok(())),
        &[401],
        "bob with a wrong password",
    );
}

fn demo_credentials_when_none_are_configured() {
    let server = Server::start(&["--allow-peer", "127.0.0.0/8"]);
    let (user, pw, realm) = server
        .demo_user
        .clone()
        .unwrap_or_else(|| panic!("no demo user line in:\n{}", server.banner.join("\n")));
    let secret = server
        .demo_rest_secret
        .clone()
        .expect("demo rest-secret line");
    let mut c = TurnClient::new(server.addr, &user, &pw, AuthMode::Legacy);
    c.allocate();
    assert_eq!(
        String::from_utf8_lossy(&c.realm),
        realm,
        "REALM in the 401 vs the demo line"
    );
    let (u, p) = rest_creds(&secret, unix_now() + 600, "demo");
    full_flow(server.addr, &u, &p, AuthMode::Legacy, Some(LOOPBACK_V4));

    // Lines come in the documented order.
    let pos = |prefix: &str| server.banner.iter().position(|l| l.starts_with(prefix));
    let order = [
        pos("uturn: listening on udp "),
        pos("uturn: relay "),
        pos("uturn: demo user "),
        pos("uturn: demo rest-secret "),
        pos("uturn: ready"),
    ];
    assert!(
        order.iter().all(Option::is_some) && order.windows(2).all(|w| w[0] < w[1]),
        "banner order:\n{}",
        server.banner.join("\n")
    );
}

on_both_backends!(
    rest_credentials_with_two_secrets_and_expiry,
    sha256_password_algorithm_flow,
    userhash_instead_of_username,
    sha256_request_with_a_tampered_algorithm_list_is_refused,
    derive_key_output_as_config_file,
    demo_credentials_when_none_are_configured,
);
