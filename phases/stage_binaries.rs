//! "Stage k0s binaries": put the target k0s next to its final path under a temporary name,
//! verified, on every host that needs a different binary. Nothing is half-written at the final
//! path: "Install k0s binaries" (or an upgrade) renames the staged file into place.
//!
//! Sources, as in k0sctl: `k0sBinaryPath` (a local file, uploaded when its SHA-256 differs
//! from the host's binary), `uploadBinary` (downloaded once to the local cache under
//! `$XDG_CACHE_HOME/k0sctl/k0s/`, then uploaded), otherwise the host downloads it itself from
//! `k0sDownloadURL` or the k0s GitHub release. Downloads are checked against the release's
//! `sha256sums.txt` where one exists; uploads are verified against what was sent; every staged
//! binary must report the target version (except `k0sBinaryPath`, which is taken as given).
//! Staged files are owner-only (0700: executable for the version check, readable by nobody
//! else) until they are moved into place with their final mode; the clean-up removes them,
//! and a later apply removes any `<k0s path>.tmp.*` an interrupted run left behind ("Gather
//! k0s facts" lists them in its round trip).

use crate::phases::{Context, Failure, HostFailure, each_host};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::k0s::download;
use crate::k0s::version::K0sVersion;
use crate::transport::files::UploadOptions;
use crate::transport::{Cmd, relay, shell_quote};

use super::steps::binary::needs_binary;
use super::{HostState, Phase, PhaseFuture, State, collect};

pub struct StageBinaries;

pub const TITLE: &str = "Stage k0s binaries on hosts";

/// Where a host's binary comes from.
enum Source {
    /// A local file (`k0sBinaryPath`), with its SHA-256.
    Local(PathBuf, String),
    /// Downloaded to the local cache, then uploaded (`uploadBinary`).
    Cached(String),
    /// Downloaded by the host from this URL.
    HostDownload(String),
}

fn url_for(h: &HostState, target: &K0sVersion, arch: &str) -> String {
    match &h.config.k0s_download_url {
        Some(t) => download::expand(t, &target.to_string(), arch, false),
        None => download::github_release_url(&target.to_string(), arch, false),
    }
}

/// `sha256sums.txt` next to the binary (k0s publishes one per release).
fn sums_url(url: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/sha256sums.txt", &url[..i]),
        None => "sha256sums.txt".into(),
    }
}

fn source_for(
    h: &HostState,
    target: &K0sVersion,
    arch: &str,
    base_dir: &Path,
) -> Result<Source, Failure> {
    if let Some(p) = &h.config.k0s_binary_path {
        let path = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base_dir.join(p)
        };
        // Hashed once however many hosts share the path.
        let (_, sum) = crate::transport::files::local_sha256(&path)
            .with_context(|| format!("k0sBinaryPath {}", path.display()))?;
        return Ok(Source::Local(path, sum));
    }
    let url = url_for(h, target, arch);
    if h.config.upload_binary {
        Ok(Source::Cached(url))
    } else {
        Ok(Source::HostDownload(url))
    }
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn staged_path(final_path: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{final_path}.tmp.{nanos}")
}

/// The host-side download: fetch, check against sha256sums.txt when the release has one,
/// make executable. While it downloads it prints `k0sctl-progress <bytes>` lines every 2 s; a
/// download that receives nothing for `stall` seconds (curl `--speed-limit 1 --speed-time`,
/// wget `--read-timeout`) fails naming the URL and the bytes received. Prints the staged
/// path's `k0s version` last on success.
fn download_script(url: &str, asset: &str, tmp: &str, stall: u64) -> String {
    let (u, s, t, a) = (
        shell_quote(url),
        shell_quote(&sums_url(url)),
        shell_quote(tmp),
        shell_quote(asset),
    );
    let url_text = url.replace(['"', '\\', '$', '`'], "");
    format!(
        "set -e; umask 077; d=$(dirname {t}); mkdir -p \"$d\"\n\
         ( while sleep 2 >/dev/null 2>&1; do echo \"k0sctl-progress $(stat -c %s {t} 2>/dev/null || echo 0)\"; done ) & rep=$!\n\
         set +e\n\
         if command -v curl >/dev/null 2>&1; then curl -sSLf --speed-limit 1 --speed-time {stall} -o {t} -- {u}; else wget -q --read-timeout={stall} -O {t} -- {u}; fi\n\
         rc=$?; kill $rep 2>/dev/null; set -e\n\
         if [ $rc -ne 0 ]; then n=$(stat -c %s {t} 2>/dev/null || echo 0); rm -f {t}; \
           if [ $rc = 28 ] || [ $rc = 4 ]; then echo \"download of {url_text} stalled or timed out: no progress for {stall}s, $n bytes received (exit $rc); check the host's network, proxy and DNS (--stall-timeout or K0SCTL_STALL_TIMEOUT sets the limit)\" >&2; \
           else echo \"download of {url_text} failed (exit $rc) after $n bytes\" >&2; fi; exit $rc; fi\n\
         sums=$( (if command -v curl >/dev/null 2>&1; then curl -sSLf -- {s}; else wget -qO- -- {s}; fi) 2>/dev/null || true)\n\
         want=$(printf '%s\\n' \"$sums\" | awk -v f={a} '$2==f || $2==\"*\"f {{print $1; exit}}')\n\
         if [ -n \"$want\" ]; then\n\
           got=$( (openssl dgst -sha256 -r {t} 2>/dev/null || sha256sum {t}) | cut -c1-64)\n\
           if [ \"$want\" != \"$got\" ]; then rm -f {t}; echo \"checksum mismatch for {asset}: sha256sums.txt says $want, downloaded $got\" >&2; exit 3; fi\n\
           echo verified >&2\n\
         fi\n\
         chmod 0700 {t}\n\
         {t} version\n"
    )
}

/// The local cache file of a k0s release binary (k0sctl's layout:
/// `$XDG_CACHE_HOME/k0sctl/k0s/linux/<arch>/k0s-<version without v>`).
fn cache_file(target: &K0sVersion, arch: &str) -> PathBuf {
    crate::logging::log_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("k0s")
        .join("linux")
        .join(arch)
        .join(format!(
            "k0s-{}",
            target.to_string().trim_start_matches('v')
        ))
}

/// Downloads `url` into the local cache unless a verified copy is there: the download is
/// streamed to a temp file while hashed, checked against the release's sha256sums.txt when
/// present, and renamed into place with a `.sha256` file beside it; a cached copy is reused
/// only when its SHA-256 still matches that record (a damaged cache is fetched again).
async fn cached_download(url: &str, target: &K0sVersion, arch: &str) -> Result<PathBuf, Failure> {
    use tokio::io::AsyncWriteExt;
    let file = cache_file(target, arch);
    let record = file.with_extension("sha256");
    if let (true, Ok(want)) = (file.is_file(), std::fs::read_to_string(&record)) {
        let f = file.clone();
        let got = tokio::task::spawn_blocking(move || sha256_file(&f))
            .await?
            .with_context(|| format!("{}", file.display()))?;
        if got == want.trim() {
            tracing::info!(
                "using k0s {target} ({arch}) from the local cache {}",
                file.display()
            );
            return Ok(file);
        }
        tracing::warn!(
            "the cached {} does not match its recorded SHA-256; downloading it again",
            file.display()
        );
    }
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(600))
        .build()?;
    let get = |u: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(&u)
                .send()
                .await
                .with_context(|| format!("GET {u}"))?;
            if !r.status().is_success() {
                return Err(format!("GET {u}: HTTP {}", r.status()).into());
            }
            Ok::<_, Failure>(r)
        }
    };
    tracing::info!("downloading k0s {target} ({arch}) from {url} into the local cache");
    let mut resp = get(url.to_string()).await?;
    let tmp = dir.join(format!(".k0s-{}.part", std::process::id()));
    let result = async {
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("{}", tmp.display()))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {url}"))? {
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .with_context(|| format!("{}", tmp.display()))?;
        }
        out.flush()
            .await
            .with_context(|| format!("{}", tmp.display()))?;
        let got = hex::encode(hasher.finalize());
        let asset = format!("k0s-{target}-{arch}");
        if let Ok(sums) = get(sums_url(url)).await
            && let Ok(text) = sums.text().await
            && let Some(want) = text.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                let (sum, name) = (it.next()?, it.next()?);
                (name.trim_start_matches('*') == asset).then(|| sum.to_string())
            })
            && want != got
        {
            return Err(format!(
                "checksum mismatch for {url}: sha256sums.txt says {want}, downloaded {got}"
            )
            .into());
        }
        std::fs::write(&record, format!("{got}\n"))
            .with_context(|| format!("{}", record.display()))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("{}", file.display()))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| file)
}

/// An upload gathered by the first pass of [`StageBinaries`].
struct Pending {
    /// Index into `state.hosts`.
    idx: usize,
    file: PathBuf,
    /// SHA-256 when already known (`k0sBinaryPath`).
    sha256: Option<String>,
    tmp: String,
    /// The staged binary must report the target version (release binaries).
    check_version: bool,
}

fn push_upload(uploads: &mut Vec<(PathBuf, Vec<usize>)>, file: PathBuf, idx: usize) {
    match uploads.iter_mut().find(|(f, _)| *f == file) {
        Some(u) => u.1.push(idx),
        None => uploads.push((file, vec![idx])),
    }
}

/// Logs the fan-out plan of one file and emits one `relay` event per edge (who sends to whom).
fn emit_plan(state: &State, file: &Path, plan: &relay::Plan, targets: &[relay::Target]) {
    if plan.chain.len() >= 2 {
        tracing::info!("sending {}: {}", file.display(), plan.describe(targets));
    }
    for (from, to) in plan.edges(targets) {
        state.emit(serde_json::json!({
            "event": "relay", "file": file.display().to_string(), "from": from, "to": to
        }));
    }
}

/// The staged binary at `tmp` must report `target`; removed otherwise.
async fn check_staged(
    p: &crate::host::Host,
    tmp: &str,
    reported: &str,
    target: &K0sVersion,
) -> Result<(), Failure> {
    let got = K0sVersion::parse(reported)?;
    if got != *target {
        let _ = p
            .remote
            .exec(Cmd::new(format!("rm -f {}", shell_quote(tmp))).sudo())
            .await;
        return Err(format!("the downloaded k0s binary is version {got}, not {target}").into());
    }
    Ok(())
}

impl Phase for StageBinaries {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state
            .target_version()
            .is_some_and(|t| state.hosts.iter().any(|h| needs_binary(h, &t)))
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .target_version()
                .expect("should_run checked the target");
            let base = state.config.base_dir.clone();
            let limits = state.pool.limits().clone();
            // `uploadBinary` hosts share one download per (URL, arch), fetched before the
            // uploads start.
            let mut cached: Vec<(String, String, Result<PathBuf, Failure>)> = Vec::new();
            for h in state.hosts.iter().filter(|h| needs_binary(h, &target)) {
                let Ok(p) = h.probed() else { continue };
                let arch = p.facts.arch.clone();
                if let Ok(Source::Cached(url)) = source_for(h, &target, &arch, &base)
                    && !cached.iter().any(|(u, a, _)| *u == url && *a == arch)
                {
                    let r = cached_download(&url, &target, &arch).await;
                    cached.push((url, arch, r));
                }
            }
            let cached = &cached;
            let progress = &state.progress.clone();
            let events = &state.events.clone();
            // Per host: host downloads and unchanged k0sBinaryPath files are settled here;
            // uploads are gathered per local file and sent below, relayed host to host.
            let firsts = each_host(
                &limits,
                state.hosts.iter_mut().filter(|h| needs_binary(h, &target)),
                |h| {
                        let (target, base) = (target.clone(), base.clone());
                        let idx = h.index;
                        async move {
                            let p = h.probed()?;
                            let arch = p.facts.arch.clone();
                            let final_path = p.k0s_binary_path.clone();
                            let tmp = staged_path(&final_path);
                            // Recorded before anything is written under that name: the
                            // staged file and the upload's own temporary files of it.
                            let record = {
                                let (r, lock) = (p.remote.clone(), p.facts.lock_file.clone());
                                let entries = [tmp.clone(), super::steps::staging::temp_files_of(&tmp)];
                                async move { super::steps::staging::record(&r, &lock, &entries).await }
                            };
                            match source_for(h, &target, &arch, &base)? {
                                Source::Local(path, sum) => {
                                    let current = p
                                        .remote
                                        .exec(
                                            Cmd::new(format!(
                                                "sha256sum {} 2>/dev/null | cut -c1-64",
                                                shell_quote(&final_path)
                                            ))
                                            .sudo(),
                                        )
                                        .await?
                                        .stdout_str();
                                    if current.trim() == sum {
                                        tracing::info!(
                                            about = %h.name,
                                            "k0s binary at {final_path} already matches {}",
                                            path.display()
                                        );
                                        return Ok(None);
                                    }
                                    tracing::info!(
                                        about = %h.name,
                                        "uploading k0s binary {}",
                                        path.display()
                                    );
                                    record.await?;
                                    Ok(Some(Pending {
                                        idx,
                                        file: path,
                                        sha256: Some(sum),
                                        tmp,
                                        check_version: false,
                                    }))
                                }
                                Source::Cached(url) => {
                                    let file = cached
                                        .iter()
                                        .find(|(u, a, _)| *u == url && *a == arch)
                                        // One download serves several hosts: each gets its words.
                                        .map(|(_, _, r)| r.as_ref().cloned().map_err(|e| Failure::other(e.to_string())))
                                        .unwrap_or_else(|| Err(format!("{url} was not fetched").into()))?;
                                    tracing::info!(
                                        about = %h.name,
                                        "uploading k0s {target} from the local cache"
                                    );
                                    record.await?;
                                    Ok(Some(Pending {
                                        idx,
                                        file,
                                        sha256: None,
                                        tmp,
                                        check_version: true,
                                    }))
                                }
                                Source::HostDownload(url) => {
                                    tracing::info!(
                                        about = %h.name,
                                        "downloading k0s {target} from {url}"
                                    );
                                    // The record goes first in the download's own round trip:
                                    // nothing is written under the staged name before it.
                                    drop(record);
                                    let record_first = super::steps::staging::record_script(
                                        &p.facts.lock_file,
                                        &[tmp.clone(), super::steps::staging::temp_files_of(&tmp)],
                                    )
                                    .map(|r| format!("( {r} ) || {{ echo 'could not record the staging files in {}' >&2; exit 1; }}\n", super::steps::staging::record_path(&p.facts.lock_file)))
                                    .unwrap_or_default();
                                    let asset = format!("k0s-{target}-{arch}");
                                    let stall = crate::transport::stall_timeout().as_secs();
                                    // Progress lines feed the display's byte bar and
                                    // `download_progress` events.
                                    let (bar, events) = (progress.upload(&h.name), events.clone());
                                    let (name, u) = (h.name.clone(), url.clone());
                                    let on_output: crate::transport::OutputCallback =
                                        std::sync::Arc::new(move |kind, data: &[u8]| {
                                            if kind != crate::transport::StreamKind::Stdout {
                                                return;
                                            }
                                            for l in String::from_utf8_lossy(data).lines() {
                                                let Some(n) = l.strip_prefix("k0sctl-progress ").and_then(|n| n.trim().parse::<u64>().ok()) else { continue };
                                                if let Some(b) = &bar {
                                                    (b.0)(n, None);
                                                }
                                                if let Some(ev) = &events {
                                                    ev(serde_json::json!({"event": "download_progress", "host": name, "url": u, "bytes": n}));
                                                }
                                            }
                                        });
                                    let out = p
                                        .remote
                                        .run_str(
                                            Cmd::new(format!("{record_first}{}", download_script(&url, &asset, &tmp, stall)))
                                                .sudo()
                                                .on_output(on_output)
                                                .display_as(format!("download k0s {target} from {url} to {tmp}")),
                                        )
                                        .await?;
                                    let v = out
                                        .lines()
                                        .filter(|l| !l.starts_with("k0sctl-progress "))
                                        .collect::<Vec<_>>()
                                        .join("\n");
                                    check_staged(p, &tmp, v.trim(), &target)
                                        .await?;
                                    h.staged = Some(tmp);
                                    Ok(None)
                                }
                            }
                        }
                },
            )
            .await;
            let mut results: Vec<Result<(), HostFailure>> = Vec::new();
            let mut pending: Vec<Pending> = Vec::new();
            for r in firsts {
                match r {
                    Ok(Some(p)) => pending.push(p),
                    Ok(None) => results.push(Ok(())),
                    Err(e) => results.push(Err(e)),
                }
            }
            // One delivery per distinct local file: relayed along the hosts that take it.
            let mut groups: Vec<(PathBuf, Option<String>, Vec<Pending>)> = Vec::new();
            for p in pending {
                match groups.iter_mut().find(|(f, _, _)| *f == p.file) {
                    Some(g) => g.2.push(p),
                    None => groups.push((p.file.clone(), p.sha256.clone(), vec![p])),
                }
            }
            for (file, sum, members) in groups {
                let sum = match sum {
                    Some(s) => Ok(s),
                    None => {
                        let f = file.clone();
                        tokio::task::spawn_blocking(move || sha256_file(&f))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| format!("{}: {e}", file.display())))
                    }
                };
                let sum = match sum {
                    Ok(s) => s,
                    Err(e) => {
                        results.extend(
                            members
                                .iter()
                                .map(|m| Err((state.hosts[m.idx].name.clone(), e.clone().into()))),
                        );
                        continue;
                    }
                };
                let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                let targets: Vec<relay::Target> = members
                    .iter()
                    .filter_map(|m| {
                        let h = &state.hosts[m.idx];
                        let p = h.host.as_ref()?;
                        Some(relay::Target {
                            name: h.name.clone(),
                            remote: p.remote.clone(),
                            endpoint: relay::endpoint(h.spec.as_ref(), &p.remote),
                            dst: m.tmp.clone(),
                            opts: super::steps::staging::relay_options(
                                UploadOptions::default()
                                    .mode(0o700)
                                    .sudo(true)
                                    .progress(progress.upload(&h.name)),
                                &p.facts.lock_file,
                            ),
                        })
                    })
                    .collect();
                let plan = relay::plan(&targets, size);
                emit_plan(state, &file, &plan, &targets);
                let delivered =
                    relay::deliver(&file, &sum, &targets, &plan, state.pool.limits()).await;
                let checks = each_host(
                    state.pool.limits(),
                    members
                        .iter()
                        .zip(delivered)
                        .map(|(m, r)| (&state.hosts[m.idx], (m, r))),
                    |(h, (m, r))| {
                        let target = target.clone();
                        async move {
                            r?;
                            if m.check_version {
                                let p = h.probed()?;
                                let v = p
                                    .remote
                                    .run_str(
                                        Cmd::new(format!("{} version", shell_quote(&m.tmp))).sudo(),
                                    )
                                    .await?;
                                check_staged(p, &m.tmp, v.trim(), &target).await?;
                            }
                            Ok(())
                        }
                    },
                )
                .await;
                for (m, r) in members.iter().zip(checks) {
                    if r.is_ok() {
                        state.hosts[m.idx].staged = Some(m.tmp.clone());
                    }
                    results.push(r);
                }
            }
            collect(TITLE, results)
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let target = state
                .target_version()
                .expect("should_run checked the target");
            let base = state.config.base_dir.clone();
            let mut planned = Vec::new();
            // Uploads of one local file to several hosts are relayed: (file, host index).
            let mut uploads: Vec<(PathBuf, Vec<usize>)> = Vec::new();
            for (idx, h) in state.hosts.iter().enumerate() {
                if !needs_binary(h, &target) {
                    continue;
                }
                let Ok(p) = h.probed() else { continue };
                let what = match source_for(h, &target, &p.facts.arch, &base) {
                    Ok(Source::Local(path, _)) => {
                        push_upload(&mut uploads, path.clone(), idx);
                        format!(
                            "upload k0s binary {} to {}",
                            path.display(),
                            p.k0s_binary_path
                        )
                    }
                    Ok(Source::Cached(url)) => {
                        push_upload(&mut uploads, cache_file(&target, &p.facts.arch), idx);
                        format!(
                            "upload k0s {target} (downloaded locally from {url}) to {}",
                            p.k0s_binary_path
                        )
                    }
                    Ok(Source::HostDownload(url)) => {
                        format!("download k0s {target} from {url} to {}", p.k0s_binary_path)
                    }
                    Err(e) => format!("stage k0s {target}: {e}"),
                };
                planned.push((h.name.clone(), what));
            }
            // Who sends to whom: the cached file may not exist yet in a dry run, so the plan
            // assumes a k0s-sized file.
            for (file, idxs) in &uploads {
                let targets: Vec<relay::Target> = idxs
                    .iter()
                    .filter_map(|&i| {
                        let h = &state.hosts[i];
                        let p = h.host.as_ref()?;
                        Some(relay::Target {
                            name: h.name.clone(),
                            remote: p.remote.clone(),
                            endpoint: relay::endpoint(h.spec.as_ref(), &p.remote),
                            dst: p.k0s_binary_path.clone(),
                            opts: UploadOptions::default(),
                        })
                    })
                    .collect();
                let size = std::fs::metadata(file)
                    .map(|m| m.len())
                    .unwrap_or(relay::MIN_RELAY_BYTES);
                let plan = relay::plan(&targets, size);
                for (from, to) in plan.edges(&targets) {
                    if plan.chain.len() < 2 {
                        break;
                    }
                    if let Some(x) = planned.iter_mut().find(|(n, _)| *n == to) {
                        x.1.push_str(&format!(
                            " ({})",
                            if from == "operator" {
                                "sent by the operator".to_string()
                            } else {
                                format!("relayed from {from}")
                            }
                        ));
                    }
                }
                emit_plan(state, file, &plan, &targets);
            }
            for (h, what) in planned {
                state.planned(h, what);
            }
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            // Every file this run staged, also those of a staging stopped half-way: the
            // record names them (written before each staging started; the host lock keeps
            // other runs out). A host whose connection was lost is reconnected once.
            let target = state.target_version();
            for i in 0..state.hosts.len() {
                let h = &mut state.hosts[i];
                let staged = h.staged.take();
                let staging =
                    staged.is_some() || target.as_ref().is_some_and(|t| needs_binary(h, t));
                if !staging || h.host.is_none() {
                    continue;
                }
                let r = match super::steps::undo_install::reconnect_if_lost(state, i).await {
                    Ok(()) => {
                        let p = state.hosts[i].host.as_ref().expect("connected");
                        p.remote
                            .run(
                                Cmd::new(super::steps::staging::remove_script(&p.facts.lock_file))
                                    .sudo(),
                            )
                            .await
                            .map(|_| ())
                            .map_err(Failure::from)
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    let h = &state.hosts[i];
                    let lock = h
                        .host
                        .as_ref()
                        .map(|p| p.facts.lock_file.clone())
                        .unwrap_or_default();
                    tracing::warn!(
                        about = %h.name,
                        "could not remove the staged k0s binary ({e}); the files named in {} stay on the host until the next apply removes them",
                        super::steps::staging::record_path(&lock)
                    );
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_next_to_the_binary() {
        assert_eq!(
            sums_url(
                "https://github.com/k0sproject/k0s/releases/download/v1.31.2%2Bk0s.0/k0s-v1.31.2+k0s.0-amd64"
            ),
            "https://github.com/k0sproject/k0s/releases/download/v1.31.2%2Bk0s.0/sha256sums.txt"
        );
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const ASSET: &str = "k0s-v1.31.1+k0s.0-amd64";
    /// Appending to the staging record next to the host lock.
    const RECORD: &str = ">> /run/lock/k0sctl.staging";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .fresh(1)
            .leader(0)
            .target("v1.31.1+k0s.0");
        k
    }

    #[test]
    fn stages_only_where_the_binary_differs() {
        let mut k = kit(Default::default());
        assert!(StageBinaries.should_run(&k.state));
        k.running(1, "v1.31.1+k0s.0");
        assert!(!StageBinaries.should_run(&k.state));
        k.target("v1.32.0+k0s.0");
        assert!(StageBinaries.should_run(&k.state));
        k.state.target = None;
        k.state.config.cluster.spec.k0s.version = None;
        assert!(!StageBinaries.should_run(&k.state), "no target yet");
    }

    /// The host downloads the release itself (checked against sha256sums.txt) to a temp name
    /// next to the final path, and the staged binary must report the target.
    #[tokio::test]
    async fn the_host_downloads_and_the_staged_binary_is_checked() {
        let mut k = kit(Default::default());
        k.script(1).on(RECORD, "").on(
            "curl -sSLf --speed-limit 1",
            "k0sctl-progress 4096\nv1.31.1+k0s.0\n",
        );
        k.run(&StageBinaries).await.unwrap();
        let c = k.script(1).commands();
        assert_eq!(c.len(), 1, "{c:#?}");
        assert!(k.script(0).commands().is_empty(), "host 0 has the target");
        let staged = k.state.hosts[1].staged.clone().unwrap();
        assert!(staged.starts_with("/usr/local/bin/k0s.tmp."), "{staged}");
        assert!(
            c[0].contains(ASSET) && c[0].contains("sha256sums.txt"),
            "{}",
            c[0]
        );
        assert!(c[0].contains(&format!("-o {staged}")), "{}", c[0]);
        // One round trip: the staging names are recorded first, then the download starts.
        assert!(
            c[0].starts_with(&format!(
                "( umask 077; printf '%s\\n' {staged} '{staged}.tmp.*' >> /run/lock/k0sctl.staging ) || "
            )),
            "{}",
            c[0]
        );
        assert!(c[0].find(">> /run/lock/k0sctl.staging") < c[0].find("curl -sSLf"));
    }

    #[tokio::test]
    async fn a_wrong_version_is_removed_and_a_failed_download_keeps_stderr() {
        let mut k = kit(Default::default());
        // The download script has an `rm -f` of its own: its rule is added last, so it wins.
        k.script(1)
            .on(RECORD, "")
            .on("rm -f /usr/local/bin/k0s.tmp.", "")
            .on("curl -sSLf --speed-limit 1", "v1.30.0+k0s.0\n");
        let e = k.run(&StageBinaries).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.2:22: the downloaded k0s binary is version v1.30.0+k0s.0, not v1.31.1+k0s.0"
            ),
            "{e}"
        );
        let c = k.script(1).commands();
        // The record and the download in one command, then the removal.
        assert_eq!(c.len(), 2);
        assert!(
            c[0].contains(RECORD) && c[0].contains("curl -sSLf"),
            "{c:#?}"
        );
        assert!(c[1].starts_with("rm -f /usr/local/bin/k0s.tmp."), "{c:#?}");
        assert!(k.state.hosts[1].staged.is_none());

        let mut k = kit(Default::default());
        k.script(1).on(RECORD, "").fail(
            "curl -sSLf",
            22,
            "download of https://example failed (exit 22) after 0 bytes",
        );
        let e = k.run(&StageBinaries).await.unwrap_err().to_string();
        assert!(e.contains("failed (exit 22) after 0 bytes"), "{e}");
    }

    /// `k0sBinaryPath`: uploaded (0700, verified) only when the host's binary differs.
    #[tokio::test]
    async fn a_local_binary_is_uploaded_only_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("k0s");
        std::fs::write(&bin, "#!/bin/sh\necho v1.31.1+k0s.0\n").unwrap();
        let sum = sha256_file(&bin).unwrap();
        let mut k = kit(Default::default());
        k.state.hosts[1].config.k0s_binary_path = Some(bin.display().to_string());
        k.script(1)
            .on(RECORD, "")
            .on("sha256sum /usr/local/bin/k0s 2>/dev/null", "0000\n");
        k.run(&StageBinaries).await.unwrap();
        let staged = k.state.hosts[1].staged.clone().unwrap();
        assert!(
            k.script(1).ran_matching(RECORD)[0].contains(&staged),
            "the staging name is recorded"
        );
        let u = k
            .script(1)
            .uploaded(&staged)
            .expect("uploaded to the staging name");
        assert_eq!(u.mode, 0o700);
        assert_eq!(u.bytes, std::fs::read(&bin).unwrap());

        let mut k = kit(Default::default());
        k.state.hosts[1].config.k0s_binary_path = Some(bin.display().to_string());
        k.script(1).on(
            "sha256sum /usr/local/bin/k0s 2>/dev/null",
            &format!("{sum}\n"),
        );
        k.run(&StageBinaries).await.unwrap();
        assert!(k.script(1).uploads().is_empty());
        assert!(k.state.hosts[1].staged.is_none());
    }

    #[tokio::test]
    async fn dry_run_plans_the_download_and_clean_up_removes_staging_files() {
        let mut k = kit(dry());
        k.run(&StageBinaries).await.unwrap();
        let p = k.plan_for(1);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("download k0s v1.31.1+k0s.0 from ")
                && p[0].ends_with(&format!("{ASSET} to /usr/local/bin/k0s")),
            "{p:?}"
        );
        k.assert_nothing_ran();

        let mut k = kit(Default::default());
        k.state.hosts[1].staged = Some("/usr/local/bin/k0s.tmp.1".into());
        for s in &k.scripts {
            s.on("r=/run/lock/k0sctl.staging", "");
        }
        StageBinaries.clean_up(&mut k.state).await.unwrap();
        assert!(k.state.hosts[1].staged.is_none());
        // Exactly what the staging record names is removed, then the record.
        let c = k.script(1).commands();
        assert_eq!(c.len(), 1, "{c:#?}");
        assert!(
            c[0].contains("done < \"$r\"") && c[0].ends_with("rm -f /run/lock/k0sctl.staging"),
            "{}",
            c[0]
        );
        assert!(
            k.script(0).commands().is_empty(),
            "nothing was staged on host 0"
        );
    }
}
