//! "Upload files to hosts": the hosts' `files:` entries (k0sctl's `UploadFile`) — a local file, a
//! directory (every file under it), a glob, a URL (downloaded on the host, `%` tokens
//! expanded) or inline `data` — put in place with their mode (`perm`, else the local file's),
//! owner (`user`/`group`) and created directories (`dirPerm`, default 0755).
//!
//! Unchanged files are not re-sent: one read-only round trip per host states every
//! destination (size, mode, owner, and the SHA-256 when the size matches), and only files whose
//! content differs are uploaded (atomically and verified, see [`crate::transport::files`]);
//! a mode or owner difference alone is fixed in place. URL sources are fetched on the host to a
//! temp name and replace the destination only when the bytes differ. A dry run does the same
//! reads (for URLs it hashes the download stream without writing it) and plans the rest.

use crate::phases::{Context, Failure, HostFailure, each_host};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::UploadFile;
use crate::k0s::download::expand;
use crate::transport::files::UploadOptions;
use crate::transport::{Cmd, relay, shell_quote};

use super::{HostState, Phase, PhaseFuture, State, collect};

pub struct UploadFiles;

pub const TITLE: &str = "Upload files to hosts";

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Local(PathBuf),
    Data(Vec<u8>),
    /// Fetched on the host.
    Url(String),
}

/// One concrete file to put on a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// How logs name it: the entry's `name`, else its source.
    pub label: String,
    pub dst: String,
    pub content: Content,
    /// Size and SHA-256 of local/inline content.
    pub size: u64,
    pub sha256: String,
    /// The mode to set; `None` keeps an existing file's mode (0644 for a new one).
    pub mode: Option<u32>,
    /// `chown` argument (`user`, `user:group` or `:group`).
    pub owner: Option<String>,
    pub dir_mode: u32,
    /// Local modification time to carry over (seconds since the epoch).
    pub mtime: Option<i64>,
}

fn octal(p: &Option<crate::config::Perm>) -> Option<u32> {
    p.as_ref()
        .and_then(|p| u32::from_str_radix(&p.octal, 8).ok())
}

fn join_dst(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), name)
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn local_item(f: &UploadFile, path: &Path, dst: String) -> Result<Item, Failure> {
    use std::os::unix::fs::PermissionsExt;
    // Hashed once per file however many hosts get it, without holding it in memory.
    let (size, sha256) = crate::transport::files::local_sha256(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let md = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    Ok(Item {
        label: if f.name.is_empty() {
            path.display().to_string()
        } else {
            f.name.clone()
        },
        dst,
        size,
        sha256,
        content: Content::Local(path.to_path_buf()),
        mode: octal(&f.perm).or(Some(md.permissions().mode() & 0o7777)),
        owner: owner(f),
        dir_mode: octal(&f.dir_perm).unwrap_or(0o755),
        mtime,
    })
}

fn owner(f: &UploadFile) -> Option<String> {
    match (f.user.is_empty(), f.group.is_empty()) {
        (true, true) => None,
        (false, true) => Some(f.user.clone()),
        (true, false) => Some(format!(":{}", f.group)),
        (false, false) => Some(format!("{}:{}", f.user, f.group)),
    }
}

/// Turns one `files:` entry into the concrete files it names. Local paths are relative to
/// the manifest's directory (`base`); URLs get their `%` tokens expanded.
pub fn resolve(
    f: &UploadFile,
    base: &Path,
    version: &str,
    arch: &str,
) -> Result<Vec<Item>, Failure> {
    if f.has_data() {
        let dst = if f.dst.is_empty() {
            join_dst(&f.dst_dir, &f.name)
        } else {
            f.dst.clone()
        };
        let bytes = f.data.clone().into_bytes();
        return Ok(vec![Item {
            label: if f.name.is_empty() {
                dst.clone()
            } else {
                f.name.clone()
            },
            dst,
            size: bytes.len() as u64,
            sha256: digest(&bytes),
            content: Content::Data(bytes),
            mode: octal(&f.perm),
            owner: owner(f),
            dir_mode: octal(&f.dir_perm).unwrap_or(0o755),
            mtime: None,
        }]);
    }
    if f.is_url() {
        let url = expand(&f.src, version, arch, false);
        let dst = if f.dst.is_empty() {
            let path = url.split(['?', '#']).next().unwrap_or(&url);
            let name = path.rsplit('/').next().unwrap_or("");
            if name.is_empty() {
                return Err(format!("cannot name a file after {url}; set dst").into());
            }
            join_dst(&f.dst_dir, name)
        } else {
            f.dst.clone()
        };
        return Ok(vec![Item {
            label: if f.name.is_empty() {
                url.clone()
            } else {
                f.name.clone()
            },
            dst,
            content: Content::Url(url),
            size: 0,
            sha256: String::new(),
            mode: octal(&f.perm),
            owner: owner(f),
            dir_mode: octal(&f.dir_perm).unwrap_or(0o755),
            mtime: None,
        }]);
    }
    use crate::config::local_files::{SourceError, matches as local_matches};
    let matches = local_matches(&f.src, base).map_err(|e| match e {
        SourceError::Missing(p) => format!("{} does not exist", p.display()),
        SourceError::NoMatch => format!("no files found for {}", f.src),
        SourceError::BadGlob(e) => format!("invalid glob {:?}: {e}", f.src),
    })?;
    if !f.dst.is_empty() && matches.len() > 1 {
        return Err(format!(
            "found multiple files for {} but single file dst {} defined",
            f.src, f.dst
        )
        .into());
    }
    matches
        .into_iter()
        .map(|(path, rel)| {
            let dst = if f.dst.is_empty() {
                join_dst(&f.dst_dir, &rel.to_string_lossy())
            } else {
                f.dst.clone()
            };
            local_item(f, &path, dst)
        })
        .collect()
}

/// What a host's destination looks like now.
#[derive(Debug, Clone, PartialEq)]
enum Remote {
    Missing {
        dir: bool,
    },
    File {
        mode: u32,
        owner: [String; 4],
        sha256: Option<String>,
    },
    NotAFile,
}

/// The read-only probe: one line per item, `@<i> <dir> missing|other|file <mode> <user>
/// <uid> <group> <gid> <sha or ->`.
fn probe_script(items: &[Item]) -> String {
    let mut s = String::new();
    for (i, it) in items.iter().enumerate() {
        if matches!(it.content, Content::Url(_)) {
            continue;
        }
        let p = shell_quote(&it.dst);
        let dir = shell_quote(
            it.dst
                .rsplit_once('/')
                .map_or(".", |(d, _)| if d.is_empty() { "/" } else { d }),
        );
        s.push_str(&format!(
            "d=0; [ -d {dir} ] && d=1; \
             if [ -f {p} ] && [ ! -L {p} ]; then set -- $(stat -c '%a %U %u %G %g %s' -- {p}); \
             if [ \"$6\" = {size} ]; then h=$( (openssl dgst -sha256 -r {p} 2>/dev/null || sha256sum {p}) | cut -c1-64); else h=-; fi; \
             echo \"@{i} $d file $1 $2 $3 $4 $5 $h\"; \
             elif [ -e {p} ]; then echo \"@{i} $d other\"; else echo \"@{i} $d missing\"; fi\n",
            size = it.size
        ));
    }
    s
}

fn parse_probe(out: &str, n: usize) -> Vec<Option<Remote>> {
    let mut v = vec![None; n];
    for line in out.lines() {
        let Some(rest) = line.strip_prefix('@') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let Some(i) = f
            .first()
            .and_then(|x| x.parse::<usize>().ok())
            .filter(|&i| i < n)
        else {
            continue;
        };
        v[i] = match f.get(2).copied() {
            Some("missing") => Some(Remote::Missing {
                dir: f.get(1) == Some(&"1"),
            }),
            Some("other") => Some(Remote::NotAFile),
            Some("file") if f.len() >= 9 => Some(Remote::File {
                mode: u32::from_str_radix(f[3], 8).unwrap_or(0),
                owner: [f[4].into(), f[5].into(), f[6].into(), f[7].into()],
                sha256: (f[8] != "-").then(|| f[8].to_string()),
            }),
            _ => None,
        };
    }
    v
}

/// The steps one item needs.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Unchanged,
    /// Send the content (creating the directory first when it is missing).
    Upload {
        mkdir: bool,
        mode: u32,
    },
    /// Fix mode and/or owner in place.
    Fix {
        chmod: Option<u32>,
        chown: bool,
    },
    /// Fetch on the host; replaced only when different.
    Download,
}

fn owner_matches(want: &str, have: &[String; 4]) -> bool {
    let (u, g) = want.split_once(':').unwrap_or((want, ""));
    (u.is_empty() || u == have[0] || u == have[1]) && (g.is_empty() || g == have[2] || g == have[3])
}

fn decide(it: &Item, r: Option<&Remote>) -> Result<Step, Failure> {
    if matches!(it.content, Content::Url(_)) {
        return Ok(Step::Download);
    }
    match r {
        None => Err(format!("could not inspect {}", it.dst).into()),
        Some(Remote::NotAFile) => {
            Err(format!("{} exists and is not a regular file", it.dst).into())
        }
        Some(Remote::Missing { dir }) => Ok(Step::Upload {
            mkdir: !dir,
            mode: it.mode.unwrap_or(0o644),
        }),
        Some(Remote::File {
            mode,
            owner,
            sha256,
        }) => {
            if sha256.as_deref() != Some(it.sha256.as_str()) {
                return Ok(Step::Upload {
                    mkdir: false,
                    mode: it.mode.unwrap_or(*mode),
                });
            }
            let chmod = it.mode.filter(|m| m != mode);
            let chown = it
                .owner
                .as_deref()
                .is_some_and(|o| !owner_matches(o, owner));
            Ok(if chmod.is_none() && !chown {
                Step::Unchanged
            } else {
                Step::Fix { chmod, chown }
            })
        }
    }
}

fn dir_of(dst: &str) -> &str {
    match dst.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => ".",
    }
}

/// Resolves a host's entries and decides each file's step (read-only).
async fn plan_host(
    h: &HostState,
    base: &Path,
    version: &str,
) -> Result<Vec<(Item, Step)>, Failure> {
    let p = h.probed()?;
    // Resolving reads and hashes local files: off the async workers, so that the other hosts'
    // round trips go on meanwhile.
    let (files, base2, version2, arch) = (
        h.config.files.clone(),
        base.to_path_buf(),
        version.to_string(),
        p.facts.arch.clone(),
    );
    let items = tokio::task::spawn_blocking(move || {
        let mut items = Vec::new();
        for f in &files {
            items.extend(resolve(f, &base2, &version2, &arch)?);
        }
        Ok::<_, Failure>(items)
    })
    .await
    .map_err(|e| Failure::from(format!("resolving files: {e}")))??;
    let script = probe_script(&items);
    let probed = if script.is_empty() {
        vec![None; items.len()]
    } else {
        let out = p.remote.run(Cmd::new(script).sudo()).await?;
        parse_probe(&out.stdout_str(), items.len())
    };
    items
        .into_iter()
        .zip(probed)
        .map(|(it, r)| decide(&it, r.as_ref()).map(|s| (it, s)))
        .collect()
}

fn describe(it: &Item, step: &Step) -> Option<String> {
    Some(match step {
        Step::Unchanged => return None,
        Step::Upload { mode, .. } => format!("upload {} to {} (mode {mode:o})", it.label, it.dst),
        Step::Fix { chmod, chown } => {
            let mut parts = Vec::new();
            if let Some(m) = chmod {
                parts.push(format!("chmod {m:o}"));
            }
            if *chown {
                parts.push(format!("chown {}", it.owner.as_deref().unwrap_or("")));
            }
            format!("{} {}", parts.join(", "), it.dst)
        }
        Step::Download => match &it.content {
            Content::Url(u) => format!("download {u} to {} on the host", it.dst),
            _ => unreachable!(),
        },
    })
}

/// The upload steps worth relaying: the same local file (path and SHA-256) uploaded to more
/// than one host, at least [`relay::MIN_RELAY_BYTES`] big. Returns the set of `(host index,
/// step index)` taken out of the per-host work, and the groups, in manifest order.
#[allow(clippy::type_complexity)]
fn relay_groups<E>(
    plans: &[(usize, Result<Vec<(Item, Step)>, E>)],
) -> (Vec<(usize, usize)>, Vec<Vec<(usize, usize)>>) {
    let mut groups: Vec<((PathBuf, String), Vec<(usize, usize)>)> = Vec::new();
    for (idx, planned) in plans {
        let Ok(steps) = planned else { continue };
        for (n, (it, step)) in steps.iter().enumerate() {
            let (Content::Local(path), Step::Upload { .. }) = (&it.content, step) else {
                continue;
            };
            if it.size < relay::MIN_RELAY_BYTES {
                continue;
            }
            let key = (path.clone(), it.sha256.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                // One copy per host: a second destination on the same host goes direct.
                Some((_, m)) if !m.iter().any(|(i, _)| i == idx) => m.push((*idx, n)),
                Some(_) => {}
                None => groups.push((key, vec![(*idx, n)])),
            }
        }
    }
    let groups: Vec<Vec<(usize, usize)>> = groups
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.len() >= 2)
        .collect();
    (groups.iter().flatten().copied().collect(), groups)
}

fn upload_options(it: &Item, step: &Step) -> UploadOptions {
    let mode = match step {
        Step::Upload { mode, .. } => *mode,
        _ => it.mode.unwrap_or(0o644),
    };
    let mut opts = UploadOptions::default().mode(mode).sudo(true);
    if let Some(o) = &it.owner {
        opts = opts.owner(o.clone());
    }
    if let Some(t) = it.mtime {
        opts = opts.mtime(t);
    }
    opts
}

async fn make_dir(h: &HostState, it: &Item) -> Result<(), Failure> {
    let p = h.probed()?;
    let d = shell_quote(dir_of(&it.dst));
    let mut cmd = format!("mkdir -p -m {:o} {d}", it.dir_mode);
    if let Some(o) = &it.owner {
        cmd.push_str(&format!(" && chown {} {d}", shell_quote(o)));
    }
    p.remote
        .run(Cmd::new(cmd).sudo())
        .await
        .map(|_| ())
        .map_err(Failure::from)
}

async fn apply_step(h: &HostState, it: &Item, step: &Step) -> Result<Option<String>, Failure> {
    let p = h.probed()?;
    let r = &p.remote;
    let q = shell_quote(&it.dst);
    match step {
        Step::Unchanged => {
            tracing::debug!(about = %h.name, "{} is up to date", it.dst);
            Ok(None)
        }
        Step::Upload { mkdir, mode } => {
            if *mkdir {
                let d = shell_quote(dir_of(&it.dst));
                let mut cmd = format!("mkdir -p -m {:o} {d}", it.dir_mode);
                if let Some(o) = &it.owner {
                    cmd.push_str(&format!(" && chown {} {d}", shell_quote(o)));
                }
                r.run(Cmd::new(cmd).sudo()).await?;
            }
            tracing::info!(about = %h.name, "uploading {} to {}", it.label, it.dst);
            let mut opts = UploadOptions::default().mode(*mode).sudo(true);
            if let Some(o) = &it.owner {
                opts = opts.owner(o.clone());
            }
            if let Some(t) = it.mtime {
                opts = opts.mtime(t);
            }
            let res = match &it.content {
                Content::Local(path) => r.upload_file(path, &it.dst, &opts).await,
                Content::Data(b) => {
                    r.upload(std::io::Cursor::new(b.clone()), &it.dst, &opts)
                        .await
                }
                Content::Url(_) => unreachable!("URLs are downloaded"),
            };
            res?;
            Ok(describe(it, step).map(|d| d.replacen("upload", "uploaded", 1)))
        }
        Step::Fix { chmod, chown } => {
            let mut cmds = Vec::new();
            if let Some(m) = chmod {
                cmds.push(format!("chmod {m:o} {q}"));
            }
            if *chown {
                cmds.push(format!(
                    "chown {} {q}",
                    shell_quote(it.owner.as_deref().unwrap_or(""))
                ));
            }
            r.run(Cmd::new(cmds.join(" && ")).sudo()).await?;
            Ok(describe(it, step).map(|d| format!("set {d}")))
        }
        Step::Download => {
            let Content::Url(url) = &it.content else {
                unreachable!()
            };
            let u = shell_quote(url);
            let d = shell_quote(dir_of(&it.dst));
            let mut fin = format!("chmod {:o} \"$t\"", it.mode.unwrap_or(0o644));
            if let Some(o) = &it.owner {
                fin.push_str(&format!(" && chown {} \"$t\"", shell_quote(o)));
            }
            let script = format!(
                "[ -d {d} ] || mkdir -p -m {dm:o} {d} || exit 1\n\
                 t={q}.tmp.$$\n\
                 if command -v curl >/dev/null 2>&1; then curl -sSLf -o \"$t\" -- {u}; else wget -qO \"$t\" -- {u}; fi || {{ rc=$?; rm -f \"$t\"; echo \"downloading {url} failed\" >&2; exit $rc; }}\n\
                 if [ -f {q} ] && cmp -s \"$t\" {q} && [ \"$(stat -c %a \"$t\")\" = \"$(stat -c %a {q})\" ]; then rm -f \"$t\"; echo unchanged; exit 0; fi\n\
                 {fin} && mv -f \"$t\" {q} || {{ rc=$?; rm -f \"$t\"; exit $rc; }}\n\
                 echo changed\n",
                dm = it.dir_mode,
                url = url.replace(['"', '\\', '$', '`'], "")
            );
            tracing::info!(about = %h.name, "downloading {url} to {}", it.dst);
            let out = r.run(Cmd::new(script).sudo()).await?;
            Ok((out.stdout_str().trim() == "changed")
                .then(|| format!("downloaded {url} to {}", it.dst)))
        }
    }
}

/// In a dry run a URL source is hashed as it streams by (nothing is written) and compared with
/// the destination.
async fn url_differs(h: &HostState, it: &Item) -> Result<bool, Failure> {
    let Content::Url(url) = &it.content else {
        return Ok(true);
    };
    let p = h.probed()?;
    let u = shell_quote(url);
    let q = shell_quote(&it.dst);
    let script = format!(
        "[ -f {q} ] || {{ echo differs; exit 0; }}\n\
         want=$( (openssl dgst -sha256 -r {q} 2>/dev/null || sha256sum {q}) | cut -c1-64)\n\
         got=$( (if command -v curl >/dev/null 2>&1; then curl -sSLf -- {u}; else wget -qO- -- {u}; fi) | (openssl dgst -sha256 -r 2>/dev/null || sha256sum) | cut -c1-64)\n\
         [ \"$want\" = \"$got\" ] && echo same || echo differs\n"
    );
    let out = p.remote.run(Cmd::new(script).sudo()).await?;
    Ok(out.stdout_str().trim() != "same")
}

fn has_files(h: &HostState) -> bool {
    !h.config.files.is_empty() && !h.config.reset
}

impl Phase for UploadFiles {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(has_files)
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let base = state.config.base_dir.clone();
            let version = state
                .target_version()
                .map(|v| v.to_string())
                .unwrap_or_default();
            let limits = state.pool.limits().clone();
            let hosts: Vec<&HostState> = state.hosts.iter().filter(|h| has_files(h)).collect();
            let planned = each_host(&limits, hosts.iter().copied(), |h| {
                let (base, version) = (base.clone(), version.clone());
                async move { plan_host(h, &base, &version).await }
            })
            .await;
            let mut plans = Vec::new();
            let mut plan_failures = Vec::new();
            for (h, r) in hosts.iter().zip(planned) {
                match r {
                    Ok(steps) => plans.push((h.index, Ok::<_, ()>(steps))),
                    Err(f) => plan_failures.push((h.index, f)),
                }
            }
            let (relayed, groups) = relay_groups(&plans);
            let results = each_host(
                &limits,
                plans.iter().map(|p| (&state.hosts[p.0], p)),
                |(h, (idx, planned))| {
                    let relayed = &relayed;
                    async move {
                        let steps = planned.clone().unwrap_or_default();
                        // The temporary names of every file written below (here or relayed),
                        // recorded before the first byte goes out.
                        let staged: Vec<String> = steps
                            .iter()
                            .filter(|(_, s)| matches!(s, Step::Upload { .. } | Step::Download))
                            .map(|(it, _)| super::steps::staging::temp_files_of(&it.dst))
                            .collect();
                        let p = h.probed()?;
                        super::steps::staging::record(&p.remote, &p.facts.lock_file, &staged)
                            .await?;
                        let mut done = Vec::new();
                        for (n, (it, step)) in steps.iter().enumerate() {
                            // Relayed uploads only get their directory here; the bytes come below.
                            let step = match step {
                                Step::Upload { mkdir, .. } if relayed.contains(&(*idx, n)) => {
                                    if *mkdir {
                                        make_dir(h, it)
                                            .await
                                            .map_err(|e| e.context(it.label.clone()))?;
                                    }
                                    continue;
                                }
                                s => s,
                            };
                            if let Some(d) = apply_step(h, it, step)
                                .await
                                .map_err(|e| e.context(it.label.clone()))?
                            {
                                done.push(d);
                            }
                        }
                        Ok((*idx, done))
                    }
                },
            )
            .await;
            let mut failed: Vec<usize> = plan_failures.iter().map(|(i, _)| *i).collect();
            let mut plain: Vec<Result<(), HostFailure>> =
                plan_failures.into_iter().map(|(_, f)| Err(f)).collect();
            let mut touched: Vec<usize> = Vec::new();
            for (r, (idx, _)) in results.into_iter().zip(&plans) {
                match r {
                    Ok((idx, done)) => {
                        let host = state.hosts[idx].name.clone();
                        if !done.is_empty() {
                            touched.push(idx);
                        }
                        for d in done {
                            state.changed(host.clone(), d);
                        }
                    }
                    Err(e) => {
                        failed.push(*idx);
                        plain.push(Err(e));
                    }
                }
            }
            // Each file that goes to several hosts: sent once by the operator, relayed on.
            for members in groups {
                let members: Vec<(usize, usize)> = members
                    .into_iter()
                    .filter(|(i, _)| !failed.contains(i))
                    .collect();
                let Some(&(i0, n0)) = members.first() else {
                    continue;
                };
                let item = |i: usize, n: usize| -> &(Item, Step) {
                    &plans
                        .iter()
                        .find(|(x, _)| *x == i)
                        .expect("planned")
                        .1
                        .as_ref()
                        .expect("ok")[n]
                };
                let (first, _) = item(i0, n0);
                let Content::Local(file) = first.content.clone() else {
                    continue;
                };
                let targets: Vec<relay::Target> = members
                    .iter()
                    .filter_map(|&(i, n)| {
                        let h = &state.hosts[i];
                        let p = h.host.as_ref()?;
                        let (it, step) = item(i, n);
                        Some(relay::Target {
                            name: h.name.clone(),
                            remote: p.remote.clone(),
                            endpoint: relay::endpoint(h.spec.as_ref(), &p.remote),
                            dst: it.dst.clone(),
                            opts: super::steps::staging::relay_options(
                                upload_options(it, step),
                                &p.facts.lock_file,
                            ),
                        })
                    })
                    .collect();
                let plan = relay::plan(&targets, first.size);
                if plan.chain.len() >= 2 {
                    tracing::info!("sending {}: {}", first.label, plan.describe(&targets));
                }
                for (from, to) in plan.edges(&targets) {
                    state.emit(serde_json::json!({
                        "event": "relay", "file": first.label, "from": from, "to": to
                    }));
                }
                let delivered =
                    relay::deliver(&file, &first.sha256, &targets, &plan, state.pool.limits())
                        .await;
                for (&(i, n), r) in members.iter().zip(delivered) {
                    let (it, step) = item(i, n);
                    let host = state.hosts[i].name.clone();
                    match r {
                        Ok(()) => {
                            touched.push(i);
                            if let Some(d) = describe(it, step) {
                                state.changed(host, d.replacen("upload", "uploaded", 1));
                            }
                        }
                        Err(e) => {
                            failed.push(i);
                            plain.push(Err((host, format!("{}: {e}", it.label).into())));
                        }
                    }
                }
            }
            for (idx, _) in &plans {
                if !touched.contains(idx) && !failed.contains(idx) {
                    tracing::info!(about = %state.hosts[*idx].name, "files are up to date");
                }
            }
            collect(TITLE, plain)
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let base = state.config.base_dir.clone();
            let version = state
                .target_version()
                .map(|v| v.to_string())
                .unwrap_or_default();
            let hosts: Vec<(&HostState, usize)> = state
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| has_files(h))
                .map(|(idx, h)| (h, idx))
                .collect();
            let planned = each_host(state.pool.limits(), hosts.iter().copied(), |(h, _)| {
                let (base, version) = (base.clone(), version.clone());
                async move { plan_host(h, &base, &version).await }
            })
            .await;
            let plans: Vec<_> = hosts.iter().map(|(_, idx)| *idx).zip(planned).collect();
            // Who sends each relayed file to whom, per (host, step): the sender's name.
            let (_, groups) = relay_groups(&plans);
            let mut sender: Vec<((usize, usize), String)> = Vec::new();
            for members in groups {
                let targets: Vec<relay::Target> = members
                    .iter()
                    .filter_map(|&(i, _)| {
                        let h = &state.hosts[i];
                        let p = h.host.as_ref()?;
                        Some(relay::Target {
                            name: h.name.clone(),
                            remote: p.remote.clone(),
                            endpoint: relay::endpoint(h.spec.as_ref(), &p.remote),
                            dst: String::new(),
                            opts: UploadOptions::default(),
                        })
                    })
                    .collect();
                let (i0, n0) = members[0];
                let Some(Ok(steps)) = plans.iter().find(|(x, _)| *x == i0).map(|(_, p)| p) else {
                    continue;
                };
                let (first, _) = &steps[n0];
                let plan = relay::plan(&targets, first.size);
                if plan.chain.len() < 2 {
                    continue;
                }
                for (from, to) in plan.edges(&targets) {
                    state.emit(serde_json::json!({
                        "event": "relay", "file": first.label, "from": from, "to": to
                    }));
                    if let Some(&(i, n)) = members.iter().find(|(i, _)| state.hosts[*i].name == to)
                    {
                        sender.push(((i, n), from));
                    }
                }
            }
            let results = each_host(
                state.pool.limits(),
                plans
                    .into_iter()
                    .map(|(idx, planned)| (&state.hosts[idx], (idx, planned))),
                |(h, (idx, planned))| {
                    let sender = &sender;
                    async move {
                        // A host whose planning failed fails here, under its name.
                        let steps = planned.map_err(|(_, e)| e)?;
                        let mut plan = Vec::new();
                        for (n, (it, step)) in steps.iter().enumerate() {
                            if *step == Step::Download && !url_differs(h, it).await? {
                                continue;
                            }
                            let from = sender.iter().find(|(k, _)| *k == (idx, n)).map(|(_, f)| f);
                            plan.extend(describe(it, step).map(|d| match from {
                                Some(f) if f.as_str() == "operator" => {
                                    format!("{d} (sent by the operator)")
                                }
                                Some(f) => format!("{d} (relayed from {f})"),
                                None => d,
                            }));
                        }
                        Ok((h.name.clone(), plan))
                    }
                },
            )
            .await;
            let mut plain = Vec::new();
            for r in results {
                plain.push(r.map(|(host, plan)| {
                    for d in plan {
                        state.planned(host.clone(), d);
                    }
                }));
            }
            collect(TITLE, plain)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(src: &str, dst: &str, dst_dir: &str) -> UploadFile {
        UploadFile {
            src: src.into(),
            dst: dst.into(),
            dst_dir: dst_dir.into(),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_files_dirs_globs_data_and_urls() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        std::fs::create_dir_all(b.join("etc/sub")).unwrap();
        std::fs::write(b.join("etc/a.conf"), "a").unwrap();
        std::fs::write(b.join("etc/sub/b.conf"), "bb").unwrap();
        std::fs::write(b.join("etc/c.txt"), "c").unwrap();

        let one = resolve(&file("etc/a.conf", "", "/opt/x"), b, "v1", "amd64").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].dst, "/opt/x/a.conf");
        assert_eq!(one[0].size, 1);

        let dir = resolve(&file("etc", "", "/opt/x/"), b, "v1", "amd64").unwrap();
        let dsts: Vec<&str> = dir.iter().map(|i| i.dst.as_str()).collect();
        assert_eq!(dsts, ["/opt/x/a.conf", "/opt/x/c.txt", "/opt/x/sub/b.conf"]);

        let glob = resolve(&file("etc/**/*.conf", "", "/o"), b, "v1", "amd64").unwrap();
        let dsts: Vec<&str> = glob.iter().map(|i| i.dst.as_str()).collect();
        assert_eq!(dsts, ["/o/a.conf", "/o/sub/b.conf"]);

        let e = resolve(&file("etc/*.conf*", "/one", ""), b, "v1", "amd64");
        assert!(e.is_ok(), "one match is fine with dst: {e:?}");
        let e = resolve(&file("etc/**/*.conf", "/one", ""), b, "v1", "amd64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "found multiple files for etc/**/*.conf but single file dst /one defined"
        );
        let e = resolve(&file("etc/*.nope", "", "/o"), b, "v1", "amd64").unwrap_err();
        assert_eq!(e.to_string(), "no files found for etc/*.nope");

        let mut data = file("", "", "/etc/x");
        data.name = "motd".into();
        data.data = "hello\n".into();
        let it = &resolve(&data, b, "v1", "amd64").unwrap()[0];
        assert_eq!((it.dst.as_str(), it.mode), ("/etc/x/motd", None));
        assert_eq!(it.sha256, digest(b"hello\n"));

        let url = file("https://example.invalid/%v/k0s-%p.tar.gz?x=1", "", "/tmp");
        let it = &resolve(&url, b, "v1.30.5+k0s.0", "arm64").unwrap()[0];
        assert_eq!(it.dst, "/tmp/k0s-arm64.tar.gz");
        assert_eq!(
            it.content,
            Content::Url("https://example.invalid/v1.30.5%2Bk0s.0/k0s-arm64.tar.gz?x=1".into())
        );
    }

    #[test]
    fn decides_only_what_differs() {
        let it = Item {
            label: "x".into(),
            dst: "/etc/x".into(),
            content: Content::Data(b"x".to_vec()),
            size: 1,
            sha256: "abc".into(),
            mode: Some(0o640),
            owner: Some("root:adm".into()),
            dir_mode: 0o755,
            mtime: None,
        };
        let owner = ["root".to_string(), "0".into(), "adm".into(), "4".into()];
        let same = Remote::File {
            mode: 0o640,
            owner: owner.clone(),
            sha256: Some("abc".into()),
        };
        assert_eq!(decide(&it, Some(&same)).unwrap(), Step::Unchanged);
        let other_mode = Remote::File {
            mode: 0o644,
            owner: owner.clone(),
            sha256: Some("abc".into()),
        };
        assert_eq!(
            decide(&it, Some(&other_mode)).unwrap(),
            Step::Fix {
                chmod: Some(0o640),
                chown: false
            }
        );
        let other_bytes = Remote::File {
            mode: 0o644,
            owner,
            sha256: None,
        };
        assert_eq!(
            decide(&it, Some(&other_bytes)).unwrap(),
            Step::Upload {
                mkdir: false,
                mode: 0o640
            }
        );
        assert_eq!(
            decide(&it, Some(&Remote::Missing { dir: false })).unwrap(),
            Step::Upload {
                mkdir: true,
                mode: 0o640
            }
        );
        assert!(decide(&it, Some(&Remote::NotAFile)).is_err());
        assert_eq!(
            parse_probe(
                "@0 1 file 640 root 0 adm 4 abc\n@1 0 missing\n@2 1 other\n",
                3
            ),
            vec![
                Some(same),
                Some(Remote::Missing { dir: false }),
                Some(Remote::NotAFile)
            ]
        );
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const MOTD: &str = "hello\n";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.state.hosts[1].config.files = vec![
            UploadFile {
                name: "motd".into(),
                data: MOTD.into(),
                dst: "/etc/motd".into(),
                ..Default::default()
            },
            UploadFile {
                name: "tool".into(),
                src: "https://example.com/tool-%v".into(),
                dst: "/opt/bin/tool".into(),
                ..Default::default()
            },
        ];
        k.target("v1.31.1+k0s.0");
        k
    }

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn runs_only_for_hosts_with_files() {
        let mut k = kit(Default::default());
        assert!(UploadFiles.should_run(&k.state));
        k.state.hosts[1].config.reset = true;
        assert!(!UploadFiles.should_run(&k.state));
    }

    /// One read-only probe, then a missing file is uploaded (0644) and the URL is fetched on
    /// the host (`%v` expanded); the other host is not touched.
    #[tokio::test]
    async fn probes_once_then_uploads_and_downloads_what_differs() {
        let mut k = kit(Default::default());
        k.script(1)
            .on("echo \"@0 $d missing\"", "@0 1 missing\n")
            .on(">> /run/lock/k0sctl.staging", "")
            .on(
                "curl -sSLf -o \"$t\" -- https://example.com/tool-v1.31.1%2Bk0s.0",
                "changed\n",
            );
        k.run(&UploadFiles).await.unwrap();
        let s = k.script(1);
        // The staging names of both files are recorded before either is written.
        let rec = s.position(">> /run/lock/k0sctl.staging");
        assert!(
            s.commands()[rec].contains("'/etc/motd.tmp.*' '/opt/bin/tool.tmp.*'"),
            "{}",
            s.commands()[rec]
        );
        assert!(rec < s.position("cat > /etc/motd.tmp."));
        assert!(rec < s.position("curl -sSLf -o"));
        let u = s.uploaded("/etc/motd").unwrap();
        assert_eq!((u.mode, u.text().as_str()), (0o644, MOTD));
        assert_eq!(
            s.position("echo \"@0 $d missing\""),
            0,
            "the probe comes first"
        );
        // Then the staging names of both files are recorded, before anything is written.
        let c = s.commands();
        assert!(
            c[1].contains(">> /run/lock/k0sctl.staging")
                && c[1].contains("'/etc/motd.tmp.*'")
                && c[1].contains("'/opt/bin/tool.tmp.*'"),
            "{c:#?}"
        );
        assert!(k.script(0).commands().is_empty());
        let c = k.changes_for(1);
        assert!(
            c.iter()
                .any(|l| l.starts_with("uploaded ") && l.contains("/etc/motd")),
            "{c:?}"
        );
        assert!(
            c.contains(
                &"downloaded https://example.com/tool-v1.31.1%2Bk0s.0 to /opt/bin/tool".to_string()
            ),
            "{c:?}"
        );
    }

    /// Same content: nothing sent; only a mode difference is fixed in place.
    #[tokio::test]
    async fn unchanged_content_is_not_sent_and_a_mode_is_fixed_in_place() {
        let mut k = kit(Default::default());
        k.state.hosts[1].config.files.truncate(1);
        let probe = format!("@0 1 file 644 root 0 root 0 {}\n", sha(MOTD));
        k.script(1).on("echo \"@0 $d missing\"", &probe);
        k.run(&UploadFiles).await.unwrap();
        assert!(k.script(1).uploads().is_empty());
        assert_eq!(k.script(1).commands().len(), 1);

        let mut k = kit(Default::default());
        k.state.hosts[1].config.files.truncate(1);
        k.state.hosts[1].config.files[0].perm = Some(crate::config::Perm {
            octal: "0600".into(),
            error: None,
        });
        k.script(1)
            .on("echo \"@0 $d missing\"", &probe)
            .on("chmod 600 /etc/motd", "");
        k.run(&UploadFiles).await.unwrap();
        assert!(k.script(1).uploads().is_empty());
        assert!(k.script(1).has_run("chmod 600 /etc/motd"));
    }

    #[tokio::test]
    async fn a_failed_download_keeps_stderr() {
        let mut k = kit(Default::default());
        k.script(1)
            .on("echo \"@0 $d missing\"", "@0 1 missing\n")
            .on(">> /run/lock/k0sctl.staging", "")
            .fail(
                "curl -sSLf -o",
                22,
                "downloading https://example.com/tool-v1.31.1%2Bk0s.0 failed",
            );
        let e = k.run(&UploadFiles).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("tool-v1.31.1%2Bk0s.0 failed"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn dry_run_reads_and_plans() {
        let mut k = kit(dry());
        k.script(1)
            .on("echo \"@0 $d missing\"", "@0 1 missing\n")
            .on("echo same || echo differs", "differs\n");
        k.run(&UploadFiles).await.unwrap();
        let p = k.plan_for(1);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("upload ") && p[0].ends_with("to /etc/motd (mode 644)"),
            "{p:?}"
        );
        assert_eq!(
            p[1],
            "download https://example.com/tool-v1.31.1%2Bk0s.0 to /opt/bin/tool on the host"
        );
        assert!(k.script(1).uploads().is_empty());
        assert!(!k.script(1).has_run("mv -f"));
    }
}
