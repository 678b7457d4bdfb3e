//! Host facts gathered in one round trip: one POSIX sh script prints `@@section` blocks (uname,
//! arch, os-release, hostname, machine-id, uid, init system, container, lock dir, curl, k0s,
//! private interface and its addresses, `date`), parsed here. Clock skew is the remote time
//! minus the midpoint of the local send/receive times.
//!
//! The script reads files with shell builtins (`read` loops, not `cat`, `grep`, `awk`, `sed`,
//! `head`) and starts only the programs it cannot do without (`uname`, `ip`, `date`): it runs
//! on every host at every apply, and each process costs the host a fork and an exec — a few
//! milliseconds of CPU on small machines, the larger part of a no-op re-apply's cost there.
//!
//! [`gather_with`] appends a caller's script run as root in the same round trip (the probe
//! that folds OS detection, the host lock and k0s facts into one command per host).

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::HostError;
use super::initsys::InitSystem;
use super::os::OsRelease;
use crate::transport::{Cmd, Remote, shell_quote};

/// What the host layer knows about a host after [`gather`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub os: OsRelease,
    /// k0s arch name: `amd64`, `arm64`, `arm`, `riscv64`, `386` (else `uname -m` as is).
    pub arch: String,
    /// `uname -m`.
    pub machine: String,
    /// Lowercased.
    pub hostname: String,
    pub machine_id: String,
    pub uid: u32,
    pub init: Option<InitSystem>,
    pub in_container: bool,
    /// The root mount propagates mounts (`shared:`), as k0s needs inside containers.
    pub root_shared: bool,
    /// `/run/lock/k0sctl` when `/run/lock` exists, else `/tmp/k0sctl.lock`.
    pub lock_file: String,
    pub has_curl: bool,
    /// `command -v k0s`, if any.
    pub k0s_in_path: Option<String>,
    pub private_interface: Option<String>,
    /// First global IPv4 on the private interface that is not the connection address.
    pub private_address: Option<String>,
    /// All global IPv4 addresses of the private interface.
    pub addresses: Vec<String>,
    /// Remote clock minus local clock, seconds (positive: host is ahead).
    pub clock_skew_secs: f64,
    /// Output of the privilege detection: `root`, `sudo-n`, `doas`, `has-sudo`, `none`.
    pub privilege: String,
}

/// The facts script (exported for the record and for tests); [`gather`] appends the privilege
/// detection ([`crate::transport::Privilege::DETECT_SCRIPT`]) and the end marker.
pub const SCRIPT: &str = r#"export PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH
k0sctl_cat() { [ -r "$1" ] && while IFS= read -r k0sctl_l || [ -n "$k0sctl_l" ]; do printf '%s\n' "$k0sctl_l"; done < "$1"; }
k0sctl_pdev() { k0sctl_f=1; k0sctl_d=; while IFS= read -r k0sctl_l; do case " $k0sctl_l" in *[!0-9A-Za-z_]172.*|*[!0-9A-Za-z_]10.*|*[!0-9A-Za-z_]192.168.*) k0sctl_f=0; if [ -z "$k0sctl_d" ]; then k0sctl_dev; fi ;; esac; done; echo "$k0sctl_d"; return $k0sctl_f; }
k0sctl_ddev() { k0sctl_d=; while IFS= read -r k0sctl_l; do case "$k0sctl_l" in *default*) k0sctl_dev; break ;; esac; done; echo "$k0sctl_d"; }
k0sctl_dev() { case "$k0sctl_l" in *" dev "*) k0sctl_d=${k0sctl_l##* dev }; k0sctl_d=${k0sctl_d%% *} ;; esac; }
K0SCTL_UNAME=$(uname -sm)
echo @@uname; echo "${K0SCTL_UNAME%% *}"
echo @@machine; echo "${K0SCTL_UNAME#* }"
echo @@os-release; k0sctl_cat /etc/os-release 2>/dev/null || k0sctl_cat /usr/lib/os-release 2>/dev/null
echo @@hostname; k0sctl_cat /proc/sys/kernel/hostname 2>/dev/null || hostname 2>/dev/null
echo @@machine-id; k0sctl_cat /etc/machine-id 2>/dev/null || k0sctl_cat /var/lib/dbus/machine-id 2>/dev/null
K0SCTL_UID=; while read -r k0sctl_k k0sctl_r k0sctl_e k0sctl_l; do if [ "$k0sctl_k" = Uid: ]; then K0SCTL_UID=$k0sctl_e; break; fi; done 2>/dev/null < /proc/self/status
[ -n "$K0SCTL_UID" ] || K0SCTL_UID=$(id -u)
echo @@uid; echo "$K0SCTL_UID"
echo @@init
if [ -d /run/systemd/system ]; then echo systemd
elif command -v openrc-run >/dev/null 2>&1 || command -v rc-service >/dev/null 2>&1; then echo openrc
else echo unknown; fi
echo @@container
k0sctl_ctr() { while IFS= read -r k0sctl_l; do case "$k0sctl_l" in *docker*|*lxc*|*kubepods*) return 0 ;; esac; done < /proc/1/cgroup; return 1; }
if [ -f /.dockerenv ] || [ -f /run/.containerenv ] || k0sctl_ctr 2>/dev/null; then echo yes; else echo no; fi
echo @@rootshared
while read -r k0sctl_a k0sctl_b k0sctl_c k0sctl_d k0sctl_m k0sctl_l; do if [ "$k0sctl_m" = / ]; then case " $k0sctl_l" in *" shared:"*) echo yes; break ;; esac; fi; done 2>/dev/null < /proc/self/mountinfo
echo @@lockdir; if [ -d /run/lock ]; then echo yes; else echo no; fi
echo @@curl; command -v curl 2>/dev/null || true
echo @@k0s; command -v k0s 2>/dev/null || true
echo @@iface
IFACE="$K0SCTL_PRIVATE_IFACE"
if [ -z "$IFACE" ]; then
  IFACE=$(ip route list scope global 2>/dev/null | k0sctl_pdev) || IFACE=$(ip route list 2>/dev/null | k0sctl_ddev)
fi
echo "$IFACE"
echo @@addrs; if [ -n "$IFACE" ]; then ip -o -4 addr show dev "$IFACE" scope global 2>/dev/null; fi
echo @@date; date -u +%s.%N
echo @@uptime; k0sctl_cat /proc/uptime 2>/dev/null
echo @@privilege
"#;

/// Split `@@name` sections.
pub fn parse_sections(out: &str) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = HashMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@") {
            cur = Some(name.trim().to_string());
            m.entry(name.trim().to_string()).or_default();
        } else if let Some(c) = &cur {
            let e = m.entry(c.clone()).or_default();
            e.push_str(line);
            e.push('\n');
        }
    }
    m
}

/// Normalise `uname -m` to the k0s download arch.
pub fn normalize_arch(machine: &str) -> String {
    match machine {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armv8l" | "armv7" | "armhf" | "arm" => "arm",
        "riscv64" => "riscv64",
        "i386" | "i686" | "x86" => "386",
        other => other,
    }
    .to_string()
}

/// Build [`Facts`] from the script output; `mid` is the local time (s) at the request midpoint.
pub fn parse(
    out: &str,
    connect_address: Option<&str>,
    mid: f64,
    host: &str,
) -> Result<Facts, HostError> {
    let s = parse_sections(out);
    let get = |k: &str| s.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    if !s.contains_key("end") {
        return Err(HostError::Facts {
            host: host.into(),
            what: format!("the facts script output was cut short: {out:?}"),
        });
    }
    let uname = get("uname");
    if uname != "Linux" {
        return Err(HostError::NotLinux {
            host: host.into(),
            uname,
        });
    }
    let machine = get("machine");
    let addresses: Vec<String> = get("addrs")
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.position(|w| w == "inet")?;
            it.next()
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
        })
        .collect();
    let private_address = addresses
        .iter()
        .find(|a| Some(a.as_str()) != connect_address)
        .cloned();
    let date = get("date");
    let remote_now: f64 = date
        .parse()
        .or_else(|_| date.split('.').next().unwrap_or("").parse())
        .map_err(|_| HostError::Facts {
            host: host.into(),
            what: format!("unparsable date output {date:?}"),
        })?;
    let iface = get("iface");
    Ok(Facts {
        os: OsRelease::parse(&get("os-release")),
        arch: normalize_arch(&machine),
        machine,
        hostname: get("hostname").to_lowercase(),
        machine_id: get("machine-id"),
        uid: get("uid").parse().unwrap_or(u32::MAX),
        init: InitSystem::from_fact(&get("init")),
        in_container: get("container") == "yes",
        root_shared: get("rootshared") == "yes",
        lock_file: if get("lockdir") == "yes" {
            super::configurer::paths::LOCK.into()
        } else {
            super::configurer::paths::LOCK_FALLBACK.into()
        },
        has_curl: !get("curl").is_empty(),
        k0s_in_path: Some(get("k0s")).filter(|s| !s.is_empty()),
        private_interface: Some(iface).filter(|s| !s.is_empty()),
        private_address,
        addresses,
        clock_skew_secs: remote_now - mid,
        privilege: get("privilege"),
    })
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Run the facts script on `r` (one round trip).
pub async fn gather(
    r: &Remote,
    private_interface: Option<&str>,
    connect_address: Option<&str>,
) -> Result<Facts, HostError> {
    Ok(gather_with(r, private_interface, connect_address, None)
        .await?
        .0)
}

/// The line that separates the facts from the output of the root part in [`gather_with`].
const ROOT_MARK: &str = "@@@root";
/// The last line of the root part: when it ended, as the host's uptime (`up <seconds>`, read
/// with a builtin from `/proc/uptime`) or, without it, the remote time (`date`).
const TAIL_MARK: &str = "@@@tail ";

/// When the root part ended (see [`TAIL_MARK`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Uptime(f64),
    Date(f64),
}

/// The facts script followed, in the same round trip, by `root_part` run as root when the
/// login user can become root without a password (already root, `sudo -n`, `doas -n`).
/// `root_part` runs after the facts were printed, in a subshell (through `sudo -n` or `doas
/// -n`: in their `sh -c`); its stdout is returned
/// as is (`None` when it could not run: sudo needs a password, or no way to root).
pub fn script_with(private_interface: Option<&str>, root_part: Option<&str>) -> String {
    let detect = crate::transport::Privilege::DETECT_SCRIPT;
    let iface = private_interface
        .map(|i| format!("K0SCTL_PRIVATE_IFACE={}\n", shell_quote(i)))
        .unwrap_or_default();
    let root = root_part
        .map(|part| {
            let q = shell_quote(part);
            // Quoted once into a variable rather than once per case: the probe is the
            // largest command of a run and its size stays in every connection's buffers.
            format!(
                "echo {ROOT_MARK}\n\
                 K0SCTL_ROOT_PART={q}\n\
                 case \"$K0SCTL_PRIV\" in\n\
                 root) ( eval \"$K0SCTL_ROOT_PART\" ) ;;\n\
                 sudo-n) sudo -n -- sh -c \"$K0SCTL_ROOT_PART\" ;;\n\
                 doas) doas -n -- sh -c \"$K0SCTL_ROOT_PART\" ;;\n\
                 *) echo skipped ;;\n\
                 esac\n\
                 if read -r K0SCTL_UP k0sctl_l 2>/dev/null < /proc/uptime; then echo \"{TAIL_MARK}up $K0SCTL_UP\"; \
                 else echo \"{TAIL_MARK}$(date -u +%s.%N)\"; fi\n"
            )
        })
        .unwrap_or_default();
    format!("{iface}{SCRIPT}K0SCTL_PRIV=$( {detect})\necho \"$K0SCTL_PRIV\"\necho @@end\n{root}")
}

/// [`gather`] plus `root_part` (see [`script_with`]) in the same round trip: the facts and
/// the root part's stdout (`None` when it did not run as root).
pub async fn gather_with(
    r: &Remote,
    private_interface: Option<&str>,
    connect_address: Option<&str>,
    root_part: Option<&str>,
) -> Result<(Facts, Option<String>), HostError> {
    let script = script_with(private_interface, root_part);
    let t0 = now_secs();
    let started = Instant::now();
    let out = r
        .run(Cmd::new(script).display_as(if root_part.is_some() {
            "(probe host: facts, lock, k0s facts)"
        } else {
            "(gather host facts)"
        }))
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let out = out.stdout_str();
    let (facts_out, root_out) = split_root(&out);
    // The clock is read in the facts part: the root part's run time (from the same clock)
    // is taken off the round trip before its midpoint is used.
    let sections = parse_sections(facts_out);
    let first =
        |k: &str| -> Option<f64> { sections.get(k)?.split_whitespace().next()?.parse().ok() };
    let tail = root_out
        .as_ref()
        .and_then(|(_, end)| *end)
        .and_then(|end| match end {
            End::Uptime(u) => first("uptime").map(|s| u - s),
            End::Date(d) => first("date").map(|s| d - s),
        })
        .map(|t| t.clamp(0.0, elapsed))
        .unwrap_or(0.0);
    let mid = t0 + (elapsed - tail) / 2.0;
    let facts = parse(facts_out, connect_address, mid, r.name())?;
    let root = root_out
        .map(|(body, _)| body)
        .filter(|b| b.trim() != "skipped");
    Ok((facts, root))
}

/// Splits [`script_with`]'s output into the facts and (the root part, its end time).
fn split_root(out: &str) -> (&str, Option<(String, Option<End>)>) {
    let Some(at) = out.find(&format!("\n{ROOT_MARK}\n")) else {
        return (out, None);
    };
    let facts = &out[..at + 1];
    let rest = &out[at + ROOT_MARK.len() + 2..];
    let (body, end) = match rest.rfind(TAIL_MARK) {
        Some(t) if t == 0 || rest.as_bytes()[t - 1] == b'\n' => {
            let v = rest[t + TAIL_MARK.len()..].trim();
            let end = match v.strip_prefix("up ") {
                Some(u) => u.trim().parse().ok().map(End::Uptime),
                None => v.parse().ok().map(End::Date),
            };
            (&rest[..t], end)
        }
        // Cut short: no end line, so the root part did not finish.
        _ => return (facts, None),
    };
    (facts, Some((body.to_string(), end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root part's end line: the host's uptime (builtin read), or the date without it;
    /// a root part cut short has none.
    #[test]
    fn the_root_part_end_is_read_from_its_tail_line() {
        let facts = "@@uname\nLinux\n@@end\n";
        let out = format!("{facts}@@@root\nbody\n@@@tail up 123.45\n");
        let (f, root) = split_root(&out);
        assert_eq!(f, facts);
        assert_eq!(root, Some(("body\n".into(), Some(End::Uptime(123.45)))));
        let (_, root) = split_root(&format!("{facts}@@@root\nbody\n@@@tail 1700000000.5\n"));
        assert_eq!(
            root,
            Some(("body\n".into(), Some(End::Date(1_700_000_000.5))))
        );
        assert_eq!(split_root(&format!("{facts}@@@root\nbo")).1, None);
    }

    /// The script (builtins where it can) read on this machine gives what the machine says.
    #[test]
    fn the_script_reads_this_machine() {
        let script = script_with(None, None);
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        let out = String::from_utf8_lossy(&out.stdout);
        let f = parse(&out, None, now_secs(), "local").unwrap();
        let uname_m = std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap();
        assert_eq!(f.machine, String::from_utf8_lossy(&uname_m.stdout).trim());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(f.hostname, hostname.trim().to_lowercase());
        assert_eq!(f.uid, unsafe { libc::geteuid() });
        if let Ok(os) = std::fs::read_to_string("/etc/os-release") {
            assert_eq!(f.os, OsRelease::parse(&os));
        }
        if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
            assert_eq!(f.machine_id, id.trim());
        }
        let root_shared = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/") && l.contains(" shared:"));
        assert_eq!(f.root_shared, root_shared);
        assert!(f.clock_skew_secs.abs() < 60.0, "{}", f.clock_skew_secs);
        assert!(!f.privilege.is_empty());
    }

    #[test]
    fn parses_script_output() {
        let out = "@@uname\nLinux\n@@machine\naarch64\n@@os-release\nID=ubuntu\nID_LIKE=debian\n\
                   @@hostname\nNode-1\n@@machine-id\nabc\n@@uid\n1000\n@@init\nsystemd\n@@container\nno\n\
                   @@lockdir\nyes\n@@curl\n/usr/bin/curl\n@@k0s\n\n@@iface\neth1\n\
                   @@addrs\n3: eth1    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth1\\       valid_lft forever\n\
                   3: eth1    inet 10.0.0.9/24 scope global secondary eth1\n@@date\n1000.5\n\
                   @@privilege\nsudo-n\n@@end\n";
        let f = parse(out, Some("10.0.0.5"), 1000.0, "h").unwrap();
        assert_eq!(f.arch, "arm64");
        assert_eq!(f.hostname, "node-1");
        assert_eq!(f.os.id, "ubuntu");
        assert_eq!(f.init, Some(InitSystem::Systemd));
        assert_eq!(f.private_interface.as_deref(), Some("eth1"));
        assert_eq!(f.addresses, vec!["10.0.0.5", "10.0.0.9"]);
        assert_eq!(f.private_address.as_deref(), Some("10.0.0.9"));
        assert!((f.clock_skew_secs - 0.5).abs() < 1e-9);
        assert!(f.has_curl && f.k0s_in_path.is_none());
        assert_eq!(f.lock_file, "/run/lock/k0sctl");
        assert_eq!(f.privilege, "sudo-n");
        assert!(matches!(
            parse("@@uname\nDarwin\n@@end\n", None, 0.0, "h"),
            Err(HostError::NotLinux { .. })
        ));
    }
}
