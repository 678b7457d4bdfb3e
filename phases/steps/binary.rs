//! Which hosts get a k0s binary in this run ("Stage k0s binaries" and "Install k0s binaries"
//! decide alike).

use crate::k0s::version::K0sVersion;

use super::HostState;

/// Whether the host gets a k0s binary in this run (shared with "Install k0s binaries").
pub(crate) fn needs_binary(h: &HostState, target: &K0sVersion) -> bool {
    if h.config.reset || h.config.use_existing_k0s {
        return false;
    }
    let current = h.k0s.as_ref().and_then(|k| k.binary_version.as_ref());
    h.config.k0s_binary_path.is_some() || current != Some(target)
}
