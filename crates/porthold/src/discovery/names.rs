//! Instance names, instance ids and the runtime directory.
//!
//! A name becomes two file names (`<name>.json`, `<name>.lock`), so the
//! alphabet is restricted to `[A-Za-z0-9._-]` and 1–64 bytes: no `/`, no NUL,
//! nothing a shell must quote. Names are never used with anything but those
//! fixed suffixes, so `.`/`..` cannot escape the directory.
//!
//! The default name must be computable by other languages and must not let
//! two keys meet by accident, so its hash is spelled out: SHA-256 over the
//! path bytes, one 0 byte and the tag bytes, of which the name keeps 16 hex
//! digits (64 bits). Lookups by key also check the record's key, so even a
//! collision (or a `--name` shared on purpose) never selects another key's instance.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::sha256::sha256;
use crate::error::{Error, Result};

/// Longest valid instance name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest valid instance id, in bytes.
pub const MAX_INSTANCE_ID_LEN: usize = 128;

/// Longest tag part kept in a default name (see [`default_name`]).
const MAX_DEFAULT_TAG_LEN: usize = 24;

/// Hex digits of the key hash at the end of a default name.
pub const NAME_HASH_HEX_DIGITS: usize = 16;

fn in_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks that `name` matches `[A-Za-z0-9._-]{1,64}`.
///
/// # Errors
/// [`Error::Invalid`] naming the problem.
pub fn validate_name(name: &str) -> Result<()> {
    let hint = || {
        Some("instance names use letters, digits, `.`, `_` and `-`, at most 64 of them".to_string())
    };
    if name.is_empty() {
        return Err(Error::invalid("instance name is empty", hint()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            format!(
                "instance name `{name}` is {} bytes long; the limit is {MAX_NAME_LEN}",
                name.len()
            ),
            hint(),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii() || !in_alphabet(*c as u8))
    {
        return Err(Error::invalid(
            format!("instance name `{name}` contains `{c}`"),
            hint(),
        ));
    }
    Ok(())
}

/// Checks that an instance id matches `[A-Za-z0-9._-]{1,128}`.
///
/// # Errors
/// [`Error::Invalid`].
pub fn validate_instance_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN || !id.bytes().all(in_alphabet) {
        return Err(Error::invalid(
            format!("invalid instance id `{id}`"),
            Some("instance ids use letters, digits, `.`, `_` and `-`, at most 128 of them".into()),
        ));
    }
    Ok(())
}

/// The hash that ends a default name: the first [`NAME_HASH_HEX_DIGITS`]
/// lower-case hex digits of SHA-256 over `path bytes ‖ 0x00 ‖ tag bytes`.
///
/// The path cannot contain a 0 byte, so the separator makes the input
/// unambiguous (`/a` + `b/c` and `/ab` + `/c` hash differently).
pub fn key_hash(path: &Path, tag: &str) -> String {
    let mut input = Vec::with_capacity(path.as_os_str().len() + 1 + tag.len());
    input.extend_from_slice(path.as_os_str().as_bytes());
    input.push(0);
    input.extend_from_slice(tag.as_bytes());
    sha256(&input)
        .iter()
        .take(NAME_HASH_HEX_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The default instance name for a key: `<basename>-<tag or "default">-<hash>`.
///
/// - `hash` is [`key_hash`] of the key: 16 hex digits of SHA-256 over the raw
///   bytes of `path` (exactly as passed: the caller passes the key's
///   normalised absolute path), a 0 byte, and the tag's bytes (empty for no tag).
/// - `basename` is the last component of `path` (`root` when there is none, as
///   for `/`); `tag` is `default` when empty. In both, every byte outside
///   `[A-Za-z0-9._-]` becomes `_` (a multi-byte UTF-8 character becomes several `_`).
/// - To fit 64 bytes, the tag is cut to its first 24 bytes, then the basename to
///   `64 - 18 - len(tag)` bytes (18 = the hash and two `-`).
pub fn default_name(path: &Path, tag: &str) -> String {
    let sanitize = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .map(|&b| if in_alphabet(b) { b as char } else { '_' })
            .collect()
    };
    let hash = key_hash(path, tag);
    let base = match path.file_name() {
        Some(n) => sanitize(n.as_bytes()),
        None => "root".to_string(),
    };
    let mut tag = if tag.is_empty() {
        "default".to_string()
    } else {
        sanitize(tag.as_bytes())
    };
    // Everything is ASCII after sanitising, so byte truncation is char-safe.
    tag.truncate(MAX_DEFAULT_TAG_LEN);
    let mut base = base;
    base.truncate(MAX_NAME_LEN - NAME_HASH_HEX_DIGITS - 2 - tag.len());
    format!("{base}-{tag}-{hash}")
}

/// Fills `buf` from the kernel's random source: `getrandom(2)` (one system
/// call, and no file: it works in a chroot), else `/dev/urandom` on a kernel
/// without it.
///
/// # Errors
/// When neither can be read.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n >= 0 {
            filled += usize::try_from(n).unwrap_or(0);
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOSYS) => {
                use std::io::Read as _;
                return fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(rest));
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// A fresh random instance id: 32 lower-case hex digits (128 random bits, [`random_bytes`]).
///
/// # Errors
/// [`Error::Io`] when no random bytes can be read.
pub fn new_instance_id() -> Result<String> {
    let mut buf = [0u8; 16];
    random_bytes(&mut buf).map_err(|e| Error::io("reading random bytes", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates the runtime directory (mode 0700, parents too) if it is missing,
/// and checks that it is safe to keep discovery records in.
///
/// Refuses a symbolic link, a non-directory, a directory owned by another
/// uid, and one that group or others can access at all: records there could
/// be planted, replaced or read by someone else. An existing directory's mode
/// is never changed.
///
/// # Errors
/// [`Error::Invalid`] with a hint for an unsafe directory, [`Error::Io`] when
/// it cannot be created or inspected.
pub fn ensure_runtime_dir(path: &Path) -> Result<()> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("creating runtime directory `{shown}`"),
                        e,
                    ));
                }
            }
            let meta = fs::symlink_metadata(path)
                .map_err(|e| Error::io(format!("inspecting runtime directory `{shown}`"), e))?;
            // The umask may have removed owner bits; set exactly 0700 on what we
            // just created (if someone else created it in between, the checks below judge it).
            if meta.is_dir()
                && meta.uid() == euid()
                && meta.mode() & 0o777 != 0o700
                && meta.mode() & 0o077 == 0
            {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io(format!("setting mode 0700 on `{shown}`"), e))?;
            }
            fs::symlink_metadata(path)
                .map_err(|e| Error::io(format!("inspecting runtime directory `{shown}`"), e))?
        }
        Err(e) => {
            return Err(Error::io(
                format!("inspecting runtime directory `{shown}`"),
                e,
            ));
        }
    };
    check_runtime_dir_meta(path, &meta)
}

fn check_runtime_dir_meta(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let shown = path.display();
    if meta.file_type().is_symlink() {
        return Err(Error::invalid(
            format!("runtime directory `{shown}` is a symbolic link"),
            Some("porthold does not follow symlinks there; point it at the real directory".into()),
        ));
    }
    if !meta.is_dir() {
        return Err(Error::invalid(
            format!("runtime directory `{shown}` is not a directory"),
            Some("move that file aside, or choose another runtime directory".to_string()),
        ));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(Error::invalid(
            format!(
                "runtime directory `{shown}` is owned by uid {}, not by uid {me} running porthold",
                meta.uid()
            ),
            Some("use a directory you own, such as one under $XDG_RUNTIME_DIR".into()),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::invalid(
            format!(
                "runtime directory `{shown}` has mode {mode:04o}: group or others can access it"
            ),
            Some(format!(
                "run `chmod 700 {shown}`, or choose a private directory"
            )),
        ));
    }
    Ok(())
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_alphabet_and_length() {
        for ok in [
            "a",
            "web",
            "shop-web-0badc0de",
            "A.b_c-9",
            "..",
            &"x".repeat(64),
        ] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "é",
            "a\0",
            "a:b",
            &"x".repeat(65),
            "name\n",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_key_hash_is_sha256_of_path_nul_tag() {
        // printf '/home/ann/shop\0web' | sha256sum → 64b2c78ff4e72b85a2da…
        assert_eq!(
            key_hash(Path::new("/home/ann/shop"), "web"),
            "64b2c78ff4e72b85"
        );
        // The separator keeps path and tag apart.
        assert_ne!(
            key_hash(Path::new("/a"), "b"),
            key_hash(Path::new("/ab"), "")
        );
    }

    #[test]
    fn default_names_are_stable_sanitised_and_bounded() {
        let n = default_name(Path::new("/home/ann/shop"), "web");
        assert_eq!(n, "shop-web-64b2c78ff4e72b85");
        assert_eq!(
            default_name(Path::new("/home/ann/src/shop"), ""),
            format!(
                "shop-default-{}",
                key_hash(Path::new("/home/ann/src/shop"), "")
            )
        );
        let odd = default_name(Path::new("/tmp/my proj (2)/café"), "a b");
        assert!(odd.starts_with("caf__-a_b-"), "{odd}");
        validate_name(&odd).unwrap();
        assert!(default_name(Path::new("/"), "").starts_with("root-default-"));
        let long = default_name(
            Path::new(&format!("/x/{}", "b".repeat(200))),
            &"t".repeat(100),
        );
        assert_eq!(long.len(), 64, "{long}");
        validate_name(&long).unwrap();
        assert!(long.contains(&format!("-{}-", "t".repeat(24))));
        // Keys whose readable prefixes are cut to the same text still get different names.
        let cut_a = default_name(Path::new(&format!("/x/{}a", "b".repeat(60))), "web");
        let cut_b = default_name(Path::new(&format!("/x/{}b", "b".repeat(60))), "web");
        assert_ne!(cut_a, cut_b);
        assert_eq!(cut_a[..40], cut_b[..40]);
        // Different paths with the same basename get different names.
        assert_ne!(
            default_name(Path::new("/a/shop"), ""),
            default_name(Path::new("/b/shop"), "")
        );
        // A tag that sanitises like another still gets its own name.
        assert_ne!(
            default_name(Path::new("/a/shop"), "a b"),
            default_name(Path::new("/a/shop"), "a_b")
        );
    }

    #[test]
    fn instance_ids_are_128_bit_hex_and_distinct() {
        let a = new_instance_id().unwrap();
        let b = new_instance_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        validate_instance_id(&a).unwrap();
        assert!(validate_instance_id("").is_err());
        assert!(validate_instance_id("a/b").is_err());
    }
}
