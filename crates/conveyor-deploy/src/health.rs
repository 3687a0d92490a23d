//! Health checks: an HTTP `GET path` answering 2xx, or a TCP connect when there is no path.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The status line is all we read; a response larger than this is not read further.
const MAX_STATUS_LINE: usize = 1024;

/// Why an instance failed its health check, for status and logs. None of these is the caller's
/// mistake: the instance answered wrongly, or could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The whole check took longer than its timeout.
    #[error("no answer within {}ms", .timeout.as_millis())]
    Timeout { timeout: Duration },
    /// Nothing accepted the connection (the instance is down or not listening yet).
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("send: {0}")]
    Send(#[source] std::io::Error),
    #[error("read: {0}")]
    Read(#[source] std::io::Error),
    /// The instance answered with a status other than 2xx.
    #[error("GET {path} answered {code}")]
    Status { path: String, code: u16 },
    /// The instance answered something that is not an HTTP status line.
    #[error("GET {path}: not an HTTP answer: {line:?}")]
    NotHttp { path: String, line: String },
}

/// Checks one instance once; `Err` says what went wrong.
pub async fn check(addr: SocketAddr, path: Option<&str>, timeout: Duration) -> Result<(), HealthError> {
    match tokio::time::timeout(timeout, probe(addr, path)).await {
        Ok(result) => result,
        Err(_) => Err(HealthError::Timeout { timeout }),
    }
}

async fn probe(addr: SocketAddr, path: Option<&str>) -> Result<(), HealthError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HealthError::Connect { addr, source })?;
    let Some(path) = path else { return Ok(()) };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: conveyor-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(HealthError::Send)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await.map_err(HealthError::Read)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    match status_code(line) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(HealthError::Status {
            path: path.to_owned(),
            code,
        }),
        None => Err(HealthError::NotHttp {
            path: path.to_owned(),
            line: line.to_owned(),
        }),
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let cases = [
            ("HTTP/1.1 200 OK", Some(200)),
            ("HTTP/1.0 503 Service Unavailable", Some(503)),
            ("HTTP/1.1 204", Some(204)),
            ("SSH-2.0-OpenSSH", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(status_code(line), want, "{line}");
        }
    }

    #[test]
    fn messages() {
        let cases = [
            (
                HealthError::Timeout {
                    timeout: Duration::from_millis(1500),
                },
                "no answer within 1500ms",
            ),
            (
                HealthError::Status {
                    path: "/healthz".into(),
                    code: 503,
                },
                "GET /healthz answered 503",
            ),
            (
                HealthError::NotHttp {
                    path: "/healthz".into(),
                    line: "SSH-2.0-OpenSSH".into(),
                },
                "GET /healthz: not an HTTP answer: \"SSH-2.0-OpenSSH\"",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[tokio::test]
    async fn closed_port_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = check(addr, Some("/healthz"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HealthError::Connect { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("connect {addr}: ")), "{err}");
    }
}
