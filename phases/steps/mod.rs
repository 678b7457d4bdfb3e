//! Steps the phases share: small operations on one host (or on the leader for one host), each
//! in a module named for what it does. Phases (one file each in `phases/`) decide *whether* and
//! *in what order*; steps know *how*. Steps never import phases.
//!
//! - [`service`]: install and start (or restart) the k0s service, with its environment.
//! - [`tokens`]: create, write and retire join tokens.
//! - [`wait`]: the shared timeout and the waits (API ready, node Ready, config reconciled).
//! - [`kubectl`]: `k0s kubectl` command lines on a controller.
//! - [`markers`]: k0sctl's notes on a host of an unfinished install or upgrade.
//! - [`hooks`]: one host's user hooks.
//! - [`binary`]: whether a host gets a k0s binary in this run.
//! - [`upgrade_host`]: one host's upgrade or reinstall (and which hosts need one).
//! - [`reset_host`]: one host's reset (with node deletion and etcd leave through the leader).
//! - [`undo_install`]: undoing an install this run did not finish.
//! - [`leader`]: the leader's Kubernetes client.
//! - [`report`]: drain events for humans and for `--output json`.
//! - [`staging`]: the record of staging files on a host, and removing exactly what it names.
//! - [`host_lock`]: the host lock's holder line and scripts (also as part of the host probe).
//! - [`probe`]: the k0s facts script, and the reads the host probe folds into its round trip.

pub mod binary;
pub mod hooks;
pub mod host_lock;
pub mod kubectl;
pub mod leader;
pub mod markers;
pub mod probe;
pub mod report;
pub mod reset_host;
pub mod service;
pub mod staging;
pub mod tokens;
pub mod undo_install;
pub mod upgrade_host;
pub mod wait;

pub use super::{HostState, State};

/// The probed host behind `h` (an error naming the missing fact when it was never probed).
fn probed(h: &HostState) -> Result<&crate::host::Host, crate::phases::Missing> {
    h.probed()
}
