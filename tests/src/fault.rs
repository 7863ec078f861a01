//! A fault-injecting HTTP proxy on loopback, between heet and moto: it answers a set share of
//! requests with AWS throttling, a 500, a 503, or a dropped connection, before they reach
//! moto (so a faulted call never happened, as with real throttling), and forwards the rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy did, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub forwarded: AtomicU64,
    pub throttled: AtomicU64,
    pub internal: AtomicU64,
    pub unavailable: AtomicU64,
    pub dropped: AtomicU64,
}

impl FaultCounts {
    pub fn faults(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
            + self.internal.load(Ordering::Relaxed)
            + self.unavailable.load(Ordering::Relaxed)
            + self.dropped.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} forwarded, {} faults ({} throttled, {} 500, {} 503, {} dropped)",
            self.forwarded.load(Ordering::Relaxed),
            self.faults(),
            self.throttled.load(Ordering::Relaxed),
            self.internal.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    pub counts: Arc<FaultCounts>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`, faulting `percent` % of
    /// requests, chosen by a generator seeded with `seed`. The proxy lives as long as the
    /// test process.
    pub fn start(upstream: &str, percent: u32, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(FaultCounts::default());
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        let upstream = upstream.to_owned();
        let shared = counts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (upstream, counts, rng) = (upstream.clone(), shared.clone(), rng.clone());
                std::thread::spawn(move || serve(conn, &upstream, percent, &rng, &counts));
            }
        });
        FaultProxy { endpoint, counts }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// The AWS service a request is signed for.
fn service(req: &Request) -> String {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("")
        .to_owned()
}

/// An error answer as each protocol gives it: `code` with `status`.
fn error(service: &str, status: u16, code: &str) -> (u16, &'static str, String) {
    match service {
        "ssm" => (
            status,
            "application/x-amz-json-1.1",
            format!(r#"{{"__type":"{code}","message":"injected by the fault proxy"}}"#),
        ),
        "route53" => (
            status,
            "text/xml",
            format!(
                "<?xml version=\"1.0\"?><ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected by the fault proxy</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
            ),
        ),
        _ => (
            status,
            "text/xml",
            format!(
                "<?xml version=\"1.0\"?><Response><Errors><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error></Errors><RequestID>fault</RequestID></Response>"
            ),
        ),
    }
}

/// Throttling, in each service's words.
fn throttle(service: &str) -> (u16, &'static str, String) {
    match service {
        "ssm" => error(service, 400, "ThrottlingException"),
        "route53" => error(service, 400, "Throttling"),
        _ => error(service, 503, "RequestLimitExceeded"),
    }
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: fault\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).is_ok() && conn.write_all(body).is_ok()
}

fn serve(
    conn: TcpStream,
    upstream: &str,
    percent: u32,
    rng: &Mutex<fastrand::Rng>,
    counts: &FaultCounts,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    while let Some(req) = read_request(&mut reader) {
        let (fault, kind) = {
            let mut rng = rng.lock().unwrap();
            (rng.u32(0..100) < percent, rng.u8(0..4))
        };
        if fault {
            let ok = match kind {
                0 => {
                    counts.throttled.fetch_add(1, Ordering::Relaxed);
                    let (status, ty, body) = throttle(&service(&req));
                    respond(&mut conn, status, ty, body.as_bytes())
                }
                1 => {
                    counts.internal.fetch_add(1, Ordering::Relaxed);
                    let (status, ty, body) = error(&service(&req), 500, "InternalError");
                    respond(&mut conn, status, ty, body.as_bytes())
                }
                2 => {
                    counts.unavailable.fetch_add(1, Ordering::Relaxed);
                    let (status, ty, body) = error(&service(&req), 503, "ServiceUnavailable");
                    respond(&mut conn, status, ty, body.as_bytes())
                }
                _ => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    false
                }
            };
            if !ok {
                return;
            }
            continue;
        }
        counts.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{upstream}{}", req.path));
        for (k, v) in &req.headers {
            if !["host", "content-length", "connection", "transfer-encoding"]
                .contains(&k.to_ascii_lowercase().as_str())
            {
                builder = builder.header(k, v);
            }
        }
        let Ok(request) = builder.body(req.body) else {
            return;
        };
        let Ok(mut response) = agent.run(request) else {
            return;
        };
        let status = response.status().as_u16();
        let ty = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_owned();
        let Ok(body) = response.body_mut().read_to_vec() else {
            return;
        };
        if !respond(&mut conn, status, &ty, &body) {
            return;
        }
    }
}
