//! "Ensure join token workaround": k0s v1.35.1's worker decodes its join-token file at every
//! start (k0s issue #7202), so a worker that runs that release, or is about to be upgraded to
//! it, must find a decodable token there — not the comment written over the token after an
//! earlier join. For such workers whose token file is not base64, a syntactically valid dummy
//! token is written (0600), as k0sctl's phase of the same name does. Other releases read the
//! file only before their first join and are left alone.

use crate::k0s::token::{decodes_token_at_every_start, dummy_join_token, is_base64};
use crate::phases::Failure;
use crate::transport::{Cmd, UploadOptions, shell_quote};

use super::{HostState, Phase, PhaseFuture, State};

pub struct EnsureJoinTokenWorkaround;

pub const TITLE: &str = "Ensure join token workaround";

fn affected(state: &State, h: &HostState) -> bool {
    if h.config.role != "worker" || h.config.reset {
        return false;
    }
    let running = h
        .k0s
        .as_ref()
        .and_then(|k| k.status.as_ref())
        .map(|s| s.version.clone());
    match running {
        Some(r) if decodes_token_at_every_start(&r) => true,
        Some(r) => state
            .target_version()
            .is_some_and(|t| t != r && decodes_token_at_every_start(&t)),
        None => false,
    }
}

async fn token_file_is_base64(h: &HostState) -> Result<bool, Failure> {
    let p = h.probed()?;
    let out = p
        .remote
        .exec(Cmd::new(format!("cat {}", shell_quote(&h.token_path()))).sudo())
        .await?;
    if !out.success() {
        return Err(format!(
            "could not read {}: {}",
            h.token_path(),
            out.stderr_str().trim()
        )
        .into());
    }
    Ok(is_base64(&out.stdout_str()))
}

/// The hosts this phase looks at (see [`affected`]), by index.
fn todo(state: &State) -> Vec<usize> {
    state
        .hosts
        .iter()
        .filter(|h| affected(state, h))
        .map(|h| h.index)
        .collect()
}

impl Phase for EnsureJoinTokenWorkaround {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(|h| affected(state, h))
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            for i in todo(state) {
                let h = &state.hosts[i];
                match token_file_is_base64(h).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(about = %h.name, "skipping the join token workaround: {e}");
                        continue;
                    }
                }
                tracing::info!(
                    about = %h.name,
                    "applying a workaround for k0s issue #7202 (k0s v1.35.1 decodes the join token file at every start)"
                );
                let written = async {
                    let token = dummy_join_token()?;
                    h.probed()?
                        .remote
                        .upload(
                            std::io::Cursor::new(token.into_bytes()),
                            &h.token_path(),
                            &UploadOptions::default().mode(0o600).sudo(true),
                        )
                        .await
                        .map_err(Failure::from)
                }
                .await;
                match written {
                    Ok(_) => {
                        let name = h.name.clone();
                        state.changed(name, "wrote a dummy join token for k0s v1.35.1");
                    }
                    Err(e) => tracing::warn!(
                        about = %h.name,
                        "failed to write a dummy join token to {}: {e}",
                        h.token_path()
                    ),
                }
            }
            Ok(())
        })
    }

    fn dry_run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            for i in todo(state) {
                if let Ok(false) = token_file_is_base64(&state.hosts[i]).await {
                    let name = state.hosts[i].name.clone();
                    state.planned(name, "write a dummy join token for k0s v1.35.1");
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry};

    const READ: &str = "cat /etc/k0s/k0stoken";

    fn kit(opts: super::super::RunOptions, version: &str) -> Kit {
        let mut k = Kit::with_opts(&["controller", "worker"], opts);
        k.running(0, version)
            .running(1, version)
            .leader(0)
            .target(version);
        k
    }

    /// Only workers running k0s v1.35.1 (or about to be upgraded to it) are looked at.
    #[test]
    fn affects_workers_of_the_release_that_decodes_the_token() {
        let mut k = kit(Default::default(), "v1.35.1+k0s.0");
        assert!(EnsureJoinTokenWorkaround.should_run(&k.state));
        k.state.hosts[1].config.reset = true;
        assert!(!EnsureJoinTokenWorkaround.should_run(&k.state));
        let mut k = kit(Default::default(), "v1.34.2+k0s.0");
        assert!(!EnsureJoinTokenWorkaround.should_run(&k.state));
        k.target("v1.35.1+k0s.0");
        assert!(EnsureJoinTokenWorkaround.should_run(&k.state));
    }

    #[tokio::test]
    async fn writes_a_dummy_token_0600_over_a_comment() {
        let mut k = kit(Default::default(), "v1.35.1+k0s.0");
        k.script(1).on(READ, "# overwritten by k0sctl after join\n");
        k.run(&EnsureJoinTokenWorkaround).await.unwrap();
        let u = k
            .script(1)
            .uploaded("/etc/k0s/k0stoken")
            .expect("token written");
        assert_eq!(u.mode, 0o600);
        assert!(crate::k0s::token::is_base64(&u.text()));
        assert!(
            k.script(0).commands().is_empty(),
            "controllers are left alone"
        );
        assert_eq!(
            k.changes_for(1),
            ["wrote a dummy join token for k0s v1.35.1"]
        );
    }

    #[tokio::test]
    async fn a_base64_token_or_an_unreadable_file_is_left_alone() {
        let mut k = kit(Default::default(), "v1.35.1+k0s.0");
        k.script(1).on(READ, "aGVsbG8=\n");
        k.run(&EnsureJoinTokenWorkaround).await.unwrap();
        assert!(k.script(1).uploads().is_empty());
        let mut k = kit(Default::default(), "v1.35.1+k0s.0");
        k.script(1)
            .fail(READ, 1, "cat: /etc/k0s/k0stoken: No such file or directory");
        k.run(&EnsureJoinTokenWorkaround).await.unwrap();
        assert!(k.script(1).uploads().is_empty());
        assert_eq!(k.script(1).commands(), [READ]);
    }

    #[tokio::test]
    async fn dry_run_reads_but_writes_nothing() {
        let mut k = kit(dry(), "v1.35.1+k0s.0");
        k.script(1).on(READ, "# overwritten by k0sctl after join\n");
        k.run(&EnsureJoinTokenWorkaround).await.unwrap();
        assert_eq!(k.plan_for(1), ["write a dummy join token for k0s v1.35.1"]);
        assert_eq!(k.script(1).commands(), [READ]);
    }
}
