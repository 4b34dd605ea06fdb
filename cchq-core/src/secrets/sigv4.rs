//! AWS Signature Version 4 for one HTTP request (headers, not presigned URLs), as AWS documents it:
//! canonical request, string to sign, the derived key (`AWS4<secret>` → date → region → service →
//! `aws4_request`), and the `Authorization` header. Checked against AWS's published test suite.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

/// AWS credentials: an access key pair and, for temporary credentials, a session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<secret>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<secret>"),
            )
            .finish()
    }
}

/// A request to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The path, not yet percent-encoded (`/`).
    pub path: &'a str,
    /// The query string as sent (`a=1&b=2`), or empty.
    pub query: &'a str,
    /// Every header to sign, `Host` and `X-Amz-Date` (and `X-Amz-Security-Token`) included.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// Where a signature is valid: region, service, time.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `us-east-1`.
    pub region: &'a str,
    /// `secretsmanager`.
    pub service: &'a str,
    /// `20150830T123600Z` (the request's `X-Amz-Date`).
    pub amz_date: &'a str,
}

/// The lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The signing key of `secret` for a day (`20150830`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (`/` kept when `path`).
fn uri_encode(s: &str, path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (path && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical query: parameters sorted by name then value, each side encoded.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, false), uri_encode(v, false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request and the signed header list.
pub fn canonical_request(req: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    // Repeated headers sign as one, their values joined by commas in order.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in headers {
        match merged.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let signed = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = merged.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let path = if req.path.is_empty() {
        "/".to_owned()
    } else {
        uri_encode(req.path, true)
    };
    let text = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed}\n{}",
        req.method,
        canonical_query(req.query),
        sha256_hex(req.body)
    );
    (text, signed)
}

/// The `Authorization` header value for `req`.
pub fn authorization(req: &Request<'_>, scope: &Scope<'_>, creds: &Credentials) -> String {
    let (canonical, signed) = canonical_request(req);
    let date = scope.amz_date.get(..8).unwrap_or(scope.amz_date);
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{credential_scope}\n{}",
        scope.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(&creds.secret_access_key, date, scope.region, scope.service);
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

/// `time` as `X-Amz-Date` wants it: `20150830T123600Z` (UTC).
pub fn amz_date(time: std::time::SystemTime) -> String {
    crate::clock::iso8601_basic(crate::clock::secs_since_epoch(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of AWS's SigV4 test suite (`aws-sig-v4-test-suite`).
    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    const SCOPE: Scope<'static> = Scope {
        region: "us-east-1",
        service: "service",
        amz_date: "20150830T123600Z",
    };
    const PREFIX: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=";

    #[test]
    fn the_date_is_formatted_as_aws_wants_it() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(at), "20150830T123600Z");
    }

    /// `get-vanilla`: the canonical request, the hash of the string to sign, the signature.
    #[test]
    fn get_vanilla_matches_the_aws_test_suite() {
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let (canonical, signed) = canonical_request(&req);
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-amz-date");
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            authorization(&req, &SCOPE, &example()),
            format!(
                "{PREFIX}host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    /// `get-vanilla-query-order-key-case`, `post-vanilla`, `post-x-www-form-urlencoded`.
    #[test]
    fn more_of_the_aws_test_suite() {
        let base = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let get = Request {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &base,
            body: b"",
        };
        assert_eq!(
            authorization(&get, &SCOPE, &example()),
            format!(
                "{PREFIX}host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
        let post = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &base,
            body: b"",
        };
        assert_eq!(
            authorization(&post, &SCOPE, &example()),
            format!(
                "{PREFIX}host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            )
        );
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let form = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"Param1=value1",
        };
        assert_eq!(
            authorization(&form, &SCOPE, &example()),
            format!(
                "{PREFIX}content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );
    }

    #[test]
    fn credentials_never_show_their_secrets() {
        let c = Credentials {
            session_token: Some("tok-en".into()),
            ..example()
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("AKIDEXAMPLE")
                && !shown.contains("EXAMPLEKEY")
                && !shown.contains("tok-en"),
            "{shown}"
        );
    }
}
