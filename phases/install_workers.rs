//! "Install workers": join every worker that does not run k0s yet — a worker join token per
//! host (created on the leader, written 0600, invalidated and overwritten after the join),
//! `k0s install worker`, start, and (unless `--no-wait`) wait for the node to be Ready.

use crate::phases::{Context, each_host};

use super::steps::hooks::{host_hooks, run_host_hooks};
use super::steps::markers::install_finished;
use super::steps::service::{install_and_start, plan_install};
use super::steps::tokens::{create_token, retire_token, write_token};
use super::steps::undo_install::reset_unfinished;
use super::steps::wait::{connection_lost, wait_node_ready};
use super::{HostState, Phase, PhaseError, PhaseFuture, State, collect};

pub struct InstallWorkers;

pub const TITLE: &str = "Install workers";

fn joins(h: &HostState) -> bool {
    h.config.role == "worker" && !h.config.reset && !h.is_running()
}

impl Phase for InstallWorkers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(joins)
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let force = state.opts.force;
            let wait = !state.opts.no_wait && state.config.cluster.spec.options.wait.enabled;
            let todo: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(h))
                .map(|h| h.index)
                .collect();
            // Tokens one by one on the leader, then the joins in parallel.
            let mut tokens = Vec::new();
            for &i in &todo {
                let leader = &state.hosts[l];
                let t = create_token(leader, "worker", "10m0s")
                    .await
                    .context("creating a worker join token")
                    .map_err(|e| PhaseError::on_host(TITLE, leader.name.clone(), e))?;
                tokens.push((i, t));
            }
            state.unfinished.extend(todo.iter().copied());
            let limits = state.pool.limits().clone();
            let target = state.target_version();
            let hosts = &state.hosts;
            let results = each_host(&limits, tokens.iter().map(|(i, token)| (&hosts[*i], token)), |(h, token)| {
                let target = target.as_ref();
                let leader = &hosts[l];
                async move {
                    write_token(h, token).await?;
                    install_and_start(h, false, force, Some(&token.url)).await?;
                    let mut finished = false;
                    if wait {
                        let node = h.node_name()?;
                        // While the leader waits for the node, a lost worker is noticed
                        // (its keepalives) instead of waiting out the whole Ready timeout.
                        tokio::select! {
                            r = wait_node_ready(leader, &node, None) => r?,
                            e = connection_lost(h) => return Err(e),
                        }
                        tracing::info!(about = %h.name, "node {node} is Ready");
                        // Without install.after hooks, the install is finished in the same
                        // round trip as the token overwrite.
                        let no_hooks = host_hooks(&h.config, "install", "after").is_empty();
                        finished = retire_token(leader, h, token, target, no_hooks).await;
                    } else {
                        tracing::warn!(about = %h.name, "--no-wait given, the join token stays valid until it expires (10 minutes)");
                    }
                    run_host_hooks(h, "install", "after").await?;
                    if !finished {
                        install_finished(h).await?;
                    }
                    Ok(())
                }
            })
            .await;
            let done: Vec<usize> = tokens
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|((i, _), _)| *i)
                .collect();
            state.unfinished.retain(|i| !done.contains(i));
            for i in done {
                let name = state.hosts[i].name.clone();
                state.changed(
                    name,
                    "installed and started k0s worker (joined the cluster)",
                );
            }
            collect(TITLE, results)
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(h))
                .map(|h| h.index)
                .collect();
            plan_install(state, idx, "worker (join the cluster)", "k0sworker");
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| h.config.role == "worker" && state.unfinished.contains(&h.index))
                .map(|h| h.index)
                .collect();
            reset_unfinished(state, &idx).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0")
            .running(1, "v1.31.1+k0s.0")
            .fresh(2)
            .leader(0);
        k
    }

    #[test]
    fn joins_only_workers_that_do_not_run_k0s() {
        let mut k = kit(Default::default());
        assert!(InstallWorkers.should_run(&k.state));
        k.state.hosts[2].config.reset = true;
        assert!(!InstallWorkers.should_run(&k.state));
    }

    /// The token is made on the leader, written 0600 on the worker (never in argv), then
    /// `k0s install worker` in the round trip that first checks the API is reachable.
    #[tokio::test]
    async fn joins_with_a_token_from_the_leader() {
        let mut k = kit(super::super::RunOptions {
            no_wait: true,
            ..Default::default()
        });
        let token = crate::k0s::token::dummy_join_token().unwrap();
        k.script(0).on(
            "/usr/local/bin/k0s token create --role=worker --expiry=10m0s",
            &token,
        );
        k.script(2)
            .on("/usr/local/bin/k0s install worker", "")
            .on("systemctl start k0sworker", "")
            .on("systemctl is-active --quiet k0sworker", "")
            .on("rm -f /etc/k0s/.k0sctl-install-incomplete", "");
        k.run(&InstallWorkers).await.unwrap();
        assert_eq!(k.script(0).commands().len(), 1);
        assert!(k.script(1).commands().is_empty());
        let w = k.script(2);
        let u = w.uploaded("/etc/k0s/k0stoken").unwrap();
        assert_eq!((u.mode, u.text()), (0o600, format!("{}\n", token.trim())));
        for c in w.commands().iter().chain(k.script(0).commands().iter()) {
            assert!(!c.contains(token.trim()), "token in argv: {c}");
        }
        // The token file (its directory made 0700 first) in one round trip; then the API
        // check, marker, install and start in one; a wait for the service; with --no-wait
        // no token overwrite, so the marker goes on its own.
        let c = w.commands();
        assert_eq!(c.len(), 4, "{c:#?}");
        assert!(
            c[0].starts_with(
                "install -d -m 700 /etc/k0s || exit 1; umask 077; cat > /etc/k0s/k0stoken.tmp."
            ),
            "{}",
            c[0]
        );
        let install = w.position("/usr/local/bin/k0s install worker");
        assert_eq!(install, 1);
        assert!(c[install].contains("cannot reach the Kubernetes API"));
        assert!(c[install].contains("\nsystemctl start k0sworker || exit $?\n"));
        assert_eq!(c[2], "systemctl is-active --quiet k0sworker");
        assert_eq!(c[3], "rm -f /etc/k0s/.k0sctl-install-incomplete");
        assert!(k.state.unfinished.is_empty());
        assert_eq!(
            k.changes_for(2),
            ["installed and started k0s worker (joined the cluster)"]
        );
    }

    #[tokio::test]
    async fn a_token_the_leader_cannot_make_fails_before_any_worker_is_touched() {
        let mut k = kit(Default::default());
        k.script(0).fail(
            "token create",
            1,
            "Error: refusing to create token: cluster uses kine",
        );
        let e = k.run(&InstallWorkers).await.unwrap_err().to_string();
        assert!(e.contains("creating a worker join token"), "{e}");
        assert!(e.contains("refusing to create token"), "{e}");
        assert!(k.script(2).commands().is_empty());
        assert!(k.state.unfinished.is_empty());
    }

    #[tokio::test]
    async fn dry_run_plans_the_join() {
        let mut k = kit(dry());
        k.run(&InstallWorkers).await.unwrap();
        assert_eq!(
            k.plan_for(2),
            [
                "install k0s worker (join the cluster)",
                "start the k0sworker service"
            ]
        );
        assert!(k.plan_for(1).is_empty());
        k.assert_nothing_ran();
    }
}
