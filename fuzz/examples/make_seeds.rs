//! Writes the seed corpora to `seeds/<target>/<name>` (run from `fuzz/`:
//! `cargo run --example make-seeds`). Each target's directory is emptied first,
//! so the committed seeds are exactly what `uturn_fuzz::seeds` builds.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let sets = [
        ("stun_codec", uturn_fuzz::seeds::stun_codec()),
        ("stream_framing", uturn_fuzz::seeds::stream_framing()),
        ("relay", uturn_fuzz::seeds::relay()),
        ("config", uturn_fuzz::seeds::config()),
        ("proxy_header", uturn_fuzz::seeds::proxy_header()),
        ("tcp_alloc", uturn_fuzz::seeds::tcp_alloc()),
        ("dtls_front", uturn_fuzz::dtls::seeds()),
    ];
    for (target, seeds) in sets {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}
