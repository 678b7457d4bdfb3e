//! The host probe's folded reads: what "Detect host operating systems" runs as root in its one
//! round trip per host when the pipeline takes the host lock and gathers k0s facts next —
//! the lock attempt ([`super::host_lock::probe_part`]), the k0s facts ([`facts_script`]) and,
//! on the expected leader, the cluster ID and the node and etcd member lists — and how the
//! later phases find what it read. A read made with guesses that turn out wrong (another
//! k0s path, another lock file, another init system) is not used: the phase asks again.

use std::collections::HashMap;

use crate::host::facts::parse_sections;
use crate::transport::shell_quote;

use super::kubectl::kubectl_at;
use super::markers::{incomplete_marker, upgrade_marker};
use super::reset_host::uses_etcd;
use super::{HostState, State};

/// The k0s facts script of "Gather k0s facts": everything in one round trip, sections
/// separated by `@@name` lines.
pub fn facts_script(h: &HostState, k0s: &str, env_file: Option<&str>, lock_file: &str) -> String {
    let k = shell_quote(k0s);
    let cfg = shell_quote(&h.k0s_config_path());
    let env = env_file
        .map(|f| {
            let f = shell_quote(f);
            format!("echo @@envfile; [ -f {f} ] && echo yes && cat {f}\n")
        })
        .unwrap_or_default();
    format!(
        "echo @@version; [ -x {k} ] && {k} version 2>/dev/null\n\
         echo @@status; [ -x {k} ] && {k} status -o json 2>/dev/null\n\
         echo @@config; [ -f {cfg} ] && echo yes && cat {cfg}\n\
         {env}\
         echo @@service; for s in k0scontroller k0sworker k0sserver; do \
         if {installed}; then echo $s; fi; done\n\
         echo @@incomplete; [ -f {marker} ] && echo yes\n\
         echo @@upgrading; [ -f {upgrading} ] && cat {upgrading}\n\
         echo @@staging; {recorded}; for f in {k}.tmp.*; do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done\n\
         echo @@end\n",
        installed = crate::host::InitSystem::installed_anywhere_test("$s"),
        marker = shell_quote(&incomplete_marker(h)),
        upgrading = shell_quote(&upgrade_marker(h)),
        recorded = super::staging::list_script(lock_file)
    )
}

/// The k0s binary the probe reads before the OS module is known: the host's
/// `k0sInstallPath`, else the default most OS modules use (the phase checks the guess and asks
/// again when the module's path differs).
fn guessed_k0s_path(h: &HostState) -> String {
    h.config
        .k0s_install_path
        .clone()
        .unwrap_or_else(|| crate::host::configurer::paths::K0S_BINARY.to_string())
}

/// `kubectl` arguments that print the cluster ID (the `kube-system` namespace's UID).
pub const CLUSTER_ID_ARGS: &str =
    "get -n kube-system namespace kube-system -o template={{.metadata.uid}}";

/// The leader's read of its nodes and etcd members (`@@nodes`, `@@etcd`), with the k0s
/// binary at `k0s`.
pub fn list_script(state: &State, leader: &HostState, k0s: &str) -> String {
    let mut script = format!(
        "echo @@nodes; {}\n",
        kubectl_at(leader, k0s, "get nodes -o json")
    );
    if uses_etcd(state, leader) {
        script += &format!(
            "echo @@etcd; {} 2>&1\n",
            crate::host::Configurer::k0s_cmd(
                k0s,
                &format!(
                    "etcd member-list --data-dir={}",
                    shell_quote(&leader.data_dir())
                )
            )
        );
    }
    script
}

/// The k0s facts read (and, with `leader_reads`, the expected leader's cluster ID and node
/// and etcd member lists) as part of the host probe's root script, so that a no-op apply
/// costs one command per host. Prints `@@k0sprobe` (the k0s binary, service environment file
/// and lock file it read with, which "Gather k0s facts" compares with what the probe found)
/// before the sections of [`facts_script`]; the leader's reads are `@@clusterid`
/// (`ok <uid>`) and the text between `@@prune` `ok` and `@@prune-end`.
pub fn k0s_part(state: &State, h: &HostState, leader_reads: bool) -> String {
    use crate::host::InitSystem;
    use crate::host::configurer::paths::{LOCK, LOCK_FALLBACK};
    let k = guessed_k0s_path(h);
    let svc = h.service_name();
    let variant = |env: Option<String>, lock: &str| {
        format!(
            "echo {}; echo {}; echo {}; ( eval {} )",
            shell_quote(&k),
            shell_quote(env.as_deref().unwrap_or("-")),
            shell_quote(lock),
            shell_quote(&facts_script(h, &k, env.as_deref(), lock))
        )
    };
    // As the facts script tells the init systems apart, and the lock file.
    let by_init = |lock: &str| {
        format!(
            "if [ -d /run/systemd/system ]; then {}\n\
             elif command -v openrc-run >/dev/null 2>&1 || command -v rc-service >/dev/null 2>&1; then {}\n\
             else {}; fi",
            variant(Some(InitSystem::Systemd.env_file(svc)), lock),
            variant(Some(InitSystem::OpenRc.env_file(svc)), lock),
            variant(None, lock)
        )
    };
    let facts = format!(
        "echo @@k0sprobe\n\
         if [ -d /run/lock ]; then\n{}\nelse\n{}\nfi\n",
        by_init(LOCK),
        by_init(LOCK_FALLBACK)
    );
    if !leader_reads {
        return facts;
    }
    // The leader's reads run beside the k0s facts (into a private temp dir), not after them.
    let admin = shell_quote(&format!("{}/pki/admin.conf", h.data_dir()));
    format!(
        "T=$(mktemp -d 2>/dev/null) || T=\n\
         if [ -n \"$T\" ] && [ -f {admin} ]; then\n\
         ( v=$({} 2>/dev/null) && echo \"ok $v\" > \"$T/id\" ) &\n\
         ( v=$(eval {}) && {{ echo ok; printf '%s\\n' \"$v\"; }} > \"$T/prune\" ) &\n\
         fi\n\
         {facts}\
         wait\n\
         echo @@clusterid; [ -n \"$T\" ] && cat \"$T/id\" 2>/dev/null\n\
         echo @@prune; [ -n \"$T\" ] && cat \"$T/prune\" 2>/dev/null\n\
         echo @@prune-end; [ -n \"$T\" ] && rm -rf \"$T\"\n",
        kubectl_at(h, &k, CLUSTER_ID_ARGS),
        shell_quote(&list_script(state, h, &k))
    )
}

/// The expected leader for the probe's cluster reads: the first controller not being reset
/// (the leader whenever it runs k0s, which is the common case), else the first controller.
pub fn expected_leader(state: &State) -> Option<usize> {
    let c = || state.hosts.iter().filter(|h| h.config.is_controller());
    c().find(|h| !h.config.reset)
        .or_else(|| c().next())
        .map(|h| h.index)
}

/// The probe's output on `h` when its `@@k0sprobe` read matches what this host turned out to
/// need (k0s binary, service environment file, lock file).
pub fn probe_matches(h: &HostState, k0s: &str, env_file: Option<&str>) -> Option<String> {
    let out = h.probe_out.as_ref()?;
    let lock = &h.host.as_ref()?.facts.lock_file;
    let s: HashMap<String, String> = parse_sections(out);
    let mut it = s.get("k0sprobe")?.lines();
    (it.next()? == k0s && it.next()? == env_file.unwrap_or("-") && it.next()? == lock)
        .then(|| out.clone())
}

/// What the host probe read on `h` as the expected leader: `"clusterid"` (the cluster ID) or
/// `"prune"` (the node and etcd member lists), if it read it with the binary the host uses.
pub fn probed_leader_read(h: &HostState, what: &str) -> Option<String> {
    let p = h.host.as_ref()?;
    let env_file = p.facts.init.map(|i| i.env_file(h.service_name()));
    let out = probe_matches(h, &p.k0s_binary_path, env_file.as_deref())?;
    match what {
        "clusterid" => parse_sections(&out)
            .get("clusterid")?
            .trim()
            .strip_prefix("ok ")
            .map(|v| v.trim().to_string()),
        _ => {
            let start = out.find(&format!("\n@@{what}\nok\n"))? + what.len() + 7;
            let end = start + out[start..].find(&format!("@@{what}-end"))?;
            Some(out[start..end].to_string())
        }
    }
}
