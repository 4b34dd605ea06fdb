//! A small SMTP client: enough of RFC 5321 to hand one message to a relay (EHLO, STARTTLS or
//! implicit TLS, AUTH PLAIN or LOGIN, MAIL, RCPT, DATA with dot-stuffing, QUIT), and the
//! RFC 5322 message itself. Errors are plain text that never holds the password: the caller masks
//! them with [`Server::secrets`] as well.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use super::Security;

/// A byte stream (plain TCP or TLS over it).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to hand a message over.
#[derive(Clone)]
pub(crate) struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub login: Option<String>,
    pub password: Option<String>,
    pub tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Every form in which the password could show up in a server's reply.
    pub fn secrets(&self) -> Vec<String> {
        let Some(p) = &self.password else { return Vec::new() };
        let login = self.login.clone().unwrap_or_default();
        vec![p.clone(), base64(p.as_bytes()), base64(format!("\0{login}\0{p}").as_bytes())]
    }
}

/// One message: the envelope and the RFC 5322 text (CRLF line ends).
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

type Reader = BufReader<Box<dyn Io>>;

/// The longest reply line read; a server sending more is broken.
const MAX_LINE: u64 = 4096;
/// The most lines in one reply.
const MAX_LINES: usize = 64;

async fn read_reply(r: &mut Reader) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = (&mut *r).take(MAX_LINE).read_line(&mut line).await.map_err(|e| format!("reading the server's reply: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        let code = line.get(..3).and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| format!("not an SMTP reply: `{}`", clip(&line)))?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_owned());
        if !more {
            return Ok((code, lines));
        }
        if lines.len() >= MAX_LINES {
            return Err("the server's reply is too long".into());
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Sends `line` (CRLF added) and reads the reply; `what` names the step in errors.
async fn command(r: &mut Reader, line: &str, what: &str, expect: u16) -> Result<Vec<String>, String> {
    r.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.map_err(|e| format!("sending {what}: {e}"))?;
    r.get_mut().flush().await.map_err(|e| format!("sending {what}: {e}"))?;
    expect_reply(r, what, expect).await
}

async fn expect_reply(r: &mut Reader, what: &str, expect: u16) -> Result<Vec<String>, String> {
    let (code, lines) = read_reply(r).await?;
    if code / 100 == expect / 100 { Ok(lines) } else { Err(format!("the server refused {what}: {code} {}", clip(&lines.join(" ")))) }
}

async fn tls_wrap(io: Box<dyn Io>, server: &Server) -> Result<Box<dyn Io>, String> {
    let config = server.tls.clone().ok_or("no TLS configuration")?;
    let name = super::tls::server_name(&server.host)?;
    let stream = TlsConnector::from(config).connect(name, io).await.map_err(|e| format!("TLS with `{}`: {e}", server.host))?;
    Ok(Box::new(stream))
}

async fn ehlo(r: &mut Reader, helo: &str) -> Result<Vec<String>, String> {
    command(r, &format!("EHLO {helo}"), "EHLO", 250).await
}

/// Hands `mail` to `server`. The caller bounds the time it takes.
pub(crate) async fn send(server: &Server, mail: &Mail, helo: &str) -> Result<(), String> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|e| format!("cannot connect to `{}:{}`: {e}", server.host, server.port))?;
    let _ = tcp.set_nodelay(true);
    let mut io: Box<dyn Io> = Box::new(tcp);
    if server.security == Security::Tls {
        io = tls_wrap(io, server).await?;
    }
    let mut r: Reader = BufReader::new(io);
    expect_reply(&mut r, "the connection", 220).await?;
    let mut caps = ehlo(&mut r, helo).await?;
    if server.security == Security::Starttls {
        if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
            return Err(format!("`{}` does not offer STARTTLS (set `security: tls` or `security: none`)", server.host));
        }
        command(&mut r, "STARTTLS", "STARTTLS", 220).await?;
        if !r.buffer().is_empty() {
            return Err("the server sent data before the TLS handshake".into());
        }
        r = BufReader::new(tls_wrap(r.into_inner(), server).await?);
        caps = ehlo(&mut r, helo).await?;
    }
    if let (Some(login), Some(password)) = (&server.login, &server.password) {
        let mechs: Vec<String> = caps
            .iter()
            .filter_map(|c| {
                let u = c.to_ascii_uppercase();
                u.strip_prefix("AUTH ").or_else(|| u.strip_prefix("AUTH=")).map(str::to_owned)
            })
            .flat_map(|m| m.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if mechs.iter().any(|m| m == "PLAIN") {
            let token = base64(format!("\0{login}\0{password}").as_bytes());
            command(&mut r, &format!("AUTH PLAIN {token}"), "the login (AUTH PLAIN)", 235).await?;
        } else if mechs.iter().any(|m| m == "LOGIN") {
            command(&mut r, "AUTH LOGIN", "AUTH LOGIN", 334).await?;
            command(&mut r, &base64(login.as_bytes()), "the login name", 334).await?;
            command(&mut r, &base64(password.as_bytes()), "the login (AUTH LOGIN)", 235).await?;
        } else {
            return Err(format!("`{}` offers no AUTH PLAIN or LOGIN after EHLO", server.host));
        }
    }
    command(&mut r, &format!("MAIL FROM:<{}>", mail.from), "the sender", 250).await?;
    let mut refused = Vec::new();
    for to in &mail.to {
        if let Err(e) = command(&mut r, &format!("RCPT TO:<{to}>"), &format!("recipient `{to}`"), 250).await {
            refused.push(e);
        }
    }
    if refused.len() == mail.to.len() {
        return Err(refused.join("; "));
    }
    command(&mut r, "DATA", "DATA", 354).await?;
    let mut data = String::with_capacity(mail.data.len() + 64);
    for line in mail.data.split("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    r.get_mut().write_all(data.as_bytes()).await.map_err(|e| format!("sending the message: {e}"))?;
    r.get_mut().flush().await.map_err(|e| format!("sending the message: {e}"))?;
    expect_reply(&mut r, "the message", 250).await?;
    let _ = command(&mut r, "QUIT", "QUIT", 221).await;
    if !refused.is_empty() {
        return Err(format!("sent, but {}", refused.join("; ")));
    }
    Ok(())
}

use crate::command::base64;

/// A header value on one line (CR and LF would start a new header).
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect()
}

/// An RFC 2047 encoded word when `s` is not plain ASCII.
fn encode_header(s: &str) -> String {
    let s = one_line(s);
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) { s } else { format!("=?UTF-8?B?{}?=", base64(s.as_bytes())) }
}

/// The RFC 5322 date of `ts` (seconds since the epoch), in UTC.
fn rfc5322_date(ts: u64) -> String {
    let days = i64::try_from(ts / 86_400).unwrap_or(0);
    let rem = ts % 86_400;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let (y, m, d) = crate::downtime::civil_from_days(days);
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][usize::try_from(m - 1).unwrap_or(0)];
    format!("{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} +0000", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// The message text: headers, a blank line, the body; UTF-8 bodies or long lines go base64.
pub(crate) fn message(from: &str, to: &[String], subject: &str, body: &str, now: u64) -> String {
    let plain = body.is_ascii() && body.lines().all(|l| l.len() <= 900);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d.trim_end_matches('>'));
    let mut m = String::new();
    m.push_str(&format!("From: {}\r\n", one_line(from)));
    m.push_str(&format!("To: {}\r\n", one_line(&to.join(", "))));
    m.push_str(&format!("Subject: {}\r\n", encode_header(subject)));
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    m.push_str(&format!("Message-ID: <cchq.{now}.{nanos}.{}@{domain}>\r\n", std::process::id()));
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    if plain {
        m.push_str("Content-Transfer-Encoding: 7bit\r\n\r\n");
        for line in body.lines() {
            m.push_str(line);
            m.push_str("\r\n");
        }
    } else {
        m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        let b = base64(body.as_bytes());
        for chunk in b.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            m.push_str("\r\n");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn dates_are_rfc_5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_710_312), "Thu, 26 Nov 2026 16:25:12 +0000");
    }

    #[test]
    fn headers_stay_on_one_line_and_utf8_is_encoded() {
        let m = message("a@b.c", &["x@y.z".into()], "hi\r\nBcc: evil@x", "body\n.dot\n", 0);
        assert!(m.contains("Subject: hi  Bcc: evil@x\r\n"), "{m}");
        assert!(!m.contains("\r\nBcc:"), "{m}");
        let m = message("a@b.c", &["x@y.z".into()], "déploiement", "é", 0);
        assert!(m.contains("Subject: =?UTF-8?B?"), "{m}");
        assert!(m.contains("Content-Transfer-Encoding: base64"), "{m}");
    }
}
