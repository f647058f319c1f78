//! Keys: which project (and which service of it) a port belongs to.
//!
//! A key is `(path, tag)`. One directory is one key however it is reached:
//! an explicit path is made absolute against the working directory and, when
//! it exists, canonicalised (symlinks resolved); a path that does not exist
//! (a moved or deleted project) is resolved by canonicalising its longest
//! existing prefix and appending the rest lexically, so it still matches keys
//! stored under a symlinked `$HOME`. See [`resolve_path`].
//!
//! An inferred path ([`discover_project_root`]) is the nearest ancestor of the
//! working directory holding a *trusted* `porthold.toml` (owned by the current
//! user or root; a file owned by someone else is ignored, like git's
//! `safe.directory`), else the root of the enclosing git work tree (a `.git`
//! directory or file; each worktree or submodule is its own root), else the
//! working directory; always canonical. The ancestors are walked once.
//!
//! No tag is stored as the empty string so that `UNIQUE(path, tag)` covers it.

use std::os::unix::fs::MetadataExt as _;
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
    /// Resolves a key against the working directory `cwd` (which must be
    /// absolute), discovering the project root when no path is given.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad tag; [`Error::UnrelatedPath`] when the guard
    /// applies and an explicit path is neither an ancestor nor a descendant of `cwd`.
    pub fn resolve(request: &KeyRequest<'_>, cwd: &Path) -> Result<Key> {
        if request.path.is_some() {
            // The inferred root is not needed: skip the walk.
            return Key::resolve_in(request, cwd, cwd);
        }
        let root = discover_project_root(cwd)?;
        Key::resolve_in(request, cwd, &root.dir)
    }

    /// As [`Key::resolve`], with the inferred project path already known
    /// (a caller that ran [`discover_project_root`] once reuses it).
    ///
    /// # Errors
    /// As [`Key::resolve`].
    pub fn resolve_in(request: &KeyRequest<'_>, cwd: &Path, inferred: &Path) -> Result<Key> {
        let tag = match request.tag {
            Some(tag) => validate_tag(tag)?.to_string(),
            None => String::new(),
        };
        let path = match request.path {
            Some(explicit) => {
                let path = resolve_path(&cwd.join(explicit));
                if request.guard_unrelated
                    && !request.allow_unrelated_path
                    && !is_related(&path, &resolve_path(cwd))
                {
                    return Err(Error::UnrelatedPath {
                        path,
                        cwd: cwd.to_path_buf(),
                    });
                }
                path
            }
            None => inferred.to_path_buf(),
        };
        Ok(Key { path, tag })
    }
}

/// Resolves an absolute path to the one spelling a key uses: the longest
/// prefix that exists is canonicalised (symlinks and `..` resolved by the
/// file system) and the rest, which does not exist, is appended with `.` and
/// `..` removed lexically. An existing path is thus exactly its
/// `canonicalize()`.
pub fn resolve_path(path: &Path) -> PathBuf {
    for prefix in path.ancestors() {
        if let Ok(canonical) = prefix.canonicalize() {
            let rest = path.strip_prefix(prefix).unwrap_or(Path::new(""));
            if rest.as_os_str().is_empty() {
                return canonical;
            }
            return normalize_lexically(&canonical.join(rest));
        }
    }
    normalize_lexically(path)
}

/// Where an inferred project path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The directory holds a trusted `porthold.toml`.
    ProjectFile,
    /// The root of the enclosing git work tree (no trusted `porthold.toml` above).
    GitWorkTree,
    /// Neither: the working directory itself.
    WorkingDirectory,
}

/// The result of [`discover_project_root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRoot {
    /// The project path (canonical).
    pub dir: PathBuf,
    /// Why this directory.
    pub source: RootSource,
    /// `porthold.toml` files passed over because another user owns them, with that owner's uid.
    pub ignored: Vec<(PathBuf, u32)>,
}

impl ProjectRoot {
    /// The directory whose `porthold.toml` applies, if one does.
    pub fn project_file_dir(&self) -> Option<&Path> {
        (self.source == RootSource::ProjectFile).then_some(self.dir.as_path())
    }
}

/// Whether a configuration file may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTrust {
    /// No such file.
    Missing,
    /// Owned by the current user or root.
    Trusted,
    /// Owned by this other uid: ignore it.
    Untrusted(u32),
}

/// Checks who owns `path`: a project file is trusted only when the current
/// (effective) user or root owns it, so a `porthold.toml` planted in a shared
/// ancestor directory (`/tmp`, a colleague's checkout) cannot configure us.
pub fn file_trust(path: &Path) -> FileTrust {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            let owner = meta.uid();
            if owner == 0 || owner == rustix::process::geteuid().as_raw() {
                FileTrust::Trusted
            } else {
                FileTrust::Untrusted(owner)
            }
        }
        _ => FileTrust::Missing,
    }
}

/// Finds the inferred project path of `cwd` in one walk over its ancestors:
/// the nearest one with a trusted `porthold.toml`, else the nearest git work
/// tree root (a directory holding a `.git` directory or file), else `cwd`;
/// canonicalised. Git is detected without running git.
///
/// # Errors
/// [`Error::Io`] when `cwd` cannot be canonicalised.
pub fn discover_project_root(cwd: &Path) -> Result<ProjectRoot> {
    let canonical = cwd.canonicalize().map_err(|e| {
        Error::io(
            format!(
                "resolving the working directory `{}`",
                crate::text::escape_path(cwd)
            ),
            e,
        )
    })?;
    let mut git_root = None;
    let mut ignored = Vec::new();
    for dir in canonical.ancestors() {
        let file = dir.join(PROJECT_FILE);
        match file_trust(&file) {
            FileTrust::Trusted => {
                return Ok(ProjectRoot {
                    dir: dir.to_path_buf(),
                    source: RootSource::ProjectFile,
                    ignored,
                });
            }
            FileTrust::Untrusted(owner) => ignored.push((file, owner)),
            FileTrust::Missing => {}
        }
        if git_root.is_none() && std::fs::symlink_metadata(dir.join(".git")).is_ok() {
            git_root = Some(dir.to_path_buf());
        }
    }
    Ok(match git_root {
        Some(dir) => ProjectRoot {
            dir,
            source: RootSource::GitWorkTree,
            ignored,
        },
        None => ProjectRoot {
            dir: canonical,
            source: RootSource::WorkingDirectory,
            ignored,
        },
    })
}

/// The inferred project path of `cwd` (see [`discover_project_root`]).
///
/// # Errors
/// As [`discover_project_root`].
pub fn infer_project_path(cwd: &Path) -> Result<PathBuf> {
    discover_project_root(cwd).map(|root| root.dir)
}

/// The nearest ancestor of `dir` (itself included) that holds a trusted `porthold.toml`.
pub fn find_project_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| file_trust(&d.join(PROJECT_FILE)) == FileTrust::Trusted)
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
    fn paths_that_do_not_exist_are_normalised_lexically() {
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

    #[test]
    fn without_a_project_file_the_git_work_tree_root_is_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("repo/.git")).unwrap();
        std::fs::create_dir_all(root.join("repo/src/deep")).unwrap();
        let found = discover_project_root(&root.join("repo/src/deep")).unwrap();
        assert_eq!(found.dir, root.join("repo"));
        assert_eq!(found.source, RootSource::GitWorkTree);
        // A worktree (or submodule) has a `.git` file and is its own root.
        std::fs::create_dir_all(root.join("repo/wt/x")).unwrap();
        std::fs::write(root.join("repo/wt/.git"), "gitdir: ../.git/worktrees/wt\n").unwrap();
        assert_eq!(
            infer_project_path(&root.join("repo/wt/x")).unwrap(),
            root.join("repo/wt")
        );
        // A porthold.toml wins over the git root, even above it.
        std::fs::write(root.join(PROJECT_FILE), "").unwrap();
        let found = discover_project_root(&root.join("repo/src")).unwrap();
        assert_eq!(
            (found.dir, found.source),
            (root.clone(), RootSource::ProjectFile)
        );
    }

    #[test]
    fn an_existing_explicit_path_is_canonicalised_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("real/shop/a")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        assert_eq!(
            resolve_path(&root.join("link/shop")),
            root.join("real/shop")
        );
        // Missing tail: the existing prefix is canonicalised, the rest appended.
        assert_eq!(
            resolve_path(&root.join("link/gone/./x/../y")),
            root.join("real/gone/y")
        );
        let key = Key::resolve(
            &KeyRequest {
                path: Some(&root.join("link/shop")),
                tag: None,
                allow_unrelated_path: false,
                guard_unrelated: true,
            },
            &root.join("real/shop"),
        )
        .unwrap();
        assert_eq!(key.path, root.join("real/shop"));
        // The guard compares canonical paths: reached through the link, the
        // working directory is still related.
        let key = Key::resolve(
            &KeyRequest {
                path: Some(Path::new("../../link/shop/sub")),
                tag: None,
                allow_unrelated_path: false,
                guard_unrelated: true,
            },
            &root.join("real/shop"),
        )
        .unwrap();
        assert_eq!(key.path, root.join("real/shop/sub"));
    }

    #[test]
    fn a_project_file_owned_by_another_user_is_passed_over() {
        if !rustix::process::geteuid().is_root() {
            crate::test_hooks::skip("needs root to give a file to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("shared/me/.git")).unwrap();
        let planted = root.join("shared").join(PROJECT_FILE);
        std::fs::write(&planted, "").unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        let found = discover_project_root(&root.join("shared/me")).unwrap();
        assert_eq!(found.dir, root.join("shared/me"));
        assert_eq!(found.source, RootSource::GitWorkTree);
        assert_eq!(found.ignored, vec![(planted.clone(), 65534)]);
        assert_eq!(find_project_root(&root.join("shared/me")), None);
        // Root's files are trusted.
        std::os::unix::fs::chown(&planted, Some(0), Some(0)).unwrap();
        assert_eq!(
            discover_project_root(&root.join("shared/me")).unwrap().dir,
            root.join("shared")
        );
    }
}
