//! Building `k0s install` and `k0s reset` command lines from a host's manifest entry.
//!
//! The flag order and rules are k0sctl's (`Host.K0sInstallFlags`): the user's `installFlags`
//! first, then `--data-dir`, `--kubelet-root-dir`, the role flags, `--token-file` (all but the
//! leader), `--config` (controllers), and for workers a `--kubelet-extra-args` that carries
//! `--node-ip` and `--hostname-override`. Values are POSIX-quoted.

use crate::config::Host;
use crate::config::flags::{Flags, quote};

use super::version::K0sVersion;

/// What the install command needs beyond the manifest entry.
#[derive(Debug, Clone)]
pub struct InstallContext<'a> {
    pub k0s_path: &'a str,
    /// The data dir in effect (the manifest's or the OS default).
    pub data_dir: &'a str,
    pub is_leader: bool,
    pub token_path: &'a str,
    pub config_path: &'a str,
    /// Flags k0sctl adds on its own (`--enable-dynamic-config`, `--force=true`).
    pub extra: &'a [&'a str],
    /// The version of the binary that will run the command (`--force` needs v1.27.4+k0s.0).
    pub binary_version: Option<&'a K0sVersion>,
}

/// The role word for `k0s install` and the full flag list.
pub fn install_flags(h: &Host, cx: &InstallContext) -> Result<(&'static str, Flags), String> {
    let mut flags = h.install_flags.clone();
    for e in cx.extra {
        flags.add_or_replace(e);
    }
    flags.add_or_replace(&format!("--data-dir={}", cx.data_dir));
    if let Some(k) = &h.kubelet_root_dir {
        flags.add_or_replace(&format!("--kubelet-root-dir={k}"));
    }
    let role = match h.role.as_str() {
        "controller+worker" => {
            flags.add_unless_exist("--enable-worker=true");
            if h.no_taints {
                flags.add_unless_exist("--no-taints=true");
            }
            "controller"
        }
        "single" => {
            flags.add_unless_exist("--single=true");
            "controller"
        }
        "controller" => "controller",
        _ => "worker",
    };
    if !cx.is_leader {
        flags.add_unless_exist(&format!("--token-file={}", cx.token_path));
    }
    if h.is_controller() {
        flags.add_unless_exist(&format!("--config={}", cx.config_path));
    }
    if h.is_worker() {
        let mut extra = match flags.value("--kubelet-extra-args") {
            Some(v) if !v.is_empty() => Flags(
                shlex::split(&v)
                    .ok_or_else(|| format!("unbalanced quotes in --kubelet-extra-args={v}"))?,
            ),
            _ => Flags::default(),
        };
        let cloud = h.install_flags.boolean("--enable-cloud-provider")?;
        if !cloud && let Some(ip) = &h.private_address {
            extra.add_unless_exist(&format!("--node-ip={ip}"));
        }
        if let Some(hn) = &h.hostname {
            extra.add_or_replace(&format!("--hostname-override={hn}"));
        }
        if !extra.is_empty() {
            flags.add_or_replace(&format!("--kubelet-extra-args={}", extra.join()));
        }
    }
    let force_min = K0sVersion::parse("v1.27.4+k0s.0").expect("constant");
    if cx.binary_version.is_some_and(|v| *v < force_min) {
        flags.delete("--force");
    }
    Ok((role, flags))
}

/// `<k0s> install <role> <flags>`.
pub fn install_command(h: &Host, cx: &InstallContext) -> Result<String, String> {
    let (role, flags) = install_flags(h, cx)?;
    Ok(format!(
        "{} install {role} {}",
        quote(cx.k0s_path),
        flags.join()
    ))
}

/// `<k0s> reset --data-dir=<dd> [--kubelet-root-dir=<dir>]`.
pub fn reset_command(h: &Host, k0s_path: &str, data_dir: &str) -> String {
    let mut flags = Flags::default();
    flags.add(&format!("--data-dir={data_dir}"));
    if let Some(k) = &h.kubelet_root_dir {
        flags.add(&format!("--kubelet-root-dir={k}"));
    }
    format!("{} reset {}", quote(k0s_path), flags.join())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(role: &str) -> Host {
        Host {
            role: role.into(),
            kubelet_root_dir: Some("/tmp/kubelet".into()),
            ..Host::default()
        }
    }

    fn cx(leader: bool) -> InstallContext<'static> {
        InstallContext {
            k0s_path: "k0s",
            data_dir: "/tmp/k0s",
            is_leader: leader,
            token_path: "from-configurer",
            config_path: "from-configurer",
            extra: &[],
            binary_version: None,
        }
    }

    // The expectations are k0sctl's own unit-test strings (host_posix_test.go).
    #[test]
    fn k0sctl_parity() {
        assert_eq!(
            install_command(&host("worker"), &cx(false)).unwrap(),
            "k0s install worker --data-dir=/tmp/k0s --kubelet-root-dir=/tmp/kubelet --token-file=from-configurer"
        );
        assert_eq!(
            install_command(&host("controller"), &cx(true)).unwrap(),
            "k0s install controller --data-dir=/tmp/k0s --kubelet-root-dir=/tmp/kubelet --config=from-configurer"
        );
        assert_eq!(
            install_command(&host("controller+worker"), &cx(false)).unwrap(),
            "k0s install controller --data-dir=/tmp/k0s --kubelet-root-dir=/tmp/kubelet --enable-worker=true --token-file=from-configurer --config=from-configurer"
        );
        let mut w = host("worker");
        w.install_flags = Flags(vec!["--kubelet-extra-args=\"--foo bar\"".into()]);
        w.private_address = Some("10.0.0.9".into());
        assert_eq!(
            install_command(&w, &cx(false)).unwrap(),
            "k0s install worker --kubelet-extra-args='--foo bar --node-ip=10.0.0.9' --data-dir=/tmp/k0s --kubelet-root-dir=/tmp/kubelet --token-file=from-configurer"
        );
        assert_eq!(
            reset_command(&host("worker"), "k0s", "/tmp/k0s"),
            "k0s reset --data-dir=/tmp/k0s --kubelet-root-dir=/tmp/kubelet"
        );
    }

    #[test]
    fn single_no_taints_hostname_cloud_and_force() {
        let mut s = host("single");
        s.kubelet_root_dir = None;
        assert_eq!(
            install_command(&s, &cx(true)).unwrap(),
            "k0s install controller --data-dir=/tmp/k0s --single=true --config=from-configurer"
        );
        let mut cw = host("controller+worker");
        cw.kubelet_root_dir = None;
        cw.no_taints = true;
        cw.hostname = Some("node-1".into());
        cw.private_address = Some("10.0.0.5".into());
        cw.install_flags = Flags(vec!["--enable-cloud-provider".into()]);
        let old = K0sVersion::parse("v1.26.0+k0s.0").unwrap();
        let c = InstallContext {
            extra: &["--force=true", "--enable-dynamic-config"],
            binary_version: Some(&old),
            ..cx(true)
        };
        assert_eq!(
            install_command(&cw, &c).unwrap(),
            "k0s install controller --enable-cloud-provider --enable-dynamic-config --data-dir=/tmp/k0s --enable-worker=true --no-taints=true --config=from-configurer --kubelet-extra-args=--hostname-override=node-1"
        );
    }
}
