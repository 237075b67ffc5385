//! Unit tests of the metrics endpoint: request parsing and answers, limits, and a real
//! endpoint served on loopback.

use super::*;

/// The answer to a request head, as the endpoint gives it for a page that needs no check
/// (`/healthz` and `/readyz` answered as healthy and ready here).
fn answer(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    match parse(head) {
        Request::Get { page: Page::Metrics, head_only } => metrics_response(&render(), head_only),
        Request::Get { page: Page::Health | Page::Ready, head_only } => probe_response(Ok(()), head_only),
        Request::Other(status, head_only) => status_response(status, head_only),
    }
}

fn status_of(head: &str) -> String {
    let answer = String::from_utf8(answer(head.as_bytes(), || "x 1\n".to_owned())).unwrap();
    answer.lines().next().unwrap().to_owned()
}

#[test]
fn requests_and_their_status() {
    let cases = [
        ("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"),
        ("GET /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
        ("GET /metrics?name[]=x HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
        ("\r\nGET /metrics HTTP/1.1\n\n", "HTTP/1.1 200 OK"),
        ("HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
        ("GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
        ("HEAD /readyz?verbose HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
        ("GET /readyz/ HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("POST /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("GET /metrics/ HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("GET http://a/metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        ("get /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        ("GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET  /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/1.1 x\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /métrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("G(T /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("GET /metrics HTTP/1.1\r\nA: \x01\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ("\u{0}\u{0}\n\n", "HTTP/1.1 400 Bad Request"),
    ];
    for (head, status) in cases {
        assert_eq!(status_of(head), status, "{head:?}");
    }
}

#[test]
fn responses_are_complete_and_close() {
    let get = answer(b"GET /metrics HTTP/1.1\r\n\r\n", || "a 1\n".to_owned());
    let expected = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                    Content-Length: 4\r\nConnection: close\r\n\r\na 1\n";
    assert_eq!(String::from_utf8(get).unwrap(), expected);
    let head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", || "a 1\n".to_owned());
    assert_eq!(String::from_utf8(head).unwrap(), expected.strip_suffix("a 1\n").unwrap());
    let not_allowed = String::from_utf8(answer(b"PUT /metrics HTTP/1.1\r\n\r\n", || unreachable!())).unwrap();
    assert!(not_allowed.contains("\r\nAllow: GET, HEAD\r\n"), "{not_allowed}");
    assert!(not_allowed.ends_with("\r\n\r\n405 Method Not Allowed\n"), "{not_allowed}");
    let not_found = String::from_utf8(answer(b"HEAD /x HTTP/1.1\r\n\r\n", || unreachable!())).unwrap();
    assert!(not_found.ends_with("Content-Length: 14\r\nConnection: close\r\n\r\n"), "{not_found}");
    let unavailable = String::from_utf8(probe_response(Err("stopping".to_owned()), false)).unwrap();
    let expected = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Content-Length: 9\r\nConnection: close\r\n\r\nstopping\n";
    assert_eq!(unavailable, expected);
    let ok = String::from_utf8(probe_response(Ok(()), true)).unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200 OK\r\n")
            && ok.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
        "{ok}"
    );
    let too_large = String::from_utf8(status_response(Status::TooLarge, false)).unwrap();
    assert!(too_large.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{too_large}");
}

#[test]
fn head_end_finds_the_blank_line() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
    assert_eq!(head_end(b"\r\n\r\n"), Some(4));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    assert_eq!(head_end(b"a\r\r\n"), None);
    assert_eq!(head_end(b""), None);
}

/// A reader that hands out its chunks one per call, then `WouldBlock` (or EOF).
struct Chunks(Vec<Vec<u8>>, bool);

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(chunk) = self.0.first_mut() else {
            return if self.1 { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.0.remove(0);
        }
        Ok(n)
    }
}

#[test]
fn read_head_across_reads_and_its_limits() {
    let mut head = Vec::new();
    let split = vec![b"GET /metrics HTTP/1.1\r\n\r".to_vec()];
    assert_eq!(read_head(&mut Chunks(split, false), &mut head), Head::Partial);
    let rest = vec![b"\nextra".to_vec()];
    assert_eq!(read_head(&mut Chunks(rest, false), &mut head), Head::Complete(25));
    let mut head = Vec::new();
    assert_eq!(read_head(&mut Chunks(vec![b"GET /".to_vec()], true), &mut head), Head::Closed);
    let mut head = Vec::new();
    let flood = vec![vec![b'a'; MAX_HEAD + 100]];
    assert_eq!(read_head(&mut Chunks(flood, false), &mut head), Head::TooLarge);
    assert_eq!(head.len(), MAX_HEAD);
    // A head that ends exactly at the limit is complete.
    let mut exact = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    exact.resize(MAX_HEAD - 4, b'x');
    exact.extend_from_slice(b"\r\n\r\n");
    let mut head = Vec::new();
    assert_eq!(read_head(&mut Chunks(vec![exact], false), &mut head), Head::Complete(MAX_HEAD));
}

#[test]
fn lingering_reads_until_close_or_limit() {
    let mut discarded = 0;
    assert_eq!(linger(&mut Chunks(vec![vec![0; 10]], false), &mut discarded), Step::Wait);
    assert_eq!(linger(&mut Chunks(vec![], true), &mut discarded), Step::Close);
    let mut discarded = 0;
    let flood = (0..40).map(|_| vec![0; 4096]).collect();
    assert_eq!(linger(&mut Chunks(flood, false), &mut discarded), Step::Close);
    assert!(discarded > MAX_LINGER && discarded <= MAX_LINGER + 4096);
}

#[test]
fn tokens() {
    let base = Token(7);
    assert_eq!(owned(base, Token(6)), None);
    assert_eq!(owned(base, Token(7)), Some(Owned::Listener));
    assert_eq!(owned(base, Token(8)), Some(Owned::Client(0)));
    assert_eq!(owned(base, client_token(base, MAX_CLIENTS - 1)), Some(Owned::Client(MAX_CLIENTS - 1)));
    assert_eq!(owned(base, Token(8 + MAX_CLIENTS)), None);
    assert_eq!(owned(Token(usize::MAX), Token(0)), None);
}
