//! k0s steps several phases share: install and start the service, wait for the API, create
//! and invalidate join tokens, write token files, wait for a node to be Ready.

use std::time::{Duration, Instant};

use crate::k0s::install::{InstallContext, install_command};
use crate::k0s::token::JoinToken;
use crate::transport::files::UploadOptions;
use crate::transport::{Cmd, shell_quote};

use super::HostState;

/// How long k0sctl waits for services, readiness and nodes.
pub const WAIT: Duration = Duration::from_secs(120);

fn probed(h: &HostState) -> Result<&crate::host::Host, String> {
    h.probed()
}

/// The dry-run plan of installing k0s on the hosts `idx`: install hooks, `install k0s <what>`,
/// the service environment, then starting `service`.
pub fn plan_install(state: &mut super::State, idx: Vec<usize>, what: &str, service: &str) {
    for i in idx {
        super::hooks::plan_host_hooks(state, i, "install", "before");
        let h = state.hosts[i].name.clone();
        state.planned(h.clone(), format!("install k0s {what}"));
        if !state.hosts[i].config.environment.is_empty() {
            state.planned(
                h.clone(),
                format!("write the {service} service environment"),
            );
        }
        state.planned(h, format!("start the {service} service"));
        super::hooks::plan_host_hooks(state, i, "install", "after");
    }
}

/// Shell that waits (up to 2 minutes) until `url` answers over HTTPS from the host — any of
/// 200/401/403/404 proves the API server is there — and otherwise fails naming the URL and
/// what to check. Skipped where neither curl nor wget exists.
pub fn api_reachable_script(url: &str) -> String {
    let u = shell_quote(url);
    format!(
        "if command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1; then i=0; while :; do \
         c=$( (curl -k -s -o /dev/null -w '%{{http_code}}' --connect-timeout 5 -- {u}/version || \
         wget --no-check-certificate -S -q -O /dev/null -T 5 {u}/version 2>&1 | awk '/HTTP\\//{{print $2}}' | tail -n1) 2>/dev/null); \
         case \"$c\" in 200|401|403|404) break;; esac; i=$((i+1)); \
         if [ $i -ge 24 ]; then echo \"cannot reach the Kubernetes API at {url} from this host (last HTTP status: ${{c:-none}}); check the network, DNS and firewall between this host and the controllers\" >&2; exit 1; fi; \
         sleep 5; done; fi",
        url = url.replace(['"', '\\', '$', '`'], "")
    )
}

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

/// Resolves (with a "connection lost" message) once the host's connection is closed; never
/// while it is open. Raced against waits that run elsewhere (on the leader) so a host that
/// dropped out is reported at once.
pub async fn connection_lost(h: &HostState) -> String {
    let Ok(p) = probed(h) else {
        return std::future::pending().await;
    };
    loop {
        if p.remote.connection().is_closed() {
            return format!(
                "{}: {}: the SSH connection was closed while waiting for the node to become Ready",
                p.remote.name(),
                crate::transport::error::CONNECTION_LOST
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
pub async fn upgrade_started(h: &HostState, content: &str) -> Result<(), String> {
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
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Removes [`upgrade_marker`]; with `only_plain`, only one that does not ask for an uncordon
/// (that one is removed by whoever uncordons).
pub async fn upgrade_finished(h: &HostState, only_plain: bool) -> Result<(), String> {
    let p = probed(h)?;
    let m = shell_quote(&upgrade_marker(h));
    let cmd = if only_plain {
        format!("if [ \"$(cat {m} 2>/dev/null)\" = upgrade ]; then rm -f {m}; fi")
    } else {
        format!("rm -f {m}")
    };
    p.remote
        .run(Cmd::new(cmd).sudo())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Removes [`incomplete_marker`]: the host's install is complete.
pub async fn install_finished(h: &HostState) -> Result<(), String> {
    let p = probed(h)?;
    p.remote
        .run(Cmd::new(format!("rm -f {}", shell_quote(&incomplete_marker(h)))).sudo())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `--enable-dynamic-config` for controllers of a cluster in dynamic config mode.
pub fn dynamic_flag(h: &HostState) -> &'static [&'static str] {
    if h.dynamic_config {
        &["--enable-dynamic-config"]
    } else {
        &[]
    }
}

/// The manifest's `environment` as (key, value) pairs.
pub fn service_env(h: &HostState) -> Vec<(String, String)> {
    h.config
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `install.before` hooks, `k0s install <role> …` (with `--force=true` when asked), the service
/// environment, then start the service and wait until the init system reports it running.
/// (`install.after` hooks are the caller's: they run once the host has joined.)
pub async fn install_and_start(
    h: &HostState,
    is_leader: bool,
    force: bool,
    api_url: Option<&str>,
) -> Result<(), String> {
    let p = probed(h)?;
    super::hooks::run_host_hooks(h, "install", "before").await?;
    let mut extra: Vec<&str> = dynamic_flag(h).to_vec();
    if force {
        extra.push("--force=true");
    }
    let cx = InstallContext {
        k0s_path: &p.k0s_binary_path,
        data_dir: &h.data_dir(),
        is_leader,
        token_path: &h.token_path(),
        config_path: &h.k0s_config_path(),
        extra: &extra,
        binary_version: h.k0s.as_ref().and_then(|k| k.binary_version.as_ref()),
    };
    let mut cmd = install_command(&h.config, &cx)?;
    // Recorded before anything is installed (see `incomplete_marker`).
    let marker = incomplete_marker(h);
    cmd = format!(
        "mkdir -p \"$(dirname {m})\" && printf '%s\\n' 'k0s install by k0sctl not finished' > {m}\n{cmd}",
        m = shell_quote(&marker)
    );
    if let Some(url) = api_url {
        // In the same round trip: a joining host must reach the cluster's API first.
        cmd = format!("{}\n{cmd}", api_reachable_script(url));
    }
    tracing::info!(
        "{}: installing k0s {}",
        h.name,
        if h.config.is_controller() {
            "controller"
        } else {
            "worker"
        }
    );
    p.remote
        .run(Cmd::new(cmd).sudo())
        .await
        .map_err(|e| e.to_string())?;
    start_service(h, false, false).await?;
    tracing::info!("{}: {} is running", h.name, h.service_name());
    Ok(())
}

/// After `k0s install` wrote the service: its environment drop-in (when the manifest has
/// `environment`), a service-manager reload when an existing unit was rewritten (`reload`),
/// then start (or `restart` one that runs) and wait until the init system reports it running.
pub async fn start_service(h: &HostState, reload: bool, restart: bool) -> Result<(), String> {
    let p = probed(h)?;
    let init = p.init_system().map_err(|e| e.to_string())?;
    let svc = h.service_name();
    let env = service_env(h);
    if !env.is_empty() {
        init.set_env(&p.remote, svc, &env)
            .await
            .map_err(|e| format!("writing the {svc} service environment: {e}"))?;
    } else if reload && init == crate::host::InitSystem::Systemd {
        // set_env reloads; without it the rewritten unit still needs one.
        p.remote
            .run(Cmd::new("systemctl daemon-reload").sudo())
            .await
            .map_err(|e| e.to_string())?;
    }
    if restart {
        init.restart(&p.remote, svc).await
    } else {
        init.start(&p.remote, svc).await
    }
    .map_err(|e| e.to_string())?;
    init.wait_state(&p.remote, svc, true, WAIT)
        .await
        .map_err(|e| e.to_string())
}

/// `k0s kubectl` on a controller with its admin kubeconfig. kubectl's discovery and HTTP
/// caches go into the k0s data dir (`--cache-dir`), not into the home directory of whoever
/// sudo runs as, so they go with `k0s reset` instead of staying on the host.
pub fn kubectl(h: &HostState, args: &str) -> Result<String, String> {
    let p = probed(h)?;
    let dd = h.data_dir();
    Ok(crate::host::Configurer::kubectl_cmd(
        &p.k0s_binary_path,
        &format!("{dd}/pki/admin.conf"),
        &format!(
            "--cache-dir={} {args}",
            shell_quote(&format!("{dd}/kubectl-cache"))
        ),
    ))
}

/// Polls `check` every second until it returns Ok(true) or `WAIT` passes; the last error (or
/// `what`) explains a timeout.
pub async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(if last.is_empty() {
                format!("timed out after {WAIT:?} waiting for {what}")
            } else {
                format!("timed out after {WAIT:?} waiting for {what}: {last}")
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the controller's API server answers `/readyz` with `ok`.
pub async fn wait_api_ready(h: &HostState) -> Result<(), String> {
    let p = probed(h)?;
    let cmd = kubectl(h, "get --raw=/readyz")?;
    wait_until("the kubernetes API to become ready", || async {
        let out = p
            .remote
            .exec(Cmd::new(cmd.clone()).sudo())
            .await
            .map_err(|e| e.to_string())?;
        Ok(out.success() && out.stdout_str().trim() == "ok")
    })
    .await
}

/// Waits until k0s reports that it reconciled the cluster config (dynamic config mode): an
/// event with reason `SuccessfulReconcile` about the `kube-system/k0s` ClusterConfig.
pub async fn wait_config_reconciled(h: &HostState) -> Result<(), String> {
    let p = probed(h)?;
    let cmd = kubectl(
        h,
        "-n kube-system get event --field-selector involvedObject.name=k0s -o json",
    )?;
    wait_until("k0s to reconcile the dynamic cluster config", || async {
        let out = p
            .remote
            .exec(Cmd::new(cmd.clone()).sudo())
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(out.stderr_str().trim().to_string());
        }
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout_str()).map_err(|e| e.to_string())?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "SuccessfulReconcile"))
    })
    .await
}

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
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if permanent(&e) || Instant::now() + interval > deadline => return Err(e),
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
) -> Result<JoinToken, String> {
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
            let out = p
                .remote
                .run_str(Cmd::new(cmd.clone()).sudo())
                .await
                .map_err(|e| e.to_string())?;
            JoinToken::parse(&out)
        },
    )
    .await
}

/// Writes the token file 0600 (directory 0700 when created).
pub async fn write_token(h: &HostState, token: &JoinToken) -> Result<(), String> {
    let p = probed(h)?;
    let path = h.token_path();
    if let Some((dir, _)) = path.rsplit_once('/')
        && !dir.is_empty()
    {
        p.remote
            .run(Cmd::new(format!("install -d -m 0700 {}", shell_quote(dir))).sudo())
            .await
            .map_err(|e| e.to_string())?;
    }
    p.remote
        .upload(
            std::io::Cursor::new(format!("{}\n", token.raw).into_bytes()),
            &path,
            &UploadOptions::default().mode(0o600).sudo(true),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// After a join: invalidate the token on the leader and overwrite the token file. A worker
/// of k0s v1.35.1 (`worker_version`) decodes that file at every start, so it gets a valid
/// dummy token instead of a comment, as k0sctl writes.
pub async fn retire_token(
    leader: &HostState,
    h: &HostState,
    token: &JoinToken,
    worker_version: Option<&crate::k0s::version::K0sVersion>,
) {
    if let Ok(p) = probed(leader) {
        let cmd = p.k0s_cmd(&format!(
            "token invalidate --data-dir={} {}",
            shell_quote(&leader.data_dir()),
            shell_quote(&token.id)
        ));
        if let Err(e) = p.remote.run(Cmd::new(cmd).sudo()).await {
            tracing::warn!(
                "{}: failed to invalidate the join token {}: {e}",
                leader.name,
                token.id
            );
        }
    }
    let content = match worker_version {
        Some(v) if crate::k0s::token::decodes_token_at_every_start(v) => {
            match crate::k0s::token::dummy_join_token() {
                Ok(t) => t.into_bytes(),
                Err(e) => {
                    tracing::warn!("{}: building a dummy join token: {e}", h.name);
                    return;
                }
            }
        }
        _ => b"# overwritten by k0sctl after join\n".to_vec(),
    };
    if let Ok(p) = probed(h)
        && let Err(e) = p
            .remote
            .upload(
                std::io::Cursor::new(content),
                &h.token_path(),
                &UploadOptions::default().mode(0o600).sudo(true),
            )
            .await
    {
        tracing::warn!("{}: failed to overwrite the join token file: {e}", h.name);
    }
}

/// A Kubernetes client for the cluster through `h`'s own host connection
/// ([`crate::kube::client`]: a tunnel to the API server's local address), authenticated with
/// `h`'s admin kubeconfig (read over SSH; never logged or written locally). k0s writes the
/// API address with its port into `pki/admin.conf`; `api_port` only serves a URL without one.
pub async fn host_client(h: &HostState, api_port: u16) -> Result<crate::kube::Client, String> {
    let p = probed(h)?;
    let admin = p
        .remote
        .read_file(&format!("{}/pki/admin.conf", h.data_dir()), true)
        .await
        .map_err(|e| format!("reading the admin kubeconfig: {e}"))?;
    let secret = crate::transport::Secret::new(String::from_utf8_lossy(&admin).into_owned());
    // Where k0s says its API listens (`onlyBindToAddress` moves it off 127.0.0.1).
    let endpoint =
        crate::kube::ApiEndpoint::from_kubeconfig(&secret, api_port).map_err(|e| e.to_string())?;
    let (client, _) = crate::kube::client(&p.remote, &secret, &endpoint)
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// k0s's default API port (`spec.api.port`).
pub const DEFAULT_API_PORT: u16 = 6443;

/// Waits until the node `name` reports Ready, asking the leader's API server with the same
/// Kubernetes client that drains and cordons ([`crate::kube::wait_node_ready`], through the
/// leader's connection). With `version`, the node must also report the Kubernetes version that
/// k0s release embeds (`status.nodeInfo.kubeletVersion`, `v1.36.3+k0s` for k0s
/// `v1.36.3-rc.0+k0s.0`): right after a restart the Node object still says Ready from before
/// it, and only a kubelet that came back reports the new version.
pub async fn wait_node_ready(
    leader: &HostState,
    name: &str,
    version: Option<&crate::k0s::version::K0sVersion>,
) -> Result<(), String> {
    let client = host_client(leader, DEFAULT_API_PORT).await?;
    let kubelet = version.map(|v| v.kubelet_version());
    crate::kube::wait_node_ready(&client, name, kubelet.as_deref(), WAIT)
        .await
        .map_err(|e| e.to_string())
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
        let r: Result<u32, String> = rt.block_on(retry_for(
            Duration::from_secs(60),
            Duration::from_millis(1),
            |_| false,
            || {
                n += 1;
                let k = n;
                async move {
                    if k < 3 {
                        Err(format!("fail {k}"))
                    } else {
                        Ok(k)
                    }
                }
            },
        ));
        assert_eq!(r, Ok(3));
        let mut m = 0;
        let r: Result<u32, String> = rt.block_on(retry_for(
            Duration::from_millis(20),
            Duration::from_millis(5),
            |_| false,
            || {
                m += 1;
                let k = m;
                async move { Err(format!("fail {k}")) }
            },
        ));
        assert!(m > 1, "retried");
        assert_eq!(r, Err(format!("fail {m}")));
        // A permanent refusal is not retried.
        let mut n2 = 0;
        let r: Result<u32, String> = rt.block_on(retry_for(
            Duration::from_secs(60),
            Duration::from_millis(1),
            |e| e.contains("refusing"),
            || {
                n2 += 1;
                async { Err("Error: refusing to create token: single node".to_string()) }
            },
        ));
        assert_eq!(n2, 1);
        assert!(r.is_err());
    }
}
