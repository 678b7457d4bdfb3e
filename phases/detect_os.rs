//! "Detect host operating systems": one round trip per host gathers the facts (OS, arch,
//! hostname, private address, init system, clock, privilege) and picks the OS module. In
//! pipelines that take the host lock and gather k0s facts next, the same round trip also
//! takes the lock and reads the k0s facts (see [`DetectOs::fold`]).

use crate::host::{Host, ProbeOptions};

use super::steps::hooks::host_hooks;
use super::steps::{host_lock, probe};
use super::{Failure, Missing, Phase, PhaseFuture, State, collect, each_host};

/// With `fold` (pipelines that take the host lock and gather k0s facts next: apply, reset,
/// backup), the probe also takes the lock (a dry run: only checks it) and, once it holds it,
/// reads the k0s facts — and on the expected leader, with `leader_reads` (apply), the cluster
/// ID and the node and etcd member lists — all in its one round trip (see
/// [`crate::host::Host::probe_with`]); the lock, k0s facts and prune phases use what it read
/// and ask again only when it could not (sudo with a password, another k0sctl holding the
/// lock, a k0s path the guess missed).
#[derive(Default, Clone, Copy)]
pub struct DetectOs {
    pub fold: bool,
    pub leader_reads: bool,
}

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
            let dry = state.opts.dry_run;
            let leader = self
                .leader_reads
                .then(|| probe::expected_leader(state))
                .flatten();
            let root_parts: Vec<Option<String>> = state
                .hosts
                .iter()
                .map(|h| {
                    self.fold.then(|| {
                        let mut part = host_lock::probe_part(dry);
                        // connect.after hooks run between the probe and "Gather k0s facts"
                        // and may change what is there: that host's facts are read after them.
                        if host_hooks(&h.config, "connect", "after").is_empty() {
                            part += &format!(
                                "case \"$K0SCTL_LOCK\" in acquired|free)\n{}\n;; esac\n",
                                probe::k0s_part(state, h, leader == Some(h.index))
                            );
                        }
                        part
                    })
                })
                .collect();
            if self.fold && !dry {
                // Locks may be taken from here on; the release (also by this phase's clean-up)
                // removes only files holding this run's line.
                state.lock_held = true;
            }
            let root_parts = &root_parts;
            let results = each_host(
                &limits,
                state.hosts.iter_mut().filter(|h| h.host.is_none()),
                |h| {
                        let password = password.clone();
                        async move {
                            let root_part = root_parts[h.index].as_deref();
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
                            let (mut probed, root_out) =
                                match Host::probe_with(remote.clone(), &opts, root_part).await {
                                    Ok(p) => p,
                                    Err(e) => {
                                        if root_part.is_some() && !dry {
                                            // The lock may have been taken before the probe failed.
                                            host_lock::release_after_failed_probe(
                                                remote,
                                                opts.sudo_password.clone(),
                                            )
                                            .await;
                                        }
                                        return Err(e.into());
                                    }
                                };
                            h.probe_out = root_out;
                            if h.config.use_existing_k0s {
                                // k0s is already on the host (installed by other means): use
                                // the one on the PATH, and never replace it.
                                let Some(path) = probed.facts.k0s_in_path.clone() else {
                                    return Err(Failure::other(
                                        "useExistingK0s is set but there is no k0s on the host's PATH (install it first, or remove useExistingK0s)",
                                    ));
                                };
                                tracing::info!(about = %h.name, "using the existing k0s at {path}");
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
                                    about = %h.name,
                                    "discovered {a} as private address (interface {})",
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

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            host_lock::release(state).await;
            Ok(())
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
        assert!(!DetectOs::default().should_run(&k.state));
        k.state.hosts[1].host = None;
        assert!(DetectOs::default().should_run(&k.state));
        k.script(1)
            .on("echo @@uname", &facts_output("Worker-A", ""));
        k.run(&DetectOs::default()).await.unwrap();
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
        let e = k.run(&DetectOs::default()).await.unwrap_err().to_string();
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
        let e = k.run(&DetectOs::default()).await.unwrap_err().to_string();
        assert!(e.contains("cannot fork"), "{e}");
        assert!(k.state.hosts[0].host.is_none());
    }

    /// What a folding probe's root part prints on a fresh host whose lock it took.
    fn root_output(k0s_env: &str) -> String {
        format!(
            "@@@root\n@@lockpath\n/run/lock/k0sctl\n@@lock\nacquired\n@@k0sprobe\n/usr/local/bin/k0s\n{k0s_env}\n/run/lock/k0sctl\n\
             @@version\n@@status\n@@config\n@@envfile\n@@service\n@@incomplete\n@@upgrading\n@@staging\n@@end\n\
             @@clusterid\n@@prune\n@@prune-end\n@@@tail 1000.2\n"
        )
    }

    /// With `fold`, each host gets one command: the facts, then (as root) the lock attempt
    /// and the k0s facts; the expected leader also reads the cluster ID and the node list. The
    /// root part's output is kept for the lock and k0s facts phases, and the lock counts as
    /// held (the release removes only files holding this run's line).
    #[tokio::test]
    async fn a_folding_probe_takes_the_lock_and_reads_k0s_facts_in_its_round_trip() {
        let mut k = Kit::new(&["controller", "worker"]);
        for h in &mut k.state.hosts {
            h.host = None;
        }
        let env = |svc: &str| crate::host::InitSystem::Systemd.env_file(svc);
        k.script(0).on(
            "echo @@uname",
            &(facts_output("a", "") + &root_output(&env("k0scontroller"))),
        );
        k.script(1).on(
            "echo @@uname",
            &(facts_output("b", "") + &root_output(&env("k0sworker"))),
        );
        let fold = DetectOs {
            fold: true,
            leader_reads: true,
        };
        k.run(&fold).await.unwrap();
        assert!(k.state.lock_held);
        for i in 0..2 {
            let c = k.script(i).commands();
            assert_eq!(c.len(), 1, "{c:#?}");
            assert!(
                c[0].contains("set -C; printf"),
                "the lock attempt: {}",
                c[0]
            );
            assert!(c[0].contains("echo @@k0sprobe"), "the k0s facts: {}", c[0]);
            assert_eq!(
                c[0].contains("echo @@clusterid"),
                i == 0,
                "the cluster reads only on the expected leader"
            );
            let out = k.state.hosts[i].probe_out.as_deref().unwrap();
            assert!(out.contains("@@lock\nacquired\n"), "{out}");
            assert!(k.state.hosts[i].host.is_some());
        }
        // Without `fold`: the facts only, nothing as root, no lock.
        let mut k = Kit::new(&["controller"]);
        k.state.hosts[0].host = None;
        k.script(0).on("echo @@uname", &facts_output("a", ""));
        k.run(&DetectOs::default()).await.unwrap();
        let c = k.script(0).commands();
        assert!(
            !c[0].contains("set -C") && !c[0].contains("@@k0sprobe"),
            "{}",
            c[0]
        );
        assert!(k.state.hosts[0].probe_out.is_none() && !k.state.lock_held);
    }

    /// A dry run's folding probe only looks at the lock (no `set -C` create) and holds none.
    #[tokio::test]
    async fn a_dry_folding_probe_only_checks_the_lock() {
        let mut k = Kit::with_opts(&["controller"], crate::phases::testkit::dry());
        k.state.hosts[0].host = None;
        k.script(0).on("echo @@uname", &facts_output("a", ""));
        let fold = DetectOs {
            fold: true,
            leader_reads: true,
        };
        k.run(&fold).await.unwrap();
        let c = k.script(0).commands();
        assert_eq!(c.len(), 1);
        assert!(!c[0].contains("set -C"), "{}", c[0]);
        assert!(c[0].contains("echo free"), "{}", c[0]);
        assert!(!k.state.lock_held);
    }

    /// A folding probe that fails (after it may have taken the lock) removes a lock file
    /// holding this run's line, on that host.
    #[tokio::test]
    async fn a_failed_folding_probe_releases_its_lock() {
        let mut k = Kit::new(&["controller"]);
        k.state.hosts[0].host = None;
        k.script(0)
            .on("echo sudo-n; exit 0", "root\n")
            .on("for p in /run/lock/k0sctl /tmp/k0sctl.lock", "")
            .fail("echo @@uname", 2, "sh: 1: cannot fork");
        let fold = DetectOs {
            fold: true,
            leader_reads: false,
        };
        let e = k.run(&fold).await.unwrap_err().to_string();
        assert!(e.contains("cannot fork"), "{e}");
        let rel = k
            .script(0)
            .ran_matching("for p in /run/lock/k0sctl /tmp/k0sctl.lock");
        assert_eq!(rel.len(), 1);
        assert!(
            rel[0].contains(&crate::transport::shell_quote(
                &crate::phases::steps::host_lock::holder()
            )),
            "{}",
            rel[0]
        );
    }
}
