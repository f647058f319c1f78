//! Writing data to stdout. A reader that went away (`porthold list | head -1`,
//! `porthold completions fish | head -c 10`) is not an error: porthold stops
//! quietly with status 0, as ripgrep does, instead of panicking in `println!`.

use std::fmt;
use std::io::{self, Write};

/// Writes `args` to stdout (use [`outln!`]).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let result = io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        failed(&e);
    }
}

/// Writes raw bytes to stdout.
pub fn write_all(bytes: &[u8]) {
    let result = io::stdout().lock().write_all(bytes);
    if let Err(e) = result {
        failed(&e);
    }
}

fn failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(io::stderr(), "porthold: error: writing to stdout: {e}");
    std::process::exit(i32::from(crate::exit::USAGE));
}

/// `println!` that treats a closed stdout as the end of the command.
macro_rules! outln {
    () => { $crate::stdout::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use outln;
