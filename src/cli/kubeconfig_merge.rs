//! `k0sctl kubeconfig --merge`: put the cluster's admin kubeconfig into the user's kubeconfig
//! file (the first path of `$KUBECONFIG`, else `~/.kube/config`) instead of printing it.
//!
//! The cluster gets a context named after it (`-n`, default `metadata.name`) with a cluster
//! entry of the same name and a user entry named `<user>@<cluster>` (so two clusters that both
//! use the default user `admin` never overwrite each other's credentials). A re-run replaces
//! those three entries (and drops the cluster/user entries the context used before, when no
//! other context uses them); every other entry and key is kept, and so is `current-context`
//! unless `--set-current` (or the file had none). The file is replaced atomically (a temp file
//! in the same directory, renamed over it); a new file is 0600, an existing one keeps its mode.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Which file `--merge` writes: the first non-empty path of `KUBECONFIG`, else
/// `~/.kube/config` (kubectl's own rule for where changes go when nothing else says).
pub fn target_path(kubeconfig_env: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(first) = kubeconfig_env
        .unwrap_or("")
        .split(':')
        .find(|p| !p.is_empty())
    {
        return Some(PathBuf::from(first));
    }
    home.map(|h| h.join(".kube").join("config"))
}

/// What a merge did, for the message.
#[derive(Debug, PartialEq)]
pub struct Merged {
    pub text: String,
    pub context: String,
    /// The context existed before (its entries were replaced).
    pub replaced: bool,
    pub current: bool,
}

fn list<'a>(doc: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = doc.entry(key).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("just made an array")
}

fn name_of(e: &Value) -> Option<&str> {
    e.get("name").and_then(Value::as_str)
}

fn upsert(items: &mut Vec<Value>, entry: Value) {
    let name = name_of(&entry).map(str::to_string);
    match items.iter_mut().find(|e| name_of(e) == name.as_deref()) {
        Some(slot) => *slot = entry,
        None => items.push(entry),
    }
}

/// Merges `ours` (a kubeconfig with one cluster, user and context, as
/// [`crate::k0s::kubeconfig::rewrite`] makes it) into `existing` (the file's text, `None` or
/// empty when there is none).
pub fn merge(existing: Option<&str>, ours: &str, set_current: bool) -> Result<Merged, String> {
    let ours: Value = serde_saphyr::from_str(ours)
        .map_err(|e| format!("the cluster's kubeconfig is not valid YAML: {e}"))?;
    let first = |key: &str| -> Result<Value, String> {
        ours.get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
            .ok_or_else(|| format!("the cluster's kubeconfig has no {key}"))
    };
    let (cluster, user, context) = (first("clusters")?, first("users")?, first("contexts")?);
    let ctx_name = name_of(&context).unwrap_or_default().to_string();
    let user_name = format!("{}@{ctx_name}", name_of(&user).unwrap_or("admin"));

    let mut doc: Map<String, Value> = match existing.map(str::trim) {
        None | Some("") => Map::new(),
        Some(text) => match serde_saphyr::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err(format!(
                    "it is not a kubeconfig (a mapping), found {}",
                    match other {
                        Value::Array(_) => "a list",
                        _ => "a single value",
                    }
                ));
            }
            Err(e) => return Err(format!("it is not valid YAML ({e}); fix or move it first")),
        },
    };
    doc.entry("apiVersion").or_insert_with(|| json!("v1"));
    doc.entry("kind").or_insert_with(|| json!("Config"));

    // What the context used before, to drop entries only it used.
    let old = list(&mut doc, "contexts")
        .iter()
        .find(|c| name_of(c) == Some(ctx_name.as_str()))
        .and_then(|c| c.get("context"))
        .map(|c| {
            (
                c.get("cluster").and_then(Value::as_str).map(str::to_string),
                c.get("user").and_then(Value::as_str).map(str::to_string),
            )
        });
    let replaced = old.is_some();

    let mut ctx_body = context
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    ctx_body.insert("cluster".into(), json!(ctx_name));
    ctx_body.insert("user".into(), json!(user_name));
    upsert(
        list(&mut doc, "contexts"),
        json!({"context": ctx_body, "name": ctx_name}),
    );
    upsert(
        list(&mut doc, "clusters"),
        json!({"cluster": cluster.get("cluster").cloned().unwrap_or(json!({})), "name": ctx_name}),
    );
    upsert(
        list(&mut doc, "users"),
        json!({"name": user_name, "user": user.get("user").cloned().unwrap_or(json!({}))}),
    );
    if let Some((old_cluster, old_user)) = old {
        let used = |doc: &mut Map<String, Value>, key: &str, name: &str| {
            list(doc, "contexts").iter().any(|c| {
                c.get("context")
                    .and_then(|b| b.get(key))
                    .and_then(Value::as_str)
                    == Some(name)
            })
        };
        for (list_key, ref_key, name) in [
            ("clusters", "cluster", old_cluster),
            ("users", "user", old_user),
        ] {
            if let Some(n) = name
                && !used(&mut doc, ref_key, &n)
            {
                list(&mut doc, list_key).retain(|e| name_of(e) != Some(n.as_str()));
            }
        }
    }
    let has_current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let current = set_current || !has_current;
    if current {
        doc.insert("current-context".into(), json!(ctx_name));
    }
    let text = serde_saphyr::to_string(&Value::Object(doc))
        .map_err(|e| format!("writing kubeconfig: {e}"))?;
    Ok(Merged {
        text,
        context: ctx_name,
        replaced,
        current,
    })
}

/// Merges `ours` into the file at `path` and replaces it atomically: 0600 when created, the
/// existing mode kept otherwise.
pub fn merge_into_file(path: &Path, ours: &str, set_current: bool) -> Result<Merged, String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let (existing, mode) = match std::fs::read_to_string(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o600);
            (Some(t), mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0o600),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let merged =
        merge(existing.as_deref(), ours, set_current).map_err(|e| format!("{shown}: {e}"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.k0sctl-{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(merged.text.as_bytes())?;
        // The mode asked for at creation is reduced by the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {shown}: {e}"));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(cluster: &str, server: &str) -> String {
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: {server}\n  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: admin\n  name: {cluster}\ncurrent-context: {cluster}\nkind: Config\nusers:\n- name: admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n"
        )
    }

    fn doc(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    fn names(v: &Value, key: &str) -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    const OTHER: &str = "apiVersion: v1\nkind: Config\npreferences: {}\nclusters:\n- cluster:\n    server: https://other:6443\n  name: other\ncontexts:\n- context:\n    cluster: other\n    user: admin\n  name: other\ncurrent-context: other\nusers:\n- name: admin\n  user:\n    token: abc\n";

    #[test]
    fn new_file_gets_the_context_and_makes_it_current() {
        let m = merge(None, &ours("k0s", "https://10.0.0.1:6443"), false).unwrap();
        let v = doc(&m.text);
        assert_eq!(v["current-context"], "k0s");
        assert_eq!(names(&v, "contexts"), ["k0s"]);
        assert_eq!(names(&v, "users"), ["admin@k0s"]);
        assert_eq!(v["contexts"][0]["context"]["user"], "admin@k0s");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://10.0.0.1:6443"
        );
        assert!(m.current && !m.replaced);
    }

    #[test]
    fn existing_entries_and_current_context_are_kept() {
        let m = merge(Some(OTHER), &ours("k0s", "https://10.0.0.1:6443"), false).unwrap();
        let v = doc(&m.text);
        assert_eq!(v["current-context"], "other");
        assert_eq!(names(&v, "contexts"), ["other", "k0s"]);
        assert_eq!(names(&v, "clusters"), ["other", "k0s"]);
        // The other cluster's "admin" user is not touched.
        assert_eq!(names(&v, "users"), ["admin", "admin@k0s"]);
        assert_eq!(v["users"][0]["user"]["token"], "abc");
        assert!(v.get("preferences").is_some());
        assert!(!m.current);
        let m = merge(Some(OTHER), &ours("k0s", "https://10.0.0.1:6443"), true).unwrap();
        assert_eq!(doc(&m.text)["current-context"], "k0s");
    }

    #[test]
    fn rerun_replaces_the_context_entries() {
        let once = merge(Some(OTHER), &ours("k0s", "https://10.0.0.1:6443"), false).unwrap();
        let twice = merge(
            Some(&once.text),
            &ours("k0s", "https://10.0.0.9:6443"),
            false,
        )
        .unwrap();
        let v = doc(&twice.text);
        assert!(twice.replaced);
        assert_eq!(names(&v, "contexts"), ["other", "k0s"]);
        assert_eq!(names(&v, "clusters"), ["other", "k0s"]);
        assert_eq!(names(&v, "users"), ["admin", "admin@k0s"]);
        assert_eq!(
            v["clusters"][1]["cluster"]["server"],
            "https://10.0.0.9:6443"
        );
        // A context pointing at hand-named entries: those go when nothing else uses them.
        let hand = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://old:6443\n  name: old-k0s\ncontexts:\n- context:\n    cluster: old-k0s\n    user: old-admin\n  name: k0s\ncurrent-context: k0s\nusers:\n- name: old-admin\n  user:\n    token: t\n";
        let v = doc(&merge(Some(hand), &ours("k0s", "https://x:6443"), false)
            .unwrap()
            .text);
        assert_eq!(names(&v, "clusters"), ["k0s"]);
        assert_eq!(names(&v, "users"), ["admin@k0s"]);
    }

    #[test]
    fn invalid_existing_file_is_not_replaced() {
        assert!(merge(Some("a: [\n"), &ours("k0s", "https://x:6443"), false).is_err());
        assert!(merge(Some("- a\n"), &ours("k0s", "https://x:6443"), false).is_err());
    }

    #[test]
    fn target_is_the_first_kubeconfig_path_or_home() {
        let home = Path::new("/home/u");
        assert_eq!(
            target_path(Some(":/a/one:/b/two"), Some(home)),
            Some(PathBuf::from("/a/one"))
        );
        assert_eq!(
            target_path(Some(""), Some(home)),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        assert_eq!(target_path(None, None), None);
    }

    #[test]
    fn file_is_created_0600_and_keeps_an_existing_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kube/config");
        merge_into_file(&p, &ours("k0s", "https://x:6443"), false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        merge_into_file(&p, &ours("two", "https://y:6443"), false).unwrap();
        assert_eq!(mode(&p), 0o640);
        let v = doc(&std::fs::read_to_string(&p).unwrap());
        assert_eq!(names(&v, "contexts"), ["k0s", "two"]);
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
