//! PostgreSQL's message framing, one direction at a time: a type byte (none for the startup
//! packet) and a 4-byte big-endian length that counts itself, then the body. The header is
//! read whatever the pieces it arrives in; the body is only counted past, handed to the caller
//! chunk by chunk with its offset, so that the few bytes the session reads can be picked out.

/// One direction's framing: where the message under way stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Frame {
    /// Header bytes read (type, length): 0 at a message boundary.
    pub(super) header: u8,
    pub(super) kind: u8,
    /// The length while the header is read; then the body's length.
    pub(super) len: u32,
    /// Body bytes still to come.
    pub(super) left: u32,
}

/// What one [`Frame::read`] took of a message: body bytes from offset `at`, and whether the
/// message ended.
pub(super) struct Chunk<'a> {
    pub(super) at: u32,
    pub(super) body: &'a [u8],
    pub(super) end: bool,
}

impl Frame {
    pub(super) fn at_boundary(&self) -> bool {
        self.header == 0
    }

    /// Takes from `bytes` what belongs to the message under way, at most to its end. `typed`:
    /// the message has a type byte (only the startup packet has none). A length outside
    /// `lengths` is an error.
    pub(super) fn read<'a>(
        &mut self,
        bytes: &mut &'a [u8],
        typed: bool,
        lengths: (u32, u32),
    ) -> Result<Chunk<'a>, ()> {
        let size = if typed { 5 } else { 4 };
        if self.header < size {
            if self.header == 0 && bytes.len() >= usize::from(size) {
                let (kind, len) = bytes.split_at(usize::from(size) - 4);
                self.kind = kind.first().copied().unwrap_or(0);
                self.len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                self.header = size;
                *bytes = &bytes[usize::from(size)..];
            } else {
                while self.header < size {
                    let Some((&b, rest)) = bytes.split_first() else {
                        return Ok(Chunk { at: 0, body: &[], end: false });
                    };
                    *bytes = rest;
                    if self.header == 0 {
                        (self.kind, self.len) = (0, 0);
                    }
                    match typed && self.header == 0 {
                        true => self.kind = b,
                        false => self.len = (self.len << 8) | u32::from(b),
                    }
                    self.header += 1;
                }
            }
            if self.len < lengths.0 || self.len > lengths.1 {
                return Err(());
            }
            self.len -= 4;
            self.left = self.len;
        }
        let n = bytes.len().min(self.left as usize);
        let (body, rest) = bytes.split_at(n);
        *bytes = rest;
        let at = self.len - self.left;
        self.left -= n as u32;
        let end = self.left == 0;
        if end {
            self.header = 0;
        }
        Ok(Chunk { at, body, end })
    }
}
