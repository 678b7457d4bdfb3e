//! `k0sctl exec`: run an ad-hoc command on the cluster's hosts.
//!
//! Hosts are selected with `--role` and `--hosts`; the command runs on all of them in parallel
//! (up to `--concurrency`), each output line prefixed with the host, then a summary of exit
//! codes. The exit code is 0 when every host succeeded, "unreachable" (4) when a host could not
//! be connected, otherwise "phase failed" (5). Standard input, when piped, is sent to every host.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::Host;
use crate::connect;
use crate::exit::{CliError, Code};
use crate::transport::error::ExitStatus;
use crate::transport::output::PrefixedLines;
use crate::transport::privilege::sudo_password;
use crate::transport::ssh::SshConfig;
use crate::transport::{Cmd, Limits, Pool, StreamKind, TransportError};

use super::{ConfigArgs, Context};

#[derive(Debug, Args)]
#[command(
    long_about = "Run a command on the cluster's hosts over their configured connections. Output lines are prefixed with the host; a summary of exit codes follows. Exits 0 when every host succeeded, 4 when a host could not be reached, 5 when the command failed somewhere.",
    after_help = "Examples:\n  k0sctl exec -- uptime\n  k0sctl exec --role worker --sudo -- systemctl is-active k0sworker\n  k0sctl exec --hosts '10.0.0.*' -- df -h /var/lib/k0s"
)]
pub struct ExecArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only hosts with this role: controller (also matches controller+worker and single),
    /// worker (also matches controller+worker), controller+worker, single
    #[arg(long, value_parser = ["controller", "worker", "controller+worker", "single"])]
    pub role: Option<String>,
    /// Only hosts whose address or hostname matches one of these comma-separated globs
    #[arg(long, value_name = "PATTERN")]
    pub hosts: Option<String>,
    /// Run the command as root (sudo or doas; a sudo password is read from
    /// K0SCTL_SUDO_PASSWORD or asked once)
    #[arg(long)]
    pub sudo: bool,
    /// Maximum number of hosts to run on in parallel, 0 for unlimited [default: spec.options.concurrency.limit]
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// How one host's run ended.
enum Outcome {
    Exit(i32),
    Signal(String),
    Unreachable(String),
    Failed(String),
}

pub fn run(ctx: &Context, a: ExecArgs) -> Result<(), CliError> {
    let loaded = ctx.load_config(&a.config)?;
    let patterns = match &a.hosts {
        Some(p) => Some(host_globs(p)?),
        None => None,
    };
    let hosts: Vec<Host> = loaded
        .cluster
        .spec
        .hosts
        .iter()
        .filter(|h| a.role.as_deref().is_none_or(|r| role_matches(h, r)))
        .filter(|h| patterns.as_ref().is_none_or(|g| host_matches(h, g)))
        .cloned()
        .collect();
    if hosts.is_empty() {
        return Err(CliError::new(
            Code::Usage,
            "no hosts match the --role/--hosts selection".to_string(),
        ));
    }
    let command = if a.command.len() == 1 {
        a.command[0].clone()
    } else {
        a.command.join(" ")
    };
    let stdin = piped_stdin()?;
    let password = if a.sudo {
        sudo_password(None, std::io::stdin().is_terminal())
            .map_err(|e| CliError::new(Code::Usage, e))?
    } else {
        None
    };
    let concurrency = a
        .concurrency
        .unwrap_or(loaded.cluster.spec.options.concurrency.limit) as usize;
    let timeout = (!ctx.global.timeout.is_zero()).then_some(ctx.global.timeout);
    let ssh_config = SshConfig::load_default();
    let base_dir = loaded.base_dir.clone();

    let out_lock = Arc::new(Mutex::new(()));
    let results = super::block_on_value(async move {
        let pool = Arc::new(Pool::new(Limits::new(concurrency, 0)));
        let mut set = tokio::task::JoinSet::new();
        for (i, h) in hosts.iter().enumerate() {
            let name = h.display_address();
            let spec = connect::spec_for(h, &base_dir, &ssh_config);
            let pool = pool.clone();
            let command = command.clone();
            let stdin = stdin.clone();
            let password = password.clone();
            let lock = out_lock.clone();
            set.spawn(async move {
                let outcome = run_on_host(
                    &pool, spec, &name, &command, stdin, a.sudo, password, timeout, lock,
                )
                .await;
                (i, name, outcome)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(
                r.map_err(|e| CliError::new(Code::Failure, format!("host task failed: {e}")))?,
            );
        }
        pool.close_all().await;
        results.sort_by_key(|(i, _, _)| *i);
        Ok(results)
    })?;
    summarize(&results)
}

#[allow(clippy::too_many_arguments)]
async fn run_on_host(
    pool: &Pool,
    spec: Result<crate::transport::ConnectSpec, TransportError>,
    name: &str,
    command: &str,
    stdin: Option<Vec<u8>>,
    sudo: bool,
    password: Option<crate::transport::Secret>,
    timeout: Option<Duration>,
    lock: Arc<Mutex<()>>,
) -> Outcome {
    let spec = match spec {
        Ok(s) => s,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    let _slot = pool.limits().host_slot().await;
    let mut remote = match pool.connect(&spec).await {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    if sudo && let Err(e) = remote.detect_privilege(password).await {
        return Outcome::Failed(e.to_string());
    }
    let lines = PrefixedLines::new(
        format!("{name}: "),
        Arc::new(move |kind, line: &str| {
            let _g = lock.lock().expect("output lock");
            match kind {
                StreamKind::Stdout => {
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                }
                StreamKind::Stderr => {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                }
            }
        }),
    );
    let mut cmd = Cmd::new(command).sudo_if(sudo).on_output(lines.callback());
    if let Some(b) = stdin {
        cmd = cmd.stdin(b);
    }
    if let Some(t) = timeout {
        cmd = cmd.timeout(t);
    }
    let res = remote.exec(cmd).await;
    lines.finish();
    match res {
        Ok(out) => match out.status {
            ExitStatus::Code(c) => Outcome::Exit(c as i32),
            ExitStatus::Signal(s) => Outcome::Signal(s),
            ExitStatus::Unknown => {
                Outcome::Failed("the command ended without an exit status".into())
            }
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn summarize(results: &[(usize, String, Outcome)]) -> Result<(), CliError> {
    let ok = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Exit(0)))
        .count();
    let unreachable = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Unreachable(_)))
        .count();
    let failed = results.len() - ok - unreachable;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "==> {} host{}: {ok} succeeded, {failed} failed, {unreachable} unreachable",
        results.len(),
        if results.len() == 1 { "" } else { "s" }
    );
    for (_, name, o) in results {
        let line = match o {
            Outcome::Exit(0) => continue,
            Outcome::Exit(c) => format!("exit status {c}"),
            Outcome::Signal(s) => format!("killed by signal {s}"),
            Outcome::Unreachable(e) | Outcome::Failed(e) => e.clone(),
        };
        let _ = writeln!(err, "    {name}: {line}");
    }
    if unreachable > 0 {
        Err(CliError::new(
            Code::Unreachable,
            format!(
                "{unreachable} of {} hosts could not be reached",
                results.len()
            ),
        ))
    } else if failed > 0 {
        Err(CliError::new(
            Code::PhaseFailed,
            format!("the command failed on {failed} of {} hosts", results.len()),
        ))
    } else {
        Ok(())
    }
}

fn role_matches(h: &Host, role: &str) -> bool {
    match role {
        "controller" => h.is_controller(),
        "worker" => h.is_worker(),
        r => h.role == r,
    }
}

fn host_globs(patterns: &str) -> Result<GlobSet, CliError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        b.add(Glob::new(p).map_err(|e| CliError::new(Code::Usage, format!("--hosts {p:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| CliError::new(Code::Usage, format!("--hosts: {e}")))
}

fn host_matches(h: &Host, g: &GlobSet) -> bool {
    g.is_match(h.address())
        || g.is_match(h.display_address())
        || h.hostname.as_deref().is_some_and(|n| g.is_match(n))
}

/// Piped standard input (a pipe or file, not a terminal or a character device such as
/// /dev/null), read once and sent to every host.
fn piped_stdin() -> Result<Option<Vec<u8>>, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let fd = stdin.as_fd().try_clone_to_owned()?;
    if std::fs::File::from(fd)
        .metadata()?
        .file_type()
        .is_char_device()
    {
        return Ok(None);
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf)?;
    Ok(Some(buf))
}
