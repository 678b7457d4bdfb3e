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
