//! RESP's number lines, which both directions read: a count or a length (`*3\r\n`,
//! `$5\r\n`, an integer reply `:42\r\n`), digit by digit across reads ([`number`]), or at once
//! when the whole line is at hand ([`quick_line`]).

// The bits `number` keeps in its caller's state byte while a number is read; the caller's own
// bits lie above them.
pub(super) const NEG: u8 = 1;
pub(super) const DIGIT: u8 = 2;
pub(super) const CR: u8 = 4;

/// Reads a number line (`-`? digits, CR, LF) into `n` and `bits`. Returns how many bytes it
/// took and whether the line ended; an error for anything else, or a number beyond `u32`.
pub(super) fn number(n: &mut u32, bits: &mut u8, bytes: &[u8]) -> Result<(usize, bool), ()> {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' if *bits & CR != 0 && *bits & DIGIT != 0 => return Ok((i + 1, true)),
            _ if *bits & CR != 0 => return Err(()),
            b'\r' => *bits |= CR,
            b'-' if *bits & (NEG | DIGIT) == 0 => *bits |= NEG,
            b'0'..=b'9' => {
                *n = n.checked_mul(10).and_then(|n| n.checked_add(u32::from(b - b'0'))).ok_or(())?;
                *bits |= DIGIT;
            }
            _ => return Err(()),
        }
    }
    Ok((bytes.len(), false))
}

/// A whole number line at hand (digits, CR, LF; no sign): its value and length; `None` when
/// the line is not all there or not that simple (the stages then read it).
pub(super) fn quick_line(bytes: &[u8]) -> Option<(u32, usize)> {
    let len = bytes.iter().take(11).position(|b| !b.is_ascii_digit())?;
    if len == 0 || bytes.get(len..len + 2) != Some(b"\r\n") {
        return None;
    }
    let mut value: u32 = 0;
    for &d in &bytes[..len] {
        value = value.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    Some((value, len + 2))
}
