//! Network namespaces a test makes for itself: two of them joined by a veth pair with the MTU of
//! a real link, each with its loopback up. Their names are unique to the process and the call,
//! and they are removed when the [`NetnsPair`] is dropped (which removes the veth pair too).
//! Nothing is added to the machine's own namespace: the veth ends are created inside the two.
//! Needs root and `ip` (iproute2); [`NetnsPair::create`] says why when it cannot.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The `ip` program.
pub const IP_COMMAND: &str = "/usr/sbin/ip";

/// Two namespaces, `0` and `1`, linked by a veth pair: namespace `i` has address `addrs[i]`.
pub struct NetnsPair {
    pub names: [String; 2],
    pub addrs: [Ipv4Addr; 2],
    files: Vec<File>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(IP_COMMAND).args(args).output().map_err(|e| format!("{IP_COMMAND}: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
    }
}

impl NetnsPair {
    /// Makes the pair, its link with `mtu`, addresses 10.200.0.1 and .2 (/24), every interface
    /// up. An error says why it could not (not root, no `ip`, no veth support).
    pub fn create(mtu: u32) -> Result<NetnsPair, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!("ir{}x{}", std::process::id() % 1_000_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let names = [format!("{tag}a"), format!("{tag}b")];
        let mut pair = NetnsPair {
            names,
            addrs: [Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2)],
            files: Vec::new(),
        };
        for name in &pair.names {
            ip(&["netns", "add", name])?;
            pair.files.push(File::open(format!("/run/netns/{name}")).map_err(|e| format!("{name}: {e}"))?);
        }
        let [a, b] = &pair.names;
        // The interfaces take the namespaces' names (at most 15 bytes).
        ip(&["link", "add", a, "netns", a, "type", "veth", "peer", "name", b, "netns", b])?;
        let mtu = mtu.to_string();
        for (name, addr) in pair.names.iter().zip(pair.addrs) {
            ip(&["-n", name, "addr", "add", &format!("{addr}/24"), "dev", name])?;
            ip(&["-n", name, "link", "set", name, "mtu", &mtu, "up"])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Moves the calling thread into namespace `i`: sockets it (and threads it starts) makes
    /// from then on are that namespace's.
    pub fn enter(&self, i: usize) -> io::Result<()> {
        // SAFETY: setns(2) on a descriptor of a network namespace changes only the calling
        // thread's namespace; the descriptor is open (owned by `self`).
        match unsafe { libc::setns(self.files[i].as_raw_fd(), libc::CLONE_NEWNET) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Makes `command` run in namespace `i` (it joins it between fork and exec).
    pub fn run_in(&self, i: usize, command: &mut Command) {
        let fd = self.files[i].as_raw_fd();
        // SAFETY: between fork and exec the closure makes one system call on a descriptor that
        // is open in the child (inherited; close-on-exec only closes it at the exec), and
        // allocates nothing.
        unsafe {
            command.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            });
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        self.files.clear();
        for name in &self.names {
            if let Err(e) = ip(&["netns", "del", name]) {
                let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{e}\n").as_bytes());
            }
        }
    }
}
