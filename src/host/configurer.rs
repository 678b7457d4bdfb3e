//! OS support modules ("configurers"): which OS families are supported, their package manager,
//! default paths and quirks (k0sctl's `configurer/linux/`). Selection follows k0sctl: the table is tried in
//! registration order on `ID` (the `os:` override replaces `ID`); an unknown `ID` falls back to
//! each `ID_LIKE` entry with a warning; otherwise the OS is unsupported. Everything here is pure
//! command/path building; running them is [`crate::host::Host`]'s job.

use super::os::OsRelease;

/// How packages are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    /// `dnf` when present, else `yum` (Amazon Linux 2, CentOS 7).
    DnfOrYum,
    Apk,
    Pacman,
    Zypper,
    /// Immutable OS (Flatcar, Fedora CoreOS): nothing can be installed.
    None,
}

impl PackageManager {
    /// Command refreshing the package index (`None` when not applicable).
    pub fn update_cmd(&self) -> Option<String> {
        Some(match self {
            PackageManager::Apt => "DEBIAN_FRONTEND=noninteractive apt-get update -q".into(),
            PackageManager::DnfOrYum => {
                "if command -v dnf >/dev/null 2>&1; then dnf makecache -q; else yum makecache -q; fi".into()
            }
            PackageManager::Apk => "apk update".into(),
            PackageManager::Pacman => "pacman -Syu --noconfirm".into(),
            PackageManager::Zypper => "zypper --non-interactive refresh".into(),
            PackageManager::None => return None,
        })
    }

    /// Command installing `pkgs` (`None` for immutable OSes).
    pub fn install_cmd(&self, pkgs: &[&str]) -> Option<String> {
        let p = pkgs
            .iter()
            .map(|s| crate::transport::shell_quote(s))
            .collect::<Vec<_>>()
            .join(" ");
        Some(match self {
            PackageManager::Apt => {
                format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {p}")
            }
            PackageManager::DnfOrYum => format!(
                "if command -v dnf >/dev/null 2>&1; then dnf install -y -q {p}; else yum install -y -q {p}; fi"
            ),
            PackageManager::Apk => format!("apk add {p}"),
            PackageManager::Pacman => format!("pacman -S --noconfirm {p}"),
            PackageManager::Zypper => format!("zypper --non-interactive install -y {p}"),
            PackageManager::None => return None,
        })
    }
}

/// One OS support module.
#[derive(Debug, PartialEq, Eq)]
pub struct Configurer {
    /// Module name as k0sctl calls it (`debian`, `rhel`, `flatcar`, ...).
    pub name: &'static str,
    /// os-release `ID` values it handles.
    pub ids: &'static [&'static str],
    pub package_manager: PackageManager,
    /// Default k0s binary location.
    pub k0s_binary_path: &'static str,
    /// Packages installed by the "Prepare hosts" phase before anything else.
    pub prepare_packages: &'static [&'static str],
    /// Only when os-release `NAME` contains this (Fedora/RHEL CoreOS).
    pub name_contains: Option<&'static str>,
}

const K0S: &str = "/usr/local/bin/k0s";

/// The registry, in k0sctl's registration order (first match wins).
pub static CONFIGURERS: &[Configurer] = &[
    Configurer {
        name: "alpine",
        ids: &["alpine"],
        package_manager: PackageManager::Apk,
        k0s_binary_path: K0S,
        prepare_packages: &["findutils", "coreutils"],
        name_contains: None,
    },
    Configurer {
        name: "arch",
        ids: &["arch"],
        package_manager: PackageManager::Pacman,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "coreos",
        ids: &["fedora", "rhel", "rhcos"],
        package_manager: PackageManager::None,
        k0s_binary_path: "/opt/bin/k0s",
        prepare_packages: &[],
        name_contains: Some("CoreOS"),
    },
    Configurer {
        name: "debian",
        ids: &["debian"],
        package_manager: PackageManager::Apt,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "flatcar",
        ids: &["flatcar"],
        package_manager: PackageManager::None,
        k0s_binary_path: "/opt/bin/k0s",
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "opensuse",
        ids: &[
            "opensuse",
            "opensuse-leap",
            "opensuse-tumbleweed",
            "opensuse-microos",
        ],
        package_manager: PackageManager::Zypper,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "sles",
        ids: &["sles", "sle-micro"],
        package_manager: PackageManager::Zypper,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "ubuntu",
        ids: &["ubuntu"],
        package_manager: PackageManager::Apt,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "almalinux",
        ids: &["almalinux"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "amzn",
        ids: &["amzn"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "centos",
        ids: &["centos"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "fedora",
        ids: &["fedora"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "ol",
        ids: &["ol"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "rhel",
        ids: &["rhel"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
    Configurer {
        name: "rocky",
        ids: &["rocky"],
        package_manager: PackageManager::DnfOrYum,
        k0s_binary_path: K0S,
        prepare_packages: &[],
        name_contains: None,
    },
];

/// The chosen module, and the warning to log when it was chosen through `ID_LIKE`.
#[derive(Debug, Clone, Copy)]
pub struct Selected {
    pub configurer: &'static Configurer,
    /// `Some(like_id)` when chosen through ID_LIKE: log
    /// `using '<like_id>' as OS support fallback for <os>`.
    pub fallback: Option<&'static str>,
}

fn find(id: &str, os: &OsRelease) -> Option<&'static Configurer> {
    CONFIGURERS.iter().find(|c| {
        c.ids.contains(&id)
            && match c.name_contains {
                Some(n) => os.name.contains(n),
                None => true,
            }
    })
}

/// Pick the module for `os` (already carrying the `os:` override as its ID, if any).
pub fn select(os: &OsRelease) -> Result<Selected, String> {
    if let Some(c) = find(&os.id, os) {
        return Ok(Selected {
            configurer: c,
            fallback: None,
        });
    }
    for like in &os.id_like {
        if let Some(c) = find(like, os) {
            return Ok(Selected {
                configurer: c,
                fallback: Some(c.name),
            });
        }
    }
    Err(format!(
        "unsupported OS: {} (ID={}, ID_LIKE={}); set `os:` on the host to one of: {}",
        os.display(),
        os.id,
        os.id_like.join(" "),
        CONFIGURERS
            .iter()
            .filter(|c| c.name_contains.is_none())
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Default paths shared by all Linux modules (k0sctl's `configurer/linux.go`).
pub mod paths {
    /// Where most modules keep k0s (Flatcar and CoreOS: `/opt/bin/k0s`).
    pub const K0S_BINARY: &str = super::K0S;
    /// `/run/lock/k0sctl` if `/run/lock` exists, else this.
    pub const LOCK_FALLBACK: &str = "/tmp/k0sctl.lock";
    pub const LOCK: &str = "/run/lock/k0sctl";
}

impl Configurer {
    /// `<k0s> <args>` with the given binary path.
    pub fn k0s_cmd(k0s: &str, args: &str) -> String {
        format!("{} {args}", crate::transport::shell_quote(k0s))
    }
    /// `env "KUBECONFIG=<kubeconfig>" <k0s> kubectl <args>`.
    pub fn kubectl_cmd(k0s: &str, kubeconfig: &str, args: &str) -> String {
        format!(
            "env {} {} kubectl {args}",
            crate::transport::shell_quote(&format!("KUBECONFIG={kubeconfig}")),
            crate::transport::shell_quote(k0s)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(id: &str, like: &str, name: &str) -> OsRelease {
        OsRelease {
            id: id.into(),
            id_like: like.split_whitespace().map(String::from).collect(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn selection() {
        assert_eq!(
            select(&os("ubuntu", "debian", "Ubuntu"))
                .unwrap()
                .configurer
                .name,
            "ubuntu"
        );
        assert_eq!(
            select(&os("rocky", "rhel centos fedora", "Rocky"))
                .unwrap()
                .configurer
                .name,
            "rocky"
        );
        let f = select(&os("flatcar", "", "Flatcar Container Linux by Kinvolk")).unwrap();
        assert_eq!(f.configurer.k0s_binary_path, "/opt/bin/k0s");
        let c = select(&os("fedora", "", "Fedora CoreOS")).unwrap();
        assert_eq!(c.configurer.name, "coreos");
        assert_eq!(
            select(&os("fedora", "", "Fedora Linux"))
                .unwrap()
                .configurer
                .name,
            "fedora"
        );
        // ID_LIKE fallback.
        let k = select(&os("kali", "debian", "Kali GNU/Linux")).unwrap();
        assert_eq!((k.configurer.name, k.fallback), ("debian", Some("debian")));
        let m = select(&os("manjaro", "arch", "Manjaro")).unwrap();
        assert_eq!(m.configurer.package_manager, PackageManager::Pacman);
        // Override is just the ID.
        assert_eq!(
            select(&OsRelease::overridden("ubuntu"))
                .unwrap()
                .configurer
                .name,
            "ubuntu"
        );
        let e = select(&os("plan9", "", "Plan 9")).unwrap_err();
        assert!(e.contains("unsupported OS") && e.contains("debian"), "{e}");
        assert_eq!(
            select(&os("alpine", "", "Alpine"))
                .unwrap()
                .configurer
                .prepare_packages,
            &["findutils", "coreutils"]
        );
        assert_eq!(
            select(&os("opensuse-leap", "suse opensuse", "openSUSE Leap"))
                .unwrap()
                .configurer
                .name,
            "opensuse"
        );
    }

    #[test]
    fn package_commands() {
        assert_eq!(
            PackageManager::Apt.install_cmd(&["curl"]).unwrap(),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl"
        );
        assert!(PackageManager::None.install_cmd(&["curl"]).is_none());
        assert_eq!(
            Configurer::kubectl_cmd(
                "/usr/local/bin/k0s",
                "/var/lib/k0s/pki/admin.conf",
                "get nodes"
            ),
            "env KUBECONFIG=/var/lib/k0s/pki/admin.conf /usr/local/bin/k0s kubectl get nodes"
        );
    }
}
