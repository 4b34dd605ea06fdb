//! HTTP(S) for webhooks and the AWS client, with `ureq` (rustls on ring) on a blocking thread
//! (`spawn_blocking`), so the async callers stay async. URLs are parsed by the `url` crate
//! (WHATWG rules: international domain names become punycode, IPv6 literals, percent-encoding);
//! the proxy comes from `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY` with `NO_PROXY` (never for this
//! machine's loopback); redirects are not followed; any status is an answer (the caller judges it).

use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::error::{Error, ErrorKind, Result};
use crate::tls::Roots;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    /// The host in ASCII (an international name in punycode, an IPv6 literal in brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/` (the fragment is left out).
    pub path: String,
    parsed: url::Url,
}

impl Url {
    /// Parses webhook URL `url`; errors (`Config`) never repeat the URL (its path may hold a token).
    pub fn parse(url: &str) -> Result<Self> {
        Self::parse_as(url, "a webhook URL")
    }

    /// [`Url::parse`], its errors calling the URL `what` (`a webhook URL`, `the URL`).
    pub fn parse_as(url: &str, what: &str) -> Result<Self> {
        let scheme = || Error::config(format!("{what} must start with `https://` or `http://`"));
        let mut u = url::Url::parse(url.trim()).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => scheme().with_source(e),
            e => Error::config(format!("{what} is not a valid URL ({e})")).with_source(e),
        })?;
        let https = match u.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(scheme()),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(Error::config(format!(
                "{what} must not hold a user name or password"
            )));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            _ => return Err(Error::config(format!("{what} has no valid host"))),
        };
        let port = u
            .port_or_known_default()
            .ok_or_else(|| Error::config(format!("{what} has no port")))?;
        u.set_fragment(None);
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        Ok(Self {
            https,
            host,
            port,
            path,
            parsed: u,
        })
    }

    /// `scheme://host:port`: what messages show of a webhook (never its path).
    pub fn origin(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.https { "https" } else { "http" },
            self.host,
            self.port
        )
    }

    /// Whether the host is this machine (`localhost`, 127.0.0.0/8, `::1`).
    pub fn is_loopback(&self) -> bool {
        match self.parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        }
    }

    /// The `Host` header the request carries (what SigV4 signs).
    pub fn host_header(&self) -> String {
        match (self.https, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// POSTs `body` as JSON to `url`; returns the status code of a 2xx answer (another is a
/// `CommandFailed` error). `roots` is required for `https`; `timeout` bounds the whole exchange.
pub(crate) async fn post_json(
    url: &Url,
    body: &[u8],
    roots: Option<Roots>,
    timeout: Duration,
) -> Result<u16> {
    let headers = [
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Accept".to_owned(), "*/*".to_owned()),
    ];
    let r = send(url, "POST", &headers, body, roots, timeout, Proxy::FromEnv).await?;
    if (200..300).contains(&r.status) {
        Ok(r.status)
    } else {
        let reason: String = r.reason.chars().take(100).collect();
        Err(Error::new(
            ErrorKind::CommandFailed,
            format!("`{}` answered HTTP {} {reason}", url.origin(), r.status),
        ))
    }
}

/// A whole HTTP answer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    /// The reason phrase (`Not Found`).
    pub reason: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (may hold secrets: never log it).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl Response {
    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a request may go through the proxy the environment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proxy {
    /// `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY`, except for hosts `NO_PROXY` lists.
    FromEnv,
    /// Never (the EC2 instance metadata service, which is link-local).
    Never,
    /// This proxy (`http://host:port`), for tests: the process environment cannot be changed
    /// in a test without `unsafe`.
    #[cfg(test)]
    Url(&'static str),
}

/// The most of an answer [`send`] reads.
const MAX_RESPONSE: u64 = 16 << 20;

/// Sends one request (`headers` besides `Host`, `User-Agent` and `Content-Length`) and reads the
/// whole answer, of any status. `roots` is required for `https`; `timeout` bounds the whole
/// exchange (the blocking thread gives up then too). No answer is a `Connection` error, with
/// ureq's as its source.
pub(crate) async fn send(
    url: &Url,
    method: &str,
    headers: &[(String, String)],
    body: &[u8],
    roots: Option<Roots>,
    timeout: Duration,
    proxy: Proxy,
) -> Result<Response> {
    let root_certs = match (&roots, url.https) {
        (_, false) => RootCerts::WebPki,
        (None, true) => {
            return Err(Error::config(format!(
                "no TLS configuration for `{}` (the CA file could not be read)",
                url.origin()
            )));
        }
        (Some(r), true) if r.extra.is_empty() => RootCerts::WebPki,
        (Some(r), true) => {
            let mut all: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()))
                .collect();
            all.extend(
                r.extra
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
            );
            RootCerts::new_with_certs(&all)
        }
    };
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(format!("cchq/{}", env!("CARGO_PKG_VERSION")))
        .proxy(match proxy {
            // A proxy cannot reach this machine's loopback for us.
            Proxy::FromEnv if url.is_loopback() => None,
            Proxy::FromEnv => ureq::Proxy::try_from_env(),
            Proxy::Never => None,
            #[cfg(test)]
            Proxy::Url(u) => Some(
                ureq::Proxy::new(u)
                    .map_err(|e| Error::internal(format!("bad test proxy: {e}")).with_source(e))?,
            ),
        })
        .tls_config(TlsConfig::builder().root_certs(root_certs).build())
        .build()
        .new_agent();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(url.parsed.as_str());
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let request = request.body(body.to_vec()).map_err(|e| {
        Error::internal(format!(
            "cannot make the request to `{}`: {e}",
            url.origin()
        ))
        .with_source(e)
    })?;
    let (origin, secs) = (url.origin(), timeout.as_secs());
    let exchange = move || -> Result<Response> {
        let why = |e: ureq::Error| {
            let text = match &e {
                ureq::Error::Timeout(_) => format!("no answer within {secs} s"),
                // rustls reports a failed handshake (an untrusted certificate) as an I/O error.
                ureq::Error::Io(io)
                    if io
                        .get_ref()
                        .is_some_and(|i| i.is::<tokio_rustls::rustls::Error>()) =>
                {
                    format!("TLS with `{origin}`: {io}")
                }
                ureq::Error::Io(io) => format!("cannot connect to `{origin}`: {io}"),
                ureq::Error::HostNotFound => {
                    format!("cannot connect to `{origin}`: host not found")
                }
                ureq::Error::ConnectionFailed => format!("cannot connect to `{origin}`"),
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
                    format!("TLS with `{origin}`: {e}")
                }
                _ => format!("`{origin}`: {e}"),
            };
            Error::connection(text).with_source(e)
        };
        let mut r = agent.run(request).map_err(why)?;
        let status = r.status();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
                )
            })
            .collect();
        let body = r
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(why)?;
        Ok(Response {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or_default().to_owned(),
            headers,
            body,
        })
    };
    tokio::task::spawn_blocking(exchange).await.map_err(|e| {
        Error::internal(format!(
            "the HTTP request to `{}` stopped: {e}",
            url.origin()
        ))
        .with_source(e)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use cchq_testsupport::servers::HttpServer;

    /// A webhook through an HTTP proxy: the proxy is asked for a tunnel (`CONNECT`) to the host
    /// in punycode, which only the proxy would have to resolve. (The test server answers the
    /// CONNECT and hangs up, so the request itself fails.)
    #[tokio::test]
    async fn webhooks_go_through_the_proxy() {
        let proxy = HttpServer::start(200, false).await;
        let proxy_url: &'static str = Box::leak(proxy.url(false, "").into_boxed_str());
        let url = Url::parse("http://hooks.bücher.invalid/services/x?a=1").unwrap();
        let _ = send(
            &url,
            "POST",
            &[],
            b"{}",
            None,
            Duration::from_secs(5),
            Proxy::Url(proxy_url),
        )
        .await;
        let reqs = proxy.requests();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(
            (reqs[0].method.as_str(), reqs[0].path.as_str()),
            ("CONNECT", "hooks.xn--bcher-kva.invalid:80")
        );
    }

    #[test]
    fn urls_parse_with_defaults_and_keep_paths_out_of_the_origin() {
        let u = Url::parse("https://hooks.slack.com/services/T0/B0/secret").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "hooks.slack.com", 443, "/services/T0/B0/secret")
        );
        assert_eq!(u.origin(), "https://hooks.slack.com:443");
        let u = Url::parse("http://127.0.0.1:8080?x=1#frag").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/?x=1"));
        let u = Url::parse("http://[::1]:9/hook").unwrap();
        assert_eq!(
            (u.host.as_str(), u.host_header()),
            ("[::1]", "[::1]:9".to_owned())
        );
        assert!(u.is_loopback() && Url::parse("http://localhost:1/").unwrap().is_loopback());
        assert!(
            !Url::parse("https://hooks.slack.com/")
                .unwrap()
                .is_loopback()
        );
        for bad in [
            "ftp://x/",
            "https://user:pw@x/",
            "http://x:99999/",
            "https://",
            "x/y",
            "http://exa mple.org/",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(
                !e.message().contains("pw") && !e.message().contains("exa mple"),
                "{e}"
            );
        }
    }

    #[test]
    fn url_errors_are_config_errors_that_keep_the_parse_error() {
        let e = Url::parse("http://exa mple.org/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            std::error::Error::source(&e).is_some_and(|s| s.is::<url::ParseError>()),
            "{e:?}"
        );
        let e = Url::parse_as("ftp://x/", "the URL").unwrap_err();
        assert_eq!(
            (e.kind(), e.message()),
            (
                ErrorKind::Config,
                "the URL must start with `https://` or `http://`"
            )
        );
    }

    /// An answer that is not 2xx is `CommandFailed`; no answer is `Connection`, ureq's error kept.
    #[tokio::test]
    async fn failed_posts_say_what_kind_of_failure() {
        let server = HttpServer::start(500, false).await;
        let url = Url::parse(&server.url(false, "/hook")).unwrap();
        let e = post_json(&url, b"{}", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CommandFailed, "{e}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let e = post_json(&url, b"{}", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(
            std::error::Error::source(&e).is_some_and(|s| s.is::<ureq::Error>()),
            "{e:?}"
        );
    }

    #[test]
    fn international_names_become_punycode_and_spaces_are_encoded() {
        let u = Url::parse("https://Bücher.example/hook/ä b").unwrap();
        assert_eq!(u.host, "xn--bcher-kva.example");
        assert_eq!(u.path, "/hook/%C3%A4%20b");
        assert_eq!(u.host_header(), "xn--bcher-kva.example");
    }
}
