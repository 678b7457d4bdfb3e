//! Loading behaviour: environment substitution, multi-document files, ClusterConfig merging,
//! additional manifests, `--config` globs/directories/fallbacks, defaults and round trips.

use std::path::Path;

use k0sctl::config::{self, ConfigError, LoadOptions, Loaded};

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_args(
    cwd: &Path,
    args: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut stdin = || -> std::io::Result<String> { Ok(String::new()) };
    config::load(LoadOptions {
        config_args: &args,
        cwd: cwd.to_path_buf(),
        env,
        stdin: &mut stdin,
    })
}

fn corpus(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests/valid")
        .join(name)
}

const CLUSTER: &str = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    ssh:\n      address: 10.0.0.1\n";

#[test]
fn environment_substitution() {
    let env = |k: &str| match k {
        "CONTROLLER_IP" => Some("10.9.9.9".to_string()),
        _ => None,
    };
    let p = corpus("envsubst.yaml");
    let l = load_args(p.parent().unwrap(), &["envsubst.yaml"], &env).unwrap();
    let c = &l.cluster;
    assert_eq!(c.metadata.name, "env-cluster");
    let h0 = &c.spec.hosts[0];
    assert_eq!(h0.ssh.as_ref().unwrap().address, "10.9.9.9");
    assert_eq!(h0.ssh.as_ref().unwrap().user, "root");
    assert_eq!(h0.environment["PRICE"], "$5");
    assert_eq!(c.spec.hosts[1].ssh.as_ref().unwrap().address, "10.0.0.2");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn unset_variables_warn_with_position() {
    let text = format!("{CLUSTER}    environment:\n      TOKEN: $TOKEN\n");
    let l = config::load_str(&text, "k0sctl.yaml", &no_env).unwrap();
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        l.warnings[0].to_string(),
        "k0sctl.yaml:9:14: warning: environment variable TOKEN is not set; using an empty value (set it, give a default with ${TOKEN:-default}, or write $$TOKEN for a literal $)"
    );
}

#[test]
fn multi_document_merges_clusterconfig_without_overwriting_and_keeps_manifests() {
    let text = format!(
        "{CLUSTER}  k0s:\n    config:\n      spec:\n        api:\n          port: 7443\n---\napiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nmetadata:\n  name: k0s\nspec:\n  api:\n    port: 6443\n    sans: [a.example]\n  telemetry:\n    enabled: false\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: one\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: two\n"
    );
    let l = config::load_str(&text, "cluster.yaml", &no_env).unwrap();
    let cfg = serde_json::Value::Object(l.cluster.spec.k0s.config.clone());
    assert_eq!(
        cfg["spec"]["api"]["port"], 7443,
        "values in spec.k0s.config win"
    );
    assert_eq!(
        cfg["spec"]["api"]["sans"][0], "a.example",
        "missing keys are added"
    );
    assert_eq!(cfg["spec"]["telemetry"]["enabled"], false);
    assert_eq!(cfg["metadata"]["name"], "k0s");
    let names: Vec<&str> = l.manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["cluster.yaml", "cluster-2.yaml"],
        "two manifests of one file must not collide"
    );
    assert!(l.manifests[0].raw.contains("name: one"));
    assert!(l.manifests[1].raw.contains("name: two"));
    assert!(!l.manifests[1].raw.contains("name: one"));
    assert_eq!(l.manifests[1].line, 30);
}

#[test]
fn directory_glob_and_repeated_config() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("conf/nested");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(d.path().join("conf/a-cluster.yaml"), CLUSTER).unwrap();
    std::fs::write(
        conf.join("b-k0s.yml"),
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  telemetry:\n    enabled: false\n",
    )
    .unwrap();
    std::fs::write(conf.join("ignored.txt"), "not yaml").unwrap();

    // A directory: every *.yaml/*.yml below it.
    let l = load_args(d.path(), &["conf"], &no_env).unwrap();
    assert_eq!(l.sources.len(), 2);
    assert_eq!(
        l.cluster.spec.k0s.config["spec"]["telemetry"]["enabled"],
        false
    );

    // A ** glob.
    let l = load_args(d.path(), &["conf/**/*.{yml,yaml}"], &no_env).unwrap();
    assert_eq!(l.sources.len(), 2);

    // Repeated --config, duplicates removed.
    let l = load_args(
        d.path(),
        &[
            "conf/a-cluster.yaml",
            "conf/nested/b-k0s.yml",
            "conf/a-cluster.yaml",
        ],
        &no_env,
    )
    .unwrap();
    assert_eq!(l.sources.len(), 2);

    // A glob that matches nothing.
    let e = load_args(d.path(), &["conf/*.json"], &no_env).unwrap_err();
    assert_eq!(
        e.diagnostics[0].message,
        "no configuration files match \"conf/*.json\""
    );
}

#[test]
fn default_falls_back_to_k0sctl_yml() {
    let d = tempfile::tempdir().unwrap();
    let e = load_args(d.path(), &[], &no_env).unwrap_err();
    assert!(
        e.diagnostics[0]
            .message
            .starts_with("failed to locate configuration")
    );
    std::fs::write(d.path().join("k0sctl.yml"), CLUSTER).unwrap();
    let l = load_args(d.path(), &[], &no_env).unwrap();
    assert_eq!(l.origin, Path::new("k0sctl.yml"));
    assert_eq!(l.base_dir, d.path());
}

#[test]
fn stdin_is_read_for_dash() {
    let mut stdin = || -> std::io::Result<String> { Ok(CLUSTER.to_string()) };
    let l = config::load(LoadOptions {
        config_args: &["-".to_string()],
        cwd: std::env::current_dir().unwrap(),
        env: &no_env,
        stdin: &mut stdin,
    })
    .unwrap();
    assert_eq!(l.origin, Path::new("<stdin>"));
}

#[test]
fn install_flags_are_normalised() {
    let p = corpus("installflags-normalised.yaml");
    let l = load_args(
        p.parent().unwrap(),
        &["installflags-normalised.yaml"],
        &no_env,
    )
    .unwrap();
    let h = &l.cluster.spec.hosts[0];
    assert_eq!(h.role, "controller+worker");
    assert!(h.no_taints);
    assert_eq!(h.data_dir.as_deref(), Some("/opt/k0s"));
    assert_eq!(h.kubelet_root_dir.as_deref(), Some("/opt/kubelet"));
    assert_eq!(h.install_flags.0, ["--enable-worker", "--no-taints"]);
}

#[test]
fn defaults_match_k0sctl() {
    let l = config::load_str(CLUSTER, "k0sctl.yaml", &no_env).unwrap();
    let c = &l.cluster;
    assert_eq!(c.metadata.name, "k0s-cluster");
    assert_eq!(c.metadata.user, "admin");
    let ssh = c.spec.hosts[0].ssh.as_ref().unwrap();
    assert_eq!((ssh.user.as_str(), ssh.port), ("root", 22));
    let o = &c.spec.options;
    assert!(o.wait.enabled && o.drain.enabled && o.drain.force);
    assert_eq!(o.drain.grace_period.to_string(), "2m0s");
    assert_eq!(o.drain.timeout.to_string(), "5m0s");
    assert_eq!(
        (
            o.concurrency.limit,
            o.concurrency.worker_disruption_percent,
            o.concurrency.uploads
        ),
        (30, 10, 5)
    );
    assert_eq!(o.evict_taint.taint, "k0sctl.k0sproject.io/evict=true");
    assert_eq!(c.spec.k0s.version_channel, "stable");
}

#[test]
fn round_trip_keeps_everything_and_k0s_config_key_order() {
    let p = corpus("every-field.yaml");
    let l = load_args(p.parent().unwrap(), &["every-field.yaml"], &no_env).unwrap();
    let yaml = config::to_yaml(&l.cluster);
    let again = config::load_str(&yaml, "saved.yaml", &no_env).unwrap();
    assert_eq!(l.cluster, again.cluster);
    let keys: Vec<&String> = again.cluster.spec.k0s.config.keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "spec"]);
    let spec_keys: Vec<&String> = again.cluster.spec.k0s.config["spec"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(spec_keys, ["api", "telemetry"]);
    // Written back in the order it was read, not sorted.
    let api = yaml.find("externalAddress").unwrap();
    let tele = yaml.find("telemetry").unwrap();
    assert!(api < tele);
}

#[test]
fn every_host_field_is_read() {
    let p = corpus("every-field.yaml");
    let l = load_args(p.parent().unwrap(), &["every-field.yaml"], &no_env).unwrap();
    let h = &l.cluster.spec.hosts;
    let ssh = h[0].ssh.as_ref().unwrap();
    assert_eq!(
        ssh.bastion
            .as_ref()
            .unwrap()
            .bastion
            .as_ref()
            .unwrap()
            .address,
        "192.0.2.1"
    );
    assert_eq!(ssh.options["ServerAliveInterval"], 15);
    assert_eq!(h[0].files[0].perm.as_ref().unwrap().octal, "0600");
    assert_eq!(h[0].files[1].perm.as_ref().unwrap().octal, "0644");
    assert_eq!(h[0].hooks["apply"]["before"], ["date >> /tmp/apply.log"]);
    assert_eq!(h[0].os.as_deref(), Some("debian"));
    let o = h[1].open_ssh.as_ref().unwrap();
    assert!(o.disable_multiplexing);
    assert_eq!(o.port, Some(2222));
    // Port 0 is k0sctl's "default port". (winRM hosts are refused: tests/manifests/invalid/
    // winrm-host.yaml has every winRM field and only that one error.)
    assert_eq!(h[2].ssh.as_ref().unwrap().port, 22);
    assert!(h[3].localhost.unwrap().enabled);
    assert!(h[4].reset);
    let k = &l.cluster.spec.k0s;
    assert!(k.dynamic_config);
    assert_eq!(
        l.cluster.spec.options.drain.grace_period.to_string(),
        "1m30s"
    );
    assert_eq!(l.cluster.spec.options.evict_taint.effect, "NoSchedule");
}
