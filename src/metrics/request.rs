//! The HTTP side of the metrics endpoint: what a request head asks for, and the whole answer
//! to it (a page for `GET` and `HEAD` of `/metrics`, `/healthz` and `/readyz`, or a status line
//! for anything else).

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    /// `GET` or `HEAD` (`head_only`) of a page, with or without a query string.
    Get { page: Page, head_only: bool },
    /// A status other than 200; `head_only` for a `HEAD` request.
    Other(Status, bool),
}

/// The pages the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    /// `/metrics`: the Prometheus text exposition.
    Metrics,
    /// `/healthz`: 200 while every event loop turns.
    Health,
    /// `/readyz`: 200 while serving, 503 from the start of a graceful stop.
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::TooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// Reads a request head (`METHOD SP target SP HTTP/1.x CRLF`, then header lines, then a blank
/// line). Only the request line matters; header lines need only look like `name: value`.
pub(super) fn parse(head: &[u8]) -> Request {
    let bad = Request::Other(Status::BadRequest, false);
    let text = head.strip_prefix(b"\r\n").unwrap_or(head); // one blank line before is allowed
    let mut lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else { return bad };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad;
    };
    let is_token = |s: &[u8]| {
        !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let is_version = version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit();
    let target_ok = !target.is_empty() && target.iter().all(|b| b.is_ascii_graphic());
    if !is_token(method) || !is_version || !target_ok {
        return bad;
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if name.len() == line.len()
            || !is_token(name)
            || line.iter().any(|&b| b.is_ascii_control() && b != b'\t')
        {
            return bad;
        }
    }
    let head_only = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Request::Other(Status::MethodNotAllowed, false),
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let page = match path {
        b"/metrics" => Page::Metrics,
        b"/healthz" => Page::Health,
        b"/readyz" => Page::Ready,
        _ => return Request::Other(Status::NotFound, head_only),
    };
    Request::Get { page, head_only }
}

/// The metrics: 200 with the exposition `text`.
pub(super) fn metrics_response(text: &str, head_only: bool) -> Vec<u8> {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    response("200 OK", content_type, "", text.as_bytes(), head_only)
}

/// A probe's answer: 200 with `ok\n`, or 503 with why not (one line).
pub(super) fn probe_response(verdict: Result<(), String>, head_only: bool) -> Vec<u8> {
    let (status, body) = match verdict {
        Ok(()) => ("200 OK", "ok\n".to_owned()),
        Err(why) => ("503 Service Unavailable", format!("{why}\n")),
    };
    response(status, "text/plain; charset=utf-8", "", body.as_bytes(), head_only)
}

pub(super) fn status_response(status: Status, head_only: bool) -> Vec<u8> {
    let allow = if status == Status::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let body = format!("{}\n", status.line());
    response(status.line(), "text/plain; charset=utf-8", allow, body.as_bytes(), head_only)
}

/// A response with `Content-Length` (the body's length even when `head_only` leaves it out)
/// and `Connection: close`; `extra` is more header lines, each ending in CRLF.
fn response(status: &str, content_type: &str, extra: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}
