//! Mail over SMTP with `lettre` (tokio, rustls on ring): the message (RFC 5322 headers with
//! RFC 2047 encoded words for non-ASCII names and subjects, long headers folded, the body in
//! 7bit, quoted-printable or base64 as its text needs) and its hand-over to a relay (EHLO,
//! STARTTLS or implicit TLS, AUTH PLAIN or LOGIN, MAIL, RCPT, DATA). Errors are `Error`s whose
//! message never holds the password: the caller masks them with [`Server::secrets`] as well.
//!
//! lettre speaks ESMTP only. A relay that refuses `EHLO` as an unknown command (`500`/`502`:
//! an old or minimal one, RFC 5321 4.1.1.1 says to fall back to `HELO` then) gets the same
//! message over plain `HELO`, `MAIL`, `RCPT`, `DATA` ([`helo_fallback`]); that needs neither TLS
//! nor a login, which a HELO-only relay cannot offer.

use std::time::{Duration, UNIX_EPOCH};

use lettre::address::{Address, Envelope};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Security;
use crate::command::base64;
use crate::error::{Error, ErrorKind, Result};
use crate::tls::Roots;

/// Where and how to hand a message over.
#[derive(Clone)]
pub(crate) struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub login: Option<String>,
    pub password: Option<zeroize::Zeroizing<String>>,
    /// The trusted roots; `None` when the environment's CA file could not be read (TLS is then
    /// refused rather than tried without it).
    pub roots: Option<Roots>,
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
        let Some(p) = &self.password else {
            return Vec::new();
        };
        let login = self.login.clone().unwrap_or_default();
        vec![
            p.to_string(),
            base64(p.as_bytes()),
            base64(format!("\0{login}\0{}", p.as_str()).as_bytes()),
        ]
    }

    fn tls_parameters(&self) -> Result<TlsParameters> {
        let roots = self.roots.as_ref().ok_or_else(|| {
            Error::config("no TLS configuration (the `ca_file` could not be read)")
        })?;
        let mut b = TlsParameters::builder(
            self.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .certificate_store(CertificateStore::WebpkiRoots);
        for der in roots.extra.iter() {
            b = b.add_root_certificate(
                Certificate::from_der(der.to_vec())
                    .map_err(|e| Error::config(format!("the CA file: {e}")).with_source(e))?,
            );
        }
        b.build_rustls().map_err(|e| {
            Error::config(format!("TLS setup for `{}`: {e}", self.host)).with_source(e)
        })
    }
}

/// Hands `message` (its envelope says from and to whom) to `server`, announcing this machine as
/// `helo`. `timeout` bounds each network step; the caller bounds the whole. A refusal is a
/// `CommandFailed` error, no answer a `Connection` one, lettre's error its source.
pub(crate) async fn send(
    server: &Server,
    message: &Message,
    helo: &str,
    timeout: Duration,
) -> Result<()> {
    let tls = match server.security {
        Security::None => Tls::None,
        Security::Starttls => Tls::Required(server.tls_parameters()?),
        Security::Tls => Tls::Wrapper(server.tls_parameters()?),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
        server.host.trim_start_matches('[').trim_end_matches(']'),
    )
    .port(server.port)
    .timeout(Some(timeout))
    .hello_name(ClientId::Domain(helo.to_owned()))
    .tls(tls);
    if let (Some(login), Some(password)) = (&server.login, &server.password) {
        b = b
            .credentials(Credentials::new(login.clone(), password.to_string()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    let transport = b.build();
    match transport.send(message.clone()).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.status()
                .is_some_and(|c| matches!(c.to_string().as_str(), "500" | "502")) =>
        {
            if server.security != Security::None || server.login.is_some() {
                return Err(describe(e, server).map_message(|m| {
                    format!("{m}; a server without ESMTP offers neither TLS nor a login (set `security: none` and no `login` for a HELO-only relay)")
                }));
            }
            tokio::time::timeout(timeout * 4, helo_fallback(server, message, helo))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::connection(format!(
                        "no answer from `{}:{}` in time (HELO)",
                        server.host, server.port
                    )))
                })
        }
        Err(e) => Err(describe(e, server)),
    }
}

/// Hands `message` over with `HELO` (no extensions), on plain TCP.
async fn helo_fallback(server: &Server, message: &Message, helo: &str) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let at = format!("`{}:{}`", server.host, server.port);
    let io =
        |text: String, e: std::io::Error| Error::connection(format!("{text}: {e}")).with_source(e);
    let tcp = tokio::net::TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|e| io(format!("cannot connect to {at}"), e))?;
    let mut r = BufReader::new(tcp);
    let mut step = async |line: Option<String>, what: &str, want: u8| -> Result<()> {
        if let Some(l) = line {
            r.get_mut()
                .write_all(l.as_bytes())
                .await
                .map_err(|e| io(format!("sending {what} to {at}"), e))?;
        }
        loop {
            let mut reply = String::new();
            (&mut r)
                .take(4096)
                .read_line(&mut reply)
                .await
                .map_err(|e| io(format!("reading {at}'s answer to {what}"), e))?;
            let reply = reply.trim_end();
            let code = reply
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
            let Some(code) = code else {
                return Err(Error::connection(format!(
                    "{at} answered {what} with `{}`",
                    reply.chars().take(200).collect::<String>()
                )));
            };
            if reply.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            if code.as_bytes()[0] != want {
                return Err(Error::new(
                    ErrorKind::CommandFailed,
                    format!(
                        "{at} refused {what}: {}",
                        reply.chars().take(300).collect::<String>()
                    ),
                ));
            }
            return Ok(());
        }
    };
    step(None, "the connection", b'2').await?;
    step(Some(format!("HELO {helo}\r\n")), "HELO", b'2').await?;
    let envelope = message.envelope();
    let from = envelope.from().map(ToString::to_string).unwrap_or_default();
    step(Some(format!("MAIL FROM:<{from}>\r\n")), "the sender", b'2').await?;
    for to in envelope.to() {
        step(
            Some(format!("RCPT TO:<{to}>\r\n")),
            &format!("recipient `{to}`"),
            b'2',
        )
        .await?;
    }
    step(Some("DATA\r\n".into()), "DATA", b'3').await?;
    let formatted = message.formatted();
    let mut data = Vec::with_capacity(formatted.len() + 64);
    for (i, line) in formatted.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            data.push(b'\n');
        }
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b"\r\n.\r\n");
    step(
        Some(String::from_utf8_lossy(&data).into_owned()),
        "the message",
        b'2',
    )
    .await?;
    let _ = step(Some("QUIT\r\n".into()), "QUIT", b'2').await;
    Ok(())
}

/// What went wrong, in words: the server's code and reply when it refused (`CommandFailed`), the
/// cause otherwise (`Connection`); `e` is the source.
fn describe(e: lettre::transport::smtp::Error, server: &Server) -> Error {
    let (kind, message) = describe_text(&e, server);
    Error::new(kind, message).with_source(e)
}

fn describe_text(e: &lettre::transport::smtp::Error, server: &Server) -> (ErrorKind, String) {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let said = s.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = s.source();
    }
    let text: String = text.chars().take(300).collect();
    if let Some(code) = e.status() {
        let text = text
            .split_once("): ")
            .map_or(text.as_str(), |(_, t)| t)
            .to_owned();
        (
            ErrorKind::CommandFailed,
            format!(
                "`{}:{}` refused the mail: {code} {text}",
                server.host, server.port
            ),
        )
    } else if e.is_timeout() {
        (
            ErrorKind::Connection,
            format!("no answer from `{}:{}` in time", server.host, server.port),
        )
    } else if e.is_tls() {
        (
            ErrorKind::Connection,
            format!("TLS with `{}:{}`: {text}", server.host, server.port),
        )
    } else if text.contains("STARTTLS is not supported") {
        (
            ErrorKind::Connection,
            format!(
                "`{}` does not offer STARTTLS (set `security: tls` or `security: none`)",
                server.host
            ),
        )
    } else {
        (
            ErrorKind::Connection,
            format!(
                "cannot connect to `{}:{}` or send the mail: {text}",
                server.host, server.port
            ),
        )
    }
}

/// A header value on one line (CR and LF would start a new header).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

fn mailbox(text: &str) -> Result<Mailbox> {
    one_line(text).trim().parse::<Mailbox>().map_err(|e| {
        Error::config(format!(
            "`{}` is not a usable email address: {e}",
            one_line(text)
        ))
        .with_source(e)
    })
}

/// The message: `From` is `from` as written (`Name <address>`, names in any script), `To` each of
/// `to`; the envelope is `envelope_from` to the addresses of `to`. `now` is the `Date` (seconds
/// since the epoch, UTC).
///
/// The body's last line break is left out: lettre ends DATA with `CRLF . CRLF` whatever the
/// message ends with, and that first CRLF ends the last line (RFC 5321, 4.1.1.4). Given with its
/// line break, every body would arrive with a blank line added at its end.
pub(crate) fn message(
    from: &str,
    envelope_from: &str,
    to: &[String],
    subject: &str,
    body: &str,
    now: u64,
) -> Result<Message> {
    let nanos = crate::clock::now_nanos() % 1_000_000_000;
    let domain = envelope_from
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d);
    let mut b = Message::builder()
        .from(mailbox(from)?)
        .subject(one_line(subject))
        .date(UNIX_EPOCH + Duration::from_secs(now))
        .message_id(Some(format!(
            "<cchq.{now}.{nanos}.{}@{domain}>",
            std::process::id()
        )))
        .header(ContentType::TEXT_PLAIN);
    let mut rcpt: Vec<Address> = Vec::with_capacity(to.len());
    for t in to {
        let m = mailbox(t)?;
        rcpt.push(m.email.clone());
        b = b.to(m);
    }
    let sender = mailbox(envelope_from)?.email;
    let envelope = Envelope::new(Some(sender), rcpt).map_err(|e| {
        Error::config(format!("the mail has no usable recipient: {e}")).with_source(e)
    })?;
    let body = body
        .strip_suffix('\n')
        .map_or(body, |b| b.strip_suffix('\r').unwrap_or(b));
    b.envelope(envelope)
        .body(body.to_owned())
        .map_err(|e| Error::internal(format!("cannot build the mail: {e}")).with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Message) -> String {
        String::from_utf8(m.formatted()).unwrap()
    }

    fn head(m: &str) -> &str {
        m.split("\r\n\r\n").next().unwrap()
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn dates_are_rfc_5322() {
        let m = message("a@b.c", "a@b.c", &["x@y.z".into()], "s", "b", 1_795_710_312).unwrap();
        assert!(
            text(&m).contains("Date: Thu, 26 Nov 2026 16:25:12 +0000\r\n"),
            "{}",
            text(&m)
        );
    }

    #[test]
    fn headers_stay_on_one_line_and_utf8_is_encoded() {
        let m = text(
            &message(
                "a@b.c",
                "a@b.c",
                &["x@y.z".into()],
                "hi\r\nBcc: evil@x",
                "body\n.dot\n",
                0,
            )
            .unwrap(),
        );
        assert!(!m.contains("\r\nBcc:"), "{m}");
        assert!(head(&m).contains("Subject: hi  Bcc: evil@x"), "{m}");
        let m = text(
            &message(
                "Équipe Déploiement <a@b.c>",
                "a@b.c",
                &["Zoë <x@y.z>".into()],
                "déploiement",
                "é\n",
                0,
            )
            .unwrap(),
        );
        assert!(m.is_ascii(), "headers and body are 7-bit: {m}");
        assert!(head(&m).contains("Subject: =?utf-8?"), "{m}");
        assert!(head(&m).contains("From: =?utf-8?"), "{m}");
        assert!(head(&m).contains("To: =?utf-8?"), "{m}");
    }

    #[test]
    fn long_subjects_are_folded() {
        let subject = "[cchq] production: deploy of commcare release 2026-11-26_16.05.12 by someone.with.a.long.name@example.org FAILED on 200 hosts";
        let m = text(&message("a@b.c", "a@b.c", &["x@y.z".into()], subject, "b\n", 0).unwrap());
        assert!(head(&m).lines().all(|l| l.len() <= 78), "{m}");
        let unfolded = head(&m).replace("\r\n ", " ");
        assert!(unfolded.contains(&format!("Subject: {subject}")), "{m}");
    }

    #[test]
    fn the_body_ends_as_written() {
        // The DATA terminator's CRLF ends the last line.
        let m = text(
            &message(
                "a@b.c",
                "a@b.c",
                &["x@y.z".into()],
                "s",
                "one\n\n-- \nsent by cchq\n",
                0,
            )
            .unwrap(),
        );
        assert!(
            m.ends_with("\r\n\r\none\r\n\r\n-- \r\nsent by cchq"),
            "{m:?}"
        );
        let m =
            text(&message("a@b.c", "a@b.c", &["x@y.z".into()], "s", "no line break", 0).unwrap());
        assert!(m.ends_with("\r\n\r\nno line break"), "{m:?}");
    }

    #[test]
    fn the_envelope_holds_the_bare_addresses() {
        let m = message(
            "cchq <deploys@example.org>",
            "deploys@example.org",
            &["ops@example.org".into(), "Dev <dev@example.org>".into()],
            "s",
            "b",
            0,
        )
        .unwrap();
        let e = m.envelope();
        assert_eq!(
            e.from().map(ToString::to_string).as_deref(),
            Some("deploys@example.org")
        );
        assert_eq!(
            e.to().iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["ops@example.org", "dev@example.org"]
        );
        assert!(
            message("a@b.c", "a@b.c", &["not an address".into()], "s", "b", 0)
                .unwrap_err()
                .message()
                .contains("not an address")
        );
    }
}
