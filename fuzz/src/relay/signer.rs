//! The users the relay target's authenticator knows, and how the harness
//! signs as each of them.

use uturn::auth::{derive_key, key::rest_password, PasswordAlgorithm, StaticUser};

use super::{Cred, REALM, REST_SECRET};

pub(super) fn static_user(name: &str, password: &str) -> StaticUser {
    let key = |alg| derive_key(alg, name.as_bytes(), REALM.as_bytes(), password.as_bytes());
    StaticUser {
        name: name.into(),
        key_md5: key(PasswordAlgorithm::Md5).as_bytes().try_into().ok(),
        key_sha256: key(PasswordAlgorithm::Sha256).as_bytes().try_into().ok(),
    }
}

/// How the harness signs: the name it sends (or USERHASH), the algorithm, the key.
pub(super) struct Signer {
    pub username: Vec<u8>,
    pub userhash: bool,
    pub alg: PasswordAlgorithm,
    pub declare: bool,
    pub key: Vec<u8>,
}

impl Signer {
    pub fn new(cred: Cred, unix: u64) -> Signer {
        let plain = |name: &str, password: &str, alg, userhash, declare| Signer {
            username: name.as_bytes().to_vec(),
            userhash,
            alg,
            declare,
            key: derive_key(alg, name.as_bytes(), REALM.as_bytes(), password.as_bytes())
                .as_bytes()
                .to_vec(),
        };
        let rest = |expiry: u64| {
            let name = format!("{expiry}:carol");
            let pw = rest_password(REST_SECRET.as_bytes(), name.as_bytes());
            let key = derive_key(
                PasswordAlgorithm::Md5,
                name.as_bytes(),
                REALM.as_bytes(),
                &pw,
            );
            Signer {
                username: name.into_bytes(),
                userhash: false,
                alg: PasswordAlgorithm::Md5,
                declare: false,
                key: key.as_bytes().to_vec(),
            }
        };
        match cred {
            Cred::AliceMd5 => plain("alice", "alice-pw", PasswordAlgorithm::Md5, false, false),
            Cred::AliceSha256 => plain("alice", "alice-pw", PasswordAlgorithm::Sha256, false, true),
            Cred::AliceUserhash => {
                plain("alice", "alice-pw", PasswordAlgorithm::Sha256, true, true)
            }
            Cred::BobMd5 => plain("bob", "bob-pw", PasswordAlgorithm::Md5, false, false),
            Cred::BobMd5Declared => plain("bob", "bob-pw", PasswordAlgorithm::Md5, false, true),
            Cred::RestValid => rest(unix + 3600),
            Cred::RestExpired => rest(unix.saturating_sub(1)),
            Cred::AliceWrongPassword => plain(
                "alice",
                "not-alice-pw",
                PasswordAlgorithm::Md5,
                false,
                false,
            ),
        }
    }
    pub fn sha256(&self) -> bool {
        self.alg == PasswordAlgorithm::Sha256
    }
}
