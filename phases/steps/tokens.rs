//! Join tokens: create one on the leader (retried while k0s settles), write the token file,
//! and retire a used token (invalidate it, overwrite the file).

use crate::phases::Failure;
use std::time::{Duration, Instant};

use crate::k0s::token::JoinToken;
use crate::transport::files::UploadOptions;
use crate::transport::{Cmd, shell_quote};

use super::HostState;
use super::probed;

/// How long `k0s token create` is retried: right after the leader's API came up (or while it
/// settles after a restart) k0s may fail to create the bootstrap-token Secret; k0sctl retries
/// the command for up to 2 minutes too.
pub const TOKEN_CREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `attempt` until it succeeds, fails with an error `permanent` recognises, or `timeout`
/// has passed since the first try, `interval` apart; the error is the last attempt's.
pub async fn retry_for<T, F, Fut>(
    timeout: Duration,
    interval: Duration,
    permanent: impl Fn(&str) -> bool,
    mut attempt: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if permanent(&e.to_string()) || Instant::now() + interval > deadline => {
                return Err(e);
            }
            Err(e) => tracing::debug!("retrying after: {e}"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Creates a join token on the leader (retried for [`TOKEN_CREATE_TIMEOUT`]); its secret never
/// appears in logs or errors.
pub async fn create_token(
    leader: &HostState,
    role: &str,
    expiry: &str,
) -> Result<JoinToken, Failure> {
    let p = probed(leader)?;
    let cmd = p.k0s_cmd(&format!(
        "token create --role={role} --expiry={expiry} --data-dir={}",
        shell_quote(&leader.data_dir())
    ));
    // k0s refuses for good when the cluster cannot take the join (single node, kine storage:
    // "refusing to create token: …"); only other failures are worth retrying.
    let refused = |e: &str| e.contains("refusing to create token");
    retry_for(
        TOKEN_CREATE_TIMEOUT,
        Duration::from_secs(3),
        refused,
        || async {
            let out = p.remote.run_str(Cmd::new(cmd.clone()).sudo()).await?;
            Ok(JoinToken::parse(&out)?)
        },
    )
    .await
}

/// Writes the token file 0600 (directory 0700, made or set first), in one round trip: the
/// directory, the file (verified, moved into place).
pub async fn write_token(h: &HostState, token: &JoinToken) -> Result<(), Failure> {
    let p = probed(h)?;
    p.remote
        .upload_bytes(
            format!("{}\n", token.raw).into_bytes(),
            &h.token_path(),
            &UploadOptions::default()
                .mode(0o600)
                .sudo(true)
                .parent_mode(0o700),
        )
        .await?;
    Ok(())
}

/// After a join: invalidate the token on the leader and overwrite the token file. A worker
/// of k0s v1.35.1 (`worker_version`) decodes that file at every start, so it gets a valid
/// dummy token instead of a comment, as k0sctl writes. With `finish` (the host has no
/// `install.after` hooks), the same round trip also does
/// [`install_finished`](super::markers::install_finished); returns whether it did.
pub async fn retire_token(
    leader: &HostState,
    h: &HostState,
    token: &JoinToken,
    worker_version: Option<&crate::k0s::version::K0sVersion>,
    finish: bool,
) -> bool {
    if let Ok(p) = probed(leader) {
        let cmd = p.k0s_cmd(&format!(
            "token invalidate --data-dir={} {}",
            shell_quote(&leader.data_dir()),
            shell_quote(&token.id)
        ));
        if let Err(e) = p.remote.run(Cmd::new(cmd).sudo()).await {
            tracing::warn!(
                about = %leader.name,
                "failed to invalidate the join token {}: {e}",
                token.id
            );
        }
    }
    let content = match worker_version {
        Some(v) if crate::k0s::token::decodes_token_at_every_start(v) => {
            match crate::k0s::token::dummy_join_token() {
                Ok(t) => t.into_bytes(),
                Err(e) => {
                    tracing::warn!(about = %h.name, "building a dummy join token: {e}");
                    return false;
                }
            }
        }
        _ => b"# overwritten by k0sctl after join\n".to_vec(),
    };
    let mut opts = UploadOptions::default().mode(0o600).sudo(true);
    if finish {
        opts = opts.then(format!(
            "rm -f {}",
            shell_quote(&super::markers::incomplete_marker(h))
        ));
    }
    let Ok(p) = probed(h) else { return false };
    match p.remote.upload_bytes(content, &h.token_path(), &opts).await {
        Ok(_) => finish,
        Err(e) => {
            tracing::warn!(about = %h.name, "failed to overwrite the join token file: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_for_retries_until_success_and_keeps_the_last_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut n = 0;
        let r: Result<u32, Failure> = rt.block_on(retry_for(
            Duration::from_secs(60),
            Duration::from_millis(1),
            |_| false,
            || {
                n += 1;
                let k = n;
                async move {
                    if k < 3 {
                        Err(format!("fail {k}").into())
                    } else {
                        Ok(k)
                    }
                }
            },
        ));
        assert_eq!(r.unwrap(), 3);
        let mut m = 0;
        let r: Result<u32, Failure> = rt.block_on(retry_for(
            Duration::from_millis(20),
            Duration::from_millis(5),
            |_| false,
            || {
                m += 1;
                let k = m;
                async move { Err(format!("fail {k}").into()) }
            },
        ));
        assert!(m > 1, "retried");
        assert_eq!(r.unwrap_err().to_string(), format!("fail {m}"));
        // A permanent refusal is not retried.
        let mut n2 = 0;
        let r: Result<u32, Failure> = rt.block_on(retry_for(
            Duration::from_secs(60),
            Duration::from_millis(1),
            |e| e.contains("refusing"),
            || {
                n2 += 1;
                async { Err("Error: refusing to create token: single node".into()) }
            },
        ));
        assert_eq!(n2, 1);
        assert!(r.is_err());
    }
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::Kit;

    /// The token reaches the host only as a 0600 file (its directory 0700), never in argv.
    #[tokio::test]
    async fn a_token_is_written_privately() {
        let k = Kit::new(&["controller", "worker"]);
        let raw = crate::k0s::token::dummy_join_token().unwrap();
        let token = JoinToken::parse(&raw).unwrap();
        write_token(&k.state.hosts[1], &token).await.unwrap();
        let s = k.script(1);
        let u = s.uploaded("/etc/k0s/k0stoken").unwrap();
        assert_eq!((u.mode, u.text()), (0o600, format!("{}\n", raw.trim())));
        assert!(s.commands().iter().all(|c| !c.contains(raw.trim())));
        // One round trip: the directory made 0700 first, then the file.
        assert_eq!(s.commands().len(), 1);
        assert!(
            s.commands()[0].starts_with("install -d -m 700 /etc/k0s || exit 1; umask 077; cat > "),
            "{}",
            s.commands()[0]
        );
    }

    /// After a join the token is invalidated on the leader and the file overwritten: with a
    /// comment, or with a decodable dummy for a k0s v1.35.1 worker.
    #[tokio::test]
    async fn a_used_token_is_retired() {
        let k = Kit::new(&["controller", "worker"]);
        let token = JoinToken::parse(&crate::k0s::token::dummy_join_token().unwrap()).unwrap();
        k.script(0).on(
            "/usr/local/bin/k0s token invalidate --data-dir=/var/lib/k0s",
            "",
        );
        assert!(!retire_token(&k.state.hosts[0], &k.state.hosts[1], &token, None, false).await);
        assert!(k.script(0).commands()[0].ends_with(&token.id));
        let u = k.script(1).uploaded("/etc/k0s/k0stoken").unwrap();
        assert_eq!(
            (u.mode, u.text().as_str()),
            (0o600, "# overwritten by k0sctl after join\n")
        );
        assert!(!k.script(1).has_run(".k0sctl-install-incomplete"));
        let v = crate::k0s::version::K0sVersion::parse("v1.35.1+k0s.0").unwrap();
        // With `finish`, the install marker goes in the overwrite's round trip.
        k.script(1).clear_record();
        assert!(retire_token(&k.state.hosts[0], &k.state.hosts[1], &token, Some(&v), true).await);
        let u = k.script(1).uploaded("/etc/k0s/k0stoken").unwrap();
        assert!(JoinToken::parse(&u.text()).is_ok(), "a decodable dummy");
        let c = k.script(1).commands();
        assert_eq!(c.len(), 1);
        assert!(
            c[0].ends_with(&format!(
                "\nrm -f {}",
                shell_quote(&crate::phases::steps::markers::incomplete_marker(
                    &k.state.hosts[1]
                ))
            )),
            "{}",
            c[0]
        );
    }
}
