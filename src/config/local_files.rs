//! Local `files:` sources (`src` that is neither a URL nor inline `data`): what they name on
//! this machine. Used when the configuration is loaded (so a missing source, a glob matching
//! nothing, or several matches for a single-file `dst` fail every command before any host is
//! touched, as k0sctl resolves them before connecting) and by the upload phase.
//!
//! Relative sources resolve against the directory of the configuration file.

use std::path::{Path, PathBuf};

/// Why a local source names no file.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceError {
    /// A plain path that does not exist.
    Missing(PathBuf),
    /// A glob (or an empty directory) that matches no regular file.
    NoMatch,
    /// A pattern the glob syntax rejects.
    BadGlob(String),
}

/// True when `src` is a glob pattern rather than a path.
pub fn is_glob(src: &str) -> bool {
    src.contains(['*', '?', '[', '{'])
}

/// `src` made absolute against `base`.
pub fn full_path(src: &str, base: &Path) -> PathBuf {
    let p = Path::new(src);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Every regular file under `dir` that `keep` accepts, with its path relative to `dir`, sorted.
pub fn walk_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<(PathBuf, PathBuf)> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && keep(e.path()))
        .filter_map(|e| {
            let rel = e.path().strip_prefix(dir).ok()?.to_path_buf();
            Some((e.path().to_path_buf(), rel))
        })
        .collect();
    out.sort();
    out
}

/// The files a local `src` names: (full path, path relative to the glob's or directory's
/// root, or the file name for a single file). Never empty on success.
pub fn matches(src: &str, base: &Path) -> Result<Vec<(PathBuf, PathBuf)>, SourceError> {
    let full = full_path(src, base);
    let found = if is_glob(src) {
        let first = src.find(['*', '?', '[', '{']).unwrap_or(src.len());
        let root = match src[..first].rfind('/') {
            Some(i) => &src[..i],
            None => ".",
        };
        let root = full_path(if root.is_empty() { "/" } else { root }, base);
        let glob = globset::GlobBuilder::new(&full.to_string_lossy())
            .literal_separator(true)
            .build()
            .map_err(|e| SourceError::BadGlob(e.kind().to_string()))?
            .compile_matcher();
        walk_files(&root, |p| glob.is_match(p))
    } else if full.is_dir() {
        walk_files(&full, |_| true)
    } else if full.is_file() {
        let name = full.file_name().map(PathBuf::from).unwrap_or_default();
        vec![(full.clone(), name)]
    } else {
        return Err(SourceError::Missing(full));
    };
    if found.is_empty() {
        return Err(SourceError::NoMatch);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_dirs_and_globs() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        std::fs::create_dir_all(b.join("up/sub")).unwrap();
        std::fs::create_dir_all(b.join("empty")).unwrap();
        std::fs::write(b.join("up/a.txt"), "a").unwrap();
        std::fs::write(b.join("up/sub/b.txt"), "b").unwrap();
        let rel = |r: Result<Vec<(PathBuf, PathBuf)>, SourceError>| -> Vec<String> {
            r.unwrap()
                .into_iter()
                .map(|(_, r)| r.display().to_string())
                .collect()
        };
        assert_eq!(rel(matches("up/a.txt", b)), ["a.txt"]);
        assert_eq!(rel(matches("./up", b)), ["a.txt", "sub/b.txt"]);
        assert_eq!(rel(matches("up/**/*.txt", b)), ["a.txt", "sub/b.txt"]);
        assert_eq!(rel(matches("up/*.txt", b)), ["a.txt"]);
        let abs = b.join("up/a.txt").display().to_string();
        assert_eq!(rel(matches(&abs, Path::new("/nowhere"))), ["a.txt"]);
        assert_eq!(
            matches("up/nope.txt", b),
            Err(SourceError::Missing(b.join("up/nope.txt")))
        );
        assert_eq!(matches("up/*.conf", b), Err(SourceError::NoMatch));
        assert_eq!(matches("empty", b), Err(SourceError::NoMatch));
        assert!(matches!(
            matches("up/[a.txt", b),
            Err(SourceError::BadGlob(_))
        ));
    }
}
