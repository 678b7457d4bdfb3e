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
    Ok(kubectl_at(h, &p.k0s_binary_path, args))
}

/// [`kubectl`] with the k0s binary at `k0s` (for scripts made before the host is probed).
pub fn kubectl_at(h: &HostState, k0s: &str, args: &str) -> String {
    let dd = h.data_dir();
    crate::host::Configurer::kubectl_cmd(
        k0s,
        &format!("{dd}/pki/admin.conf"),
        &format!(
            "--cache-dir={} {args}",
            shell_quote(&format!("{dd}/kubectl-cache"))
        ),
    )
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::{Kit, manifest_with};

    /// kubectl runs through k0s with the admin kubeconfig and keeps its cache in the data dir.
    #[test]
    fn kubectl_uses_the_data_dir() {
        let y = manifest_with(&[("controller", "    dataDir: /srv/k0s data\n")], "");
        let k = Kit::from_yaml(&y, Default::default());
        assert_eq!(
            kubectl(&k.state.hosts[0], "get nodes").unwrap(),
            "env 'KUBECONFIG=/srv/k0s data/pki/admin.conf' /usr/local/bin/k0s kubectl --cache-dir='/srv/k0s data/kubectl-cache' get nodes"
        );
        let mut k = Kit::new(&["controller"]);
        k.state.hosts[0].host = None;
        assert!(
            kubectl(&k.state.hosts[0], "get nodes").is_err(),
            "an unprobed host has no k0s path"
        );
    }
}
