//! k0sctl: an agentless SSH cluster lifecycle orchestrator for k0s.
//!
//! Module map (arrows point one way: phases → host/transport/k0s/kube, never back):
//! - [`config`]: the `k0sctl.yaml` model, loading, defaults and validation.
//! - [`cli`]: command-line surface (clap) and command dispatch.
//! - [`exit`]: the exit-code table every command uses.
//! - [`logging`]: tracing setup and the per-run log file.

pub mod host;
pub mod transport;
