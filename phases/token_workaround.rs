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
                        tracing::debug!("{}: skipping the join token workaround: {e}", h.name);
                        continue;
                    }
                }
                tracing::info!(
                    "{}: applying a workaround for k0s issue #7202 (k0s v1.35.1 decodes the join token file at every start)",
                    h.name
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
                        "{}: failed to write a dummy join token to {}: {e}",
                        h.name,
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
