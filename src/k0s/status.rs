//! `k0s status -o json`: what a running k0s says about itself, and the role k0sctl derives.

use serde::Deserialize;

use super::version::K0sVersion;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    version: String,
    #[serde(default)]
    pid: i64,
    #[serde(default)]
    role: String,
    #[serde(default)]
    workloads: bool,
    #[serde(default)]
    single_node: bool,
    #[serde(default)]
    args: Vec<String>,
}

/// A running k0s as reported by `k0s status -o json`.
#[derive(Debug, Clone, PartialEq)]
pub struct K0sStatus {
    pub version: K0sVersion,
    pub pid: i64,
    /// In k0sctl.yaml terms: controller, worker, controller+worker or single.
    pub role: String,
    /// The daemon's arguments after `k0s <role>` (what `k0s install` was given, normalised).
    pub args: Vec<String>,
}

impl K0sStatus {
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: Raw = serde_json::from_str(json.trim())
            .map_err(|e| format!("unexpected `k0s status -o json` output ({e})"))?;
        let version = K0sVersion::parse(&raw.version)?;
        let args: Vec<String> = raw.args.into_iter().skip(2).collect();
        // k0sctl's mapping: server → controller; a controller running workloads is single
        // when started with --single, controller+worker otherwise.
        let role = match raw.role.as_str() {
            "server" | "controller" if raw.workloads => {
                let single =
                    raw.single_node || args.iter().any(|a| a == "--single=true" || a == "--single");
                if single {
                    "single"
                } else {
                    "controller+worker"
                }
            }
            "server" | "controller" => "controller",
            "server+worker" => "controller+worker",
            other => other,
        }
        .to_string();
        Ok(K0sStatus {
            version,
            pid: raw.pid,
            role,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(role: &str, workloads: bool, single: bool, args: &[&str]) -> String {
        serde_json::json!({"Version": "v1.31.2+k0s.0", "Pid": 42, "Role": role, "Workloads": workloads,
            "SingleNode": single, "Args": args})
        .to_string()
    }

    #[test]
    fn roles() {
        let base = [
            "/usr/local/bin/k0s",
            "controller",
            "--data-dir=/var/lib/k0s",
        ];
        assert_eq!(
            K0sStatus::parse(&st("controller", false, false, &base))
                .unwrap()
                .role,
            "controller"
        );
        assert_eq!(
            K0sStatus::parse(&st("controller", true, false, &base))
                .unwrap()
                .role,
            "controller+worker"
        );
        let single = ["/usr/local/bin/k0s", "controller", "--single=true"];
        assert_eq!(
            K0sStatus::parse(&st("controller", true, false, &single))
                .unwrap()
                .role,
            "single"
        );
        assert_eq!(
            K0sStatus::parse(&st("controller", true, true, &base))
                .unwrap()
                .role,
            "single"
        );
        assert_eq!(
            K0sStatus::parse(&st("worker", true, false, &base))
                .unwrap()
                .role,
            "worker"
        );
        let s = K0sStatus::parse(&st("server", false, false, &base)).unwrap();
        assert_eq!((s.role.as_str(), s.pid), ("controller", 42));
        assert_eq!(s.args, ["--data-dir=/var/lib/k0s"]);
        assert_eq!(s.version.to_string(), "v1.31.2+k0s.0");
        assert!(K0sStatus::parse("Error: not running").is_err());
    }
}
