//! The PROXY protocol header (HAProxy's specification, versions 1 and 2) that a relay listener
//! with `proxy_protocol = "v1" | "v2"` sends to its upstream as the first bytes of each
//! connection, so that the upstream learns the real client address.
//!
//! The source is the client's address, the destination the address the client connected to
//! (the listener's side of the accepted socket). Should the two be of different families, both
//! are written as IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Which version of the header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Human-readable: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`.
    V1,
    /// Binary, 16 bytes + 12 (IPv4) or 36 (IPv6).
    V2,
}

/// The 12-byte signature that starts a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a connection from `source` to `destination`.
pub fn header(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        Version::V1 => v1(source, destination),
        Version::V2 => v2(source, destination),
    }
}

/// The header for a connection whose addresses cannot be told (a client of a Unix socket
/// listener): `PROXY UNKNOWN` (v1), or a LOCAL command with an unspecified family (v2). The
/// upstream then uses the connection's own addresses.
pub fn header_unknown(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.extend_from_slice(&[0x20, 0x00, 0, 0]); // version 2 LOCAL, AF_UNSPEC, length 0
            out
        }
    }
}

/// Both addresses as one family: as they are if they agree, else both IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (IpAddr, IpAddr) {
    match (source.ip(), destination.ip()) {
        (s @ IpAddr::V4(_), d @ IpAddr::V4(_)) | (s @ IpAddr::V6(_), d @ IpAddr::V6(_)) => (s, d),
        (s, d) => (IpAddr::V6(as_v6(s)), IpAddr::V6(as_v6(d))),
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {s} {d} {} {}\r\n", source.port(), destination.port()).into_bytes()
}

fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match same_family(source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(s).octets());
            out.extend_from_slice(&as_v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unknown_addresses_are_unknown_in_v1_and_local_in_v2() {
        assert_eq!(header_unknown(Version::V1), b"PROXY UNKNOWN\r\n");
        let v2 = header_unknown(Version::V2);
        assert_eq!(&v2[..12], &V2_SIGNATURE);
        assert_eq!(&v2[12..], &[0x20, 0x00, 0, 0], "LOCAL, UNSPEC, no addresses");
    }

    #[test]
    fn v1_matches_the_specification_examples() {
        // Section 2.1: "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n" is the
        // longest IPv4 line (56 bytes), and the example of a relayed connection.
        let max = header(Version::V1, addr("255.255.255.255:65535"), addr("255.255.255.255:65535"));
        assert_eq!(max, b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
        assert_eq!(max.len(), 56);
        let example = header(Version::V1, addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
        assert_eq!(example, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
        let longest = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let v6 = header(Version::V1, addr(longest), addr(longest));
        let expected = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(v6, expected.as_bytes());
        assert_eq!(v6.len(), 104, "the specification's 104-byte worst case");
    }

    #[test]
    fn v1_writes_mixed_families_as_ipv6() {
        let h = header(Version::V1, addr("10.0.0.1:1000"), addr("[::1]:80"));
        assert_eq!(h, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1000 80\r\n");
    }

    #[test]
    fn v2_ipv4_is_byte_exact() {
        let h = header(Version::V2, addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        expected.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 11]);
        expected.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]); // 56324, 443
        assert_eq!(h, expected);
        assert_eq!(h.len(), 16 + 12);
    }

    #[test]
    fn v2_ipv6_is_byte_exact() {
        let h = header(Version::V2, addr("[2001:db8::1]:1234"), addr("[::1]:80"));
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0; 15]);
        expected.push(1);
        expected.extend_from_slice(&[0x04, 0xd2, 0x00, 0x50]);
        assert_eq!(h, expected);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn the_v2_signature_is_the_specified_one() {
        assert_eq!(V2_SIGNATURE, [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]);
    }
}
