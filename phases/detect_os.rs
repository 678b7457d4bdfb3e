//! "Detect host operating systems": one round trip per host gathers the facts (OS, arch,
//! hostname, private address, init system, clock, privilege) and picks the OS module.

use crate::host::{Host, ProbeOptions};

use super::{Failure, Missing, Phase, PhaseFuture, State, collect, each_host};

pub struct DetectOs;

pub const TITLE: &str = "Detect host operating systems";

impl Phase for DetectOs {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state
            .hosts
            .iter()
            .any(|h| h.remote.is_some() && h.host.is_none())
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let limits = state.pool.limits().clone();
            let password = state.opts.sudo_password.clone();
            let results = each_host(
                &limits,
                state.hosts.iter_mut().filter(|h| h.host.is_none()),
                |h| {
                        let password = password.clone();
                        async move {
                            let Some(remote) = h.remote.clone() else {
                                return Err(Missing::Connection.into());
                            };
                            let opts = ProbeOptions {
                                os_override: h.config.os.clone(),
                                private_interface: h.config.private_interface.clone(),
                                connect_address: Some(h.config.address().to_string()),
                                k0s_install_path: h.config.k0s_install_path.clone(),
                                sudo_password: password,
                            };
                            let mut probed = Host::probe(remote, &opts).await?;
                            if h.config.use_existing_k0s {
                                // k0s is already on the host (installed by other means): use
                                // the one on the PATH, and never replace it.
                                let Some(path) = probed.facts.k0s_in_path.clone() else {
                                    return Err(Failure::other(
                                        "useExistingK0s is set but there is no k0s on the host's PATH (install it first, or remove useExistingK0s)",
                                    ));
                                };
                                tracing::info!("{}: using the existing k0s at {path}", h.name);
                                probed.k0s_binary_path = path;
                            }
                            // As k0sctl's "Gather host facts": without a `privateAddress` in the
                            // manifest, the address found on the private interface (given, or
                            // the default route's) becomes the host's private address when it
                            // differs from the SSH address. From here on it is the host's
                            // private address everywhere: `--node-ip` of `k0s install`, the etcd
                            // peer address, the API SANs and address.
                            if h.config.private_address.is_none()
                                && let Some(a) = probed.facts.private_address.clone()
                            {
                                tracing::info!(
                                    "{}: discovered {a} as private address (interface {})",
                                    h.name,
                                    probed.facts.private_interface.as_deref().unwrap_or("?")
                                );
                                h.config.private_address = Some(a);
                            }
                            h.host = Some(probed);
                            Ok(())
                        }
                },
            )
            .await;
            collect(TITLE, results)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::Kit;

    fn facts_output(hostname: &str, k0s: &str) -> String {
        format!(
            "@@uname\nLinux\n@@machine\nx86_64\n@@os-release\nID=debian\nVERSION_ID=12\n@@hostname\n{hostname}\n\
             @@machine-id\nabc\n@@uid\n0\n@@init\nsystemd\n@@container\nno\n@@lockdir\nyes\n@@curl\n/usr/bin/curl\n\
             @@k0s\n{k0s}\n@@iface\neth1\n@@addrs\n3: eth1    inet 10.1.0.7/24 scope global eth1\n@@date\n1000\n\
             @@privilege\nroot\n@@end\n"
        )
    }

    /// Only hosts not probed yet are probed, in one round trip; the private address found on
    /// the interface becomes the host's.
    #[tokio::test]
    async fn probes_unprobed_hosts_once_and_takes_the_private_address() {
        let mut k = Kit::new(&["controller", "worker"]);
        assert!(!DetectOs.should_run(&k.state));
        k.state.hosts[1].host = None;
        assert!(DetectOs.should_run(&k.state));
        k.script(1)
            .on("echo @@uname", &facts_output("Worker-A", ""));
        k.run(&DetectOs).await.unwrap();
        assert!(k.script(0).commands().is_empty());
        assert_eq!(k.script(1).commands().len(), 1);
        let h = &k.state.hosts[1];
        let p = h.host.as_ref().unwrap();
        assert_eq!(p.facts.hostname, "worker-a");
        assert_eq!(p.configurer.name, "debian");
        assert_eq!(h.config.private_address.as_deref(), Some("10.1.0.7"));
    }

    #[tokio::test]
    async fn use_existing_k0s_needs_one_on_the_path() {
        let mut k = Kit::new(&["controller", "worker"]);
        for h in &mut k.state.hosts {
            h.host = None;
            h.config.use_existing_k0s = true;
        }
        k.script(0)
            .on("echo @@uname", &facts_output("a", "/opt/bin/k0s"));
        k.script(1).on("echo @@uname", &facts_output("b", ""));
        let e = k.run(&DetectOs).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22: useExistingK0s is set but there is no k0s"),
            "{e}"
        );
        assert!(!e.contains("10.0.0.1:22"), "{e}");
        assert_eq!(
            k.state.hosts[0].host.as_ref().unwrap().k0s_binary_path,
            "/opt/bin/k0s"
        );
    }

    #[tokio::test]
    async fn a_failing_probe_keeps_the_remote_stderr() {
        let mut k = Kit::new(&["controller"]);
        k.state.hosts[0].host = None;
        k.script(0).fail("echo @@uname", 2, "sh: 1: cannot fork");
        let e = k.run(&DetectOs).await.unwrap_err().to_string();
        assert!(e.contains("cannot fork"), "{e}");
        assert!(k.state.hosts[0].host.is_none());
    }
}
