//! Installing and starting the k0s service on one host (and its dry-run plan): `k0s install`,
//! the service environment, start or restart, and waiting until the init system reports it
//! running.

use crate::k0s::install::{InstallContext, install_command, install_flags};
use crate::k0s::version::K0sVersion;
use crate::phases::{Context, Failure};
use crate::transport::{Cmd, shell_quote};

use super::HostState;
use super::markers::incomplete_marker;
use super::probed;
use super::wait::WAIT;

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

/// `--enable-dynamic-config` for controllers of a cluster in dynamic config mode.
pub fn dynamic_flag(h: &HostState) -> &'static [&'static str] {
    if h.dynamic_config {
        &["--enable-dynamic-config"]
    } else {
        &[]
    }
}

/// The `k0s install` role and flags for `h` (its binary, data dir, token and config paths), with
/// k0sctl's `extra` flags, for the k0s `version` that will run the command.
pub fn host_install_flags(
    h: &HostState,
    is_leader: bool,
    extra: &[&str],
    version: Option<&K0sVersion>,
) -> Result<(&'static str, crate::config::flags::Flags), Failure> {
    with_install_context(h, is_leader, extra, version, |cx| {
        install_flags(&h.config, cx)
    })?
    .map_err(Failure::from)
}

/// The `k0s install` command line for `h` (see [`host_install_flags`]).
pub fn host_install_command(
    h: &HostState,
    is_leader: bool,
    extra: &[&str],
    version: Option<&K0sVersion>,
) -> Result<String, Failure> {
    with_install_context(h, is_leader, extra, version, |cx| {
        install_command(&h.config, cx)
    })?
    .map_err(Failure::from)
}

fn with_install_context<R>(
    h: &HostState,
    is_leader: bool,
    extra: &[&str],
    version: Option<&K0sVersion>,
    f: impl FnOnce(&InstallContext) -> R,
) -> Result<R, Failure> {
    let p = probed(h)?;
    let (data_dir, token_path, config_path) = (h.data_dir(), h.token_path(), h.k0s_config_path());
    Ok(f(&InstallContext {
        k0s_path: &p.k0s_binary_path,
        data_dir: &data_dir,
        is_leader,
        token_path: &token_path,
        config_path: &config_path,
        extra,
        binary_version: version,
    }))
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
/// Without a service environment, the start and a first look whether it runs go in the
/// install's round trip. (`install.after` hooks are the caller's: they run once the host has joined.)
pub async fn install_and_start(
    h: &HostState,
    is_leader: bool,
    force: bool,
    api_url: Option<&str>,
) -> Result<(), Failure> {
    let p = probed(h)?;
    super::hooks::run_host_hooks(h, "install", "before").await?;
    let mut extra: Vec<&str> = dynamic_flag(h).to_vec();
    if force {
        extra.push("--force=true");
    }
    let binary_version = h.k0s.as_ref().and_then(|k| k.binary_version.as_ref());
    let mut cmd = host_install_command(h, is_leader, &extra, binary_version)?;
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
    // Without a service environment to write first, the start (and a first look whether it
    // runs) goes in the same round trip as the install.
    let init = p.init_system()?;
    let svc = h.service_name();
    let fold_start = service_env(h).is_empty();
    if fold_start {
        cmd = format!(
            "{cmd}\nrc=$?; [ \"$rc\" = 0 ] || exit \"$rc\"\n{} || exit $?\nif {}; then echo {RUNNING}; fi",
            init.start_cmd(svc),
            init.is_running_cmd(svc)
        );
    }
    tracing::info!(
        about = %h.name,
        "installing k0s {}",
        if h.config.is_controller() {
            "controller"
        } else {
            "worker"
        }
    );
    let out = p.remote.run(Cmd::new(cmd).sudo()).await?;
    if !fold_start {
        start_service(h, false, false).await?;
    } else if !out.stdout_str().lines().any(|l| l.trim() == RUNNING) {
        init.wait_state(&p.remote, svc, true, WAIT).await?;
    }
    tracing::info!(about = %h.name, "{} is running", h.service_name());
    Ok(())
}

/// Printed by the install script when the service it started runs.
const RUNNING: &str = "@@k0sctl-service-running";

/// After `k0s install` wrote the service: its environment drop-in (when the manifest has
/// `environment`), a service-manager reload when an existing unit was rewritten (`reload`),
/// then start (or `restart` one that runs) and wait until the init system reports it running.
pub async fn start_service(h: &HostState, reload: bool, restart: bool) -> Result<(), Failure> {
    let p = probed(h)?;
    let init = p.init_system()?;
    let svc = h.service_name();
    let env = service_env(h);
    if !env.is_empty() {
        init.set_env(&p.remote, svc, &env)
            .await
            .with_context(|| format!("writing the {svc} service environment"))?;
    } else if reload {
        // set_env reloads; without it the rewritten unit still needs one.
        init.reload(&p.remote).await?;
    }
    if restart {
        init.restart(&p.remote, svc).await
    } else {
        init.start(&p.remote, svc).await
    }?;
    init.wait_state(&p.remote, svc, true, WAIT).await?;
    Ok(())
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::{Kit, manifest_with};

    /// The marker and `k0s install` go in one round trip after the API check; the
    /// environment drop-in (with its reload) is written before the first start.
    #[tokio::test]
    async fn install_writes_the_environment_before_the_first_start() {
        let y = manifest_with(
            &[
                ("controller", ""),
                ("worker", "    environment:\n      A: b\n"),
            ],
            "",
        );
        let k = Kit::from_yaml(&y, Default::default());
        k.script(1)
            .on("/usr/local/bin/k0s install worker", "")
            .on("mkdir -p /etc/systemd/system/k0sworker.service.d", "")
            .on("systemctl daemon-reload", "")
            .on("systemctl start k0sworker", "")
            .on("systemctl is-active --quiet k0sworker", "");
        install_and_start(
            &k.state.hosts[1],
            false,
            false,
            Some("https://10.0.0.1:6443"),
        )
        .await
        .unwrap();
        let s = k.script(1);
        let c = s.commands();
        let install = &c[0];
        let (api, rest) = install.split_once("\nmkdir -p").unwrap();
        assert!(api.contains("https://10.0.0.1:6443/version"), "{api}");
        assert!(
            rest.contains("\n/usr/local/bin/k0s install worker"),
            "{rest}"
        );
        assert!(!install.contains("--force"), "{install}");
        let u = s
            .uploaded("/etc/systemd/system/k0sworker.service.d/env.conf")
            .unwrap();
        assert_eq!(u.text(), "[Service]\nEnvironment=\"A=b\"\n");
        assert!(s.position("systemctl daemon-reload") < s.position("systemctl start k0sworker"));
    }

    #[tokio::test]
    async fn a_failing_start_keeps_the_init_systems_words() {
        let k = Kit::new(&["controller"]);
        k.script(0).fail(
            "systemctl start k0scontroller",
            1,
            "Job for k0scontroller.service failed because the control process exited",
        );
        let e = start_service(&k.state.hosts[0], false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the control process exited"), "{e}");
    }
}
