//! The record of staging files: before a run starts writing a file under a temporary name on
//! a host (the k0s binary in "Stage k0s binaries", `files:` in "Upload files"), it appends that
//! name to a record next to the host lock (`<lock file>.staging`, created 0600 by root). The
//! clean-up of a failed run, the lock release of a successful one and "Gather k0s facts" of any
//! later apply remove exactly what the record names, then the record itself.
//!
//! An entry is an absolute path containing `.tmp.`; an entry ending in `.tmp.*` names the
//! temporary files of one destination (the transport picks `<dst>.tmp.<random>` itself, a
//! host-side download `<dst>.tmp.<pid>`). Any other line is ignored, so a damaged record can
//! never remove anything but staging files.

use crate::phases::{Context, Failure};
use crate::transport::{Cmd, Remote, shell_quote};

/// Where the record of a host whose lock file is `lock_file` lives.
pub fn record_path(lock_file: &str) -> String {
    format!("{lock_file}.staging")
}

/// Whether `entry` may stand in a record: absolute, one line, a staging name (or the
/// per-transfer directory of a relayed upload, `<home>/.k0sctl-relay-<id>`).
pub fn valid_entry(entry: &str) -> bool {
    entry.starts_with('/')
        && !entry.contains('\n')
        && (entry.contains(".tmp.") || is_relay_dir(entry))
}

/// `rm` of `paths` (files listed from a record): relay directories with their contents.
pub fn remove_paths(paths: &[String]) -> String {
    let (dirs, files): (Vec<&String>, Vec<&String>) = paths.iter().partition(|p| is_relay_dir(p));
    let q = |v: Vec<&String>| {
        v.iter()
            .map(|p| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("rm -f -- {} && rm -rf -- {}", q(files), q(dirs))
}

fn is_relay_dir(entry: &str) -> bool {
    entry
        .rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with(".k0sctl-relay-") && n.len() > ".k0sctl-relay-".len())
}

/// The record a relayed upload to a host with lock file `lock_file` appends its directory to.
pub fn relay_options(
    opts: crate::transport::files::UploadOptions,
    lock_file: &str,
) -> crate::transport::files::UploadOptions {
    opts.staging_record(record_path(lock_file))
}

/// The glob entry for the temporary files the transport writes for `dst`.
pub fn temp_files_of(dst: &str) -> String {
    format!("{dst}.tmp.*")
}

/// The shell command that appends `entries` to the record (creating it 0600); `None` when no
/// entry is valid. A caller may run it as the first step of the command that then stages the
/// files (`… || exit 1` before anything is written under those names).
pub fn record_script(lock_file: &str, entries: &[String]) -> Option<String> {
    let entries: Vec<&String> = entries.iter().filter(|e| valid_entry(e)).collect();
    if entries.is_empty() {
        return None;
    }
    let lines = entries
        .iter()
        .map(|e| shell_quote(e))
        .collect::<Vec<_>>()
        .join(" ");
    Some(format!(
        "umask 077; printf '%s\\n' {lines} >> {r}",
        r = shell_quote(&record_path(lock_file))
    ))
}

/// Appends `entries` to the record (creating it 0600), in one round trip, before anything is
/// written under those names.
pub async fn record(remote: &Remote, lock_file: &str, entries: &[String]) -> Result<(), Failure> {
    let Some(cmd) = record_script(lock_file, entries) else {
        return Ok(());
    };
    remote
        .run(Cmd::new(cmd).sudo().display_as("record staging files"))
        .await
        .map(|_| ())
        .with_context(|| {
            format!(
                "could not record the staging files in {}",
                record_path(lock_file)
            )
        })
}

/// A shell loop over the existing files the record names (in `$g`), running `body` for each.
fn for_each_recorded(lock_file: &str, body: &str) -> String {
    format!(
        "r={r}; if [ -f \"$r\" ]; then while IFS= read -r f; do case \"$f\" in /*.tmp.*|/*/.k0sctl-relay-?*) ;; *) continue ;; esac; \
         for g in $f; do if [ -e \"$g\" ]; then {body}; fi; done; done < \"$r\"; fi",
        r = shell_quote(&record_path(lock_file))
    )
}

/// Prints the existing files the record names, one per line (read only).
pub fn list_script(lock_file: &str) -> String {
    // IFS is empty inside the loop so that `$f` is globbed but never split at spaces.
    format!(
        "( IFS=; {} )",
        for_each_recorded(lock_file, "printf '%s\\n' \"$g\"")
    )
}

/// Removes every file the record names, then the record (a shell snippet; needs root).
pub fn remove_script(lock_file: &str) -> String {
    remove_script_and(lock_file, "")
}

/// [`remove_script`], removing `also` (shell words, quoted by the caller) with the record in
/// the same `rm` (one process fewer on the host than a second `rm`).
pub fn remove_script_and(lock_file: &str, also: &str) -> String {
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(" {also}")
    };
    format!(
        "( IFS=; {} ); rm -f {}{also}",
        for_each_recorded(
            lock_file,
            "case \"$g\" in */.k0sctl-relay-?*) rm -rf -- \"$g\" ;; *) rm -f -- \"$g\" ;; esac"
        ),
        shell_quote(&record_path(lock_file))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_staging_names_are_entries() {
        assert!(valid_entry("/usr/local/bin/k0s.tmp.1732950000000000000"));
        assert!(valid_entry(&temp_files_of("/etc/app/my file.conf")));
        assert!(!valid_entry("/usr/local/bin/k0s"));
        assert!(!valid_entry("relative.tmp.1"));
        assert!(!valid_entry("/a.tmp.1\n/etc/passwd"));
        assert!(valid_entry("/home/u/.k0sctl-relay-0123abcd"));
        assert!(!valid_entry("/home/u/.k0sctl-relay-"));
        assert!(!valid_entry("/home/u"));
    }

    /// The scripts against a real shell: what the record names goes, with glob entries and
    /// names with spaces; a line that is no staging name and the destinations stay.
    #[test]
    fn remove_script_removes_exactly_what_is_recorded() {
        let dir = tempfile::Builder::new()
            .prefix("staging-rec")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        let lock = format!("{d}/k0sctl");
        let touch = |n: &str| std::fs::write(format!("{d}/{n}"), b"x").unwrap();
        std::fs::create_dir_all(format!("{d}/home/.k0sctl-relay-ab12/sub")).unwrap();
        std::fs::write(format!("{d}/home/.k0sctl-relay-ab12/sub/data"), b"x").unwrap();
        std::fs::create_dir_all(format!("{d}/home/.k0sctl-relayed")).unwrap();
        for n in [
            "k0s",
            "k0s.tmp.1",
            "k0s.tmp.2",
            "my file",
            "my file.tmp.abc",
            "my file.tmp.def",
            "other.tmp.1",
            "keep",
        ] {
            touch(n);
        }
        let record = format!(
            "{d}/k0s.tmp.1\n{}\n{d}/keep\nnot-absolute.tmp.1\n{d}/gone.tmp.9\n{d}/home/.k0sctl-relay-ab12\n{d}/home/.k0sctl-relayed\n",
            temp_files_of(&format!("{d}/my file"))
        );
        std::fs::write(record_path(&lock), record).unwrap();
        let sh = |s: &str| {
            let out = std::process::Command::new("sh")
                .args(["-c", s])
                .output()
                .unwrap();
            assert!(out.status.success(), "{s}: {:?}", out);
            String::from_utf8(out.stdout).unwrap()
        };
        let mut listed: Vec<String> = sh(&list_script(&lock))
            .lines()
            .map(|l| l.trim_start_matches(&format!("{d}/")).to_string())
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                "home/.k0sctl-relay-ab12",
                "k0s.tmp.1",
                "my file.tmp.abc",
                "my file.tmp.def"
            ]
        );
        sh(&remove_script(&lock));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["home", "k0s", "k0s.tmp.2", "keep", "my file", "other.tmp.1"]
        );
        let home: Vec<String> = std::fs::read_dir(dir.path().join("home"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            home,
            [".k0sctl-relayed"],
            "the relay directory goes, nothing else"
        );
        // What "Gather k0s facts" removes from a listing: files, and relay directories whole.
        std::fs::create_dir_all(format!("{d}/home/.k0sctl-relay-cd34/x")).unwrap();
        sh(&remove_paths(&[
            format!("{d}/k0s.tmp.2"),
            format!("{d}/home/.k0sctl-relay-cd34"),
        ]));
        assert!(!std::path::Path::new(&format!("{d}/k0s.tmp.2")).exists());
        assert!(!std::path::Path::new(&format!("{d}/home/.k0sctl-relay-cd34")).exists());
        sh(&remove_paths(&[]));
        // Without a record there is nothing to do.
        assert_eq!(sh(&list_script(&lock)), "");
        sh(&remove_script(&lock));
    }
}
