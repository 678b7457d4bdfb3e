//! "Prepare hosts": what a host needs before k0s goes on it — `curl` when missing (the k0s
//! binary and URL `files` are downloaded on the host), `mount --make-rshared /` inside
//! containers whose `/` does not propagate mounts yet, and the manifest's `environment`
//! upserted into `/etc/environment` (k0sctl's behaviour; the k0s service gets the same
//! variables through its drop-in, see [`super::service_env`]). Every step looks first and changes only what differs, so a
//! converged host costs nothing but the reads; a dry run does the reads and plans the rest.

use crate::phases::{Context, Failure, each_host};

use crate::transport::Cmd;

use super::{HostState, Phase, PhaseFuture, State, collect};

pub struct PrepareHosts;

pub const TITLE: &str = "Prepare hosts";

/// `/etc/environment` with `env` upserted: a `KEY=...` line is replaced in place, new keys are
/// appended; every other line is kept as it was.
pub fn upsert_environment(current: &str, env: &[(String, String)]) -> String {
    let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
    for (k, v) in env {
        let want = format!("{k}={v}");
        let prefix = format!("{k}=");
        match lines.iter().position(|l| l.starts_with(&prefix)) {
            Some(i) => lines[i] = want,
            None => lines.push(want),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// What a host needs done (read-only: decided from facts and one read).
struct Todo {
    install_curl: bool,
    rshared: bool,
    /// The new `/etc/environment`, when it must change.
    environment: Option<String>,
}

fn needs_curl(h: &HostState) -> bool {
    h.host.as_ref().is_some_and(|p| !p.facts.has_curl) && !h.config.reset
}

fn rshared(h: &HostState) -> bool {
    h.host
        .as_ref()
        .is_some_and(|p| p.facts.in_container && !p.facts.root_shared)
        && !h.config.reset
}

async fn todo(h: &HostState) -> Result<Todo, Failure> {
    let p = h.probed()?;
    let environment = if h.config.environment.is_empty() {
        None
    } else {
        let cur = p
            .remote
            .run(Cmd::new("cat /etc/environment 2>/dev/null || true"))
            .await?;
        let cur = String::from_utf8_lossy(&cur.stdout).into_owned();
        let env = super::steps::service::service_env(h);
        let new = upsert_environment(&cur, &env);
        (new != cur).then_some(new)
    };
    Ok(Todo {
        install_curl: needs_curl(h),
        rshared: rshared(h),
        environment,
    })
}

impl Phase for PrepareHosts {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state
            .hosts
            .iter()
            .any(|h| needs_curl(h) || rshared(h) || !h.config.environment.is_empty())
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let limits = state.pool.limits().clone();
            let results = each_host(&limits, state.hosts.iter(), |h| {
                async move {
                    let t = todo(h).await?;
                    let p = h.probed()?;
                    let mut done = Vec::new();
                    if t.install_curl {
                        tracing::info!(about = %h.name, "installing curl");
                        p.install_packages(&["curl"]).await?;
                        done.push("installed package curl".to_string());
                    }
                    if t.rshared {
                        // A mount-propagation change, not a file change: not reported as one
                        // (k0sctl does it on every run; here only while `/` is not shared).
                        let _ = p
                            .remote
                            .exec(Cmd::new("mount --make-rshared / 2>/dev/null").sudo())
                            .await;
                    }
                    if let Some(new) = t.environment {
                        tracing::info!(about = %h.name, "updating /etc/environment");
                        p.remote
                            .write_file("/etc/environment", new, 0o644, true)
                            .await
                            .context("writing /etc/environment")?;
                        done.push("updated /etc/environment".to_string());
                    }
                    Ok((h.name.clone(), done))
                }
            })
            .await;
            let mut plain = Vec::new();
            for r in results {
                match r {
                    Ok((host, done)) => {
                        for d in done {
                            state.changed(host.clone(), d);
                        }
                        plain.push(Ok(()));
                    }
                    Err(e) => plain.push(Err(e)),
                }
            }
            collect(TITLE, plain)
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let todos = each_host(state.pool.limits(), state.hosts.iter(), todo).await;
            let mut plain = Vec::new();
            for (i, t) in todos.into_iter().enumerate() {
                match t {
                    Ok(t) => {
                        let name = state.hosts[i].name.clone();
                        if t.install_curl {
                            state.planned(name.clone(), "install package curl");
                        }
                        if t.environment.is_some() {
                            state.planned(name, "update /etc/environment");
                        }
                        plain.push(Ok(()));
                    }
                    Err(e) => plain.push(Err(e)),
                }
            }
            collect(TITLE, plain)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_upsert_keeps_other_lines() {
        let env = vec![
            ("HTTP_PROXY".to_string(), "http://proxy:3128".to_string()),
            ("NO_PROXY".to_string(), "10.0.0.0/8".to_string()),
        ];
        assert_eq!(
            upsert_environment("", &env),
            "HTTP_PROXY=http://proxy:3128\nNO_PROXY=10.0.0.0/8\n"
        );
        assert_eq!(
            upsert_environment("PATH=/bin\nHTTP_PROXY=old\n", &env),
            "PATH=/bin\nHTTP_PROXY=http://proxy:3128\nNO_PROXY=10.0.0.0/8\n"
        );
        // Converged: the same text comes back, so nothing is written.
        let cur = "PATH=/bin\nHTTP_PROXY=http://proxy:3128\nNO_PROXY=10.0.0.0/8\n";
        assert_eq!(upsert_environment(cur, &env), cur);
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry, manifest_with};

    const READ: &str = "cat /etc/environment 2>/dev/null || true";

    fn kit(opts: super::super::RunOptions) -> Kit {
        let y = manifest_with(
            &[
                (
                    "controller",
                    "    environment:\n      HTTP_PROXY: http://proxy:3128\n",
                ),
                ("worker", ""),
            ],
            "",
        );
        Kit::from_yaml(&y, opts)
    }

    #[test]
    fn runs_for_missing_curl_unshared_root_or_environment() {
        let mut k = Kit::new(&["controller"]);
        assert!(!PrepareHosts.should_run(&k.state));
        k.state.hosts[0].host.as_mut().unwrap().facts.has_curl = false;
        assert!(PrepareHosts.should_run(&k.state));
        k.state.hosts[0].config.reset = true;
        assert!(!PrepareHosts.should_run(&k.state));
        assert!(PrepareHosts.should_run(&kit(Default::default()).state));
    }

    /// curl through the OS package manager, `/etc/environment` upserted (0644), nothing for a
    /// converged host.
    #[tokio::test]
    async fn installs_curl_and_upserts_the_environment() {
        let mut k = kit(Default::default());
        k.state.hosts[1].host.as_mut().unwrap().facts.has_curl = false;
        k.script(0).on(READ, "PATH=/bin\n");
        k.script(1).on("apt-get", "");
        k.run(&PrepareHosts).await.unwrap();
        let u = k.script(0).uploaded("/etc/environment").unwrap();
        assert_eq!(
            (u.mode, u.text().as_str()),
            (0o644, "PATH=/bin\nHTTP_PROXY=http://proxy:3128\n")
        );
        let apt = k.script(1).ran_matching("apt-get");
        assert_eq!(apt.len(), 1);
        assert!(
            apt[0].contains("apt-get update") && apt[0].contains("curl"),
            "{apt:?}"
        );
        assert_eq!(k.changes_for(0), ["updated /etc/environment"]);
        assert_eq!(k.changes_for(1), ["installed package curl"]);

        let mut k = kit(Default::default());
        k.script(0)
            .on(READ, "PATH=/bin\nHTTP_PROXY=http://proxy:3128\n");
        k.run(&PrepareHosts).await.unwrap();
        assert!(k.script(0).uploads().is_empty(), "converged");
    }

    #[tokio::test]
    async fn a_failed_package_install_keeps_stderr() {
        let mut k = kit(Default::default());
        k.state.hosts[1].host.as_mut().unwrap().facts.has_curl = false;
        k.script(0).on(READ, "HTTP_PROXY=http://proxy:3128\n");
        k.script(1)
            .fail("apt-get", 100, "E: Unable to locate package curl");
        let e = k.run(&PrepareHosts).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:22") && e.contains("Unable to locate package curl"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn dry_run_reads_and_plans() {
        let mut k = kit(dry());
        k.state.hosts[1].host.as_mut().unwrap().facts.has_curl = false;
        k.script(0).on(READ, "");
        k.run(&PrepareHosts).await.unwrap();
        assert_eq!(k.plan_for(0), ["update /etc/environment"]);
        assert_eq!(k.plan_for(1), ["install package curl"]);
        assert_eq!(k.script(0).commands(), [READ]);
        assert!(k.script(1).commands().is_empty());
    }
}

#[cfg(test)]
mod lost_tests {
    use super::*;
    use crate::phases::Manager;
    use crate::phases::testkit::Kit;

    /// A host lost mid-phase is reported as a lost connection (not as a failed command),
    /// naming the host and what it was doing; the other host's work is kept.
    #[tokio::test]
    async fn a_lost_host_is_reported_as_lost() {
        let mut k = Kit::new(&["controller", "worker"]);
        for h in &mut k.state.hosts {
            h.host.as_mut().unwrap().facts.has_curl = false;
        }
        k.script(0).on("apt-get", "");
        k.script(1).lose("apt-get");
        let e = Manager::new(vec![Box::new(PrepareHosts)])
            .run(&mut k.state)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("connection lost to 1 host"), "{e}");
        assert!(
            e.contains("10.0.0.2:22") && e.contains("while running"),
            "{e}"
        );
        assert_eq!(k.changes_for(0), ["installed package curl"]);
    }
}
