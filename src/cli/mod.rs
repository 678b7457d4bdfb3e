//! The command-line surface (clap) and dispatch to commands.
//!
//! Flags mirror k0sctl v0.32.2 (names, short forms, defaults, environment variables, hidden
//! deprecated flags), so scripts written for k0sctl keep working. Global flags may be given
//! before or after the command (`k0sctl -d apply` and `k0sctl apply -d`).

mod apply;
mod backup;
mod completion;
mod config_cmd;
mod exec;
mod init;
mod kubeconfig_merge;
mod reset;
mod run;
mod version;

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, LoadOptions, Loaded};
use crate::exit::{CliError, Code};
use crate::logging;

#[derive(Debug, Parser)]
#[command(
    name = "k0sctl",
    about = "k0s cluster management tool",
    long_about = "k0s cluster management tool: applies a k0sctl.yaml to hosts over SSH to install, upgrade, reset and back up k0s Kubernetes clusters.",
    disable_version_flag = true,
    after_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES_HELP: &str = "Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 invalid config, 4 unreachable host/service, 5 phase failed, 6 blocked by the cluster (e.g. PodDisruptionBudget), 7 locked by another k0sctl, 8 aborted, 9 changes pending (--dry-run --detailed-exitcode), 124 --timeout expired, 130 interrupted by SIGINT/SIGTERM (apply, reset and backup first stop the running phase and clean up; a second signal exits at once).";

/// Flags accepted by every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Enable debug logging
    #[arg(long, short = 'd', global = true, env = "DEBUG", value_parser = FalseyValueParser::new())]
    pub debug: bool,
    /// Enable trace logging
    #[arg(long, global = true, env = "TRACE", value_parser = FalseyValueParser::new())]
    pub trace: bool,
    /// Do not hide sensitive information in the output
    #[arg(long, global = true)]
    pub no_redact: bool,
    /// Do not alter cluster state, just print what would be done
    #[arg(long, global = true, env = "DRY_RUN", value_parser = FalseyValueParser::new())]
    pub dry_run: bool,
    /// Timeout for the whole operation, e.g. 30m. 0 waits forever
    #[arg(long, global = true, value_parser = parse_duration, default_value = "0s")]
    pub timeout: Duration,
    /// Attempt a forced operation in case of certain failures
    #[arg(long, global = true)]
    pub force: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::duration::parse(s)
}

/// `--config/-c`, repeatable.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Path or glob to config yaml. Can be given multiple times. Use '-' to read from stdin.
    #[arg(
        long = "config",
        short = 'c',
        value_name = "PATH",
        default_value = "k0sctl.yaml"
    )]
    pub config: Vec<String>,
}

/// The hidden, deprecated per-wait timing flags k0sctl still accepts.
#[derive(Debug, Clone, Args)]
pub struct DeprecatedTimingArgs {
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub default_timeout: Option<Duration>,
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub retry_interval: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Output k0sctl version
    Version(version::VersionArgs),
    /// Apply a k0sctl configuration
    Apply(ApplyArgs),
    /// Output the admin kubeconfig of the cluster
    Kubeconfig(KubeconfigArgs),
    /// Create a configuration template
    Init(init::InitArgs),
    /// Remove traces of k0s from all of the hosts
    Reset(ResetArgs),
    /// Take backup of existing clusters state
    Backup(BackupArgs),
    /// Configuration related sub-commands
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Generate shell auto-completions
    Completion(completion::CompletionArgs),
    /// Run a command on the cluster's hosts
    Exec(exec::ExecArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Maximum number of hosts to configure in parallel, set to 0 for unlimited [default: 30]
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Maximum number of files to upload in parallel, set to 0 for unlimited [default: 5]
    #[arg(long)]
    pub concurrent_uploads: Option<u32>,
    /// Do not wait for worker nodes to join
    #[arg(long)]
    pub no_wait: bool,
    /// Do not drain worker nodes when upgrading
    #[arg(long)]
    pub no_drain: bool,
    /// Remove nodes and etcd members the cluster has but the configuration does not list
    /// (drained and deleted; a node that is still Ready needs --force)
    #[arg(long)]
    pub prune: bool,
    /// Path to cluster backup archive to restore the state from
    #[arg(long, value_name = "FILE")]
    pub restore_from: Option<PathBuf>,
    /// Write kubeconfig to given path after a successful apply
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Override the API address in the kubeconfig when kubeconfig-out is set
    #[arg(long, value_name = "URL")]
    pub kubeconfig_api_address: Option<String>,
    /// Set kubernetes username [default: metadata.user, admin]
    #[arg(long, value_name = "NAME")]
    pub kubeconfig_user: Option<String>,
    /// Set kubernetes cluster name [default: metadata.name, k0s-cluster]
    #[arg(long, value_name = "NAME")]
    pub kubeconfig_cluster: Option<String>,
    /// Skip downgrade check
    #[arg(long, hide = true)]
    pub disable_downgrade_check: bool,
    /// With --dry-run: exit 9 when changes would be made (0 when none)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Output format: text, or json (one event per line on stdout: phases, changes, plan,
    /// errors with remote stderr, a final summary; logs stay on stderr)
    #[arg(long, alias = "output-format", value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
    /// Taint to be applied to nodes before draining and removed after uncordoning in the format of <key=value>:<effect> (default: from spec.options.evictTaint)
    #[arg(long, value_name = "TAINT", value_parser = parse_evict_taint)]
    pub evict_taint: Option<(String, String)>,
    #[command(flatten)]
    pub deprecated: DeprecatedTimingArgs,
}

/// `<key=value>:<effect>`, as k0sctl parses it.
fn parse_evict_taint(s: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "invalid evict-taint format, expected <key>:<effect>, got {s}"
        ));
    }
    if !config::TAINT_EFFECTS.contains(&parts[1]) {
        return Err(format!(
            "invalid evict-taint effect {:?}, expected one of {}",
            parts[1],
            config::TAINT_EFFECTS.join(", ")
        ));
    }
    Ok((parts[0].to_string(), parts[1].to_string()))
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Set kubernetes API address (full URL) [default: auto-detect]
    #[arg(long, value_name = "URL")]
    pub address: Option<String>,
    /// Set kubernetes cluster username [default: admin]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Set kubernetes cluster name [default: k0s-cluster]
    #[arg(long, short = 'n')]
    pub cluster: Option<String>,
    /// Merge into the first file of $KUBECONFIG (else ~/.kube/config) under a context named
    /// after the cluster, instead of printing; other entries and the current context are kept
    #[arg(long)]
    pub merge: bool,
    /// With --merge: make the cluster's context the current one
    #[arg(long, requires = "merge")]
    pub set_current: bool,
    #[command(flatten)]
    pub deprecated: DeprecatedTimingArgs,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Maximum number of hosts to configure in parallel, set to 0 for unlimited [default: 30]
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Output format: text, or json (one event per line on stdout, as `apply --output json`:
    /// phases, changes, errors with remote stderr, a final summary; logs stay on stderr)
    #[arg(long, alias = "output-format", value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub deprecated: DeprecatedTimingArgs,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output path for the backup. Default is k0s_backup_<timestamp>.tar.gz in current directory
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Maximum number of hosts to configure in parallel, set to 0 for unlimited [default: 30]
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Output format: text, or json (one event per line on stdout, as `apply --output json`).
    /// `--output` is the archive path here, as in k0sctl, hence the longer name
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output_format: String,
    #[command(flatten)]
    pub deprecated: DeprecatedTimingArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Edit k0s dynamic config in SHELL's default editor
    Edit(ConfigEditArgs),
    /// Show k0s dynamic config reconciliation events
    Status(ConfigStatusArgs),
    /// Load and validate the configuration; print every problem with file:line:column
    Validate(ConfigValidateArgs),
}

#[derive(Debug, Args)]
pub struct ConfigEditArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct ConfigStatusArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// kubectl output formatting
    #[arg(long, short = 'o')]
    pub output: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigValidateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// What a command needs from the process: the parsed global flags and the log file.
pub struct Context {
    pub global: GlobalArgs,
    pub log_file: Option<PathBuf>,
}

impl Context {
    /// Loads and validates the configuration named by `--config`, printing warnings.
    pub fn load_config(&self, args: &ConfigArgs) -> Result<Loaded, CliError> {
        let cwd = std::env::current_dir()?;
        let env = |k: &str| std::env::var(k).ok();
        let mut stdin = config::sources::read_process_stdin;
        let loaded = config::load(LoadOptions {
            config_args: &args.config,
            cwd,
            env: &env,
            stdin: &mut stdin,
        })?;
        // Printed as the failure path prints them (file:line:col: warning: …), so a warning
        // reads the same whether the configuration then loads or not.
        for w in &loaded.warnings {
            eprintln!("{w}");
            tracing::debug!("{w}");
        }
        Ok(loaded)
    }
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Code::Usage.as_i32(),
            };
        }
    };
    let talks_to_hosts = matches!(
        cli.command,
        Command::Apply(_)
            | Command::Kubeconfig(_)
            | Command::Reset(_)
            | Command::Backup(_)
            | Command::Exec(_)
            | Command::Config(ConfigCommand::Edit(_) | ConfigCommand::Status(_))
    );
    let log_file = logging::init(logging::Settings {
        debug: cli.global.debug,
        trace: cli.global.trace,
        quiet: matches!(cli.command, Command::Kubeconfig(_)),
        log_file: talks_to_hosts,
        progress: match &cli.command {
            Command::Apply(a) => a.output != "json",
            Command::Reset(a) => a.output != "json",
            Command::Backup(a) => a.output_format != "json",
            _ => false,
        },
    });
    if crate::display::enabled() {
        // Passphrase and password prompts on the terminal step around the bars.
        crate::transport::ssh::auth::set_prompt_guard(|f| crate::display::suspend(f));
    }
    let ctx = Context {
        global: cli.global.clone(),
        log_file,
    };
    let result = run(&ctx, cli.command);
    // The bars go before anything final is printed.
    crate::display::finish();
    match result {
        Ok(()) => 0,
        Err(e) => {
            report_error(&ctx, &e);
            e.code.as_i32()
        }
    }
}

fn report_error(ctx: &Context, e: &CliError) {
    // Config errors are a list; print them as they are, not as one log record.
    eprintln!("{}", e.message);
    if let Some(p) = &ctx.log_file {
        eprintln!("log file saved to {}", p.display());
    }
}

fn run(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::Version(a) => version::run(ctx, a),
        Command::Init(a) => init::run(ctx, a),
        Command::Completion(a) => completion::run(a),
        Command::Config(ConfigCommand::Validate(a)) => config_cmd::validate(ctx, a),
        Command::Exec(a) => exec::run(ctx, a),
        Command::Apply(a) => apply::apply(ctx, a),
        Command::Kubeconfig(a) => apply::kubeconfig(ctx, a),
        Command::Reset(a) => reset::run(ctx, a),
        Command::Backup(a) => backup::run(ctx, a),
        Command::Config(ConfigCommand::Edit(a)) => config_cmd::edit(ctx, a),
        Command::Config(ConfigCommand::Status(a)) => config_cmd::status(ctx, a),
    }
}

/// Runs an async command body on a tokio runtime. SIGINT or SIGTERM cancels it (the future is
/// dropped) and the command ends with the "interrupted" exit code; a second signal while the
/// runtime winds down exits at once, as k0sctl does.
pub fn block_on<F>(fut: F) -> Result<(), CliError>
where
    F: std::future::Future<Output = Result<(), CliError>>,
{
    block_on_value(fut)
}

/// [`block_on`] for bodies that return a value.
pub fn block_on_value<T, F>(fut: F) -> Result<T, CliError>
where
    F: std::future::Future<Output = Result<T, CliError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Register the handlers before any work starts, so an early Ctrl-C is never lost to
        // the default handler.
        let mut signals = Signals::new()?;
        tokio::select! {
            r = fut => r,
            sig = signals.next() => {
                crate::display::finish();
                eprintln!("Aborting ({sig})... Press Ctrl-C again to exit now.");
                tokio::spawn(async move {
                    signals.next().await;
                    eprintln!("Forced exit");
                    std::process::exit(Code::Interrupted.as_i32());
                });
                Err(CliError::new(Code::Interrupted, format!("interrupted by {sig}")))
            }
        }
    })
}

/// Like [`block_on_value`], for pipelines that must clean up when interrupted: the first
/// SIGINT/SIGTERM does not drop the body but sets the [`Interrupt`] it was given (the phase
/// manager then stops the running phase and runs the clean-ups: locks released, half-done
/// installs undone) and waits for it to finish; a second signal exits at once.
pub fn block_on_interruptible<T, F, Fut>(body: F) -> Result<T, CliError>
where
    F: FnOnce(crate::phases::Interrupt) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut signals = Signals::new()?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        let fut = body(crate::phases::Interrupt::new(rx));
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => return r,
            sig = signals.next() => {
                crate::display::finish();
                eprintln!("Aborting ({sig}): cleaning up... Press Ctrl-C again to exit now.");
                let _ = tx.send(Some(sig));
            }
        }
        tokio::select! {
            r = &mut fut => r,
            _ = signals.next() => {
                eprintln!("Forced exit");
                std::process::exit(Code::Interrupted.as_i32());
            }
        }
    })
}

/// SIGINT and SIGTERM, registered once.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn evict_taint_flag() {
        assert_eq!(
            parse_evict_taint("k=v:NoExecute").unwrap(),
            ("k=v".to_string(), "NoExecute".to_string())
        );
        assert!(
            parse_evict_taint("k=v")
                .unwrap_err()
                .contains("expected <key>:<effect>")
        );
        assert!(parse_evict_taint("k=v:Nope").is_err());
    }

    #[test]
    fn globals_after_the_command() {
        let c = Cli::try_parse_from([
            "k0sctl",
            "apply",
            "-d",
            "--timeout",
            "1m",
            "-c",
            "a.yaml",
            "-c",
            "b.yaml",
        ])
        .unwrap();
        assert!(c.global.debug);
        assert_eq!(c.global.timeout, Duration::from_secs(60));
        let Command::Apply(a) = c.command else {
            panic!()
        };
        assert_eq!(a.config.config, vec!["a.yaml", "b.yaml"]);
    }
}
