//! `network = internet`: a filtered network namespace with user-mode NAT (slirp4netns).
//!
//! Per command, Paddock (root) creates a network namespace owned by the *initial* user
//! namespace, held open by a tiny `unshare --net` process; `slirp4netns` attaches a `tap0`
//! (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) and forwards connections through ordinary
//! sockets of the host; then `ip rule` entries are installed in that namespace:
//!
//! ```text
//! pref 100  to 10.0.2.3 ipproto udp dport 53  lookup main   DNS to slirp's forwarder
//! pref 101  to 10.0.2.3 ipproto tcp dport 53  lookup main
//! pref 150  to <operator allow-list>          lookup main
//! pref 200  to <blocked range>                prohibit       (EACCES for every other packet)
//! ```
//!
//! and bubblewrap starts inside that namespace with `--share-net`. The command's own user
//! namespace is a child of the initial one, so it holds no capability over this network
//! namespace: it cannot change the rules, the routes or the interface, and without
//! `CAP_NET_RAW` it cannot send raw packets around them.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command as TokioCommand};

use crate::SandboxError;
use crate::output::{Capture, SharedCapture, lock, pump};

/// An IPv4 network in CIDR notation (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// A network from its address and prefix length; host bits are cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, SandboxError> {
        if prefix > 32 {
            return Err(SandboxError::InvalidSpec(format!(
                "prefix length {prefix} is over 32"
            )));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Ok(Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Ipv4Net {
            addr: Ipv4Addr::new(a, b, c, d),
            prefix,
        }
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || SandboxError::InvalidSpec(format!("{s:?} is not an IPv4 CIDR like 10.0.0.0/8"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        Ipv4Net::new(addr.parse().map_err(|_| bad())?, prefix)
    }
}

/// The ranges `internet` always blocks (API §1.13: loopback, unspecified, private, link-local
/// including cloud metadata, CGNAT, multicast, broadcast, documentation and reserved).
pub fn default_blocked_networks() -> Vec<Ipv4Net> {
    vec![
        Ipv4Net::v4(0, 0, 0, 0, 8),       // "this network", unspecified
        Ipv4Net::v4(10, 0, 0, 0, 8),      // RFC 1918 (also slirp's own 10.0.2.0/24)
        Ipv4Net::v4(100, 64, 0, 0, 10),   // carrier-grade NAT (Alibaba metadata 100.100.100.200)
        Ipv4Net::v4(127, 0, 0, 0, 8),     // loopback
        Ipv4Net::v4(169, 254, 0, 0, 16),  // link-local, cloud metadata 169.254.169.254
        Ipv4Net::v4(172, 16, 0, 0, 12),   // RFC 1918 (Docker bridges)
        Ipv4Net::v4(192, 0, 0, 0, 24),    // IETF protocol assignments
        Ipv4Net::v4(192, 0, 2, 0, 24),    // TEST-NET-1
        Ipv4Net::v4(192, 88, 99, 0, 24),  // 6to4 relay anycast
        Ipv4Net::v4(192, 168, 0, 0, 16),  // RFC 1918
        Ipv4Net::v4(198, 18, 0, 0, 15),   // benchmarking
        Ipv4Net::v4(198, 51, 100, 0, 24), // TEST-NET-2
        Ipv4Net::v4(203, 0, 113, 0, 24),  // TEST-NET-3
        Ipv4Net::v4(224, 0, 0, 0, 4),     // multicast
        Ipv4Net::v4(240, 0, 0, 0, 4),     // reserved, broadcast
    ]
}

/// Operator adjustments to what `internet` may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InternetPolicy {
    /// Networks reachable even though they fall in a blocked range (an internal package
    /// mirror, say). They win over every block, the host's own addresses included: allow
    /// narrowly.
    pub allow: Vec<Ipv4Net>,
    /// Networks blocked in addition to [`default_blocked_networks`] and the host's own
    /// addresses (for example a public address that NATs back to this host).
    pub block: Vec<Ipv4Net>,
}

/// Host tools the internet mode needs.
#[derive(Clone, Debug)]
pub(crate) struct NetTools {
    pub sh: PathBuf,
    pub unshare: PathBuf,
    pub nsenter: PathBuf,
    pub slirp4netns: PathBuf,
    pub ip: PathBuf,
}

/// The IPv4 addresses of this host's interfaces (the `LOCAL` entries of `/proc/net/fib_trie`).
pub(crate) fn host_addresses() -> Vec<Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with('/')
            && t.contains("host LOCAL")
            && let Some(a) = last
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// The `ip -batch` script for the namespace.
pub(crate) fn rules_script(policy: &InternetPolicy, host: &[Ipv4Addr]) -> String {
    let mut s = String::from("link set lo up\n");
    s.push_str("rule add pref 100 to 10.0.2.3/32 ipproto udp dport 53 lookup main\n");
    s.push_str("rule add pref 101 to 10.0.2.3/32 ipproto tcp dport 53 lookup main\n");
    for net in &policy.allow {
        s.push_str(&format!("rule add pref 150 to {net} lookup main\n"));
    }
    let mut blocked: Vec<Ipv4Net> = default_blocked_networks();
    blocked.extend(policy.block.iter().copied());
    blocked.extend(host.iter().map(|&a| Ipv4Net {
        addr: a,
        prefix: 32,
    }));
    let mut seen = std::collections::HashSet::new();
    for net in blocked {
        if seen.insert(net) {
            s.push_str(&format!("rule add pref 200 to {net} prohibit\n"));
        }
    }
    s
}

/// How long building the namespace may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A filtered network namespace for one command; dropping it ends its helper processes.
#[derive(Debug)]
pub(crate) struct NetNamespace {
    holder: Child,
    holder_stdin: Option<ChildStdin>,
    holder_pid: u32,
    slirp: Option<Child>,
    slirp_stdin: Option<ChildStdin>,
}

fn net_err(msg: impl Into<String>) -> SandboxError {
    SandboxError::Setup(format!("network namespace: {}", msg.into()))
}

impl NetNamespace {
    /// `/proc/<holder>/ns/net`.
    pub(crate) fn ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder_pid))
    }

    /// Builds the namespace, NAT and filter. Must run as root.
    pub(crate) async fn create(
        tools: &NetTools,
        policy: &InternetPolicy,
    ) -> Result<NetNamespace, SandboxError> {
        match tokio::time::timeout(SETUP_TIMEOUT, Self::create_inner(tools, policy)).await {
            Ok(result) => result,
            Err(_) => Err(net_err(format!(
                "not ready within {} s",
                SETUP_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn create_inner(
        tools: &NetTools,
        policy: &InternetPolicy,
    ) -> Result<NetNamespace, SandboxError> {
        // 1. The holder: `read` keeps it alive until we close its stdin.
        let mut holder = TokioCommand::new(&tools.unshare)
            .arg("--net")
            .arg("--")
            .arg(&tools.sh)
            .arg("-c")
            .arg("echo ready; read _")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| net_err(format!("cannot start unshare: {e}")))?;
        let holder_pid = holder
            .id()
            .ok_or_else(|| net_err("unshare exited at once"))?;
        let holder_stdin = holder.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = holder.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line).await;
        }
        let mut ns = NetNamespace {
            holder,
            holder_stdin,
            holder_pid,
            slirp: None,
            slirp_stdin: None,
        };
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut stderr) = ns.holder.stderr.take() {
                let _ = stderr.read_to_string(&mut err).await;
            }
            ns.close().await;
            return Err(net_err(format!("`unshare --net` failed: {}", err.trim())));
        }
        let ns_path = ns.ns_path();

        // 2. slirp4netns: user-mode NAT on tap0. It runs as root on the host side, so it is
        // confined with its own sandbox (mount namespace, capabilities dropped) and seccomp.
        let mut slirp = TokioCommand::new(&tools.slirp4netns)
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--netns-type=path",
                "--ready-fd=1",
                "--exit-fd=0",
            ])
            .arg(&ns_path)
            .arg("tap0")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| net_err(format!("cannot start slirp4netns: {e}")))?;
        ns.slirp_stdin = slirp.stdin.take();
        let log: SharedCapture = Capture::shared(16 * 1024);
        if let Some(stderr) = slirp.stderr.take() {
            tokio::spawn(pump(stderr, log.clone()));
        }
        // slirp4netns writes "1" to the ready fd once tap0 is configured. It also prints a
        // warning about --enable-seccomp to stdout (our ready fd) first, so read up to the "1".
        let ready_ok = match slirp.stdout.take() {
            Some(mut stdout) => {
                let mut seen = Vec::new();
                let mut buf = [0u8; 512];
                loop {
                    match stdout.read(&mut buf).await {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => {
                            seen.extend_from_slice(&buf[..n]);
                            if seen.contains(&b'1') {
                                break true;
                            }
                            if seen.len() > 4096 {
                                break false;
                            }
                        }
                    }
                }
            }
            None => false,
        };
        ns.slirp = Some(slirp);
        if !ready_ok {
            // Give the log pump a moment to collect slirp4netns's last words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let text = lock(&log).to_output().text_lossy().trim().to_owned();
            ns.close().await;
            return Err(net_err(format!("slirp4netns did not come up: {text}")));
        }

        // 3. The filter.
        let script = rules_script(policy, &host_addresses());
        let mut ip = TokioCommand::new(&tools.nsenter)
            .arg(format!("--net={}", ns_path.display()))
            .arg("--")
            .arg(&tools.ip)
            .args(["-4", "-batch", "-"])
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| net_err(format!("cannot start ip: {e}")))?;
        if let Some(mut stdin) = ip.stdin.take() {
            let _ = stdin.write_all(script.as_bytes()).await;
        }
        let out = ip
            .wait_with_output()
            .await
            .map_err(|e| net_err(format!("ip: {e}")))?;
        if !out.status.success() {
            ns.close().await;
            return Err(net_err(format!(
                "installing the egress filter failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(ns)
    }

    /// Ends slirp4netns and the holder (the namespace goes with them) and reaps them.
    pub(crate) async fn close(mut self) {
        self.slirp_stdin.take();
        self.holder_stdin.take();
        if let Some(mut slirp) = self.slirp.take() {
            reap(&mut slirp).await;
        }
        reap(&mut self.holder).await;
    }
}

async fn reap(child: &mut Child) {
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs() {
        let n: Ipv4Net = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert_eq!("1.2.3.4".parse::<Ipv4Net>().unwrap().prefix(), 32);
        assert!("1.2.3.4/33".parse::<Ipv4Net>().is_err());
        assert!("x/8".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn script_orders_dns_allow_block() {
        let policy = InternetPolicy {
            allow: vec!["203.0.113.0/24".parse().unwrap()],
            block: vec!["8.8.8.8".parse().unwrap()],
        };
        let s = rules_script(&policy, &["192.0.2.2".parse().unwrap()]);
        let dns = s.find("dport 53").unwrap();
        let allow = s.find("pref 150 to 203.0.113.0/24").unwrap();
        let block = s.find("pref 200 to 10.0.0.0/8 prohibit").unwrap();
        assert!(dns < allow && allow < block);
        assert!(s.contains("pref 200 to 8.8.8.8/32 prohibit"));
        assert!(s.contains("pref 200 to 192.0.2.2/32 prohibit"));
        assert_eq!(s.matches("192.0.2.0/24").count(), 1);
    }

    #[test]
    fn finds_host_addresses() {
        // Any Linux host has at least 127.0.0.1 as a LOCAL address.
        assert!(host_addresses().contains(&Ipv4Addr::LOCALHOST));
    }
}
