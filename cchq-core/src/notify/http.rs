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

    fn host_header(&self) -> String {
        match (self.https, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// POSTs `body` as JSON to `url`; returns the status code of a 2xx answer. The caller bounds the
/// time it takes.
pub(crate) async fn post_json(url: &Url, body: &[u8], tls: Option<Arc<ClientConfig>>) -> Result<u16, String> {
    let tcp = TcpStream::connect((url.connect_host(), url.port)).await.map_err(|e| format!("cannot connect to `{}`: {e}", url.origin()))?;
    let _ = tcp.set_nodelay(true);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cchq/{}\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let response = if url.https {
        let config = tls.ok_or("no TLS configuration")?;
        let name = super::tls::server_name(&url.host)?;
        let mut s = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS with `{}`: {e}", url.origin()))?;
        exchange(&mut s, &request).await?
    } else {
        let mut s = tcp;
        exchange(&mut s, &request).await?
    };
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim().to_owned();
    let mut parts = line.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or_default(), parts.next().and_then(|c| c.parse::<u16>().ok()));
    match code {
        Some(c) if proto.starts_with("HTTP/") && (200..300).contains(&c) => Ok(c),
        Some(c) if proto.starts_with("HTTP/") => {
            Err(format!("`{}` answered HTTP {c} {}", url.origin(), parts.next().unwrap_or_default().chars().take(100).collect::<String>()))
        }
        _ => Err(format!("`{}` did not answer with HTTP", url.origin())),
    }
}

/// Writes the request and reads the start of the answer (enough for the status line).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, request: &[u8]) -> Result<Vec<u8>, String> {
    s.write_all(request).await.map_err(|e| format!("sending the request: {e}"))?;
    s.flush().await.map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.contains(&b'\n') && buf.len() < 8192 {
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
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
}
