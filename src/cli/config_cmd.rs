//! `k0sctl config validate`, and the subcommands that talk to the cluster's first controller:
//! `config status` (the k0s dynamic config events) and `config edit` (the `kube-system/k0s`
//! ClusterConfig in `$VISUAL`/`$EDITOR`, applied back when changed).

use crate::phases::Failure;
use std::path::PathBuf;

use crate::config::Loaded;
use crate::exit::{CliError, Code};
use crate::phases::State;
use crate::phases::steps;
use crate::transport::{Cmd, shell_quote};

use super::run::with_timeout;
use super::{ConfigEditArgs, ConfigStatusArgs, ConfigValidateArgs, Context};

/// Loads and validates; prints warnings and a one-line summary. Errors exit with the
/// invalid-config code and list every problem with file:line:column.
pub fn validate(ctx: &Context, a: ConfigValidateArgs) -> Result<(), CliError> {
    let loaded = ctx.load_config(&a.config)?;
    let c = &loaded.cluster;
    let controllers = c.spec.hosts.iter().filter(|h| h.is_controller()).count();
    println!(
        "{}: valid configuration for cluster {:?}: {} hosts ({} controllers, {} workers){}",
        loaded.origin.display(),
        c.metadata.name,
        c.spec.hosts.len(),
        controllers,
        c.spec.hosts.len() - controllers,
        if loaded.manifests.is_empty() {
            String::new()
        } else {
            format!(", {} additional manifests", loaded.manifests.len())
        }
    );
    Ok(())
}

/// Connects to the first controller only (as k0sctl's `config` commands do) and returns the
/// run state with it as host 0 and leader.
async fn first_controller(mut loaded: Loaded) -> Result<State, CliError> {
    let opts = super::run::only_first_controller(&mut loaded)?;
    super::run::connect_first_controller(loaded, opts, "connecting to the controller").await
}

/// Runs `k0s kubectl <args>` on the state's first host (with `stdin`, if any); stdout on
/// success, an error with the remote stderr otherwise.
async fn kubectl(state: &State, args: &str, stdin: Option<Vec<u8>>) -> Result<String, CliError> {
    let h = &state.hosts[0];
    let fail = |e: Failure| CliError::new(e.code(), format!("{}: {e}", h.name));
    let p = h.probed().map_err(|e| fail(e.into()))?;
    let mut cmd = Cmd::new(steps::kubectl::kubectl(h, args).map_err(&fail)?).sudo();
    if let Some(bytes) = stdin {
        cmd = cmd.stdin(bytes);
    }
    let out = p.remote.run(cmd).await.map_err(|e| fail(e.into()))?;
    Ok(out.stdout_str())
}

/// `k0sctl config status`: the k0s dynamic config reconciliation events.
pub fn status(ctx: &Context, a: ConfigStatusArgs) -> Result<(), CliError> {
    let loaded = ctx.load_config(&a.config)?;
    let mut args = "-n kube-system get event --field-selector involvedObject.name=k0s".to_string();
    if let Some(o) = &a.output {
        args += &format!(" -o {}", shell_quote(o));
    }
    let out = super::block_on_value(with_timeout(ctx, async move {
        let state = first_controller(loaded).await?;
        let out = kubectl(&state, &args, None).await;
        state.pool.close_all().await;
        out
    }))?;
    println!("{out}");
    Ok(())
}

/// The editor `config edit` runs: `$VISUAL`, else `$EDITOR`, else `vi` when on `PATH`.
fn editor() -> Result<String, CliError> {
    for var in ["VISUAL", "EDITOR"] {
        if let Ok(e) = std::env::var(var)
            && !e.trim().is_empty()
        {
            return Ok(e);
        }
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("vi").is_file()));
    if on_path {
        Ok("vi".into())
    } else {
        Err(CliError::new(
            Code::Usage,
            "could not detect shell editor ($VISUAL, $EDITOR, or vi on PATH)",
        ))
    }
}

/// A local temp file created 0600 (never replacing an existing file), removed on drop unless
/// kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn create(contents: &[u8]) -> std::io::Result<TempFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir();
        loop {
            let path = dir.join(format!("k0s-config.{:08x}.yaml", rand::random::<u32>()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(contents)?;
                    return Ok(TempFile { path, keep: false });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `k0sctl config edit`: the cluster's `kube-system/k0s` ClusterConfig in the editor, applied
/// back with `kubectl apply` when it was changed. The editor runs between two connections (an
/// editing session may outlast an idle SSH connection, and Ctrl-C in the editor must not end
/// k0sctl); if applying fails, the edited copy is kept and its path printed.
pub fn edit(ctx: &Context, a: ConfigEditArgs) -> Result<(), CliError> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            Code::Usage,
            "config edit needs a terminal (stdin and stdout are not a terminal)",
        ));
    }
    let editor = editor()?;
    let loaded = ctx.load_config(&a.config)?;
    let loaded2 = loaded.clone();
    let original = super::block_on_value(with_timeout(ctx, async move {
        let state = first_controller(loaded).await?;
        let out = kubectl(&state, "-n kube-system get clusterconfig k0s -o yaml", None).await;
        state.pool.close_all().await;
        out.map_err(|e| {
            CliError::new(
                e.code,
                format!(
                    "reading the k0s ClusterConfig kube-system/k0s: {} (the object exists when k0s runs with dynamic config)",
                    e.message
                ),
            )
        })
    }))?;
    let mut file = TempFile::create(format!("{original}\n").as_bytes())?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file.path)
        .status()
        .map_err(|e| CliError::new(Code::Failure, format!("running the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(CliError::new(
            Code::Failure,
            format!("the editor {editor:?} failed ({status}); nothing was applied"),
        ));
    }
    let edited = std::fs::read(&file.path)?;
    if String::from_utf8_lossy(&edited).trim() == original.trim() {
        tracing::info!("configuration was not changed, aborting");
        return Ok(());
    }
    let path = file.path.clone();
    let result = super::block_on_value(with_timeout(ctx, async move {
        let state = first_controller(loaded2).await?;
        let out = kubectl(&state, "apply -n kube-system -f -", Some(edited)).await;
        state.pool.close_all().await;
        out
    }));
    match result {
        Ok(out) => {
            if !out.trim().is_empty() {
                println!("{}", out.trim());
            }
            Ok(())
        }
        Err(mut e) => {
            file.keep = true;
            e.message = format!(
                "applying the edited configuration failed: {}\nyour edited copy is kept in {}",
                e.message,
                path.display()
            );
            Err(e)
        }
    }
}
