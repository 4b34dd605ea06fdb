//! Real servers for the notification tests, on 127.0.0.1 with ephemeral ports: an SMTP server
//! speaking enough of the protocol (EHLO, STARTTLS, implicit TLS, AUTH PLAIN/LOGIN, MAIL, RCPT,
//! DATA, QUIT) that records every message, an HTTP server that records every request, and a
//! "black hole" that accepts connections and never answers. Their TLS uses the test certificate
//! of [`fixtures::tls`](crate::fixtures::tls).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{ServerConfig, crypto};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn acceptor() -> TlsAcceptor {
    let dir = crate::fixtures::tls();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A message the SMTP server accepted.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// The name the client gave in `HELO`/`EHLO`.
    pub helo: String,
    /// The `MAIL FROM` address.
    pub from: String,
    /// The `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message text, dot-stuffing undone.
    pub data: String,
    /// `login:password` of a successful AUTH.
    pub auth: Option<String>,
    /// Whether the session was encrypted when the message came.
    pub tls: bool,
}

impl Mail {
    /// A header's value, unfolded (encoded words are left as they are).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self
            .data
            .split("\r\n\r\n")
            .next()?
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        head.split("\r\n").find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_owned())
        })
    }

    /// The body (after the blank line), its transfer encoding (base64, quoted-printable) undone.
    pub fn body(&self) -> String {
        let raw = self
            .data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        let decoded = match self
            .header("Content-Transfer-Encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => String::from_utf8(b64decode(&raw.replace("\r\n", ""))).unwrap(),
            Some("quoted-printable") => String::from_utf8(qp_decode(&raw)).unwrap(),
            _ => raw,
        };
        decoded.replace("\r\n", "\n")
    }
}

/// Quoted-printable (RFC 2045) decoded: soft line breaks joined, `=XX` bytes restored.
fn qp_decode(s: &str) -> Vec<u8> {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("xx"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// How the SMTP server behaves.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Require AUTH with this `(login, password)`; a wrong one is refused with a reply that
    /// echoes what the client sent (as some servers do), to test that it is masked.
    pub auth: Option<(String, String)>,
    /// Offer STARTTLS.
    pub starttls: bool,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// Refuse `EHLO` (`502`), as an old relay that only knows `HELO` does.
    pub helo_only: bool,
}

/// A running SMTP server.
pub struct SmtpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    connections: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    /// Starts one on 127.0.0.1 with an ephemeral port.
    pub async fn start(opts: SmtpOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (m, c) = (mails.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                let (m, opts) = (m.clone(), opts.clone());
                tokio::spawn(async move {
                    let _ = session(Box::new(tcp), &opts, &m).await;
                });
            }
        });
        Self {
            addr,
            mails,
            connections,
            task,
        }
    }

    /// The messages received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// How many connections were made.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

fn b64decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes().filter(|&c| c != b'=') {
        let Some(v) = A.iter().position(|&a| a == c) else {
            continue;
        };
        buf = (buf << 6) | u32::try_from(v).unwrap();
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// The address of `<address> PARAM=...` (MAIL FROM, RCPT TO).
fn path_of(arg: &str) -> String {
    arg.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn session(
    io: Box<dyn Io>,
    opts: &SmtpOptions,
    mails: &Mutex<Vec<Mail>>,
) -> std::io::Result<()> {
    let mut tls = false;
    let io: Box<dyn Io> = if opts.implicit_tls {
        tls = true;
        Box::new(acceptor().accept(io).await?)
    } else {
        io
    };
    let mut r = BufReader::new(io);
    async fn say(r: &mut BufReader<Box<dyn Io>>, text: &str) -> std::io::Result<()> {
        r.get_mut().write_all(text.as_bytes()).await?;
        r.get_mut().flush().await
    }
    async fn line(r: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Option<String>> {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            return Ok(None);
        }
        Ok(Some(l.trim_end_matches(['\r', '\n']).to_owned()))
    }
    say(&mut r, "220 test.invalid ESMTP cchq-test\r\n").await?;
    let mut mail = Mail::default();
    let mut authed = opts.auth.is_none();
    while let Some(cmd) = line(&mut r).await? {
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO ") && opts.helo_only {
            say(&mut r, "502 5.5.1 EHLO not implemented\r\n").await?;
        } else if upper.starts_with("HELO ") {
            mail.helo = cmd[5..].to_owned();
            say(&mut r, "250 test.invalid\r\n").await?;
        } else if upper.starts_with("EHLO ") {
            mail.helo = cmd[5..].to_owned();
            let mut reply = String::from("250-test.invalid\r\n250-8BITMIME\r\n");
            if opts.starttls && !tls {
                reply.push_str("250-STARTTLS\r\n");
            }
            if opts.auth.is_some() {
                reply.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            reply.push_str("250 SIZE 1000000\r\n");
            say(&mut r, &reply).await?;
        } else if upper == "STARTTLS" && opts.starttls && !tls {
            say(&mut r, "220 go ahead\r\n").await?;
            let inner = r.into_inner();
            r = BufReader::new(Box::new(acceptor().accept(inner).await?));
            tls = true;
        } else if let Some(token) = upper
            .starts_with("AUTH PLAIN ")
            .then(|| cmd[11..].to_owned())
        {
            let decoded = String::from_utf8_lossy(&b64decode(&token)).replace('\0', ":");
            let Some((l, p)) = &opts.auth else { continue };
            if decoded == format!(":{l}:{p}") {
                authed = true;
                mail.auth = Some(format!("{l}:{p}"));
                say(&mut r, "235 2.7.0 accepted\r\n").await?;
            } else {
                say(
                    &mut r,
                    &format!("535 5.7.8 authentication failed for {token} ({decoded})\r\n"),
                )
                .await?;
            }
        } else if upper == "AUTH LOGIN" {
            say(&mut r, "334 VXNlcm5hbWU6\r\n").await?;
            let l = String::from_utf8_lossy(&b64decode(&line(&mut r).await?.unwrap_or_default()))
                .into_owned();
            say(&mut r, "334 UGFzc3dvcmQ6\r\n").await?;
            let p = String::from_utf8_lossy(&b64decode(&line(&mut r).await?.unwrap_or_default()))
                .into_owned();
            if opts.auth.as_ref() == Some(&(l.clone(), p.clone())) {
                authed = true;
                mail.auth = Some(format!("{l}:{p}"));
                say(&mut r, "235 2.7.0 accepted\r\n").await?;
            } else {
                say(
                    &mut r,
                    &format!("535 5.7.8 authentication failed for {l} ({p})\r\n"),
                )
                .await?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if authed {
                mail.from = path_of(&cmd[10..]);
                say(&mut r, "250 2.1.0 ok\r\n").await?;
            } else {
                say(&mut r, "530 5.7.0 authentication required\r\n").await?;
            }
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(path_of(&cmd[8..]));
            say(&mut r, "250 2.1.5 ok\r\n").await?;
        } else if upper == "DATA" {
            say(&mut r, "354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            while let Some(l) = line(&mut r).await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            mail.data = data;
            mail.tls = tls;
            mails.lock().unwrap().push(std::mem::take(&mut mail));
            say(&mut r, "250 2.0.0 queued\r\n").await?;
        } else if upper == "QUIT" {
            say(&mut r, "221 2.0.0 bye\r\n").await?;
            break;
        } else {
            say(&mut r, "500 5.5.2 what?\r\n").await?;
        }
    }
    Ok(())
}

/// A request the HTTP server received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, `CONNECT`...
    pub method: String,
    /// The request target as sent (a path, or `host:port` for `CONNECT`).
    pub path: String,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A running HTTP server answering every request with `status`.
pub struct HttpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Starts one on 127.0.0.1 with an ephemeral port (HTTPS with the test certificate when `tls`).
    pub async fn start(status: u16, tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = if tls {
                        match acceptor().accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        }
                    } else {
                        Box::new(tcp)
                    };
                    let _ = serve(io, status, &reqs).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// `http(s)://127.0.0.1:PORT/PATH`.
    pub fn url(&self, tls: bool, path: &str) -> String {
        format!(
            "{}://{}{path}",
            if tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(io: Box<dyn Io>, status: u16, reqs: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    let mut r = BufReader::new(io);
    let mut start = String::new();
    r.read_line(&mut start).await?;
    let mut parts = start.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            break;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    reqs.lock().unwrap().push(Request {
        method,
        path,
        headers,
        body,
    });
    let reason = if status < 300 { "OK" } else { "Nope" };
    r.get_mut()
        .write_all(
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )
            .as_bytes(),
        )
        .await?;
    r.get_mut().shutdown().await
}

/// Accepts connections and never answers (a hung server).
pub struct BlackHole {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BlackHole {
    /// Starts one on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        Self { addr, task }
    }
}

/// A port on 127.0.0.1 where nothing listens (connections are refused).
///
/// The port stays bound, without listening, for as long as the value lives: a
/// port that was bound and let go can be taken at once by a server another
/// test starts in parallel, and the "refused" port then answers (or hangs).
pub struct ClosedPort {
    /// The refused port.
    pub port: u16,
    _held: tokio::net::TcpSocket,
}

/// Binds a port on 127.0.0.1 and keeps it closed (see [`ClosedPort`]).
pub async fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    ClosedPort {
        port,
        _held: socket,
    }
}
