//! Live upgrade: the state that crosses the `execve` ([`state`], in the format of [`codec`] over
//! the primitives of [`wire`]) and the steps around it ([`exec`]): check the new binary, write
//! the state to a memory file, clear close-on-exec on every descriptor it names, and exec; and
//! the [`guardian`] that holds everything from before the exec until the new image has taken
//! over, and carries on with the old code if it does not. The workers freeze their connections
//! into the state and the new image thaws them (see `worker::handover`).

pub mod codec;
pub mod exec;
pub mod guardian;
pub mod state;
mod wire;
