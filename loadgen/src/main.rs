//! Placeholder: the load generator is specified by its own issue. It links
//! uturn's `stun` layer already so the dependency direction is fixed.

fn main() {
    eprintln!(
        "uturn-loadgen {}: not implemented yet (see the load generator issue); \
         the STUN codec it will use is uturn::stun (magic cookie {:#010x})",
        env!("CARGO_PKG_VERSION"),
        uturn::stun::MAGIC_COOKIE
    );
    std::process::exit(2);
}
