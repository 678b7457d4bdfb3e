//! A private OpenSSH sshd for tests, plus helpers. Everything is cleaned up on drop (also when
//! a test panics): sshd and ssh-agent are killed by PID, users are removed with `userdel -r`,
//! sudoers drop-ins deleted, temp dirs removed. Only loopback addresses are used.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k0sctl::transport::ssh::{KnownHostsConfig, SshOptions, StrictHostKeyChecking};

/// What a test needs to reach a host. Built from a local [`Sshd`] today, from a testenv host
/// later.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl Target {
    /// Native SSH options: this key only, no ambient agent, this known_hosts file, accept-new,
    /// 30 s connect timeout, 2 retries for transient failures.
    pub fn ssh_options(&self) -> SshOptions {
        let mut o = SshOptions::new(&self.address, self.port, &self.user);
        o.key_paths = vec![self.key.clone()];
        o.use_agent = false;
        o.known_hosts = KnownHostsConfig {
            user_files: vec![self.known_hosts.clone()],
            global_files: vec![],
            policy: StrictHostKeyChecking::AcceptNew,
        };
        // A loaded CI machine runs many sshds at once: be patient with transient failures
        // (tests of failure behaviour set their own values).
        o.retries = 2;
        o.connect_timeout = std::time::Duration::from_secs(30);
        o
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `ssh-keygen -t <kind>` into `dir/name` (with `passphrase`, or none). Returns the private key path.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let p = dir.join(name);
    let mut c = Command::new("ssh-keygen");
    c.args([
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        &format!("test-{name}"),
        "-f",
    ])
    .arg(&p);
    if kind == "rsa" {
        c.args(["-b", "3072"]);
    }
    run(&mut c);
    p
}

/// Public key line of a private key path.
pub fn pubkey(key: &Path) -> String {
    std::fs::read_to_string(format!("{}.pub", key.display()))
        .expect("read .pub")
        .trim()
        .to_string()
}

/// Sign `key`.pub with `ca` (user or host certificate). Returns the `-cert.pub` path.
pub fn sign(ca: &Path, key: &Path, host: bool, principals: &str) -> PathBuf {
    let mut c = Command::new("ssh-keygen");
    c.arg("-q")
        .arg("-s")
        .arg(ca)
        .args(["-I", "test-cert", "-n", principals, "-V", "-5m:+1h"]);
    if host {
        c.arg("-h");
    }
    c.arg(format!("{}.pub", key.display()));
    run(&mut c);
    PathBuf::from(format!("{}-cert.pub", key.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// sshd settings a test can change before start.
#[derive(Debug, Clone)]
pub struct SshdSetup {
    pub host_key_type: String,
    pub extra: Vec<String>,
    /// Sign the host key with this CA (`HostCertificate`), principals as given.
    pub host_ca: Option<(PathBuf, String)>,
    pub port: Option<u16>,
    pub log_level: String,
}

impl Default for SshdSetup {
    fn default() -> Self {
        SshdSetup {
            host_key_type: "ed25519".into(),
            extra: vec![],
            host_ca: None,
            port: None,
            log_level: "VERBOSE".into(),
        }
    }
}

/// A running sshd on 127.0.0.1:<port>; killed on drop.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub host_key: PathBuf,
    child: Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        Self::start_with(SshdSetup::default())
    }

    pub fn start_with(setup: SshdSetup) -> Sshd {
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("k0sctl-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        std::fs::create_dir_all(d.join("authorized_keys")).unwrap();
        let host_key = keygen(d, "ssh_host_key", &setup.host_key_type, "");
        let mut cfg = String::new();
        let port = setup.port.unwrap_or_else(free_port);
        let lines = [
            "ListenAddress 127.0.0.1".into(),
            format!("HostKey {}", host_key.display()),
            format!("PidFile {}/sshd.pid", d.display()),
            format!("AuthorizedKeysFile {}/authorized_keys/%u", d.display()),
            "UsePAM no".into(),
            "StrictModes no".into(),
            "PermitRootLogin yes".into(),
            "PasswordAuthentication no".into(),
            "KbdInteractiveAuthentication no".into(),
            "PubkeyAuthentication yes".into(),
            "AllowTcpForwarding yes".into(),
            "MaxStartups 100:30:200".into(),
            "MaxSessions 100".into(),
            format!("LogLevel {}", setup.log_level),
            "Subsystem sftp /usr/lib/openssh/sftp-server".into(),
        ];
        // sshd keeps the first value of each keyword: the test's own lines go first.
        for l in setup.extra.iter().chain(lines.iter()) {
            cfg.push_str(l);
            cfg.push('\n');
        }
        if let Some((ca, principals)) = &setup.host_ca {
            let cert = sign(ca, &host_key, true, principals);
            cfg.push_str(&format!("HostCertificate {}\n", cert.display()));
        }
        let cfg_path = d.join("sshd_config");
        std::fs::write(&cfg_path, cfg).unwrap();
        let spawn = |port: u16| {
            Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&cfg_path)
                .arg("-p")
                .arg(port.to_string())
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sshd")
        };
        let child = spawn(port);
        let mut s = Sshd {
            port,
            dir,
            host_key,
            child,
        };
        let listening = super::poll::poll_until_or(
            "sshd to listen",
            Duration::from_secs(20),
            Duration::from_millis(20),
            || {
                if std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
                    return Some(());
                }
                // Lost the race for a free port to someone else: try another one.
                if setup.port.is_none() && matches!(s.child.try_wait(), Ok(Some(_))) {
                    s.port = free_port();
                    s.child = spawn(s.port);
                }
                None
            },
        );
        if let Err(e) = listening {
            panic!("{e}: sshd did not start: {}", s.log());
        }
        s
    }

    /// The listening sshd's PID (its per-connection processes are its descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Allow `key` to log in as `user`.
    pub fn authorize(&self, user: &str, key: &Path) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("authorized_keys").join(user))
            .unwrap();
        writeln!(f, "{}", pubkey(key)).unwrap();
    }

    /// A fresh key authorized for `user`, and a target with an empty known_hosts file.
    pub fn target(&self, user: &str) -> Target {
        let key = keygen(
            self.path(),
            &format!("client_{user}_{:x}", rand::random::<u32>()),
            "ed25519",
            "",
        );
        self.authorize(user, &key);
        self.target_with_key(user, key)
    }

    pub fn target_with_key(&self, user: &str, key: PathBuf) -> Target {
        Target {
            address: "127.0.0.1".into(),
            port: self.port,
            user: user.into(),
            key,
            known_hosts: self
                .path()
                .join(format!("known_hosts_{:x}", rand::random::<u32>())),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("sshd.log")).unwrap_or_default()
    }

    /// The `host key-type base64` text of the server's public key.
    pub fn host_pub(&self) -> String {
        pubkey(&self.host_key)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Our own child, by PID. SIGTERM lets sshd tidy up; then reap.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let child = &mut self.child;
        let exited = super::poll::poll_until_or(
            "sshd to exit",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || child.try_wait().ok().flatten(),
        );
        if exited.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A throw-away local user (and optional sudoers drop-in); removed on drop.
pub struct TestUser {
    pub name: String,
    pub password: String,
    sudoers: Option<PathBuf>,
}

impl TestUser {
    /// `sudo`: None (no sudo rights), Some(false) = sudo with password, Some(true) = NOPASSWD.
    pub fn create(sudo: Option<bool>) -> TestUser {
        let name = format!("k0t{:08x}", rand::random::<u32>());
        let password = format!("Pw-{:016x}-secret", rand::random::<u64>());
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", &name]));
        let mut u = TestUser {
            name: name.clone(),
            password: password.clone(),
            sudoers: None,
        };
        // A password also unlocks the account (sshd refuses locked accounts with UsePAM no).
        let mut c = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        writeln!(c.stdin.take().unwrap(), "{name}:{password}").unwrap();
        assert!(c.wait().unwrap().success());
        if let Some(nopasswd) = sudo {
            let p = PathBuf::from(format!("/etc/sudoers.d/{name}"));
            let rule = if nopasswd {
                format!("{name} ALL=(ALL) NOPASSWD: ALL\n")
            } else {
                format!("{name} ALL=(ALL) ALL\n")
            };
            std::fs::write(&p, rule).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o440)).unwrap();
            u.sudoers = Some(p);
        }
        u
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(p) = &self.sudoers {
            let _ = std::fs::remove_file(p);
        }
        // Kill leftovers of this user only (by uid, via pkill -U is too broad a tool; userdel -f
        // handles it), then remove the user and home.
        let _ = Command::new("userdel")
            .args(["-r", "-f", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A private ssh-agent (foreground, killed by PID on drop).
pub struct Agent {
    pub socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        super::poll::poll(
            "ssh-agent to start",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || socket.exists(),
        );
        Agent {
            socket,
            child,
            _dir: dir,
        }
    }

    pub fn add(&self, key: &Path) {
        run(Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null()));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
