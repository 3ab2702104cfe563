//! Reading a running uturn's `/metrics` endpoint.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::Server;

/// `METHOD path` on the metrics listener: (status line, body).
pub fn http_get(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the HTTP response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The address of the `uturn: metrics http://…/metrics` start-up line.
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("uturn: metrics http://"))
        .expect("a `uturn: metrics` start-up line");
    line.trim_end_matches("/metrics")
        .parse()
        .expect("metrics address")
}

/// The value of one series (`name{labels}` exactly as exposed).
pub fn series(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a numeric sample"))
}

/// One series of the server's metrics now.
pub fn metric(server: &Server, name: &str) -> Option<u64> {
    let (_, body) = http_get(metrics_addr(server), "GET", "/metrics");
    series(&body, name)
}
