//! The steps around the `execve` of a live upgrade that involve no connection: check the new
//! binary before committing ([`preflight`]), pass the state in a memory file whose descriptor
//! survives the exec ([`write`], [`read`]), and exec ([`exec`]).

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::codec::VERSION;
use super::state::State;

/// How long the new binary may take to answer each pre-flight question.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The command-line option that hands the new image its state: `--handover FD`.
pub const HANDOVER_ARG: &str = "--handover";
/// The option with which a binary lists the state versions it reads.
pub const VERSIONS_ARG: &str = "--handover-versions";
/// The option with which a binary reads a sample state and says whether it can restore it.
pub const CHECK_ARG: &str = "--handover-check";

/// Checks, without committing to anything, that `exe` can take over: it is an executable file,
/// it accepts the configuration (its own `--check`, with `config_args`), it reads this binary's
/// state version, and it reads `sample` — a state like the one to come, with the configuration
/// texts in force and a connection of every worker, but no descriptor — through and through.
/// `Err` says why not, for the "upgrade refused" line.
pub fn preflight(exe: &Path, config_args: &[&OsStr], sample: &State) -> Result<(), String> {
    let meta = std::fs::metadata(exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{}: not an executable file", exe.display()));
    }
    let mut check = vec![OsStr::new("--check"), OsStr::new("--foreground")];
    check.extend_from_slice(config_args);
    run(exe, &check).map_err(|e| format!("{} rejects the configuration: {e}", exe.display()))?;
    let versions = run(exe, &[OsStr::new(VERSIONS_ARG)])
        .map_err(|e| format!("{} cannot say which handover states it reads: {e}", exe.display()))?;
    let reads: Vec<u32> = versions.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if !reads.contains(&VERSION) {
        return Err(format!(
            "{} reads handover state versions [{}], not this one's ({VERSION})",
            exe.display(),
            versions.trim()
        ));
    }
    let memfd = write(sample).map_err(|e| format!("cannot write a sample state: {e}"))?;
    let fd = memfd.as_raw_fd().to_string();
    run(exe, &[OsStr::new(CHECK_ARG), OsStr::new(&fd)])
        .map_err(|e| format!("{} cannot restore this version's state: {e}", exe.display()))?;
    Ok(())
}

/// Runs `exe args` to completion (bounded by [`CHECK_TIMEOUT`]): its standard output if it
/// exits 0, else the last line of what it said.
fn run(exe: &Path, args: &[&OsStr]) -> Result<String, String> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    if status.success() {
        return Ok(out);
    }
    let said = err.lines().chain(out.lines()).rfind(|l| !l.trim().is_empty());
    Err(match said {
        Some(line) => format!("{status}: {}", line.trim()),
        None => status.to_string(),
    })
}

/// Writes `state` to a memory file that survives `execve`; returns its descriptor.
pub fn write(state: &State) -> io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(c"idlereaper-handover", nix::sys::memfd::MFdFlags::empty())?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&state.encode())?;
    file.rewind()?;
    Ok(file.into())
}

/// Reads the state the old image left in memory file `fd` (and closes it).
pub fn read(fd: RawFd) -> io::Result<State> {
    let mut file = std::fs::File::from(crate::sys::adopt(fd)?);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    State::decode(&bytes)
}

/// Keeps every descriptor the state names, and the state's own, across `execve`.
pub fn inherit(state: &State, memfd: &OwnedFd) -> io::Result<()> {
    crate::sys::inherit(memfd.as_raw_fd())?;
    state.descriptors().into_iter().try_for_each(crate::sys::inherit)
}

/// Replaces this process's image with `exe`, handing it the state in `memfd`. `args` are the
/// arguments the daemon was started with, passed again so that `ps` still shows them (the new
/// image takes everything from the state, and ignores them). Returns only if the exec failed.
pub fn exec(exe: &Path, args: &[std::ffi::OsString], memfd: &OwnedFd) -> io::Error {
    let arg = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let fd = memfd.as_raw_fd().to_string();
    let all = std::iter::once(exe.as_os_str().as_bytes())
        .chain(args.iter().map(|a| a.as_bytes()))
        .chain([HANDOVER_ARG.as_bytes(), fd.as_bytes()]);
    let args = all.map(arg).collect::<io::Result<Vec<CString>>>();
    match args {
        Ok(args) => match nix::unistd::execv(&args[0], &args) {
            Ok(never) => match never {},
            Err(errno) => errno.into(),
        },
        Err(e) => e,
    }
}
