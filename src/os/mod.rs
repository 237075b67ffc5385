//! What the daemon asks of Linux below the event loop: sockets of either family and their
//! set-up (`stream`, [`net`]), the pipe pool the splice path borrows from (`pipe`), and the
//! calls no crate wraps (`sys`, one of the two places allowed `unsafe`). A leaf: it imports
//! nothing else of the crate.

pub mod net;
pub(crate) mod pipe;
pub(crate) mod stream;
pub(crate) mod sys;
