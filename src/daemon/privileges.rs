//! Running as `daemon.user` and `daemon.group`: the names resolved before anything is bound,
//! the files the daemon keeps handed to that user while it is still root, and the drop itself,
//! checked to stick.

use std::fs::File;
use std::io;

use nix::unistd::{Gid, Group, Uid, User};

use super::pidfile::Pidfile;
use crate::error::Error;

/// Who to run as after binding, resolved from `daemon.user` / `daemon.group`.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl Credentials {
    /// Looks the names up. The group defaults to the user's primary group.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>, Error> {
        let Some(name) = user else {
            if group.is_some() {
                return Err(Error::Message("daemon.group is set without daemon.user".into()));
            }
            return Ok(None);
        };
        let lookup_failed = |what: &str, e: nix::Error| Error::Message(format!("{what}: lookup failed: {e}"));
        let user = User::from_name(name)
            .map_err(|e| lookup_failed("daemon.user", e))?
            .ok_or_else(|| Error::Message(format!("daemon.user: no such user \"{name}\"")))?;
        let gid = match group {
            None => user.gid,
            Some(g) => {
                Group::from_name(g)
                    .map_err(|e| lookup_failed("daemon.group", e))?
                    .ok_or_else(|| Error::Message(format!("daemon.group: no such group \"{g}\"")))?
                    .gid
            }
        };
        Ok(Some(Credentials { user: name.to_string(), uid: user.uid, gid }))
    }

    /// As root: clear supplementary groups, then set gid and uid, and make sure root cannot be
    /// regained. As anyone else: succeed only if we already are that user and group.
    pub fn drop_privileges(&self) -> Result<(), Error> {
        let fail = |what: &str, e: nix::Error| {
            Error::Message(format!("cannot drop privileges to \"{}\": {what}: {e}", self.user))
        };
        if !Uid::effective().is_root() {
            if Uid::effective() == self.uid && Gid::effective() == self.gid {
                return Ok(());
            }
            return Err(Error::Message(format!(
                "daemon.user is \"{}\" (uid {}, gid {}) but idlereaper runs as uid {} gid {}: start it as root or as that user",
                self.user,
                self.uid,
                self.gid,
                Uid::effective(),
                Gid::effective()
            )));
        }
        nix::unistd::setgroups(&[]).map_err(|e| fail("setgroups", e))?;
        nix::unistd::setgid(self.gid).map_err(|e| fail("setgid", e))?;
        nix::unistd::setuid(self.uid).map_err(|e| fail("setuid", e))?;
        if self.uid.is_root() {
            return Ok(());
        }
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
            return Err(Error::Message("privilege drop did not stick: refusing to run on as root".into()));
        }
        Ok(())
    }

    /// Started as root, once the pidfile is locked and the log file open: gives them (and the
    /// pidfile's directory, if it is ours) to the user, so that after the drop the daemon can
    /// still remove its pidfile at stop and reopen its log on SIGUSR1.
    pub fn hand_over(&self, pidfile: &Pidfile, own_dir: bool, log: Option<&File>) -> Result<(), Error> {
        if !Uid::effective().is_root() {
            return Ok(());
        }
        let (uid, gid) = (Some(self.uid.as_raw()), Some(self.gid.as_raw()));
        let chown = |what: String, r: io::Result<()>| r.map_err(|e| Error::io(format!("{what}: chown"), e));
        chown(
            format!("pidfile {}", pidfile.path.display()),
            std::os::unix::fs::fchown(&pidfile.file, uid, gid),
        )?;
        if let (true, Some(dir)) = (own_dir, pidfile.path.parent()) {
            chown(format!("pidfile directory {}", dir.display()), std::os::unix::fs::chown(dir, uid, gid))?;
        }
        if let Some(file) = log {
            chown("log file".into(), std::os::unix::fs::fchown(file, uid, gid))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_a_clear_error() {
        let err = Credentials::resolve(Some("no-such-user-idlereaper"), None).unwrap_err().to_string();
        assert!(err.contains("no such user \"no-such-user-idlereaper\""), "{err}");
        assert!(Credentials::resolve(None, None).unwrap().is_none());
    }
}
