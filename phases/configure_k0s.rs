//! "Configure k0s": write each controller's k0s config (`/etc/k0s/k0s.yaml`).
//!
//! The base is `spec.k0s.config`, else the config already on the leader, else what
//! `k0s config create` prints. Every controller's address and private address is added to
//! `spec.api.sans`; with etcd storage a controller's private address becomes its
//! `spec.storage.etcd.peerAddress`. The file starts with `# generated-by-k0sctl <time>`, is
//! validated on the host with `k0s config validate` first, replaces a foreign file only after
//! keeping it as `.old`, and is written atomically 0600. Hosts whose config is already
//! equivalent are left alone; running controllers whose config changed are restarted one at a time, each ready before the next.

use crate::phases::{Failure, each_host};
use serde_json::{Map, Value, json};

use crate::exit::Code;
use crate::transport::files::UploadOptions;
use crate::transport::{Cmd, shell_quote};

use super::{HostState, Phase, PhaseError, PhaseFuture, State, collect};

pub struct ConfigureK0s;

pub const TITLE: &str = "Configure k0s";
const MARKER: &str = "# generated-by-k0sctl";

fn configured(h: &HostState) -> bool {
    h.config.is_controller() && !h.config.reset
}

/// The config for one controller from the shared base. With `node_only` (k0s dynamic config,
/// for every controller but one that initialises the cluster) only the node-specific part is
/// kept: `apiVersion`, `kind`, `metadata.name`, `spec.api`, `spec.network`, `spec.storage`; the
/// rest lives in the cluster's ClusterConfig object.
pub fn config_for(
    base: &Map<String, Value>,
    h: &HostState,
    sans: &[String],
    node_only: bool,
) -> Map<String, Value> {
    let mut c = base.clone();
    c.entry("apiVersion")
        .or_insert(json!("k0s.k0sproject.io/v1beta1"));
    c.entry("kind").or_insert(json!("ClusterConfig"));
    let spec = c.entry("spec").or_insert(json!({}));
    if !spec.is_object() {
        *spec = json!({});
    }
    let spec = spec.as_object_mut().expect("object");
    let api = spec.entry("api").or_insert(json!({}));
    if !api.is_object() {
        *api = json!({});
    }
    let api = api.as_object_mut().expect("object");
    let list = api.entry("sans").or_insert(json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("array");
    for s in sans {
        if !list.iter().any(|v| v.as_str() == Some(s)) {
            list.push(json!(s));
        }
    }
    let storage_type = spec
        .get("storage")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if h.config.role == "single" {
                "kine".into()
            } else {
                "etcd".into()
            }
        });
    // k0sctl (`configFor`): with `spec.api.onlyBindToAddress` and no `spec.api.address`,
    // each controller gets its own address (private, else SSH) there, since the API server
    // will listen on that address only.
    let host_addr = h
        .private_address()
        .unwrap_or_else(|| h.config.address().to_string());
    if let Some(api) = spec.get_mut("api").and_then(Value::as_object_mut) {
        let empty = api
            .get("address")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if empty && api.get("onlyBindToAddress").and_then(Value::as_bool) == Some(true) {
            api.insert("address".into(), json!(host_addr));
        }
    }
    let has_peer = spec
        .get("storage")
        .and_then(|s| s.get("etcd"))
        .and_then(|e| e.get("peerAddress"))
        .is_some();
    if storage_type == "etcd" && (has_peer || h.private_address().is_some()) {
        let peer = host_addr;
        let storage = spec.entry("storage").or_insert(json!({}));
        if let Some(st) = storage.as_object_mut() {
            let etcd = st.entry("etcd").or_insert(json!({}));
            if let Some(e) = etcd.as_object_mut() {
                e.insert("peerAddress".into(), json!(peer));
            }
        }
    }
    if node_only { node_part(c) } else { c }
}

/// The node-specific part of a k0s config (what a controller needs in dynamic config mode).
fn node_part(mut c: Map<String, Value>) -> Map<String, Value> {
    c.retain(|k, _| ["apiVersion", "kind", "metadata", "spec"].contains(&k.as_str()));
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, _| k == "name");
    }
    if let Some(s) = c.get_mut("spec").and_then(Value::as_object_mut) {
        s.retain(|k, _| ["api", "network", "storage"].contains(&k.as_str()));
    }
    c
}

/// `# generated-by-k0sctl <time>` + YAML.
/// `<k0s> config validate --config=<path>`, with the installFlags' `--feature-gates` when the
/// k0s that validates knows that flag (k0s adds `--feature-gates` to `k0s config` in v1.35,
/// `cmd/config/config.go`; k0sctl passes it the same way): a config that needs a feature gate
/// then validates as it will run.
fn validate_command(
    h: &HostState,
    k0s: &str,
    path: &str,
    version: Option<&crate::k0s::version::K0sVersion>,
) -> String {
    let mut cmd = format!(
        "{} config validate --config={}",
        shell_quote(k0s),
        shell_quote(path)
    );
    let knows_gates = version.is_some_and(|v| v.segments >= [1, 35, 0]);
    if knows_gates
        && let Some(fg) = h
            .config
            .install_flags
            .value("--feature-gates")
            .filter(|v| !v.is_empty())
    {
        cmd.push_str(&format!(" --feature-gates={}", shell_quote(&fg)));
    }
    cmd
}

fn render(c: &Map<String, Value>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{MARKER} {}\n{}",
        crate::logging::rfc3339(now),
        serde_saphyr::to_string(&Value::Object(c.clone())).expect("JSON values serialise")
    )
}

fn parse_yaml(text: &str) -> Option<Map<String, Value>> {
    match serde_saphyr::from_str::<Value>(text).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

impl ConfigureK0s {
    /// The base config: the manifest's, else the leader's existing file, else `config create`.
    async fn base(&self, state: &State) -> Result<Map<String, Value>, PhaseError> {
        let cfg = &state.config.cluster.spec.k0s.config;
        if !cfg.is_empty() {
            return Ok(cfg.clone());
        }
        let Some(l) = state.leader else {
            return Err(PhaseError::new(
                Code::Failure,
                TITLE,
                "no leader (internal error: phase order)",
            ));
        };
        let leader = &state.hosts[l];
        let fail = |e: Failure| PhaseError::on_host(TITLE, leader.name.clone(), e);
        let p = leader.probed().map_err(|e| fail(e.into()))?;
        if let Some(text) = leader.k0s.as_ref().and_then(|k| k.config_text.as_deref())
            && let Some(m) = parse_yaml(text)
        {
            return Ok(m);
        }
        if state.opts.dry_run
            && leader
                .k0s
                .as_ref()
                .and_then(|k| k.binary_version.as_ref())
                .is_none()
        {
            // Nothing to ask yet; the real run takes k0s's defaults.
            return Ok(Map::new());
        }
        let out = p
            .remote
            .run_str(
                Cmd::new(p.k0s_cmd(&format!(
                    "config create --data-dir={}",
                    shell_quote(&leader.data_dir())
                )))
                .sudo(),
            )
            .await
            .map_err(|e| fail(e.into()))?;
        parse_yaml(&out)
            .ok_or_else(|| fail("`k0s config create` did not print a YAML mapping".into()))
    }

    /// Controller addresses (and private addresses) for `spec.api.sans`.
    fn sans(state: &State) -> Vec<String> {
        let mut v = Vec::new();
        for h in state.hosts.iter().filter(|h| configured(h)) {
            for a in [Some(h.config.address().to_string()), h.private_address()]
                .into_iter()
                .flatten()
            {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }
}

impl Phase for ConfigureK0s {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn should_run(&self, state: &State) -> bool {
        state.hosts.iter().any(configured)
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let base = self.base(state).await?;
            let sans = Self::sans(state);
            let dry = state.opts.dry_run;
            let leader = state.leader;
            let limits = state.pool.limits().clone();
            let plans: Vec<(String, String)> = Vec::new();
            let plans = std::sync::Mutex::new(plans);
            let restarts: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
            let target = state.target_version();
            let results = each_host(&limits, state.hosts.iter().filter(|h| configured(h)), |h| {
                let (base, sans, plans, restarts) = (&base, &sans, &plans, &restarts);
                let target = target.as_ref();
                async move {
                    let p = h.probed()?;
                    let path = h.k0s_config_path();
                    // Dynamic config: only a leader that initialises the cluster gets it all.
                    let initialises = Some(h.index) == leader && !h.is_running();
                    let node_only = h.dynamic_config && !initialises;
                    let want = config_for(base, h, sans, node_only);
                    let existing = h.k0s.as_ref().and_then(|k| k.config_text.clone());
                    // In dynamic mode only the node part matters: a leader keeps the whole
                    // config it was initialised with as long as that part is right.
                    let current = existing
                        .as_deref()
                        .and_then(parse_yaml)
                        .map(|c| if node_only { node_part(c) } else { c });
                    if current.as_ref() == Some(&want) {
                        tracing::info!(about = %h.name, "k0s config is up to date");
                        return Ok(());
                    }
                    let running = h.is_running();
                    if dry {
                        let mut v = plans.lock().expect("lock");
                        v.push((h.name.clone(), format!("write k0s config to {path}")));
                        if running {
                            v.push((h.name.clone(), format!("restart the {} service", h.service_name())));
                        }
                        return Ok(());
                    }
                    let text = render(&want);
                    // Validate on the host with the binary that will run it.
                    let k0s = h.staged.clone().unwrap_or_else(|| p.k0s_binary_path.clone());
                    let tmp = format!("/tmp/k0sctl-k0s-config-{:016x}.yaml", rand::random::<u64>());
                    p.remote.write_file(&tmp, text.clone(), 0o600, true).await?;
                    let check = p
                        .remote
                        .exec(Cmd::new(format!("{}; rc=$?; rm -f {}; exit $rc", validate_command(h, &k0s, &tmp, target), shell_quote(&tmp))).sudo())
                        .await?;
                    if !check.success() {
                        return Err(Failure::other(format!(
                            "spec.k0s.config validation failed ({}):\n{}",
                            check.status,
                            check.stderr_str().trim()
                        )));
                    }
                    if let Some(old) = &existing
                        && !old.contains(MARKER)
                    {
                        tracing::warn!(about = %h.name, "an existing configuration was not created by k0sctl, it will be moved to {path}.old");
                        p.remote
                            .run(Cmd::new(format!("mv -f {q} {q}.old", q = shell_quote(&path))).sudo())
                            .await?;
                    }
                    p.remote
                        .upload(std::io::Cursor::new(text.into_bytes()), &path, &UploadOptions::default().mode(0o600).sudo(true).create_parent(true))
                        .await?;
                    tracing::info!(about = %h.name, "wrote k0s config to {path}");
                    plans.lock().expect("lock").push((h.name.clone(), format!("wrote k0s config to {path}")));
                    if running {
                        restarts.lock().expect("lock").push(h.index);
                    }
                    Ok(())
                }
            })
            .await;
            // In a dry run these are plans, otherwise what was done.
            for (h, w) in plans.into_inner().expect("lock") {
                if dry {
                    state.planned(h, w);
                } else {
                    state.changed(h, w);
                }
            }
            // Controllers whose config changed are restarted one at a time, each ready before
            // the next, so the control plane keeps its quorum (also when written configs failed
            // elsewhere: what is on disk must be what runs).
            let mut restarts = restarts.into_inner().expect("lock");
            restarts.sort_unstable();
            let mut failed = Vec::new();
            for i in restarts {
                let h = &state.hosts[i];
                match restart_ready(h).await {
                    Ok(()) => {
                        let (name, svc) = (h.name.clone(), h.service_name());
                        state.changed(name, format!("restarted the {svc} service"));
                    }
                    Err(e) => {
                        failed.push((h.name.clone(), e));
                        break;
                    }
                }
            }
            collect(
                TITLE,
                results.into_iter().chain(failed.into_iter().map(Err)),
            )
        })
    }
}

/// Restarts a controller's service for its new config and waits until its API is ready.
async fn restart_ready(h: &super::HostState) -> Result<(), Failure> {
    let p = h.probed()?;
    let init = p.init_system()?;
    let svc = h.service_name();
    tracing::info!(about = %h.name, "restarting {svc} for its new config");
    init.restart(&p.remote, svc).await?;
    init.wait_state(&p.remote, svc, true, super::steps::wait::WAIT)
        .await?;
    super::steps::wait::wait_api_ready(h).await?;
    tracing::info!(about = %h.name, "restarted {svc} with the new config");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::state_of;

    #[test]
    fn sans_and_peer_address() {
        let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    privateAddress: 10.1.0.1\n    ssh:\n      address: 10.0.0.1\n";
        let state = state_of(text, Default::default());
        let sans = ConfigureK0s::sans(&state);
        assert_eq!(sans, ["10.0.0.1", "10.1.0.1"]);
        let base = parse_yaml("spec:\n  api:\n    sans: [k8s.example.com, 10.0.0.1]\n").unwrap();
        let c = config_for(&base, &state.hosts[0], &sans, false);
        let v = Value::Object(c);
        assert_eq!(v["apiVersion"], "k0s.k0sproject.io/v1beta1");
        assert_eq!(v["kind"], "ClusterConfig");
        assert_eq!(
            v["spec"]["api"]["sans"],
            json!(["k8s.example.com", "10.0.0.1", "10.1.0.1"])
        );
        assert_eq!(v["spec"]["storage"]["etcd"]["peerAddress"], "10.1.0.1");
        let r = render(v.as_object().unwrap());
        assert!(r.starts_with("# generated-by-k0sctl 20"), "{r}");
        assert_eq!(parse_yaml(&r).unwrap(), *v.as_object().unwrap());
    }

    // k0sctl `configFor`: onlyBindToAddress without an address → the host's own address
    // (private, else SSH); an address given in the manifest is kept; without the option none is
    // set.
    #[test]
    fn only_bind_to_address_gets_each_controllers_address() {
        let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    privateAddress: 10.1.0.1\n    ssh:\n      address: 10.0.0.1\n  - role: controller\n    ssh:\n      address: 10.0.0.2\n";
        let state = state_of(text, Default::default());
        let base = parse_yaml("spec:\n  api:\n    onlyBindToAddress: true\n").unwrap();
        let a = Value::Object(config_for(&base, &state.hosts[0], &[], false));
        assert_eq!(a["spec"]["api"]["address"], "10.1.0.1");
        let b = Value::Object(config_for(&base, &state.hosts[1], &[], false));
        assert_eq!(b["spec"]["api"]["address"], "10.0.0.2");
        let given =
            parse_yaml("spec:\n  api:\n    onlyBindToAddress: true\n    address: 10.9.9.9\n")
                .unwrap();
        let g = Value::Object(config_for(&given, &state.hosts[0], &[], false));
        assert_eq!(g["spec"]["api"]["address"], "10.9.9.9");
        let off = parse_yaml("spec:\n  api:\n    port: 6443\n").unwrap();
        let o = Value::Object(config_for(&off, &state.hosts[0], &[], false));
        assert!(o["spec"]["api"].get("address").is_none());
    }

    #[test]
    fn config_validate_gets_the_feature_gates_of_install_flags() {
        let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    installFlags:\n    - --feature-gates=IPv6SingleStack=true\n    ssh:\n      address: 10.0.0.1\n";
        let state = state_of(text, Default::default());
        let v = |s: &str| crate::k0s::version::K0sVersion::parse(s).unwrap();
        let h = &state.hosts[0];
        assert_eq!(
            validate_command(
                h,
                "/usr/local/bin/k0s",
                "/tmp/c.yaml",
                Some(&v("v1.35.1+k0s.0"))
            ),
            "/usr/local/bin/k0s config validate --config=/tmp/c.yaml --feature-gates=IPv6SingleStack=true"
        );
        // k0s before v1.35 has no --feature-gates on `k0s config` and would refuse it.
        assert_eq!(
            validate_command(
                h,
                "/usr/local/bin/k0s",
                "/tmp/c.yaml",
                Some(&v("v1.34.1+k0s.0"))
            ),
            "/usr/local/bin/k0s config validate --config=/tmp/c.yaml"
        );
    }

    #[test]
    fn node_only_keeps_the_node_part() {
        let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    privateAddress: 10.1.0.1\n    ssh:\n      address: 10.0.0.1\n";
        let state = state_of(text, Default::default());
        let base = parse_yaml(
            "metadata:\n  name: k0s\n  namespace: kube-system\nspec:\n  api: {port: 6443}\n  network: {podCIDR: 10.244.0.0/16}\n  storage: {type: etcd}\n  telemetry: {enabled: false}\n  extensions: {}\n",
        )
        .unwrap();
        let sans = vec!["10.0.0.1".to_string()];
        let n = Value::Object(config_for(&base, &state.hosts[0], &sans, true));
        assert_eq!(n["metadata"], json!({"name": "k0s"}));
        let mut keys: Vec<&String> = n["spec"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["api", "network", "storage"]);
        assert_eq!(n["spec"]["storage"]["etcd"]["peerAddress"], "10.1.0.1");
        assert_eq!(n["spec"]["api"]["sans"], json!(["10.0.0.1"]));
        let full = Value::Object(config_for(&base, &state.hosts[0], &sans, false));
        assert_eq!(full["spec"]["telemetry"], json!({"enabled": false}));
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;
    use crate::phases::testkit::{Kit, dry, manifest};

    fn kit(opts: super::super::RunOptions) -> Kit {
        let y = manifest(
            &["controller", "worker"],
            "  k0s:\n    config:\n      spec:\n        network:\n          provider: calico\n",
        );
        let mut k = Kit::from_yaml(&y, opts);
        k.fresh(0).fresh(1).leader(0).target("v1.31.1+k0s.0");
        k
    }

    /// Validated on the host first (the temp file removed in the same round trip), then
    /// written 0600 with the marker line, the manifest's config and the controller's address.
    #[tokio::test]
    async fn validates_then_writes_each_controllers_config() {
        let mut k = kit(Default::default());
        k.script(0).on(
            "/usr/local/bin/k0s config validate --config=/tmp/k0sctl-k0s-config-",
            "",
        );
        k.run(&ConfigureK0s).await.unwrap();
        let s = k.script(0);
        let u = s.uploaded("/etc/k0s/k0s.yaml").expect("config written");
        assert_eq!(u.mode, 0o600);
        let text = u.text();
        assert!(text.starts_with(MARKER), "{text}");
        assert!(
            text.contains("provider: calico") && text.contains("10.0.0.1"),
            "{text}"
        );
        let validate = s.position("config validate");
        assert!(s.commands()[validate].contains("rc=$?; rm -f /tmp/k0sctl-k0s-config-"));
        assert!(validate < s.position("cat > /etc/k0s/k0s.yaml.tmp."));
        assert!(
            k.script(1).commands().is_empty(),
            "workers have no k0s config"
        );
        assert_eq!(k.changes_for(0), ["wrote k0s config to /etc/k0s/k0s.yaml"]);
    }

    #[tokio::test]
    async fn a_config_k0s_refuses_is_not_written() {
        let mut k = kit(Default::default());
        k.script(0)
            .fail("config validate", 1, "Error: unknown field \"spec.bogus\"");
        let e = k.run(&ConfigureK0s).await.unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.1:22: spec.k0s.config validation failed"),
            "{e}"
        );
        assert!(
            e.contains("unknown field \\\"spec.bogus\\\"")
                || e.contains("unknown field \"spec.bogus\""),
            "{e}"
        );
        assert!(k.script(0).uploaded("/etc/k0s/k0s.yaml").is_none());
    }

    /// A running controller whose config changes is restarted and waited for.
    #[tokio::test]
    async fn a_running_controller_is_restarted_after_the_change() {
        let mut k = kit(Default::default());
        k.running(0, "v1.31.1+k0s.0");
        k.script(0)
            .on("config validate", "")
            .on("systemctl restart k0scontroller", "")
            .on("systemctl is-active --quiet k0scontroller", "")
            .on("get --raw=/readyz", "ok");
        k.run(&ConfigureK0s).await.unwrap();
        let s = k.script(0);
        assert!(
            s.position("cat > /etc/k0s/k0s.yaml.tmp.")
                < s.position("systemctl restart k0scontroller")
        );
        assert_eq!(
            k.changes_for(0),
            [
                "wrote k0s config to /etc/k0s/k0s.yaml",
                "restarted the k0scontroller service"
            ]
        );
    }

    #[tokio::test]
    async fn dry_run_plans_write_and_restart() {
        let mut k = kit(dry());
        k.running(0, "v1.31.1+k0s.0");
        k.run(&ConfigureK0s).await.unwrap();
        assert_eq!(
            k.plan_for(0),
            [
                "write k0s config to /etc/k0s/k0s.yaml",
                "restart the k0scontroller service"
            ]
        );
        k.assert_nothing_ran();
    }
}
