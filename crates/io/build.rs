//! Compiles the XDP program (`xdp/relay.bpf.c`) with clang when the `xdp`
//! feature is on. A machine without clang still builds uturn: the program
//! is then missing, `xdp = "auto"` says so and carries everything on the
//! socket path, and `xdp = "required"` refuses to start. Set
//! `UTURN_XDP_BUILD=required` (CI does) to make a missing or failing clang
//! a build error instead; `CLANG` names another compiler.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(uturn_xdp_object)");
    println!("cargo:rerun-if-changed=xdp/relay.bpf.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=UTURN_XDP_BUILD");
    if env::var_os("CARGO_FEATURE_XDP").is_none() {
        return;
    }
    let required = env::var("UTURN_XDP_BUILD").is_ok_and(|v| v == "required");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("relay.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory of the host (x86_64-linux-gnu, aarch64-linux-gnu).
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let result = Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", &multiarch, "-c",
        ])
        .arg("xdp/relay.bpf.c")
        .arg("-o")
        .arg(&out)
        .output();
    let why = match result {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-cfg=uturn_xdp_object");
            return;
        }
        Ok(o) => format!(
            "{clang} failed on xdp/relay.bpf.c (are libbpf's headers installed? Debian: libbpf-dev): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("{clang} not found ({e}); install clang and libbpf-dev to build it"),
    };
    if required {
        panic!("UTURN_XDP_BUILD=required, but the XDP program was not built: {why}");
    }
    println!("cargo:warning=the XDP fast path is not built into this binary: {why}");
}
