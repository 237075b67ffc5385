//! The steps around the `execve` of a live upgrade that involve no connection: check the new
//! binary before committing ([`preflight`]), pass the state in a memory file whose descriptor
//! survives the exec ([`memfd`], [`write_into`], [`read`]), and exec ([`exec`]).

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
    let memfd = write(sample)
        .and_then(|memfd| crate::os::sys::inherit(memfd.as_raw_fd()).map(|()| memfd))
        .map_err(|e| format!("cannot write a sample state: {e}"))?;
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
    let fd = memfd()?;
    write_into(&fd, state)?;
    Ok(fd)
}

/// An empty memory file for a state, close-on-exec until [`inherit`] says otherwise.
pub fn memfd() -> io::Result<OwnedFd> {
    Ok(nix::sys::memfd::memfd_create(c"idlereaper-handover", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?)
}

/// Writes `state` into memory file `memfd`, from its start.
pub fn write_into(memfd: &OwnedFd, state: &State) -> io::Result<()> {
    let mut file = std::fs::File::from(memfd.try_clone()?);
    file.rewind()?;
    file.write_all(&state.encode())?;
    file.rewind()
}

/// Reads the state the old image left in memory file `fd` (and closes it), from its start: the
/// file's offset is shared with every process that holds it (a new image that read it before a
/// guardian does).
pub fn read(fd: RawFd) -> io::Result<State> {
    let mut file = std::fs::File::from(crate::os::sys::adopt(fd)?);
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    State::decode(&bytes)
}

/// Keeps every descriptor the state names, and the state's own, across `execve`.
pub fn inherit(state: &State, memfd: &OwnedFd) -> io::Result<()> {
    crate::os::sys::inherit(memfd.as_raw_fd())?;
    state.descriptors().into_iter().try_for_each(crate::os::sys::inherit)
}

/// Replaces this process's image with the file `exe`, handing it the state in `memfd`.
/// `argv0` is the path the daemon was started as, and `args` the arguments it was started
/// with, passed again so that `ps` still shows them (the new image takes everything from the
/// state, and ignores them). Returns only if the exec failed.
pub fn exec(exe: &Path, argv0: &Path, args: &[std::ffi::OsString], memfd: &OwnedFd) -> io::Error {
    let arg = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let fd = memfd.as_raw_fd().to_string();
    let all = std::iter::once(argv0.as_os_str().as_bytes())
        .chain(args.iter().map(|a| a.as_bytes()))
        .chain([HANDOVER_ARG.as_bytes(), fd.as_bytes()]);
    let args = all.map(arg).collect::<io::Result<Vec<CString>>>();
    match (arg(exe.as_os_str().as_bytes()), args) {
        (Ok(exe), Ok(args)) => match nix::unistd::execv(&exe, &args) {
            Ok(never) => match never {},
            Err(errno) => errno.into(),
        },
        (Err(e), _) | (_, Err(e)) => e,
    }
}
