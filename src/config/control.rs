//! The `[control]` table: the control socket `idlereaperctl` talks to.

use std::path::PathBuf;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::address::unix_path;
use super::locate::Source;
use super::value::octal_mode;
use super::{ControlConfig, Listen, ListenerConfig, Res};

/// Step 1: `[control]` as serde sees it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileControl {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<Value>>,
}

/// `[control]`: an absolute socket path no listener uses, and the file's mode (default 0660).
pub(super) fn validate(
    src: &Source,
    table: Spanned<FileControl>,
    ls: &[ListenerConfig],
) -> Res<ControlConfig> {
    let header = table.span();
    let table = table.into_inner();
    let Some(socket) = table.socket else {
        let msg = "required: the path of the control socket, such as \"/run/idlereaper/control.sock\"";
        return Err(src.error(header, "control.socket", msg));
    };
    let error = |msg: String| src.error(socket.span(), "control.socket", msg);
    let path: PathBuf =
        unix_path(socket.get_ref()).map_err(|m| error(format!("{:?} {m}", socket.get_ref())))?;
    let clash = ls.iter().enumerate().find(|(_, l)| matches!(&l.listen, Listen::Unix(p) if *p == path));
    if let Some((i, l)) = clash {
        return Err(error(format!("{} is the socket of listener[{i}] ({:?})", path.display(), l.name)));
    }
    let mode = match &table.mode {
        None => 0o660,
        Some(v) => octal_mode(v).map_err(|msg| src.error(v.span(), "control.mode", msg))?,
    };
    Ok(ControlConfig { socket: path, mode })
}
