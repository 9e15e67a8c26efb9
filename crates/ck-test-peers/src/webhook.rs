//! A webhook receiver: a small HTTP/1.1 server on 127.0.0.1 that records every request and
//! answers with scripted statuses, for notification tests.
//!
//! It runs on std threads (one accepting, one per connection), so synchronous `#[test]`
//! functions can use it without a tokio runtime, and async tests can too. Connections are kept
//! alive as HTTP/1.1 clients such as reqwest expect: requests are read in a loop per
//! connection, bodies by `Content-Length` or chunked, answers always carry their length.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often idle threads look at the stop flag: the longest a dropped receiver's threads and
/// connections linger.
const POLL: Duration = Duration::from_millis(20);

/// A request head larger than this is not a webhook; the connection is closed.
const MAX_HEAD: usize = 64 * 1024;

/// One scripted answer of a [`WebhookReceiver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, sent as `text/plain` (never for 1xx, 204 and 304, which have none).
    pub body: String,
    /// Extra response headers, e.g. `Location` for a redirect.
    pub headers: Vec<(String, String)>,
    /// How long to wait before answering, e.g. to make a client time out.
    pub delay: Duration,
}

impl Reply {
    /// `status` with a short text body: `ok` for 2xx, `scripted <status>` otherwise.
    pub fn status(status: u16) -> Reply {
        let body = if (200..300).contains(&status) {
            "ok".to_owned()
        } else {
            format!("scripted {status}")
        };
        Reply {
            status,
            body,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer with `body` instead.
    pub fn body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }

    /// The same answer with one more response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same answer, sent only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path of the request target, without the query.
    pub path: String,
    /// The query of the request target (after `?`), if any.
    pub query: Option<String>,
    /// The headers by lower-case name; a repeated header's values are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body (de-chunked when it came chunked).
    pub body: Vec<u8>,
    /// The status the receiver answered with.
    pub answered: u16,
    /// Which TCP connection carried it (0, 1, … in accept order): equal numbers show a client
    /// reusing a kept-alive connection.
    pub connection: usize,
}

impl ReceivedRequest {
    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: the body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Debug)]
struct Shared {
    replies: Vec<Reply>,
    requests: Mutex<Vec<ReceivedRequest>>,
    stop: AtomicBool,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 server on 127.0.0.1 in std threads that records every request and answers the
/// i-th with the i-th scripted reply, then 200; stopped when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Answers the i-th request (counted over all connections, in arrival order) with
    /// `statuses[i]` and a short text body ([`Reply::status`]), and 200 after the list ends.
    pub fn start(statuses: Vec<u16>) -> WebhookReceiver {
        Self::with(statuses.into_iter().map(Reply::status).collect())
    }

    /// Answers the i-th request with `replies[i]` (bodies, headers, delays as scripted), and 200
    /// `ok` after the list ends.
    pub fn with(replies: Vec<Reply>) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Non-blocking accepts let the thread see the stop flag: drop never waits on a client.
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            replies,
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("webhook-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .unwrap()
        };
        WebhookReceiver {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>/hook`. Any other path on [`Self::base_url`] is answered too.
    pub fn url(&self) -> String {
        format!("{}/hook", self.base_url())
    }

    /// `http://127.0.0.1:<port>`, for tests that choose their own path.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for at least `n` requests and returns them all; panics with what
    /// did arrive when they do not come.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "the webhook receiver at {} has {} request(s) after {timeout:?}, expected {n}:\n{requests:#?}",
                self.base_url(),
                requests.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The acceptor polls the flag; connection threads notice it within POLL and close their
        // sockets on their own, so they are not joined (one may be in a scripted delay).
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut connections = 0;
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                let connection = connections;
                connections += 1;
                let spawned = std::thread::Builder::new()
                    .name(format!("webhook-conn-{connection}"))
                    .spawn(move || serve(stream, connection, &shared));
                if let Err(e) = spawned {
                    eprintln!("webhook receiver: cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 4),
            Err(e) => {
                // E.g. EMFILE under a parallel test run: keep serving the connections we have.
                eprintln!("webhook receiver: accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// One parsed request head.
struct Head {
    method: String,
    target: String,
    http10: bool,
    headers: BTreeMap<String, String>,
}

/// Serves requests on one connection until the client closes it, asks to, errs, or the
/// receiver stops.
fn serve(mut stream: TcpStream, connection: usize, shared: &Shared) {
    // The accepted socket must block (with a timeout to poll the stop flag), whatever the
    // platform lets it inherit from the non-blocking listener.
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head_len = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_HEAD || !read_more(&mut stream, &mut buf, shared) {
                return;
            }
        };
        let Some(head) = parse_head(&buf[..head_len]) else {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        };
        if head
            .headers
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        let chunked = head
            .headers
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let (body, consumed) = if chunked {
            loop {
                match dechunk(&buf[head_len..]) {
                    Ok(Some((body, used))) => break (body, head_len + used),
                    Ok(None) if read_more(&mut stream, &mut buf, shared) => {}
                    Ok(None) | Err(()) => return,
                }
            }
        } else {
            let Ok(length) = head
                .headers
                .get("content-length")
                .map_or(Ok(0), |v| v.trim().parse::<usize>())
            else {
                return;
            };
            while buf.len() < head_len + length {
                if !read_more(&mut stream, &mut buf, shared) {
                    return;
                }
            }
            (buf[head_len..head_len + length].to_vec(), head_len + length)
        };
        buf.drain(..consumed);

        let reply = record(shared, &head, body, connection);
        // Sliced so that a dropped receiver does not keep a slow answer's connection open.
        let until = Instant::now() + reply.delay;
        while Instant::now() < until {
            if shared.stopped() {
                return;
            }
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
        let close = head.http10
            || head
                .headers
                .get("connection")
                .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        let answer = response(&reply, head.method == "HEAD", close);
        if stream.write_all(&answer).and_then(|()| stream.flush()).is_err() || close {
            return;
        }
    }
}

/// Appends what the client sent next to `buf`; false on end of stream, error, or stop.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, shared: &Shared) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if shared.stopped() {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
}

/// Records the request and picks its reply, under one lock so that numbering follows arrival.
fn record(shared: &Shared, head: &Head, body: Vec<u8>, connection: usize) -> Reply {
    let mut requests = shared.requests.lock().unwrap();
    let reply = shared
        .replies
        .get(requests.len())
        .cloned()
        .unwrap_or_else(|| Reply::status(200));
    let (path, query) = match head.target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (head.target.clone(), None),
    };
    requests.push(ReceivedRequest {
        method: head.method.clone(),
        path,
        query,
        headers: head.headers.clone(),
        body,
        answered: reply.status,
        connection,
    });
    reply
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target, version) = (request_line.next()?, request_line.next()?, request_line.next()?);
    if !version.starts_with("HTTP/1.") || request_line.next().is_some() {
        return None;
    }
    let mut headers = BTreeMap::<String, String>::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        headers
            .entry(name)
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        http10: version == "HTTP/1.0",
        headers,
    })
}

/// A complete chunked body at the start of `data`: `Ok(Some((body, bytes used)))`,
/// `Ok(None)` when more must be read, `Err` when it is malformed.
fn dechunk(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&data[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(&data[at..at + line_end]).map_err(|_| ())?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| ())?;
        at += line_end + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(end) = find(&data[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[at..at + size]);
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Err(());
        }
        at += size + 2;
    }
}

fn response(reply: &Reply, head_request: bool, close: bool) -> Vec<u8> {
    let bodiless = reply.status < 200 || reply.status == 204 || reply.status == 304;
    let mut text = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    // 1xx, 204 and 304 must not carry a body or its length; every other answer states its
    // length so that the client can read the next answer on the same connection.
    if !bodiless {
        text.push_str(&format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            reply.body.len()
        ));
    }
    text.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    let mut bytes = text.into_bytes();
    if !bodiless && !head_request {
        bytes.extend_from_slice(reply.body.as_bytes());
    }
    bytes
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Scripted",
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends raw `request` bytes and reads one answer (head and `Content-Length` body).
    fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, String, String) {
        stream.write_all(request).unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while find(&buf, b"\r\n\r\n").is_none() {
            assert_eq!(stream.read(&mut byte).expect("read the answer head"), 1, "closed early");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).expect("read the answer body");
        (status, head, String::from_utf8(body).unwrap())
    }

    fn post(path: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Certkeeper-Event: Renewed\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn answers_a_scripted_500_then_200_on_one_keep_alive_connection() {
        let receiver = WebhookReceiver::start(vec![500]);
        let mut stream = TcpStream::connect(("127.0.0.1", receiver.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

        let (status, head, body) = exchange(&mut stream, &post("/hook", r#"{"n":1}"#));
        assert_eq!((status, body.as_str()), (500, "scripted 500"));
        assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
        // The same socket: the connection survived the error answer.
        let (status, _, body) = exchange(&mut stream, &post("/hook?x=1", r#"{"n":2}"#));
        assert_eq!((status, body.as_str()), (200, "ok"));

        let requests = receiver.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 200]);
        assert_eq!((requests[0].connection, requests[1].connection), (0, 0));
        assert_eq!(requests[0].json(), serde_json::json!({"n": 1}));
        assert_eq!(requests[1].json(), serde_json::json!({"n": 2}));
        assert_eq!(
            (requests[1].path.as_str(), requests[1].query.as_deref()),
            ("/hook", Some("x=1"))
        );
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].headers["x-certkeeper-event"], "Renewed");
        assert_eq!(requests[0].header("Content-Type"), Some("application/json"));
    }

    #[test]
    fn serves_connections_concurrently_and_reads_chunked_bodies() {
        let receiver = WebhookReceiver::with(vec![Reply::status(503).body("busy"), Reply::status(204)]);
        let mut idle = TcpStream::connect(("127.0.0.1", receiver.port())).unwrap();
        // A request half sent on one connection must not hold up another.
        idle.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", receiver.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunked = b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                        4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n";
        let (status, _, body) = exchange(&mut stream, chunked);
        assert_eq!((status, body.as_str()), (503, "busy"));
        let (status, head, body) = exchange(&mut stream, &post("/hook", "{}"));
        assert_eq!((status, body.as_str()), (204, ""));
        assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
        let requests = receiver.wait_for(2, Duration::from_secs(5));
        assert_eq!(requests[0].json(), serde_json::json!({"a": 1}));

        idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (status, _, _) = exchange(&mut idle, b"Content-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
    }

    #[test]
    fn dropping_does_not_wait_for_open_connections_or_delays() {
        let receiver = WebhookReceiver::with(vec![Reply::status(200).delay(Duration::from_secs(30))]);
        let mut slow = TcpStream::connect(("127.0.0.1", receiver.port())).unwrap();
        slow.write_all(&post("/hook", "{}")).unwrap();
        let _idle = TcpStream::connect(("127.0.0.1", receiver.port())).unwrap();
        receiver.wait_for(1, Duration::from_secs(5));
        let started = Instant::now();
        drop(receiver);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        // The server side closes the delayed connection instead of answering.
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(slow.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
    }
}
