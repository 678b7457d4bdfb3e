//! "Gather k0s facts": what k0s is already on each host — binary version, running status and
//! role, installed service, existing config — in one round trip per host; then the leader
//! (the first controller running k0s, else the first controller) and the cluster ID.

use crate::phases::{Failure, HostFailure, each_host};

use crate::exit::Code;
use crate::host::facts::parse_sections;
use crate::k0s::status::K0sStatus;
use crate::k0s::version::K0sVersion;
use crate::transport::{Cmd, shell_quote};

use super::state::K0sFacts;
use super::steps::markers::{incomplete_marker, upgrade_marker};
use super::steps::probe::{CLUSTER_ID_ARGS, facts_script, probe_matches, probed_leader_read};
use super::steps::undo_install::reset_installed;
use super::steps::wait::{WAIT, wait_until};
use super::{Phase, PhaseError, PhaseFuture, State, collect};

pub struct GatherK0sFacts;

pub const TITLE: &str = "Gather k0s facts";

impl Phase for GatherK0sFacts {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let limits = state.pool.limits().clone();
            let force = state.opts.force;
            let dry = state.opts.dry_run;
            let results = each_host(&limits, state.hosts.iter_mut(), |h| {
                async move {
                    let mut plan: Vec<String> = Vec::new();
                    let p = h.probed()?;
                    let env_file = p.facts.init.map(|i| i.env_file(h.service_name()));
                    let out = match probe_matches(h, &p.k0s_binary_path, env_file.as_deref()) {
                        // Read by the host probe, in its round trip.
                        Some(out) => out,
                        None => p
                            .remote
                            .run(Cmd::new(facts_script(h, &p.k0s_binary_path, env_file.as_deref(), &p.facts.lock_file)).sudo())
                            .await?
                            .stdout_str(),
                    };
                    let s = parse_sections(&out);
                    let field = |k: &str| s.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
                    let version = field("version");
                    let binary_version = if version.is_empty() {
                        None
                    } else {
                        Some(K0sVersion::parse(&version).map_err(|e| Failure::other(format!("k0s binary at {}: {e}", p.k0s_binary_path)))?)
                    };
                    let mut status_json = field("status");
                    let upgrading = Some(field("upgrading")).filter(|u| !u.is_empty());
                    if status_json.is_empty()
                        && let Some(svc) = s.get("service").and_then(|v| v.lines().next()).filter(|v| !v.trim().is_empty())
                        && upgrading.is_some()
                        && !force
                    {
                        // An upgrade of this node stopped the service and did not get to
                        // start it again: start it (the upgrade phase then finishes the job).
                        let svc = svc.trim().to_string();
                        if dry {
                            plan.push(format!("start the {svc} service, stopped by an interrupted upgrade"));
                        } else {
                            tracing::warn!(about = %h.name, "the {svc} service was stopped by an upgrade that did not finish; starting it again");
                            let init = p.init_system()?;
                            init.start(&p.remote, &svc).await?;
                            let cmd = p.k0s_cmd("status -o json");
                            let got = std::sync::Mutex::new(String::new());
                            let (cmd, got_ref) = (&cmd, &got);
                            wait_until(&format!("k0s to run again after starting {svc}"), || async move {
                                let out = p.remote.exec(Cmd::new(cmd.clone()).sudo()).await?;
                                if out.success() {
                                    *got_ref.lock().expect("lock") = out.stdout_str();
                                }
                                Ok(out.success())
                            })
                            .await
                            .map_err(|e| e.note(format!("(waited {WAIT:?})")))?;
                            status_json = got.into_inner().expect("lock");
                        }
                    }
                    let status = if status_json.is_empty() {
                        None
                    } else {
                        Some(K0sStatus::parse(&status_json)?)
                    };
                    let mut service = Some(field("service")).filter(|s| !s.is_empty()).map(|s| s.lines().next().unwrap_or("").to_string());
                    let incomplete = field("incomplete") == "yes";
                    // Staging files of an earlier run that was stopped before it moved them into
                    // place: those its record names (the k0s binary's and `files:`), and any
                    // `<k0s path>.tmp.*` (the record lives on /run, which a reboot empties).
                    let mut stale: Vec<String> = Vec::new();
                    for l in field("staging").lines().filter(|l| !l.is_empty()) {
                        if !stale.iter().any(|s| s == l) {
                            stale.push(l.to_string());
                        }
                    }
                    if !stale.is_empty() {
                        if dry {
                            plan.push(format!("remove stale staging files {}", stale.join(", ")));
                        } else {
                            let rm = format!(
                                "{} && rm -f {}",
                                super::steps::staging::remove_paths(&stale),
                                shell_quote(&super::steps::staging::record_path(&p.facts.lock_file))
                            );
                            p.remote.run(Cmd::new(rm).sudo()).await?;
                            tracing::info!(about = %h.name, "removed stale staging files of an earlier run: {}", stale.join(", "));
                        }
                    }
                    if let Some(st) = &status {
                        tracing::info!(about = %h.name, "is running k0s {} version {}", st.role, st.version);
                        if st.role != h.config.role && !(h.config.reset && force) {
                            return Err(Failure::other(format!(
                                "k0s is running as {} but the configuration says {}: role change is not supported (reset the host first, or use reset: true with --force)",
                                st.role, h.config.role
                            )));
                        }
                        if service.is_none() && !force {
                            return Err(Failure::other("k0s is running but no k0s service is installed; stop it or re-run with --force"));
                        }
                    } else if let Some(svc) = service.clone()
                        && binary_version.is_some()
                        && !force
                        && !h.config.reset
                    {
                        if !incomplete {
                            return Err(Failure::other(format!(
                                "the {svc} service is installed but k0s is not running; start it (or reset the host), or re-run with --force"
                            )));
                        }
                        // Installed by a k0sctl run that was interrupted or lost the host
                        // before the install finished: undo it, and the install phases do it
                        // again.
                        if dry {
                            plan.push(format!("reset the unfinished k0s install (the {svc} service of an interrupted run) and install again"));
                        } else {
                            tracing::warn!(about = %h.name, "the {svc} service was installed by an earlier k0sctl run that did not finish; resetting it to install again");
                            reset_installed(h).await?;
                            service = None;
                        }
                    }
                    if incomplete && status.is_some() && !dry {
                        // k0s runs: the unfinished part was only waiting for it — and for the
                        // join token to be overwritten (the run that joined it stopped before
                        // it could; the token itself expires on the leader within minutes). A
                        // k0s release that decodes the file at every start gets a dummy token
                        // from "Ensure join token workaround" next.
                        let t = shell_quote(&h.token_path());
                        let _ = p.remote.exec(Cmd::new(format!(
                            "if [ -f {t} ] && ! grep -q '^#' {t}; then (umask 077; printf '%s\\n' '# overwritten by k0sctl after join' > {t}.tmp.k0sctl && mv -f {t}.tmp.k0sctl {t}); fi; rm -f {}",
                            shell_quote(&incomplete_marker(h))
                        )).sudo()).await;
                    }
                    h.k0s = Some(K0sFacts {
                        binary_version,
                        status,
                        service,
                        config_exists: s.get("config").is_some_and(|v| v.starts_with("yes\n")),
                        config_text: s
                            .get("config")
                            .and_then(|v| v.strip_prefix("yes\n"))
                            .map(str::to_string),
                        service_env: s
                            .get("envfile")
                            .and_then(|v| v.strip_prefix("yes\n").or((v.trim() == "yes").then_some("")))
                            .map(str::to_string),
                    });
                    Ok((h.index, plan, upgrading))
                }
            })
            .await;
            let mut plans = Vec::new();
            let results: Vec<Result<(), HostFailure>> = results
                .into_iter()
                .map(|r| r.map(|p| plans.push(p)))
                .collect();
            let mut upgrades = Vec::new();
            for (i, plan, upgrading) in plans {
                let host = state.hosts[i].name.clone();
                for what in plan {
                    state.planned(host.clone(), what);
                }
                if let Some(u) = upgrading {
                    upgrades.push((i, u));
                }
            }
            collect(TITLE, results)?;

            // k0s dynamic config mode: asked for in the manifest, or already in use (k0sctl
            // turns it on when any controller runs with it or has it in installFlags).
            let dynamic = state.config.cluster.spec.k0s.dynamic_config
                || state
                    .hosts
                    .iter()
                    .filter(|h| h.config.is_controller())
                    .any(|h| {
                        h.config.install_flags.enabled("--enable-dynamic-config")
                            || h.k0s
                                .as_ref()
                                .and_then(|k| k.status.as_ref())
                                .is_some_and(|s| {
                                    s.args.iter().any(|a| {
                                        a == "--enable-dynamic-config"
                                            || (a.starts_with("--enable-dynamic-config=")
                                                && !a.ends_with("false"))
                                    })
                                })
                    });
            if dynamic {
                tracing::info!("k0s dynamic config is in use");
            }
            for h in state.hosts.iter_mut() {
                h.dynamic_config = dynamic && h.config.is_controller();
            }

            let mut controllers: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| h.config.is_controller() && !h.config.reset)
                .map(|h| h.index)
                .collect();
            if controllers.is_empty() {
                // `k0sctl reset` marks every host: the leader is then the one reset last.
                controllers = state
                    .hosts
                    .iter()
                    .filter(|h| h.config.is_controller())
                    .map(|h| h.index)
                    .collect();
            }
            state.leader = controllers
                .iter()
                .copied()
                .find(|&i| state.hosts[i].is_running())
                .or_else(|| controllers.first().copied());
            let Some(l) = state.leader else {
                return Err(PhaseError::new(
                    Code::InvalidConfig,
                    TITLE,
                    "no controller to lead the cluster",
                ));
            };
            let leader = &state.hosts[l];
            if leader.is_running() {
                let p = leader
                    .probed()
                    .map_err(|e| PhaseError::on_host(TITLE, leader.name.clone(), e))?;
                let cmd = super::steps::kubectl::kubectl(leader, CLUSTER_ID_ARGS)
                    .map_err(|e| PhaseError::on_host(TITLE, leader.name.clone(), e))?;
                // Read by the host probe when it guessed this leader (and its k0s) right.
                let read = match probed_leader_read(leader, "clusterid").filter(|v| !v.is_empty()) {
                    Some(uid) => Ok(uid),
                    None => p.remote.run_str(Cmd::new(cmd).sudo()).await,
                };
                match read {
                    Ok(uid) => {
                        tracing::info!(about = %leader.name, "is the leader; cluster ID {uid}");
                        state.cluster_id = Some(uid.trim().to_string());
                    }
                    // A leader being reset needs no cluster ID; a broken API must not stop it.
                    Err(e) if leader.config.reset => {
                        tracing::warn!(about = %leader.name, "could not read the cluster ID: {e}");
                    }
                    Err(e) => {
                        return Err(PhaseError::on_host(
                            TITLE,
                            leader.name.clone(),
                            Failure::from(e).context("reading the cluster ID"),
                        ));
                    }
                }
            } else {
                tracing::info!(
                    about = %leader.name,
                    "will be the leader (no controller runs k0s yet)"
                );
            }
            finish_interrupted_upgrades(state, upgrades).await
        })
    }
}

/// Hosts whose upgrade an earlier run did not finish (see `upgrade_marker`): a node that run
/// cordoned is made schedulable again through the leader, and the note is removed once k0s
/// runs there (the upgrade phases upgrade it again if its version is still old).
async fn finish_interrupted_upgrades(
    state: &mut State,
    upgrades: Vec<(usize, String)>,
) -> Result<(), PhaseError> {
    for (i, note) in upgrades {
        let h = &state.hosts[i];
        if !h.is_running() {
            continue;
        }
        let node = h.node_name().unwrap_or_default();
        let uncordon = note.split_whitespace().any(|w| w == "uncordon");
        if state.opts.dry_run {
            if uncordon {
                let name = h.name.clone();
                state.planned(
                    name,
                    format!(
                        "make node {node} schedulable again (cordoned by an interrupted upgrade)"
                    ),
                );
            }
            continue;
        }
        let fail = |e: Failure| PhaseError::on_host(TITLE, h.name.clone(), e);
        if uncordon && let Some(l) = state.leader.filter(|&l| state.hosts[l].is_running()) {
            let leader = &state.hosts[l];
            let p = leader.probed().map_err(|e| fail(e.into()))?;
            let cmd =
                super::steps::kubectl::kubectl(leader, &format!("uncordon {}", shell_quote(&node)))
                    .map_err(&fail)?;
            p.remote
                .run(Cmd::new(cmd).sudo())
                .await
                .map_err(|e| fail(Failure::from(e).context(format!("uncordoning node {node}"))))?;
            tracing::info!(
                about = %h.name,
                "made node {node} schedulable again (an interrupted upgrade had cordoned it)"
            );
        }
        let p = h.probed().map_err(|e| fail(e.into()))?;
        p.remote
            .run(Cmd::new(format!("rm -f {}", shell_quote(&upgrade_marker(h)))).sudo())
            .await
            .map_err(|e| fail(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const PROBE: &str = "echo @@version;";

    fn out(version: &str, status: &str, service: &str, staging: &str) -> String {
        format!(
            "@@version\n{version}\n@@status\n{status}\n@@config\n@@envfile\n@@service\n{service}\n@@incomplete\n@@upgrading\n@@staging\n{staging}\n@@end\n"
        )
    }

    fn status(role: &str) -> String {
        format!(
            "{{\"Version\":\"v1.31.1+k0s.0\",\"Pid\":10,\"Role\":\"{role}\",\"Workloads\":false,\"Args\":[\"/usr/local/bin/k0s\",\"{role}\",\"--data-dir=/var/lib/k0s\"]}}"
        )
    }

    fn unprobed(roles: &[&str], opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(roles, opts);
        for h in &mut k.state.hosts {
            h.k0s = None;
        }
        k
    }

    /// One probe per host; with nothing running the first controller leads and no cluster ID
    /// is read.
    #[tokio::test]
    async fn fresh_hosts_make_the_first_controller_the_leader() {
        let mut k = unprobed(&["worker", "controller", "controller"], Default::default());
        for s in &k.scripts {
            s.on(PROBE, &out("", "", "", ""));
        }
        k.run(&GatherK0sFacts).await.unwrap();
        assert_eq!(k.state.leader, Some(1));
        assert!(k.state.cluster_id.is_none());
        for s in &k.scripts {
            assert_eq!(s.commands().len(), 1);
            assert!(
                s.commands()[0].contains("[ -x /usr/local/bin/k0s ] && /usr/local/bin/k0s version")
            );
        }
        assert!(
            k.state
                .hosts
                .iter()
                .all(|h| h.k0s.as_ref().unwrap().status.is_none())
        );
    }

    /// The controller running k0s leads, whatever its position; the cluster ID comes from it.
    #[tokio::test]
    async fn the_running_controller_leads_and_gives_the_cluster_id() {
        let mut k = unprobed(&["controller", "controller", "worker"], Default::default());
        k.script(0).on(PROBE, &out("", "", "", ""));
        k.script(1)
            .on(
                PROBE,
                &out("v1.31.1+k0s.0", &status("controller"), "k0scontroller", ""),
            )
            .on(
                "get -n kube-system namespace kube-system -o template={{.metadata.uid}}",
                "6f1c-uid\n",
            );
        k.script(2).on(
            PROBE,
            &out("v1.31.1+k0s.0", &status("worker"), "k0sworker", ""),
        );
        k.run(&GatherK0sFacts).await.unwrap();
        assert_eq!(k.state.leader, Some(1));
        assert_eq!(k.state.cluster_id.as_deref(), Some("6f1c-uid"));
        let w = k.state.hosts[2].k0s.as_ref().unwrap();
        assert_eq!(w.service.as_deref(), Some("k0sworker"));
        assert_eq!(
            w.status.as_ref().unwrap().version.to_string(),
            "v1.31.1+k0s.0"
        );
    }

    #[tokio::test]
    async fn a_role_change_is_refused() {
        let mut k = unprobed(&["controller", "worker"], Default::default());
        k.script(0).on(PROBE, &out("", "", "", ""));
        k.script(1).on(
            PROBE,
            &out("v1.31.1+k0s.0", &status("controller"), "k0scontroller", ""),
        );
        let e = k.run(&GatherK0sFacts).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "10.0.0.2:22: k0s is running as controller but the configuration says worker"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_installed_service_that_does_not_run_is_refused_without_force() {
        let mut k = unprobed(&["controller", "worker"], Default::default());
        k.script(0).on(PROBE, &out("", "", "", ""));
        k.script(1)
            .on(PROBE, &out("v1.31.1+k0s.0", "", "k0sworker", ""));
        let e = k.run(&GatherK0sFacts).await.unwrap_err().to_string();
        assert!(
            e.contains("the k0sworker service is installed but k0s is not running"),
            "{e}"
        );
    }

    /// Staging files of an interrupted run are removed (planned in a dry run).
    #[tokio::test]
    async fn stale_staging_files_are_removed() {
        let staged = "/usr/local/bin/k0s.tmp.0123456789abcdef";
        let mut k = unprobed(&["controller"], Default::default());
        k.script(0)
            .on(PROBE, &out("", "", "", staged))
            .on("rm -f -- /usr/local/bin/k0s.tmp.0123456789abcdef", "");
        k.run(&GatherK0sFacts).await.unwrap();
        assert_eq!(k.script(0).commands().len(), 2);

        let mut k = unprobed(&["controller"], dry());
        k.script(0).on(PROBE, &out("", "", "", staged));
        k.run(&GatherK0sFacts).await.unwrap();
        assert_eq!(
            k.plan_for(0),
            [format!("remove stale staging files {staged}")]
        );
        assert_eq!(k.script(0).commands().len(), 1);
    }

    /// What the host probe read as root on host `i`, with the k0s path, environment file and
    /// lock file it guessed.
    fn probed(k: &Kit, i: usize, k0s: &str, facts: &str, leader: &str) -> String {
        let h = &k.state.hosts[i];
        let env = crate::host::InitSystem::Systemd.env_file(h.service_name());
        format!(
            "@@lockpath\n/run/lock/k0sctl\n@@lock\nacquired\n@@k0sprobe\n{k0s}\n{env}\n/run/lock/k0sctl\n{facts}{leader}"
        )
    }

    /// The facts (and the leader's cluster ID) the host probe read are used: no command, on
    /// any host. A probe that guessed another k0s path is not used: that host is asked again.
    #[tokio::test]
    async fn what_the_probe_read_is_used() {
        let mut k = unprobed(&["controller", "worker"], Default::default());
        let leader = probed(
            &k,
            0,
            "/usr/local/bin/k0s",
            &out("v1.31.1+k0s.0", &status("controller"), "k0scontroller", ""),
            "@@clusterid\nok 6f1c-uid\n@@prune\n@@prune-end\n",
        );
        let worker = probed(
            &k,
            1,
            "/usr/local/bin/k0s",
            &out("v1.31.1+k0s.0", &status("worker"), "k0sworker", ""),
            "",
        );
        k.state.hosts[0].probe_out = Some(leader);
        k.state.hosts[1].probe_out = Some(worker);
        k.run(&GatherK0sFacts).await.unwrap();
        k.assert_nothing_ran();
        assert_eq!(k.state.leader, Some(0));
        assert_eq!(k.state.cluster_id.as_deref(), Some("6f1c-uid"));
        assert_eq!(
            k.state.hosts[1].k0s.as_ref().unwrap().service.as_deref(),
            Some("k0sworker")
        );

        let mut k = unprobed(&["controller"], Default::default());
        let other = probed(&k, 0, "/opt/bin/k0s", &out("", "", "", ""), "");
        k.state.hosts[0].probe_out = Some(other);
        k.script(0).on(PROBE, &out("", "", "", ""));
        k.run(&GatherK0sFacts).await.unwrap();
        assert_eq!(k.script(0).commands().len(), 1);
    }

    /// A host found running with the install marker of an interrupted run: the join token
    /// file still holding a token is overwritten, and the marker removed, in one command.
    #[tokio::test]
    async fn a_joined_host_with_the_install_marker_gets_its_token_overwritten() {
        let mut k = unprobed(&["controller", "worker"], Default::default());
        k.script(0)
            .on(
                PROBE,
                &out("v1.31.1+k0s.0", &status("controller"), "k0scontroller", ""),
            )
            .on("get -n kube-system namespace kube-system", "uid\n");
        k.script(1)
            .on(
                PROBE,
                &out("v1.31.1+k0s.0", &status("worker"), "k0sworker", "")
                    .replace("@@incomplete\n", "@@incomplete\nyes\n"),
            )
            .on("grep -q '^#' /etc/k0s/k0stoken", "");
        k.run(&GatherK0sFacts).await.unwrap();
        let c = k.script(1).ran_matching("grep -q '^#' /etc/k0s/k0stoken");
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("'# overwritten by k0sctl after join' > /etc/k0s/k0stoken.tmp.k0sctl && mv -f /etc/k0s/k0stoken.tmp.k0sctl /etc/k0s/k0stoken"), "{}", c[0]);
        assert!(
            c[0].ends_with("rm -f /etc/k0s/.k0sctl-install-incomplete"),
            "{}",
            c[0]
        );
    }
}
