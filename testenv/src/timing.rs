//! `--realistic` timing of the k0s stand-in: real k0s takes time where the stand-in would
//! otherwise answer at once, and the orchestrator must wait for the right things.
//!
//! * a node registers NotReady and turns Ready only after its CNI is up (tens of seconds on
//!   real hosts): `node_ready_delay` after every start of the stand-in's kubelet;
//! * pods become Ready some seconds after they are scheduled (images, probes):
//!   `pod_ready_delay`;
//! * a controller's Kubernetes API answers only after etcd and the API server started:
//!   `api_start_delay` after every start of a controller;
//! * the disruption controller observes a changed PodDisruptionBudget a moment later (evictions
//!   it covers get 429 "still being processed" until then): `pdb_sync_delay`.
//!
//! The values reach the stand-in through the knob file `/etc/testenv-k0s.env` on every host
//! (`KEY=VALUE` lines, read at use; the service's own environment overrides them).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Delays in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Realistic {
    pub node_ready_delay: u32,
    pub pod_ready_delay: u32,
    pub api_start_delay: u32,
    pub pdb_sync_delay: u32,
}

impl Default for Realistic {
    fn default() -> Self {
        Realistic {
            node_ready_delay: 15,
            pod_ready_delay: 5,
            api_start_delay: 8,
            pdb_sync_delay: 2,
        }
    }
}

impl Realistic {
    /// The knob file's content.
    pub fn knob_file(&self) -> String {
        format!(
            "TESTENV_NODE_READY_DELAY_SECONDS={}\nTESTENV_POD_READY_DELAY_SECONDS={}\nTESTENV_API_START_DELAY_SECONDS={}\nTESTENV_PDB_SYNC_SECONDS={}\n",
            self.node_ready_delay, self.pod_ready_delay, self.api_start_delay, self.pdb_sync_delay
        )
    }

    /// Writes the knob file into a host's root filesystem (e.g. `/proc/<pid>/root`).
    pub fn install(&self, host_root: &Path) -> Result<()> {
        let p = host_root.join(
            crate::k0s::util::KNOB_FILE
                .strip_prefix('/')
                .unwrap_or(crate::k0s::util::KNOB_FILE),
        );
        std::fs::write(&p, self.knob_file()).with_context(|| format!("write {}", p.display()))
    }
}
