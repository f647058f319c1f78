//! Keys: which project (and which service of it) a port belongs to.
//!
//! A key is `(path, tag)`. An explicit path is made absolute against the
//! working directory and normalised lexically (`.` and `..` removed, symlinks
//! left alone, the path need not exist), so the same spelling always names the
//! same key. An inferred path is the nearest ancestor of the working directory
//! that holds `porthold.toml`, else the working directory itself,
//! canonicalised. No tag is stored as the empty string so that
//! `UNIQUE(path, tag)` covers it.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The project file whose directory is a project's root.
pub const PROJECT_FILE: &str = "porthold.toml";

/// A registry key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Absolute, normalised project path.
    pub path: PathBuf,
    /// Service tag; empty when none.
    pub tag: String,
}

/// How to resolve a key from user input.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest<'a> {
    /// `--path`, if given.
    pub path: Option<&'a Path>,
    /// `--tag`, if given.
    pub tag: Option<&'a str>,
    /// `--allow-unrelated-path`: skip the ancestor/descendant guard.
    pub allow_unrelated_path: bool,
    /// Whether the command guards explicit paths (reserve, release, migrate do).
    pub guard_unrelated: bool,
}

impl Key {
    /// Resolves a key against the working directory `cwd` (which must be absolute).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad tag; [`Error::UnrelatedPath`] when the guard
    /// applies and an explicit path is neither an ancestor nor a descendant of `cwd`.
    pub fn resolve(request: &KeyRequest<'_>, cwd: &Path) -> Result<Key> {
        let tag = match request.tag {
            Some(tag) => validate_tag(tag)?.to_string(),
            None => String::new(),
        };
        let path = match request.path {
            Some(explicit) => {
                let path = normalize_lexically(&cwd.join(explicit));
                if request.guard_unrelated
                    && !request.allow_unrelated_path
                    && !is_related(&path, cwd)
                {
                    return Err(Error::UnrelatedPath {
                        path,
                        cwd: cwd.to_path_buf(),
                    });
                }
                path
            }
            None => infer_project_path(cwd)?,
        };
        Ok(Key { path, tag })
    }
}

/// The nearest ancestor of `cwd` (itself included) holding `porthold.toml`,
/// else `cwd`; canonicalised.
pub fn infer_project_path(cwd: &Path) -> Result<PathBuf> {
    let canonical = cwd.canonicalize().map_err(|e| {
        Error::io(
            format!("resolving the working directory `{}`", cwd.display()),
            e,
        )
    })?;
    Ok(find_project_root(&canonical).unwrap_or(canonical))
}

/// The nearest ancestor of `dir` (itself included) that holds `porthold.toml`.
pub fn find_project_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(PROJECT_FILE).is_file())
        .map(Path::to_path_buf)
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                // `..` at the root stays at the root, as the kernel does.
                if out.parent().is_some() {
                    out.pop();
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether `a` equals `b` or one is a component-wise ancestor of the other.
pub fn is_related(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Checks a tag: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn validate_tag(tag: &str) -> Result<&str> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(tag)
    } else {
        Err(Error::invalid(
            format!("invalid tag `{tag}`"),
            Some(
                "a tag is 1-64 characters of letters, digits, `.`, `_` and `-` (e.g. web, api)"
                    .to_string(),
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_are_normalised_lexically() {
        let cwd = Path::new("/home/u/shop");
        let key = |p: &str| {
            Key::resolve(
                &KeyRequest {
                    path: Some(Path::new(p)),
                    tag: None,
                    allow_unrelated_path: true,
                    guard_unrelated: true,
                },
                cwd,
            )
            .unwrap()
            .path
        };
        assert_eq!(key("."), PathBuf::from("/home/u/shop"));
        assert_eq!(key("web/../api/./x"), PathBuf::from("/home/u/shop/api/x"));
        assert_eq!(key("/a/b/../../.."), PathBuf::from("/"));
        assert_eq!(key("/does/not/exist/"), PathBuf::from("/does/not/exist"));
    }

    #[test]
    fn unrelated_paths_need_the_override() {
        let cwd = Path::new("/home/u/shop");
        let request = |p: &'static str, allow| KeyRequest {
            path: Some(Path::new(p)),
            tag: None,
            allow_unrelated_path: allow,
            guard_unrelated: true,
        };
        assert!(Key::resolve(&request("/home/u", false), cwd).is_ok());
        assert!(Key::resolve(&request("/home/u/shop/web", false), cwd).is_ok());
        let err = Key::resolve(&request("/home/u/shopping", false), cwd).unwrap_err();
        assert!(matches!(err, Error::UnrelatedPath { .. }), "{err}");
        assert!(Key::resolve(&request("/home/u/shopping", true), cwd).is_ok());
    }

    #[test]
    fn tags_are_checked() {
        for good in ["web", "api-2", "a.b_c", &"x".repeat(64)] {
            assert!(validate_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a:b", "$(x)", &"x".repeat(65), "é"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_inferred_path_is_the_nearest_project_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        assert_eq!(
            infer_project_path(&root.join("a/b/c")).unwrap(),
            root.join("a/b/c")
        );
        std::fs::write(root.join("a").join(PROJECT_FILE), "").unwrap();
        assert_eq!(
            infer_project_path(&root.join("a/b/c")).unwrap(),
            root.join("a")
        );
    }
}
