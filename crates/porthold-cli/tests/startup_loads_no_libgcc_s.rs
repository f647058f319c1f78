//! On Linux with glibc the binary carries its unwinder (libgcc_eh, linked by
//! `build.rs`) and loads no libgcc_s.so.1 at start-up; unwinding still works
//! (this test binary is linked the same way, and its harness catches panics).
//! (The static release build loads nothing at all.)

mod util;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binary_loads_libc_but_no_libgcc_s() {
    if option_env!("PORTHOLD_DYNAMIC_LIBGCC").is_some_and(|v| v != "0") {
        eprintln!("skipping: built with PORTHOLD_DYNAMIC_LIBGCC");
        return;
    }
    // glibc's loader lists the libraries it would map, then exits.
    let output = std::process::Command::new(util::porthold_bin())
        .arg("--version")
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    if listed.starts_with("porthold ") {
        // A static binary (scripts/build-release.sh, through
        // PORTHOLD_TEST_BIN): no loader ran, nothing was loaded; it just ran.
        return;
    }
    assert!(listed.contains("libc.so"), "the loader listed: {listed}");
    assert!(!listed.contains("libgcc_s"), "the loader listed: {listed}");
}

#[test]
fn a_panic_unwinds_and_is_caught() {
    let caught = std::panic::catch_unwind(|| panic!("unwinding works"));
    assert!(caught.is_err());
    let backtrace = std::backtrace::Backtrace::force_capture();
    assert_eq!(
        backtrace.status(),
        std::backtrace::BacktraceStatus::Captured,
        "{backtrace}"
    );
}
