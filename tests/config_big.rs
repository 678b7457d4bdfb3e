//! Big manifests: one mapping with 100,000 keys loads (config loading is linear in the size of
//! a mapping: duplicate keys are found through a hash set, not a scan per key), and a
//! duplicate key among them is still reported at its own line. The timing of a 300,000-key,
//! 10 MB manifest is measured by `tests/bench/config-load.sh`, not here.

use k0sctl::config;

fn no_env(_: &str) -> Option<String> {
    None
}

const HEAD: &str = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    ssh:\n      address: 10.0.0.1\n  k0s:\n    config:\n      spec:\n        big:\n";
const HEAD_LINES: usize = 11;

fn big(keys: usize) -> String {
    let mut text = String::with_capacity(keys * 32 + HEAD.len());
    text.push_str(HEAD);
    for i in 0..keys {
        text.push_str(&format!("          key{i:07}: value-{i}\n"));
    }
    text
}

#[test]
fn a_mapping_with_100000_keys_loads() {
    let text = big(100_000);
    let l = config::load_str(&text, "big.yaml", &no_env).unwrap();
    let big = &l.cluster.spec.k0s.config["spec"]["big"];
    let map = big
        .as_object()
        .expect("spec.k0s.config.spec.big is a mapping");
    assert_eq!(map.len(), 100_000);
    assert_eq!(map["key0099999"], "value-99999");
    // Key order is kept.
    assert_eq!(map.keys().next().map(String::as_str), Some("key0000000"));
    assert_eq!(
        map.keys().next_back().map(String::as_str),
        Some("key0099999")
    );
}

#[test]
fn a_duplicate_among_100000_keys_is_reported_at_its_line() {
    let mut text = big(100_000);
    text.push_str("          key0000007: again\n");
    let err = config::load_str(&text, "big.yaml", &no_env).unwrap_err();
    let shown = err.to_string();
    let line = HEAD_LINES + 100_000 + 1;
    assert!(
        shown.contains(&format!("big.yaml:{line}:11: invalid YAML: duplicate key \"key0000007\" (first defined at line {})", HEAD_LINES + 8)),
        "{shown}"
    );
}

#[test]
fn a_flow_mapping_of_100000_keys_on_one_line_loads_with_columns_in_characters() {
    // Columns are counted in characters: the two-byte `é` takes one column.
    let mut text = HEAD.replace("        big:\n", "        big: {é: 1, ");
    for i in 0..100_000 {
        text.push_str(&format!("k{i:07}: v, "));
    }
    text.push_str("k0000003: dup}\n");
    let err = config::load_str(&text, "flow.yaml", &no_env).unwrap_err();
    // "        big: {" is 14 columns, "é: 1, " 6, each "kNNNNNNN: v, " 13.
    let col = 15 + 6 + 100_000 * 13;
    let line = HEAD_LINES;
    assert!(
        err.to_string().contains(&format!(
            "flow.yaml:{line}:{col}: invalid YAML: duplicate key \"k0000003\""
        )),
        "{err}"
    );
}
