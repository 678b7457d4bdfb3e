//! Turning `k0s kubeconfig admin` output into the kubeconfig users get.
//!
//! As k0sctl does: take the current context (or the only one), keep exactly that cluster, user
//! and context, rename them to the cluster name / user name from the manifest (or flags), point
//! the server at the API address (`--address`, else `spec.api.externalAddress`, else the first
//! keepalived virtual IP, else the leader's address; IPv6 in brackets; port `spec.api.port` or
//! 6443), and keep extensions. The result holds credentials: callers write it 0600.

use serde_json::{Map, Value, json};

use crate::config::Cluster;

/// The API URL users should reach, per k0sctl's rules.
pub fn api_url(cluster: &Cluster, leader_address: &str) -> String {
    let api = cluster
        .spec
        .k0s
        .config
        .get("spec")
        .and_then(|s| s.get("api"));
    let external = api
        .and_then(|a| a.get("externalAddress"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let host = external
        .map(str::to_string)
        .or_else(|| keepalived_vip(cluster))
        .unwrap_or_else(|| leader_address.to_string());
    let port = api
        .and_then(|a| a.get("port"))
        .and_then(Value::as_u64)
        .unwrap_or(6443);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    format!("https://{host}:{port}")
}

fn keepalived_vip(cluster: &Cluster) -> Option<String> {
    let cplb = cluster
        .spec
        .k0s
        .config
        .get("spec")?
        .get("network")?
        .get("controlPlaneLoadBalancing")?;
    if cplb.get("enabled").and_then(Value::as_bool) != Some(true)
        || cplb.get("type").and_then(Value::as_str) != Some("Keepalived")
    {
        return None;
    }
    cplb.get("keepalived")?
        .get("virtualServers")?
        .as_array()?
        .iter()
        .find_map(|v| v.get("ipAddress").and_then(Value::as_str))
        .map(|s| s.split('/').next().unwrap_or(s).to_string())
}

/// Rewrites an admin kubeconfig (YAML) to one cluster/user/context with the given names and
/// server URL.
pub fn rewrite(
    admin: &str,
    cluster_name: &str,
    user_name: &str,
    server: &str,
) -> Result<String, String> {
    let v: Value = serde_saphyr::from_str(admin)
        .map_err(|_| "k0s returned an admin kubeconfig that is not valid YAML".to_string())?;
    let named = |key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let find = |list: &[Value], name: &str| {
        list.iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let contexts = named("contexts");
    let current = v
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ctx = find(&contexts, current)
        .or_else(|| (contexts.len() == 1).then(|| contexts[0].clone()))
        .ok_or_else(|| {
            format!("admin kubeconfig has no context {current:?} and not exactly one context")
        })?;
    let ctx_body = ctx.get("context").cloned().unwrap_or(Value::Null);
    let cl_name = ctx_body
        .get("cluster")
        .and_then(Value::as_str)
        .unwrap_or("");
    let us_name = ctx_body.get("user").and_then(Value::as_str).unwrap_or("");
    let cl = find(&named("clusters"), cl_name)
        .ok_or_else(|| format!("admin kubeconfig has no cluster {cl_name:?}"))?;
    let us = find(&named("users"), us_name)
        .ok_or_else(|| format!("admin kubeconfig has no user {us_name:?}"))?;

    let mut cl_body = cl
        .get("cluster")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    cl_body.insert("server".into(), json!(server));
    let mut ctx_out = ctx_body.as_object().cloned().unwrap_or_default();
    ctx_out.insert("cluster".into(), json!(cluster_name));
    ctx_out.insert("user".into(), json!(user_name));

    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert(
        "clusters".into(),
        json!([{"cluster": cl_body, "name": cluster_name}]),
    );
    out.insert(
        "contexts".into(),
        json!([{"context": ctx_out, "name": cluster_name}]),
    );
    out.insert("current-context".into(), json!(cluster_name));
    out.insert("kind".into(), json!("Config"));
    if let Some(p) = v.get("preferences") {
        out.insert("preferences".into(), p.clone());
    }
    out.insert(
        "users".into(),
        json!([{"name": user_name, "user": us.get("user").cloned().unwrap_or(json!({}))}]),
    );
    if let Some(e) = v.get("extensions") {
        out.insert("extensions".into(), e.clone());
    }
    serde_saphyr::to_string(&Value::Object(out)).map_err(|e| format!("writing kubeconfig: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://localhost:6443\n  name: local\n- cluster:\n    server: https://other:6443\n  name: other\ncontexts:\n- context:\n    cluster: local\n    user: admin\n  name: Default\n- context:\n    cluster: other\n    user: admin\n  name: other\ncurrent-context: Default\nextensions:\n- name: ext\n  extension: {a: b}\nkind: Config\nusers:\n- name: admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    fn cluster(config: &str) -> Cluster {
        let text = format!(
            "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: single\n    localhost: true\n  k0s:\n    config:\n{config}"
        );
        crate::config::load_str(&text, "t.yaml", &|_| None)
            .unwrap()
            .cluster
    }

    #[test]
    fn api_url_rules() {
        assert_eq!(
            api_url(&cluster("      {}\n"), "10.0.0.1"),
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            api_url(&cluster("      {}\n"), "fd00::1"),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            api_url(
                &cluster(
                    "      spec:\n        api:\n          externalAddress: k8s.example.com\n          port: 7443\n"
                ),
                "10.0.0.1"
            ),
            "https://k8s.example.com:7443"
        );
        let cplb = "      spec:\n        network:\n          controlPlaneLoadBalancing:\n            enabled: true\n            type: Keepalived\n            keepalived:\n              virtualServers:\n              - ipAddress: 10.0.0.100\n";
        assert_eq!(
            api_url(&cluster(cplb), "10.0.0.1"),
            "https://10.0.0.100:6443"
        );
    }

    #[test]
    fn rewrite_keeps_only_the_current_context() {
        let out = rewrite(ADMIN, "prod", "alice", "https://10.0.0.1:6443").unwrap();
        let v: Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(v["current-context"], "prod");
        assert_eq!(v["clusters"].as_array().unwrap().len(), 1);
        assert_eq!(v["clusters"][0]["name"], "prod");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["contexts"][0]["context"]["cluster"], "prod");
        assert_eq!(v["contexts"][0]["context"]["user"], "alice");
        assert_eq!(v["users"][0]["name"], "alice");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["extensions"][0]["name"], "ext");
    }

    #[test]
    fn sole_context_fallback_and_errors() {
        let one = ADMIN.replace("current-context: Default\n", "").replace(
            "- context:\n    cluster: other\n    user: admin\n  name: other\n",
            "",
        );
        assert!(rewrite(&one, "c", "u", "https://x:6443").is_ok());
        let none = ADMIN.replace("current-context: Default\n", "");
        assert!(
            rewrite(&none, "c", "u", "https://x:6443")
                .unwrap_err()
                .contains("not exactly one context")
        );
        let no_user = ADMIN.replace("- name: admin\n  user:", "- name: someone\n  user:");
        assert!(
            rewrite(&no_user, "c", "u", "https://x:6443")
                .unwrap_err()
                .contains("no user \"admin\"")
        );
    }
}
