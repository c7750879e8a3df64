//! Builds craft's data path, a tc BPF program in C (`bpf/splice.bpf.c`), with clang: the
//! agent embeds the object and loads it with aya. Needs clang and libbpf's headers (Debian:
//! `apt-get install clang libbpf-dev`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/splice.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=HALAB_CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("splice.bpf.o");
    let clang = std::env::var("HALAB_CLANG").unwrap_or_else(|_| "clang".into());
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} could not build {src} ({s}); craft's data path needs clang and libbpf's \
             headers: apt-get install clang libbpf-dev"
        ),
        Err(e) => panic!(
            "cannot run {clang} ({e}); craft's data path is a BPF program built with clang: \
             apt-get install clang libbpf-dev (or set HALAB_CLANG to a clang binary)"
        ),
    }
}
