//! End-to-end tests of testenv itself (run as root; skipped otherwise): hosts over real SSH and
//! their isolation, a cluster installed by hand with the k0s stand-in and inspected with the
//! machine's real kubectl, PDB-blocked eviction (HTTP 429), and complete teardown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testenv::{Env, Options};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn opts(tag: &str, hosts: usize) -> Options {
    let dir = std::env::temp_dir().join(format!("testenv-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::new(dir, hosts);
    o.k0s_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_k0s")));
    o
}

/// Poll `f` until it returns Some, up to `limit` (generous; not a timing assertion).
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("gave up waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .map(|r| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn assert_clean(prefix: &str, dir: &Path, pids: &[i32]) {
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(!ns.contains(prefix), "namespaces left behind: {ns}");
    let links = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(prefix),
        "links left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts left behind under {}",
        dir.display()
    );
    // Host processes are gone (give the kernel a moment to finish tearing down the PID namespaces).
    wait_for("host processes to exit", Duration::from_secs(20), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    // No host cgroup is left.
    for base in [
        "/sys/fs/cgroup/testenv",
        "/sys/fs/cgroup/unified/testenv",
        "/sys/fs/cgroup/systemd/testenv",
    ] {
        if let Ok(rd) = std::fs::read_dir(base) {
            let left: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect();
            assert!(left.is_empty(), "cgroups left behind in {base}: {left:?}");
        }
    }
    // No live process mentions the environment directory (boot scripts, launchers, binary server).
    let needle = dir.display().to_string();
    wait_for(
        "no process of the environment left",
        Duration::from_secs(20),
        || {
            let stray: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| alive(*p))
                .filter_map(|p| {
                    let c = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(&needle).then(|| format!("{p}: {c}"))
                })
                .collect();
            stray.is_empty().then_some(())
        },
    );
}

#[test]
fn hosts_are_real_isolated_ssh_machines() {
    if !is_root() {
        eprintln!("skipping: testenv tests need root");
        return;
    }
    let mut env = Env::up(opts("hosts", 3)).expect("testenv up");
    let (prefix, dir) = (env.prefix.clone(), env.dir.clone());
    let pids: Vec<i32> = env.hosts.iter().map(|h| h.pid).collect();
    let mut names = Vec::new();
    for h in &env.hosts {
        // sshd can answer before the rest of the (minimal) boot finished.
        wait_for("boot to finish", Duration::from_secs(60), || {
            let s = env.ssh(h, "systemctl is-system-running || true").ok()?;
            (!matches!(s.trim(), "starting" | "initializing")).then_some(())
        });
        let out = env.ssh(h, "hostname; cat /etc/machine-id; ip -4 -o addr show dev eth0; systemctl is-system-running; . /etc/os-release; echo $ID; systemctl --failed --no-legend").unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], h.name);
        assert!(lines[2].contains(&h.ip.to_string()), "{out}");
        assert_eq!(lines[3], "running", "systemd state on {}: {out}", h.name);
        assert_eq!(lines[4], "ubuntu");
        names.push((lines[0].to_string(), lines[1].to_string(), h.ip));
    }
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            assert_ne!(names[i].0, names[j].0, "hostnames differ");
            assert_ne!(names[i].1, names[j].1, "machine ids differ");
            assert_ne!(names[i].2, names[j].2, "IPs differ");
        }
    }
    let (a, b) = (&env.hosts[0], &env.hosts[1]);
    env.ssh(
        a,
        "echo only-on-a > /root/marker; nohup sleep 600 >/dev/null 2>&1 & echo started",
    )
    .unwrap();
    assert_eq!(env.ssh(a, "cat /root/marker").unwrap().trim(), "only-on-a");
    assert_eq!(
        env.ssh(b, "test -e /root/marker && echo yes || echo no")
            .unwrap()
            .trim(),
        "no"
    );
    assert!(
        !Path::new("/root/marker").exists()
            || std::fs::read_to_string("/root/marker").unwrap() != "only-on-a\n"
    );
    assert!(
        env.ssh(a, "pgrep -x sleep").is_ok(),
        "process visible on its own host"
    );
    assert!(
        env.ssh(b, "pgrep -x sleep").is_err(),
        "process of host a visible on host b"
    );
    // Hosts reach each other.
    env.ssh(
        b,
        &format!("bash -c 'exec 3<>/dev/tcp/{}/22 && head -c 4 <&3'", a.ip),
    )
    .unwrap();
    // Files written by up.
    for f in [
        "k0sctl.yaml",
        "hosts.json",
        "id_ed25519",
        "known_hosts",
        "k0s-versions",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let hj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hosts.json")).unwrap()).unwrap();
    assert_eq!(hj["hosts"].as_array().unwrap().len(), 3);
    env.down().expect("down");
    assert_clean(&prefix, &dir, &pids);
    // Idempotent.
    testenv::down_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_by_hand_with_pdb_blocked_eviction() {
    if !is_root() {
        eprintln!("skipping: testenv tests need root");
        return;
    }
    let env = Env::up(opts("cluster", 3)).expect("testenv up");
    let (prefix, dir) = (env.prefix.clone(), env.dir.clone());
    let pids: Vec<i32> = env.hosts.iter().map(|h| h.pid).collect();
    // Stamped binaries differ.
    assert_ne!(
        testenv::stamp::sha256_file(&env.k0s_binaries[0]).unwrap(),
        testenv::stamp::sha256_file(&env.k0s_binaries[1]).unwrap()
    );
    let url = env.binserver_url.clone().unwrap();
    let newest = env.versions.last().unwrap().clone();
    for h in &env.hosts {
        let v = env
            .ssh(h, &format!("curl -sSfo /usr/local/bin/k0s {url}/k0sproject/k0s/releases/download/{}/k0s-{newest}-amd64 && chmod 0755 /usr/local/bin/k0s && k0s version", newest.replace('+', "%2B")))
            .unwrap();
        assert_eq!(v.trim(), newest);
    }
    let ctrl = &env.hosts[0];
    env.ssh(
        ctrl,
        "k0s install controller --data-dir=/var/lib/k0s && systemctl start k0scontroller",
    )
    .unwrap();
    assert!(
        ctrl.root
            .join("etc/systemd/system/k0scontroller.service")
            .exists()
    );
    wait_for("controller readyz", Duration::from_secs(60), || {
        env.ssh(ctrl, "k0s kubectl get --raw='/readyz'")
            .ok()
            .filter(|o| o.trim() == "ok")
    });
    let st: serde_json::Value =
        serde_json::from_str(&env.ssh(ctrl, "k0s status -o json").unwrap()).unwrap();
    assert_eq!(st["Role"], "controller");
    assert_eq!(
        st["Args"],
        serde_json::json!([
            "/usr/local/bin/k0s",
            "controller",
            "--data-dir=/var/lib/k0s"
        ])
    );
    for w in &env.hosts[1..] {
        let tok = env
            .ssh(
                ctrl,
                "k0s token create --role=worker --expiry=10m0s --data-dir=/var/lib/k0s",
            )
            .unwrap();
        env.ssh(
            w,
            &format!(
                "mkdir -p /etc/k0s && echo '{}' > /etc/k0s/k0stoken && k0s install worker --data-dir=/var/lib/k0s --token-file=/etc/k0s/k0stoken --kubelet-extra-args=--node-ip={} && systemctl start k0sworker",
                tok.trim(),
                w.ip
            ),
        )
        .unwrap();
    }
    // Real kubectl on the machine with the admin kubeconfig.
    let kc = dir.join("admin.conf");
    std::fs::write(
        &kc,
        env.ssh(ctrl, "k0s kubeconfig admin --data-dir=/var/lib/k0s")
            .unwrap(),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .output()
            .expect("kubectl")
    };
    let nodes = wait_for("2 Ready nodes", Duration::from_secs(90), || {
        let o = kubectl(&["get", "nodes"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        (s.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count()
            == 2)
            .then_some(s)
    });
    assert!(
        nodes.contains("worker0") && nodes.contains("worker1"),
        "{nodes}"
    );
    // Workload + PDB made the way users make them.
    let manifest = dir.join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:1.27\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web-pdb\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels: {app: web}\n",
    )
    .unwrap();
    let o = kubectl(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "kubectl create: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pod = wait_for("2 ready pods", Duration::from_secs(60), || {
        let o = kubectl(&["get", "pods", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let items = v["items"].as_array()?;
        let ready = items
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                    .unwrap_or(false)
            })
            .count();
        (ready == 2).then(|| items[0]["metadata"]["name"].as_str().unwrap().to_string())
    });
    wait_for("PDB status", Duration::from_secs(30), || {
        let o = kubectl(&[
            "get",
            "pdb",
            "web-pdb",
            "-o",
            "jsonpath={.status.currentHealthy}",
        ]);
        (String::from_utf8_lossy(&o.stdout) == "2").then_some(())
    });
    let ev = dir.join("eviction.json");
    std::fs::write(&ev, format!("{{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{{\"name\":\"{pod}\",\"namespace\":\"default\"}}}}")).unwrap();
    let o = kubectl(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        "-f",
        ev.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("TooManyRequests") && err.contains("disruption budget"),
        "expected a 429 PDB refusal, got: {err}"
    );
    // The raw HTTP status is 429 with the real Status body.
    let o = kubectl(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        "-f",
        ev.to_str().unwrap(),
        "-v=8",
    ]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("429 Too Many Requests"), "{log}");
    assert!(log.contains("\"reason\":\"DisruptionBudget\""), "{log}");
    // kubectl drain: blocked by the PDB until --timeout, then (PDB relaxed) the pod is evicted
    // and recreated by the ReplicaSet loop on the other, schedulable worker.
    let node = String::from_utf8_lossy(
        &kubectl(&["get", "pod", &pod, "-o", "jsonpath={.spec.nodeName}"]).stdout,
    )
    .into_owned();
    let drain = |timeout: &str| {
        kubectl(&[
            "drain",
            "--force",
            "--grace-period=120",
            &format!("--timeout={timeout}"),
            "--delete-emptydir-data",
            "--ignore-daemonsets",
            &node,
        ])
    };
    let o = drain("7s");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "drain should fail while the PDB blocks"
    );
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    assert!(err.contains("global timeout reached: 7s"), "{err}");
    let o = kubectl(&[
        "patch",
        "pdb",
        "web-pdb",
        "--type=merge",
        "-p",
        "{\"spec\":{\"minAvailable\":1}}",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = drain("60s");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "drain: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("pod/{pod} evicted"))
            && out.contains(&format!("node/{node} drained")),
        "{out}"
    );
    wait_for(
        "replacement pod Ready on the other node",
        Duration::from_secs(60),
        || {
            let o = kubectl(&["get", "pods", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let items = v["items"].as_array()?;
            let ok = items.len() == 2
                && items.iter().all(|p| p["spec"]["nodeName"] != node.as_str())
                && items.iter().all(|p| {
                    p["status"]["conditions"]
                        .as_array()
                        .map(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                        .unwrap_or(false)
                });
            ok.then_some(())
        },
    );
    drop(env);
    assert_clean(&prefix, &dir, &pids);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bastion_user_with_sudo_password_and_os_personality() {
    if !is_root() {
        eprintln!("skipping: testenv tests need root");
        return;
    }
    let mut o = opts("bastion", 1);
    o.bastion = true;
    o.user = Some("alice".into());
    o.sudo = testenv::SudoMode::Password;
    o.os = "rhel".into();
    let env = Env::up(o).expect("testenv up");
    let (prefix, dir) = (env.prefix.clone(), env.dir.clone());
    let mut pids: Vec<i32> = env.hosts.iter().map(|h| h.pid).collect();
    let b = env.bastion.clone().expect("bastion");
    pids.push(b.pid);
    let h = &env.hosts[0];
    // The operator cannot reach the host directly (refused locally: unreachable route) …
    assert!(
        std::net::TcpStream::connect_timeout(&(h.ip, 22).into(), Duration::from_secs(3)).is_err()
    );
    // … but through the bastion.
    let pw = env.password.clone().unwrap();
    let out = env
        .ssh_command_as(h, "alice")
        .arg(format!("id -un; . /etc/os-release; echo $ID; sudo -n true 2>/dev/null && echo nopasswd || echo needs-password; echo '{pw}' | sudo -S -p '' id -u; yum install -y curl >/dev/null && echo yum-ok"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        s.lines().collect::<Vec<_>>(),
        vec!["alice", "rhel", "needs-password", "0", "yum-ok"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(&env.manifest).unwrap();
    assert!(
        manifest.contains("bastion:")
            && manifest.contains("user: alice")
            && manifest.contains("k0sBinaryPath"),
        "{manifest}"
    );
    drop(env);
    assert_clean(&prefix, &dir, &pids);
    let routes = std::process::Command::new("ip")
        .args(["route", "show", "table", "all"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&routes.stdout).contains("unreachable 10.213."),
        "route left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn down_after_a_crashed_up_leaves_nothing() {
    if !is_root() {
        eprintln!("skipping: testenv tests need root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("testenv-it-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(["up", "--hosts", "4", "--dir"])
        .arg(&dir)
        .env("TESTENV_K0S_BIN", env!("CARGO_BIN_EXE_k0s"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill `up` as soon as it has started creating things.
    wait_for(
        "up to start creating namespaces",
        Duration::from_secs(60),
        || dir.join("state.json").exists().then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let _ = child.wait();
    let st = testenv::env::load_state(&dir)
        .unwrap()
        .expect("state.json written before anything is created");
    let down = std::process::Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(["down", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_clean(&st.prefix, &dir, &[]);
    for ns in &st.netns {
        assert!(testenv::env::pid1_of(ns).is_none());
    }
    // Idempotent.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(["down", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(again.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
