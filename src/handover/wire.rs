//! The byte encoding of the handover state: little-endian integers, length-prefixed byte
//! strings, a tag byte before an optional value. Written by one binary and read by another, so
//! every read is checked: a short or malformed state is an error, never a panic.

use std::io;

/// Appends values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.usize(v.len());
        self.bytes.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A tag (0: none, 1: some) and the value.
    pub fn option<T>(&mut self, v: Option<&T>, mut put: impl FnMut(&mut Writer, &T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            put(self, v);
        }
    }

    /// A count and the values.
    pub fn list<T>(&mut self, v: &[T], mut put: impl FnMut(&mut Writer, &T)) {
        self.usize(v.len());
        for item in v {
            put(self, item);
        }
    }
}

/// Reads values back in the order they were written.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("handover state: {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed("cut short"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> io::Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed("a flag is neither 0 nor 1")),
        }
    }

    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn usize(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| malformed("a count is too large"))
    }

    pub fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.usize()?;
        Ok(self.take(n)?.to_vec())
    }

    pub fn str(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| malformed("a string is not UTF-8"))
    }

    pub fn option<T>(&mut self, get: impl FnOnce(&mut Reader<'a>) -> io::Result<T>) -> io::Result<Option<T>> {
        if self.bool()? {
            get(self).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn list<T>(&mut self, mut get: impl FnMut(&mut Reader<'a>) -> io::Result<T>) -> io::Result<Vec<T>> {
        let n = self.usize()?;
        // Every item takes at least one byte: a count beyond what is left is malformed.
        if n > self.bytes.len() {
            return Err(malformed("a list is longer than the state"));
        }
        (0..n).map(|_| get(self)).collect()
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> io::Result<()> {
        match self.bytes.is_empty() {
            true => Ok(()),
            false => Err(malformed("bytes left over at the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written_and_short_input_is_an_error() {
        let mut w = Writer::default();
        w.u8(7);
        w.bool(true);
        w.u32(0xdead_beef);
        w.u64(u64::MAX);
        w.i32(-3);
        w.str("héllo");
        w.option(Some(&5u64), |w, v| w.u64(*v));
        w.option(None::<&u64>, |w, v| w.u64(*v));
        w.list(&[1u32, 2, 3], |w, v| w.u32(*v));
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert!(r.bool().unwrap());
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i32().unwrap(), -3);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.option(|r| r.u64()).unwrap(), Some(5));
        assert_eq!(r.option(|r| r.u64()).unwrap(), None);
        assert_eq!(r.list(|r| r.u32()).unwrap(), vec![1, 2, 3]);
        r.finish().unwrap();

        for cut in 0..w.bytes.len() {
            let mut r = Reader::new(&w.bytes[..cut]);
            let all = (|| -> io::Result<()> {
                r.u8()?;
                r.bool()?;
                r.u32()?;
                r.u64()?;
                r.i32()?;
                r.str()?;
                r.option(|r| r.u64())?;
                r.option(|r| r.u64())?;
                r.list(|r| r.u32())?;
                Ok(())
            })();
            assert!(all.is_err(), "cut at {cut} read as whole");
        }
        let mut r = Reader::new(&[9]);
        assert!(r.bool().is_err(), "a flag of 9");
        let mut r = Reader::new(&[0xff; 8]);
        assert!(r.list(|r| r.u8()).is_err(), "an absurd count");
    }
}
