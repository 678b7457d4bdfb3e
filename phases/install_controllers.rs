//! "Install controllers": join the other controllers in quorum-aware batches (k0sctl's rule,
//! [`quorum_batches`]: never more at once than the running members can absorb without losing
//! etcd quorum; each batch's APIs are ready before the next starts), with a controller join
//! token per host that is invalidated afterwards.

use crate::phases::{Context, Failure, each_host};

use super::steps::hooks::run_host_hooks;
use super::steps::markers::install_finished;
use super::steps::service::{install_and_start, plan_install};
use super::steps::tokens::{create_token, retire_token, write_token};
use super::steps::undo_install::reset_unfinished;
use super::steps::wait::wait_api_ready;
use crate::transport::{Cmd, shell_quote};

use super::steps::reset_host::{etcd_leave_command, peer_address, uses_etcd};
use super::{HostState, Phase, PhaseError, PhaseFuture, State, collect};

pub struct InstallControllers;

pub const TITLE: &str = "Install controllers";

fn joins(state: &State, h: &HostState) -> bool {
    h.config.is_controller() && !h.config.reset && !h.is_running() && Some(h.index) != state.leader
}

impl Phase for InstallControllers {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(|h| joins(state, h))
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let l = state
                .leader_index()
                .map_err(|m| PhaseError::missing(TITLE, m))?;
            let force = state.opts.force;
            let todo: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(state, h))
                .map(|h| h.index)
                .collect();
            let running = state
                .hosts
                .iter()
                .filter(|h| h.config.is_controller() && h.is_running())
                .count()
                .max(1); // the leader runs by now
            leave_stale_members(state, l, &todo).await?;
            let batches = quorum_batches(running, todo.len(), state.opts.concurrency);
            let mut rest = todo.as_slice();
            for size in batches {
                let (batch, tail) = rest.split_at(size);
                rest = tail;
                if size > 1 {
                    tracing::info!("joining {size} controllers in parallel");
                }
                // Tokens one by one on the leader, then the batch joins in parallel.
                let mut tokens = Vec::new();
                for &i in batch {
                    let leader = &state.hosts[l];
                    let t = create_token(leader, "controller", "30m0s")
                        .await
                        .context("creating a controller join token")
                        .map_err(|e| PhaseError::on_host(TITLE, leader.name.clone(), e))?;
                    tokens.push((i, t));
                }
                state.unfinished.extend(batch.iter().copied());
                let hosts = &state.hosts;
                let results = each_host(
                    state.pool.limits(),
                    tokens.iter().map(|(i, token)| (&hosts[*i], token)),
                    |(h, token)| {
                        let leader = &hosts[l];
                        async move {
                            write_token(h, token).await?;
                            install_and_start(h, false, force, Some(&token.url)).await?;
                            wait_api_ready(h).await?;
                            retire_token(leader, h, token, None, false).await;
                            tracing::info!(about = %h.name, "controller joined");
                            run_host_hooks(h, "install", "after").await?;
                            install_finished(h).await?;
                            Ok(())
                        }
                    },
                )
                .await;
                for (&i, r) in batch.iter().zip(&results) {
                    if r.is_ok() {
                        state.unfinished.retain(|&x| x != i);
                        let name = state.hosts[i].name.clone();
                        state.changed(
                            name,
                            "installed and started k0s controller (joined the cluster)",
                        );
                    }
                }
                collect(TITLE, results)?;
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| joins(state, h))
                .map(|h| h.index)
                .collect();
            plan_install(state, idx, "controller (join the cluster)", "k0scontroller");
            Ok(())
        })
    }

    fn clean_up<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let idx: Vec<usize> = state
                .hosts
                .iter()
                .filter(|h| {
                    h.config.is_controller()
                        && Some(h.index) != state.leader
                        && state.unfinished.contains(&h.index)
                })
                .map(|h| h.index)
                .collect();
            reset_unfinished(state, &idx).await;
            Ok(())
        })
    }
}

/// The peer addresses among `joining` that are members of the etcd `members_json` (the JSON of
/// `k0s etcd member-list`: `{"members":{"<name>":"https://<peer>:2380"}}`).
pub fn stale_members(members_json: &str, joining: &[String]) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(members_json) else {
        return Vec::new();
    };
    let Some(m) = v["members"].as_object() else {
        return Vec::new();
    };
    let hosts: Vec<String> = m
        .values()
        .map(|u| super::steps::reset_host::peer_host(u.as_str().unwrap_or("")))
        .collect();
    joining
        .iter()
        .filter(|p| hosts.contains(p))
        .cloned()
        .collect()
}

/// A controller about to join runs no k0s, so no etcd member can be its own: one with its peer
/// address was added by an earlier join that was interrupted after the leader added the member
/// (the host then reset, or its etcd never started). Such a member is removed on the leader
/// (`k0s etcd leave --peer-address`) before the join: it counts against etcd's quorum, and the
/// join would add the same peer URL again.
async fn leave_stale_members(state: &State, l: usize, todo: &[usize]) -> Result<(), PhaseError> {
    let leader = &state.hosts[l];
    let joining: Vec<String> = todo
        .iter()
        .map(|&i| &state.hosts[i])
        .filter(|h| uses_etcd(state, h))
        .map(peer_address)
        .collect();
    if joining.is_empty() || !uses_etcd(state, leader) {
        return Ok(());
    }
    let fail = |e: Failure| PhaseError::on_host(TITLE, leader.name.clone(), e);
    let p = leader.probed().map_err(|e| fail(e.into()))?;
    let list = p.k0s_cmd(&format!(
        "etcd member-list --data-dir={}",
        shell_quote(&leader.data_dir())
    ));
    let out = p
        .remote
        .run_str(Cmd::new(list).sudo().display_as("list etcd members"))
        .await
        .map_err(|e| fail(Failure::from(e).context("listing the etcd members")))?;
    // member-list prints its JSON on the last line (after any log lines).
    let json = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    for peer in stale_members(json, &joining) {
        let h = todo
            .iter()
            .map(|&i| &state.hosts[i])
            .find(|h| peer_address(h) == peer)
            .expect("a joining controller");
        tracing::warn!(
            about = %h.name,
            "etcd lists the member {peer} of an earlier join that did not finish; removing it on {} before the join",
            leader.name
        );
        let cmd = etcd_leave_command(&p.k0s_binary_path, &peer, &leader.data_dir());
        // etcd refuses to remove a member while that leaves too few members that have been
        // connected for a few seconds (`etcdserver: unhealthy cluster`): retried for up to 30 s.
        let mut tries = 0;
        loop {
            tries += 1;
            match p.remote.run(Cmd::new(cmd.clone()).sudo()).await {
                Err(e) if tries < 15 && e.to_string().contains("unhealthy cluster") => {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                Err(e) => {
                    return Err(PhaseError::on_host(
                        TITLE,
                        h.name.clone(),
                        Failure::from(e).context(format!(
                            "removing the etcd member {peer} of an earlier, unfinished join (on the leader {})",
                            leader.name
                        )),
                    ));
                }
                Ok(_) => break,
            }
        }
    }
    Ok(())
}

/// Batch sizes for joining `remaining` controllers to `running` ones (as k0sctl's `phase/install_controllers.go`):
/// one host, or `concurrency` < 2 (0 = unlimited) → one at a time; exactly one running and at
/// least two to go → first two together; an even number running → one alone (to make it odd);
/// then batches of `min(max(quorum/2, 1), concurrency, remaining)` with
/// `quorum = (running + remaining)/2 + 1`.
pub fn quorum_batches(mut running: usize, mut remaining: usize, concurrency: usize) -> Vec<usize> {
    let conc = if concurrency == 0 {
        usize::MAX
    } else {
        concurrency
    };
    let mut out = Vec::new();
    if remaining == 0 {
        return out;
    }
    if remaining == 1 || conc < 2 {
        return vec![1; remaining];
    }
    if running == 1 && remaining >= 2 {
        let n = 2.min(conc);
        out.push(n);
        running += n;
        remaining -= n;
    } else if running.is_multiple_of(2) {
        out.push(1);
        running += 1;
        remaining -= 1;
    }
    while remaining > 0 {
        let quorum = (running + remaining) / 2 + 1;
        let n = (quorum / 2).max(1).min(conc).min(remaining);
        out.push(n);
        running += n;
        remaining -= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{quorum_batches, stale_members};

    #[test]
    fn members_with_a_joining_peer_are_stale() {
        let list = r#"{"members":{"c1":"https://10.0.0.1:2380","":"https://10.0.0.3:2380","c4":"https://[fd00::4]:2380"}}"#;
        let joining = ["10.0.0.2", "10.0.0.3", "fd00::4"].map(String::from);
        assert_eq!(stale_members(list, &joining), ["10.0.0.3", "fd00::4"]);
        assert!(stale_members(list, &["10.0.0.2".into()]).is_empty());
        assert!(stale_members("not json", &joining).is_empty());
    }

    #[test]
    fn batches_keep_quorum() {
        assert_eq!(quorum_batches(1, 0, 30), Vec::<usize>::new());
        assert_eq!(quorum_batches(1, 1, 30), [1]);
        assert_eq!(quorum_batches(1, 2, 30), [2]);
        assert_eq!(quorum_batches(1, 4, 30), [2, 1, 1]);
        assert_eq!(quorum_batches(2, 3, 30), [1, 1, 1]);
        assert_eq!(quorum_batches(1, 6, 30), [2, 2, 2]);
        assert_eq!(quorum_batches(1, 4, 1), [1, 1, 1, 1]);
        assert_eq!(quorum_batches(3, 4, 30), [2, 2]);
        // Never more in one batch than the members already running.
        for running in 1..6 {
            for remaining in 0..10 {
                let mut r = running;
                let b = quorum_batches(running, remaining, 30);
                assert_eq!(b.iter().sum::<usize>(), remaining);
                for n in b {
                    assert!(
                        n <= r.max(2),
                        "{running}+{remaining}: batch {n} with {r} running"
                    );
                    r += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    /// etcd's member list on the leader: only the leader itself.
    const MEMBERS: &str = r#"{"members":{"node-1":"https://10.0.0.1:2380"}}"#;

    fn kit(opts: super::super::RunOptions) -> Kit {
        let mut k = Kit::with_opts(&["controller", "controller", "worker"], opts);
        k.running(0, "v1.31.1+k0s.0").fresh(1).fresh(2).leader(0);
        k
    }

    #[test]
    fn joins_controllers_other_than_the_leader() {
        let mut k = kit(Default::default());
        assert!(InstallControllers.should_run(&k.state));
        k.running(1, "v1.31.1+k0s.0");
        assert!(!InstallControllers.should_run(&k.state));
        let mut k = Kit::new(&["controller"]);
        k.fresh(0).leader(0);
        assert!(
            !InstallControllers.should_run(&k.state),
            "the leader is initialised, not joined"
        );
    }

    #[tokio::test]
    async fn joins_with_a_controller_token_and_waits_for_its_api() {
        let mut k = kit(Default::default());
        let token = crate::k0s::token::dummy_join_token().unwrap();
        k.script(0)
            .on("etcd member-list", MEMBERS)
            .on("token create --role=controller --expiry=30m0s", &token)
            .on("token invalidate", "");
        k.controller_install_succeeds(1);
        k.run(&InstallControllers).await.unwrap();
        let c = k.script(1);
        assert!(
            c.position("/usr/local/bin/k0s install controller") < c.position("get --raw=/readyz")
        );
        assert!(
            c.position("get --raw=/readyz")
                < c.position("rm -f /etc/k0s/.k0sctl-install-incomplete")
        );
        // After the join the token file no longer holds the token.
        let u = c.uploaded("/etc/k0s/k0stoken").unwrap();
        assert_eq!(u.text(), "# overwritten by k0sctl after join\n");
        assert!(k.script(0).position("token create") < k.script(0).position("token invalidate"));
        assert!(
            !k.script(0).has_run("etcd leave"),
            "no member of the joining controller was listed"
        );
        assert!(k.script(2).commands().is_empty());
        assert_eq!(
            k.changes_for(1),
            ["installed and started k0s controller (joined the cluster)"]
        );
    }

    #[tokio::test]
    async fn a_failed_join_keeps_stderr_and_is_reset_by_the_clean_up() {
        let mut k = kit(Default::default());
        let token = crate::k0s::token::dummy_join_token().unwrap();
        k.script(0)
            .on("etcd member-list", MEMBERS)
            .on("token create", &token);
        k.script(1).on("install -d -m 0700 /etc/k0s", "").fail(
            "/usr/local/bin/k0s install controller",
            1,
            "cannot reach the Kubernetes API at https://x",
        );
        let e = k.run(&InstallControllers).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("cannot reach the Kubernetes API"),
            "{e}"
        );
        assert_eq!(k.state.unfinished, [1]);
        k.script(1)
            .on("pgrep -f", "")
            .on("systemctl stop k0scontroller", "")
            .on("k0s reset", "")
            .fail("[ -e /etc/systemd/system/k0scontroller.service ]", 1, "")
            .on("rm -f /etc/k0s/k0stoken", "");
        InstallControllers.clean_up(&mut k.state).await.unwrap();
        assert!(
            k.script(1)
                .has_run("/usr/local/bin/k0s reset --data-dir=/var/lib/k0s")
        );
        assert!(!k.script(0).has_run("reset"), "the leader is not reset");
    }

    /// A member with the joining controller's peer address is left over from an interrupted
    /// join: it is removed on the leader (retried while etcd says "unhealthy cluster") before
    /// the join's token is created.
    #[tokio::test]
    async fn a_stale_member_of_the_joining_controller_leaves_first() {
        let mut k = kit(Default::default());
        let token = crate::k0s::token::dummy_join_token().unwrap();
        let leave = "etcd leave --peer-address=10.0.0.2 --data-dir=/var/lib/k0s";
        k.script(0)
            .on(
                "etcd member-list",
                r#"{"members":{"node-1":"https://10.0.0.1:2380","":"https://10.0.0.2:2380"}}"#,
            )
            .on(leave, "")
            .fail_times(leave, 1, "etcdserver: unhealthy cluster", 1)
            .on("token create --role=controller --expiry=30m0s", &token)
            .on("token invalidate", "");
        k.controller_install_succeeds(1)
            .on("install -d -m 0700 /etc/k0s", "");
        k.run(&InstallControllers).await.unwrap();
        let l = k.script(0);
        assert_eq!(
            l.ran_matching(leave).len(),
            2,
            "retried once after unhealthy cluster"
        );
        assert!(l.position("etcd member-list") < l.position(leave));
        assert!(l.position(leave) < l.position("token create"));
    }

    #[tokio::test]
    async fn dry_run_plans_the_join() {
        let mut k = kit(dry());
        k.run(&InstallControllers).await.unwrap();
        assert_eq!(
            k.plan_for(1),
            [
                "install k0s controller (join the cluster)",
                "start the k0scontroller service"
            ]
        );
        k.assert_nothing_ran();
    }
}
