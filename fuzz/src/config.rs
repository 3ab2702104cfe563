//! `config`: arbitrary text as the `--config` file, through
//! `Config::from_parts` with default flags. It may refuse the text, never
//! panic. On success the derived settings are built too.
//!
//! `from_parts` has one side effect: it reads every path listed in
//! `rest_secret_files` (and asks for its metadata). A fuzzer must not read
//! whatever path it invents (`/dev/zero` would never end, a FIFO would
//! block), so when the document parses as TOML and has that key, each listed
//! entry is replaced by the path of one small secret file this harness
//! writes, and the document is written out again before it is passed on.
//! Nothing else in `from_parts` touches the system: it parses addresses,
//! never binds them, and the io_uring probe happens only in `Config::load`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use uturn::config::{Config, RunArgs};

const REST_SECRET_FILES: &str = "rest_secret_files";

/// A secret file of the harness's own, made once per process.
fn secret_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("uturn-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("secret");
        std::fs::write(&path, "fuzz-secret\n").expect("a temporary file");
        path
    })
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args = RunArgs::default();
    let name = Path::new("fuzz.toml");
    let result = match toml::from_str::<toml::Table>(text) {
        Ok(mut table) if table.contains_key(REST_SECRET_FILES) => {
            if let Some(toml::Value::Array(list)) = table.get_mut(REST_SECRET_FILES) {
                let path = secret_file().to_string_lossy().into_owned();
                for item in list.iter_mut() {
                    *item = toml::Value::String(path.clone());
                }
            }
            let Ok(safe) = toml::to_string(&table) else {
                return;
            };
            Config::from_parts(&args, Some((name, &safe)))
        }
        // No secret files named (or not TOML at all, which fails before any
        // file is read): the text goes in exactly as the fuzzer wrote it.
        _ => Config::from_parts(&args, Some((name, text))),
    };
    let Ok(cfg) = result else {
        return;
    };
    let _ = cfg.summary();
    let network = &cfg.network;
    let _ = cfg.reloadable.auth.auth_config();
    let _ = cfg.reloadable.relay_settings([0; 32], &network.relay_ips());
    let _ = network.turn_config(network.relay_ports.clone());
    if network.workers > 0 && network.workers <= 1024 {
        if let Some(slices) = uturn::config::port_slices(&network.relay_ports, network.workers) {
            assert_eq!(slices.len(), network.workers);
        }
    }
}
