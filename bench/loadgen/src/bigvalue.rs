//! One large Redis value, SET and then GET back on one connection, each timed: a bulk transfer
//! each way through a relay in front of Redis (through a `redis` listener, its observer counts
//! past every byte of it). The value read back is compared with the one sent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::stats::Summary;

/// `rounds` SETs and GETs of a `size`-byte value: the median MB/s of each.
pub fn bigvalue(addr: SocketAddr, size: usize, rounds: usize) -> io::Result<String> {
    // From 127.0.0.1 (not the rotating sources of the other clients): Redis's protected mode
    // refuses a client without a password from any other address.
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let value: Vec<u8> = (0..size).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();
    let mut set = format!("*3\r\n$3\r\nSET\r\n$8\r\nbigvalue\r\n${size}\r\n").into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let get = b"*2\r\n$3\r\nGET\r\n$8\r\nbigvalue\r\n";
    let header = format!("${size}\r\n").into_bytes();
    let mut back = vec![0u8; header.len() + size + 2];
    let (mut sets, mut gets) = (Vec::new(), Vec::new());
    let mb = size as f64 / 1e6;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        stream.write_all(&set)?;
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok)?;
        if &ok != b"+OK\r\n" {
            return Err(io::Error::other(format!("SET answered {:?}", String::from_utf8_lossy(&ok))));
        }
        sets.push(mb / start.elapsed().as_secs_f64());
        let start = Instant::now();
        stream.write_all(get)?;
        stream.read_exact(&mut back)?;
        gets.push(mb / start.elapsed().as_secs_f64());
        if back[..header.len()] != header[..] || back[header.len()..header.len() + size] != value[..] {
            return Err(io::Error::other("GET gave back another value"));
        }
    }
    let (set, get) = (Summary::of(sets), Summary::of(gets));
    Ok(format!(
        "scenario=bigvalue bytes={size} rounds={} set_mb_s={:.1} get_mb_s={:.1} set_mb_s_min={:.1} get_mb_s_min={:.1}",
        rounds.max(1),
        set.p50,
        get.p50,
        set.min,
        get.min
    ))
}
