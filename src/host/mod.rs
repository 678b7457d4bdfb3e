//! The host OS layer: what kind of machine is on the other end and how to manage it.
//!
//! [`Host::probe`] gathers [`facts::Facts`] in one round trip ([`Host::probe_with`] also runs a
//! caller's script as root in that round trip), picks the OS support module
//! ([`configurer`]) from os-release (the `os:` override replaces `ID`; unknown IDs fall back to
//! `ID_LIKE`), and knows the init system ([`initsys`]). Everything runs through the transport
//! boundary ([`crate::transport::Remote`]); the transport knows nothing of OSes or k0s.

#![allow(clippy::result_large_err)] // HostError wraps the context-rich TransportError; cold path

pub mod configurer;
pub mod facts;
pub mod initsys;
pub mod os;

use crate::transport::{Cmd, Remote, TransportError};

pub use configurer::{Configurer, PackageManager};
pub use facts::Facts;
pub use initsys::InitSystem;
pub use os::OsRelease;

/// Host-layer errors (transport errors pass through with their context).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{host}: not a Linux host (uname -s says {uname:?}); only Linux hosts are supported")]
    NotLinux { host: String, uname: String },
    #[error("{host}: {what}")]
    UnsupportedOs { host: String, what: String },
    #[error("{host}: gathering facts failed: {what}")]
    Facts { host: String, what: String },
    #[error(
        "{host}: no supported init system found (systemd or OpenRC needed to run k0s as a service)"
    )]
    NoInitSystem { host: String },
    #[error("{host}: {os} has no package manager; install {pkgs} into the image beforehand")]
    NoPackageManager {
        host: String,
        os: String,
        pkgs: String,
    },
}

/// Inputs of [`Host::probe`] from the host's config entry.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// `os:` override (replaces os-release `ID`).
    pub os_override: Option<String>,
    /// `privateInterface:` override.
    pub private_interface: Option<String>,
    /// The address we connect to (excluded when picking the private address).
    pub connect_address: Option<String>,
    /// `k0sInstallPath:` override.
    pub k0s_install_path: Option<String>,
    /// The sudo password, when sudo needs one (checked with one extra round trip).
    pub sudo_password: Option<crate::transport::Secret>,
}

/// A probed host: its connection, facts and OS support module.
#[derive(Clone)]
pub struct Host {
    pub remote: Remote,
    pub facts: Facts,
    pub configurer: &'static Configurer,
    /// Set when the module was picked through ID_LIKE (already logged as a warning).
    pub fallback: Option<&'static str>,
    /// Where k0s lives on this host (override, else the module default).
    pub k0s_binary_path: String,
}

impl Host {
    /// Gather facts and detect the privilege wrapper (one round trip; two when a sudo password
    /// has to be checked) and select the OS module. The returned [`Host::remote`] has its
    /// privilege set unless it already had one.
    pub async fn probe(remote: Remote, opts: &ProbeOptions) -> Result<Host, HostError> {
        Ok(Host::probe_with(remote, opts, None).await?.0)
    }

    /// [`Host::probe`], and `root_part` (a POSIX sh script) run as root in the same round
    /// trip, after the facts, when the login user becomes root without a password: one
    /// command per host finds out what the host is, takes the host lock and reads what k0s
    /// has there. Returns the root part's stdout, or `None` when it could not run that way
    /// (sudo asks for a password, or no way to become root): the caller then asks again with
    /// the privilege wrapper.
    pub async fn probe_with(
        mut remote: Remote,
        opts: &ProbeOptions,
        root_part: Option<&str>,
    ) -> Result<(Host, Option<String>), HostError> {
        let (mut facts, root_out) = facts::gather_with(
            &remote,
            opts.private_interface.as_deref(),
            opts.connect_address.as_deref(),
            root_part,
        )
        .await?;
        if matches!(remote.privilege(), crate::transport::Privilege::Unknown) {
            let p = crate::transport::Privilege::from_detection(
                remote.connection(),
                &facts.privilege,
                opts.sudo_password.clone(),
            )
            .await?;
            remote.set_privilege(p);
        }
        if let Some(id) = &opts.os_override {
            tracing::info!(about = %remote.name(), "OS ID has been manually set to {id}");
            facts.os = OsRelease {
                id: id.to_lowercase(),
                id_like: vec![],
                ..facts.os
            };
        }
        let sel = configurer::select(&facts.os).map_err(|what| HostError::UnsupportedOs {
            host: remote.name().to_string(),
            what,
        })?;
        if let Some(f) = sel.fallback {
            tracing::warn!(
                about = %remote.name(),
                "using '{f}' as OS support fallback for {}",
                facts.os.display()
            );
        }
        tracing::info!(about = %remote.name(), "is running {}", facts.os.display());
        let host = Host {
            k0s_binary_path: opts
                .k0s_install_path
                .clone()
                .unwrap_or_else(|| sel.configurer.k0s_binary_path.to_string()),
            remote,
            facts,
            configurer: sel.configurer,
            fallback: sel.fallback,
        };
        Ok((host, root_out))
    }

    pub fn name(&self) -> &str {
        self.remote.name()
    }

    /// The init system, or an error explaining that one is needed.
    pub fn init_system(&self) -> Result<InitSystem, HostError> {
        self.facts.init.ok_or_else(|| HostError::NoInitSystem {
            host: self.name().to_string(),
        })
    }

    /// Install packages with the OS package manager (refreshing the index first).
    pub async fn install_packages(&self, pkgs: &[&str]) -> Result<(), HostError> {
        let pm = self.configurer.package_manager;
        let Some(install) = pm.install_cmd(pkgs) else {
            return Err(HostError::NoPackageManager {
                host: self.name().to_string(),
                os: self.facts.os.display(),
                pkgs: pkgs.join(", "),
            });
        };
        let script = match pm.update_cmd() {
            Some(u) => format!("{u} && {install}"),
            None => install,
        };
        self.remote.run(Cmd::new(script).sudo()).await?;
        Ok(())
    }

    /// `<k0s> <args>` for this host.
    pub fn k0s_cmd(&self, args: &str) -> String {
        Configurer::k0s_cmd(&self.k0s_binary_path, args)
    }
}
