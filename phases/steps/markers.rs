//! k0sctl's notes on a host that an install or an upgrade is not finished: where they are,
//! writing and removing them.

use crate::phases::Failure;
use crate::transport::{Cmd, shell_quote};

use super::HostState;
use super::probed;

/// The file that marks an install by k0sctl as not finished: written in the same round trip
/// as `k0s install`, before it, and removed once the host has joined (or initialised) the
/// cluster. A host whose k0s service is installed but not running and that has this file was
/// left half-installed by an interrupted or disconnected run, so the next apply may reset and
/// reinstall it without `--force` (`--force` stays for states k0sctl did not create).
pub fn incomplete_marker(h: &HostState) -> String {
    let token = h.token_path();
    let dir = match token.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => ".",
    };
    format!("{}/.k0sctl-install-incomplete", dir.trim_end_matches('/'))
}

/// The file that marks an upgrade of this node as not finished: written before the k0s
/// service is stopped for the upgrade, removed once the node serves again (and, for a drained
/// worker, is schedulable again). Its content is `upgrade`, or `upgrade uncordon` when this
/// run cordoned the node (so a later run knows to make it schedulable again). The next apply
/// starts a service such a run left stopped instead of refusing the host.
pub fn upgrade_marker(h: &HostState) -> String {
    incomplete_marker(h).replace("install-incomplete", "upgrade-incomplete")
}

/// Writes [`upgrade_marker`] with `content` unless it exists.
pub async fn upgrade_started(h: &HostState, content: &str) -> Result<(), Failure> {
    let p = probed(h)?;
    let m = shell_quote(&upgrade_marker(h));
    p.remote
        .run(
            Cmd::new(format!(
                "[ -e {m} ] || {{ mkdir -p \"$(dirname {m})\" && printf '%s\\n' {c} > {m}; }}",
                c = shell_quote(content)
            ))
            .sudo(),
        )
        .await?;
    Ok(())
}

/// Removes [`upgrade_marker`]; with `only_plain`, only one that does not ask for an uncordon
/// (that one is removed by whoever uncordons).
pub async fn upgrade_finished(h: &HostState, only_plain: bool) -> Result<(), Failure> {
    let p = probed(h)?;
    let m = shell_quote(&upgrade_marker(h));
    let cmd = if only_plain {
        format!("if [ \"$(cat {m} 2>/dev/null)\" = upgrade ]; then rm -f {m}; fi")
    } else {
        format!("rm -f {m}")
    };
    p.remote.run(Cmd::new(cmd).sudo()).await?;
    Ok(())
}

/// Removes [`incomplete_marker`]: the host's install is complete.
pub async fn install_finished(h: &HostState) -> Result<(), Failure> {
    let p = probed(h)?;
    p.remote
        .run(Cmd::new(format!("rm -f {}", shell_quote(&incomplete_marker(h)))).sudo())
        .await?;
    Ok(())
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::{Kit, manifest_with};

    /// The markers live next to the join token file; an upgrade note is written once and
    /// removed only when it asks for no uncordon (with `only_plain`).
    #[tokio::test]
    async fn markers_follow_the_token_file() {
        let y = manifest_with(
            &[(
                "controller",
                "    installFlags:\n    - --token-file=/srv/t/tok\n",
            )],
            "",
        );
        let k = Kit::from_yaml(&y, Default::default());
        let h = &k.state.hosts[0];
        assert_eq!(incomplete_marker(h), "/srv/t/.k0sctl-install-incomplete");
        assert_eq!(upgrade_marker(h), "/srv/t/.k0sctl-upgrade-incomplete");
        let s = k.script(0);
        s.otherwise(crate::transport::scripted::Reply::ok(""));
        upgrade_started(h, "upgrade uncordon").await.unwrap();
        upgrade_finished(h, true).await.unwrap();
        install_finished(h).await.unwrap();
        let c = s.commands();
        assert!(
            c[0].starts_with("[ -e /srv/t/.k0sctl-upgrade-incomplete ] || {")
                && c[0].contains("'upgrade uncordon'"),
            "{}",
            c[0]
        );
        assert!(
            c[1].contains("= upgrade ]; then rm -f /srv/t/.k0sctl-upgrade-incomplete"),
            "{}",
            c[1]
        );
        assert_eq!(c[2], "rm -f /srv/t/.k0sctl-install-incomplete");
    }
}
