//! `testenv` CLI (test scaffolding): `up`, `down`, `status`, and the internal `binserver` daemon.
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use testenv::{Env, Options, SudoMode};

#[derive(Parser)]
#[command(
    name = "testenv",
    about = "Test hosts in Linux namespaces with a k0s stand-in (test scaffolding; run as root)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create hosts and write DIR/k0sctl.yaml, DIR/hosts.json, DIR/id_ed25519, DIR/k0s-versions
    Up {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        #[arg(long, default_value_t = 1)]
        controllers: usize,
        #[arg(long, default_value = "ubuntu")]
        os: String,
        /// Also create this non-root user with sudo (used in k0sctl.yaml instead of root)
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum, default_value = "nopasswd")]
        sudo: SudoArg,
        /// Add a jump host; the cluster hosts are then reachable only through it
        #[arg(long)]
        bastion: bool,
        /// Shape the operator->hosts direction of the bridge to M Mbit/s (tc tbf)
        #[arg(long)]
        uplink_mbit: Option<u32>,
        /// k0s stand-in binary (default: $TESTENV_K0S_BIN or the `k0s` next to this executable)
        #[arg(long)]
        k0s_bin: Option<PathBuf>,
        /// Comma-separated stand-in versions to offer, oldest first
        #[arg(long, value_delimiter = ',')]
        versions: Option<Vec<String>>,
        /// Also generate an RSA host key per host (besides ed25519 and ecdsa)
        #[arg(long)]
        rsa_host_keys: bool,
        /// A second interface (eth1) per host on a private network that carries the default
        /// route; the SSH address stays on eth0
        #[arg(long)]
        private_net: bool,
        /// sshd with `AllowTcpForwarding no` (direct-tcpip channels are refused)
        #[arg(long)]
        no_tcp_forwarding: bool,
        /// PID 1 of the hosts: systemd, or openrc (OpenRC's openrc-init, as on Alpine)
        #[arg(long, default_value = "systemd")]
        init: String,
    },
    /// Remove every namespace, mount, process, bridge and veth of the environment (idempotent)
    Down {
        #[arg(long, required_unless_present = "all")]
        dir: Option<PathBuf>,
        /// Tear down every environment registered in /run/testenv
        #[arg(long)]
        all: bool,
    },
    /// Show the hosts of an environment
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print one value of an environment for scripts: prefix, binserver-url, password, manifest,
    /// ips, controller-ips, worker-ips, private-ips, bastion-ip (lists: one per line)
    Get {
        #[arg(long)]
        dir: PathBuf,
        what: String,
    },
    /// Copy a k0s stand-in binary with a version stamped into it
    Stamp {
        /// Stand-in binary to copy (default: as for `up`)
        #[arg(long)]
        src: Option<PathBuf>,
        #[arg(long)]
        dst: PathBuf,
        /// e.g. v1.32.1+k0s.0
        #[arg(long)]
        version: String,
    },
    /// (internal) run the binary server
    #[command(hide = true)]
    Binserver {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SudoArg {
    Nopasswd,
    Password,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            dir,
            hosts,
            controllers,
            os,
            user,
            sudo,
            bastion,
            uplink_mbit,
            k0s_bin,
            versions,
            rsa_host_keys,
            private_net,
            no_tcp_forwarding,
            init,
        } => {
            let mut o = Options::new(dir, hosts);
            o.controllers = controllers;
            o.private_net = private_net;
            o.no_tcp_forwarding = no_tcp_forwarding;
            o.init = init;
            o.os = os;
            o.user = user;
            o.sudo = match sudo {
                SudoArg::Nopasswd => SudoMode::Nopasswd,
                SudoArg::Password => SudoMode::Password,
            };
            o.bastion = bastion;
            o.uplink_mbit = uplink_mbit;
            o.k0s_bin = k0s_bin;
            if let Some(v) = versions {
                o.versions = v;
            }
            o.binserver_in_process = false;
            o.rsa_host_keys = rsa_host_keys;
            let t = std::time::Instant::now();
            let env = Env::up(o)?;
            for h in env.hosts.iter().chain(env.bastion.iter()) {
                match h.private_ip {
                    Some(p) => println!("{:<14} {:<10} {} (private {p})", h.name, h.role, h.ip),
                    None => println!("{:<14} {:<10} {}", h.name, h.role, h.ip),
                }
            }
            println!("manifest: {}", env.manifest.display());
            println!("hosts:    {}", env.hosts_json.display());
            if let Some(u) = &env.binserver_url {
                println!("binaries: {u}");
            }
            println!("up in {:.1}s", t.elapsed().as_secs_f64());
            // The CLI leaves the environment running: forget the handle so Drop does not tear it down.
            std::mem::forget(env);
            Ok(())
        }
        Cmd::Down { dir, all } => {
            if all {
                for (_, d) in testenv::env::registered_envs() {
                    testenv::down_dir(&d)?;
                }
            }
            if let Some(d) = dir {
                testenv::down_dir(&d)?;
            }
            Ok(())
        }
        Cmd::Status { dir } => {
            print!("{}", testenv::env::status(&dir)?);
            Ok(())
        }
        Cmd::Get { dir, what } => {
            let st = testenv::env::load_state(&dir)?
                .ok_or_else(|| anyhow::anyhow!("{}: no environment", dir.display()))?;
            let ips = |role: Option<&str>| {
                st.hosts
                    .iter()
                    .filter(|h| h.role != "bastion" && role.map(|r| h.role == r).unwrap_or(true))
                    .map(|h| h.ip.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let out = match what.as_str() {
                "prefix" => st.prefix.clone(),
                "binserver-url" => st.binserver_url.clone().unwrap_or_default(),
                "password" => st.password.clone().unwrap_or_default(),
                "manifest" => dir.join("k0sctl.yaml").display().to_string(),
                "ips" => ips(None),
                "controller-ips" => ips(Some("controller")),
                "worker-ips" => ips(Some("worker")),
                "private-ips" => st
                    .hosts
                    .iter()
                    .filter_map(|h| h.private_ip.map(|p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join("\n"),
                "bastion-ip" => st
                    .hosts
                    .iter()
                    .find(|h| h.role == "bastion")
                    .map(|h| h.ip.to_string())
                    .unwrap_or_default(),
                o => anyhow::bail!("unknown field {o:?}"),
            };
            println!("{out}");
            Ok(())
        }
        Cmd::Stamp { src, dst, version } => {
            let src = match src {
                Some(s) => s,
                None => testenv::find_k0s_bin()?,
            };
            testenv::stamp::stamp_copy(&src, &dst, &version)?;
            println!("{}  {}", testenv::stamp::sha256_file(&dst)?, dst.display());
            Ok(())
        }
        Cmd::Binserver { root, listen } => {
            testenv::binserver::BinServer::serve_forever(root, listen)
        }
    }
}
