//! `k0s kubectl` command lines for a controller (run with its admin kubeconfig).

use crate::phases::Failure;
use crate::transport::shell_quote;

use super::HostState;
use super::probed;

/// `k0s kubectl` on a controller with its admin kubeconfig. kubectl's discovery and HTTP
/// caches go into the k0s data dir (`--cache-dir`), not into the home directory of whoever
/// sudo runs as, so they go with `k0s reset` instead of staying on the host.
pub fn kubectl(h: &HostState, args: &str) -> Result<String, Failure> {
    let p = probed(h)?;
    let dd = h.data_dir();
    Ok(crate::host::Configurer::kubectl_cmd(
        &p.k0s_binary_path,
        &format!("{dd}/pki/admin.conf"),
        &format!(
            "--cache-dir={} {args}",
            shell_quote(&format!("{dd}/kubectl-cache"))
        ),
    ))
}
