//! `kubectl get nodes -o json` and `k0s etcd member-list` output, compared with the manifest.
#![no_main]
use k0sctl_fuzz::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (nodes, members) = text.split_once('\0').unwrap_or((&text, &text));
    let known_nodes = vec!["controller0".to_string(), "worker0".to_string()];
    let known_peers = vec!["10.0.0.1".to_string()];
    let _ = k0sctl::phases::prune_nodes::strays(nodes, members, &known_nodes, &known_peers);
});
