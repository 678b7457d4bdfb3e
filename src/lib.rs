//! k0sctl: an agentless SSH cluster lifecycle orchestrator for k0s.
//!
//! Module map (arrows point one way: phases → host/transport/k0s/kube, never back):
//! - [`config`]: the `k0sctl.yaml` model, loading, defaults and validation.
//! - [`cli`]: command-line surface (clap) and command dispatch; `cli/run.rs` holds the run
//!   logic the commands share (connect, run the phase manager, render the result).
//! - [`exit`]: the exit-code table every command uses.
//! - [`logging`]: tracing setup and the per-run log file.
//! - [`display`]: the live terminal display (phase spinner, host lines, upload bars, phase
//!   timings), fed by log events; used by `cli` and `logging` only.
//! - [`k0s`]: k0s knowledge that needs no host (versions, releases, download URLs, join
//!   tokens, install/reset command lines, kubeconfig rewriting).
//! - [`transport`]: how bytes reach a host (native SSH, OpenSSH, localhost): exec, upload,
//!   download, privilege; knows nothing of OSes or k0s.
//! - [`connect`]: manifest host entry → transport connection spec (the one meeting point).
//! - [`phases`] (top-level `phases/`): the pipeline room. One file per phase (phase files
//!   never import each other); `phases/steps/`: what several phases share (service, tokens,
//!   waits, one host's upgrade or reset, the leader's Kubernetes client, drain reports);
//!   `phases/pipeline.rs`: each command's pipeline composed from named parts; the manager
//!   that runs them. Arrows: pipeline → phases → steps.
//! - [`kube`]: the Kubernetes API room: a kube-rs client tunnelled through the leader's host
//!   connection, node operations (cordon, taints, readiness) and a PodDisruptionBudget-aware
//!   drain; uses [`transport`] (and the drain/taint option types of [`config`]), nothing else.
//! - [`host`]: host-OS knowledge on top of a transport (os-release, configurers, init
//!   systems with every init-system operation as a method of `InitSystem`, facts).

pub mod cli;
pub mod config;
pub mod connect;
pub mod display;
pub mod exit;
pub mod host;
pub mod k0s;
pub mod kube;
pub mod logging;
#[path = "../phases/mod.rs"]
pub mod phases;
pub mod transport;
