//! A small HTTP/1.1 client for webhooks: one `POST` of a JSON body over TCP or TLS with
//! `Connection: close`, judged by the status line alone (no redirects followed).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    /// The host as written (an IPv6 literal keeps its brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `url`; errors never repeat the URL (its path may hold a token).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("a webhook URL must start with `https://` or `http://`".into());
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or_default();
        if authority.contains('@') {
            return Err("a webhook URL must not hold a user name or password".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("a webhook URL has an unclosed `[`")?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a webhook URL has no valid host".into());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| "a webhook URL has an invalid port".to_owned())?,
            None if https => 443,
            None => 80,
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a webhook URL must not hold spaces (percent-encode them)".into());
        }
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self { https, host: host.to_ascii_lowercase(), port, path })
    }

    /// `scheme://host:port`: what messages show of a webhook (never its path).
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", if self.https { "https" } else { "http" }, self.host, self.port)
    }

    fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn host_header(&self) -> String {
        match (self.https, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// POSTs `body` as JSON to `url`; returns the status code of a 2xx answer. The caller bounds the
/// time it takes.
pub(crate) async fn post_json(url: &Url, body: &[u8], tls: Option<Arc<ClientConfig>>) -> Result<u16, String> {
    let headers = [("Content-Type".to_owned(), "application/json".to_owned()), ("Accept".to_owned(), "*/*".to_owned())];
    let response = roundtrip(url, &request_bytes(url, "POST", &headers, body), tls, false).await?;
    match parse_status(&response) {
        Some((c, _)) if (200..300).contains(&c) => Ok(c),
        Some((c, reason)) => Err(format!("`{}` answered HTTP {c} {}", url.origin(), reason.chars().take(100).collect::<String>())),
        None => Err(format!("`{}` did not answer with HTTP", url.origin())),
    }
}

/// A whole HTTP answer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (may hold secrets: never log it).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response").field("status", &self.status).field("bytes", &self.body.len()).finish()
    }
}

impl Response {
    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The most of an answer [`send`] reads.
const MAX_RESPONSE: usize = 16 << 20;

/// Sends one request (`headers` besides `Host`, `User-Agent`, `Content-Length` and `Connection:
/// close`) and reads the whole answer, of any status. The caller bounds the time it takes.
pub(crate) async fn send(
    url: &Url,
    method: &str,
    headers: &[(String, String)],
    body: &[u8],
    tls: Option<Arc<ClientConfig>>,
) -> Result<Response, String> {
    let raw = roundtrip(url, &request_bytes(url, method, headers, body), tls, true).await?;
    parse_response(&raw).ok_or_else(|| format!("`{}` did not answer with HTTP", url.origin()))
}

fn request_bytes(url: &Url, method: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut head =
        format!("{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cchq/{}\r\n", url.path, url.host_header(), env!("CARGO_PKG_VERSION"));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// Connects (TLS for `https`), sends `request`, and reads the start of the answer (enough for
/// the status line), or all of it when `whole`.
async fn roundtrip(url: &Url, request: &[u8], tls: Option<Arc<ClientConfig>>, whole: bool) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect((url.connect_host(), url.port)).await.map_err(|e| format!("cannot connect to `{}`: {e}", url.origin()))?;
    let _ = tcp.set_nodelay(true);
    if url.https {
        let config = tls.ok_or("no TLS configuration")?;
        let name = super::tls::server_name(&url.host)?;
        let mut s = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS with `{}`: {e}", url.origin()))?;
        exchange(&mut s, request, whole).await
    } else {
        let mut s = tcp;
        exchange(&mut s, request, whole).await
    }
}

/// The status code and reason of an answer's first line.
fn parse_status(response: &[u8]) -> Option<(u16, String)> {
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim().to_owned();
    let mut parts = line.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or_default(), parts.next().and_then(|c| c.parse::<u16>().ok()));
    code.filter(|_| proto.starts_with("HTTP/")).map(|c| (c, parts.next().unwrap_or_default().to_owned()))
}

/// Status, headers and body (de-chunked) of a whole answer.
fn parse_response(raw: &[u8]) -> Option<Response> {
    let (status, _) = parse_status(raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let headers: Vec<(String, String)> =
        head.lines().skip(1).filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(n) = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Writes the request and reads the start of the answer (enough for the status line), or all of
/// it (up to [`MAX_RESPONSE`]) when `whole`.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    whole: bool,
) -> Result<Vec<u8>, String> {
    s.write_all(request).await.map_err(|e| format!("sending the request: {e}"))?;
    s.flush().await.map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    while (whole || !buf.contains(&b'\n')) && buf.len() < if whole { MAX_RESPONSE } else { 8192 } {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: the answer is what was read.
            Err(e) if whole && e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_keep_paths_out_of_the_origin() {
        let u = Url::parse("https://hooks.slack.com/services/T0/B0/secret").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (true, "hooks.slack.com", 443, "/services/T0/B0/secret"));
        assert_eq!(u.origin(), "https://hooks.slack.com:443");
        let u = Url::parse("http://127.0.0.1:8080?x=1#frag").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/?x=1"));
        let u = Url::parse("http://[::1]:9/hook").unwrap();
        assert_eq!((u.host.as_str(), u.connect_host(), u.host_header()), ("[::1]", "::1", "[::1]:9".to_owned()));
        for bad in ["ftp://x/", "https://user:pw@x/", "http://x:99999/", "https:///x", "http://x/a b"] {
            let e = Url::parse(bad).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn whole_answers_parse_with_length_or_chunks() {
        let r = parse_response(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}xx")
            .unwrap();
        assert_eq!((r.status, r.header("content-type"), r.body.as_slice()), (400, Some("application/x-amz-json-1.1"), &b"{}"[..]));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_none());
    }
}
