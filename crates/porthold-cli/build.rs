//! Links the unwinder into the binary (libgcc_eh.a) instead of loading
//! libgcc_s.so.1 at every start-up, on Linux with glibc.
//!
//! std asks the linker for `-lgcc_s` (for `_Unwind_*`: backtraces, and
//! unwinding in test builds). Loading that library and running its
//! constructor (`__cpu_indicator_init`, whose `cpuid` traps in a VM) costs
//! about 0.1 ms of each `porthold` run, as long as a whole `--version`
//! takes over `/bin/true` (docs/performance.md). The linker finds
//! `-lgcc_s` here first: a linker script that names the static unwinder,
//! as `gcc -static-libgcc` would. glibc stays dynamic. Set
//! `PORTHOLD_DYNAMIC_LIBGCC=1` to link libgcc_s as usual (a toolchain
//! without libgcc_eh.a).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PORTHOLD_DYNAMIC_LIBGCC");
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !linux_gnu || env::var_os("PORTHOLD_DYNAMIC_LIBGCC").is_some_and(|v| v != "0") {
        return;
    }
    let dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("unwinder");
    fs::create_dir_all(&dir).expect("creating OUT_DIR/unwinder");
    fs::write(
        dir.join("libgcc_s.so"),
        "/* porthold-cli/build.rs: the static unwinder instead of libgcc_s.so.1 */\nINPUT(-lgcc_eh)\n",
    )
    .expect("writing OUT_DIR/unwinder/libgcc_s.so");
    println!("cargo::rustc-link-search=native={}", dir.display());
}
