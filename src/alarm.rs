//! A one-shot kernel timer (timerfd) polled with the sockets. `epoll_wait` takes its timeout in
//! whole milliseconds, which would add up to another millisecond to every idle close on top of
//! the tick; a timerfd fires within microseconds of the instant it is armed for, so a timer
//! closes its connection no later than one tick after its deadline. Re-arming resets the timer,
//! so it never needs to be read.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// The event loop's wake-up timer.
#[derive(Debug)]
pub struct Alarm {
    fd: TimerFd,
    /// The wheel tick it is armed for, to skip re-arming for the same one.
    armed_for: Option<u64>,
}

impl Alarm {
    /// A disarmed alarm on the monotonic clock (the clock `Instant` uses).
    pub fn new() -> io::Result<Alarm> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).map_err(io::Error::from)?;
        // Let the kernel fire timers when asked, not up to 50 µs later (the default slack).
        let _ = nix::sys::prctl::set_timerslack(1);
        Ok(Alarm { fd, armed_for: None })
    }

    /// Registers the alarm with the poll.
    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut SourceFd(&self.fd.as_fd().as_raw_fd()), token, Interest::READABLE)
    }

    /// Arms the alarm to go off after `after` (which must be non-zero) for wheel tick `tick`;
    /// a no-op if it is already armed for that tick or an earlier one. An earlier alarm only
    /// wakes the loop early, which then finds nothing due and arms for the deadline in force:
    /// a deadline that moved later (a connect completed, the earliest connection closed) costs
    /// no `timerfd_settime`, and none is ever late.
    pub fn arm(&mut self, tick: u64, after: Duration) -> io::Result<()> {
        debug_assert!(!after.is_zero(), "a zero one-shot would disarm the timerfd");
        if self.armed_for.is_some_and(|armed| armed <= tick) {
            return Ok(());
        }
        let expiration = Expiration::OneShot(TimeSpec::from_duration(after.max(Duration::from_nanos(1))));
        self.fd.set(expiration, TimerSetTimeFlags::empty()).map_err(io::Error::from)?;
        self.armed_for = Some(tick);
        Ok(())
    }

    /// Notes that the alarm went off (its tick is no longer armed).
    pub fn fired(&mut self) {
        self.armed_for = None;
    }
}
