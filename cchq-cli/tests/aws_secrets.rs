//! `secrets_backend: aws-secrets`: `cchq ENV secrets view/edit` against moto's Secrets Manager
//! (`moto_server` on 127.0.0.1; skipped, saying why, without it: `tests/run-all` installs it into
//! `/tmp/cchq-moto-venv`), and against a stand-in answering AWS's errors. Never real AWS.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn all(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Environment variables of the AWS SDKs, removed so the developer's own never leak in.
const AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETSMANAGER",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_CA_BUNDLE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
];

/// A temporary environments root with `staging` (`secrets_backend: aws-secrets`) and a `HOME`
/// without `~/.aws`.
struct Bed {
    tmp: tempfile::TempDir,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("envs/staging");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        std::fs::write(dir.join("meta.yml"), "deploy_env: staging\nenv_monitoring_id: staging\nusers: []\nsecrets_backend: aws-secrets\n")
            .unwrap();
        std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
        std::fs::write(
            dir.join("inventory.ini"),
            "[webworkers]\nweb1 ansible_connection=local\n",
        )
        .unwrap();
        Self { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("envs")
    }

    /// `cchq --environments ROOT ARGS` with exactly the AWS settings `aws`, `stdin` fed.
    fn cchq(&self, args: &[&str], aws: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cchq"));
        c.arg("--environments")
            .arg(self.root())
            .args(args)
            .env_remove("CCHQ_ENVIRONMENTS")
            .env("HOME", self.tmp.path().join("home"));
        for v in AWS_VARS {
            c.env_remove(v);
        }
        c.envs(aws.iter().copied());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

/// `moto_server` on a free port of 127.0.0.1, killed (by its own handle) when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_program() -> Option<PathBuf> {
    let venv = std::env::var_os("CCHQ_MOTO_VENV")
        .map_or_else(|| PathBuf::from("/tmp/cchq-moto-venv"), PathBuf::from);
    let in_venv = venv.join("bin/moto_server");
    if in_venv.is_file() {
        return Some(in_venv);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("moto_server"))
        .find(|p| p.is_file())
}

/// Says why `test` is skipped; a failure instead when `CCHQ_REQUIRE_MOTO=1` (tests/run-all sets
/// it once it has installed moto, so that a moto that does not start fails CI).
fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CCHQ_REQUIRE_MOTO").as_deref() != Ok("1"),
        "{test}: CCHQ_REQUIRE_MOTO=1 but {why}"
    );
    eprintln!("skipping {test}: {why}");
}

/// moto, or `None` after saying why the test is skipped.
fn moto(test: &str) -> Option<Moto> {
    let Some(program) = moto_program() else {
        skip(
            test,
            "no moto_server (tests/run-all installs it; or `python3 -m venv /tmp/cchq-moto-venv && /tmp/cchq-moto-venv/bin/pip install 'moto[server]'`)",
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            skip(test, &format!("cannot start `{}`: {e}", program.display()));
            return None;
        }
    };
    let mut m = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = m.child.try_wait() {
            skip(test, &format!("`{}` exited ({status})", program.display()));
            return None;
        }
        if start.elapsed() > Duration::from_secs(30) {
            skip(
                test,
                &format!("moto_server did not listen on port {port} within 30s"),
            );
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(m)
}

fn creds(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, x)| (*k, x.as_str())).collect()
}

#[test]
fn secrets_view_and_edit_on_aws_secrets_manager() {
    let Some(moto) = moto("secrets_view_and_edit_on_aws_secrets_manager") else {
        return;
    };
    let bed = Bed::new();
    let aws = creds(&moto.url);
    let aws = refs(&aws);

    // Nothing yet.
    let out = bed.cchq(&["staging", "secrets", "view"], &aws, None);
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("holds no secret `commcare-staging/...`"),
        "{}",
        all(&out)
    );

    // A missing secret: its name and the region, and how to create it.
    let out = bed.cchq(&["staging", "secrets", "view", "SECRET_KEY"], &aws, None);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert_eq!(
        text(&out.stderr),
        "error: AWS Secrets Manager has no secret `commcare-staging/SECRET_KEY` (region `us-east-1` from AWS_REGION)\n\
         hint: create it with `cchq staging secrets edit SECRET_KEY`, or check the region (terraform.yml `region`, AWS_REGION)\n"
    );

    // Edits: a new secret is created, an existing one updated, a path merged, YAML from stdin.
    let out = bed.cchq(
        &[
            "staging",
            "secrets",
            "edit",
            "SECRET_KEY",
            "--value",
            "first 'key'",
        ],
        &aws,
        None,
    );
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stderr).contains(
            "created `SECRET_KEY` in AWS Secrets Manager (secret `commcare-staging/SECRET_KEY`)"
        ),
        "{}",
        all(&out)
    );
    let out = bed.cchq(
        &[
            "staging",
            "secrets",
            "edit",
            "localsettings_private.SECRET_KEY",
            "--from-stdin",
        ],
        &aws,
        Some("new \"key\" $x\n"),
    );
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("updated `localsettings_private.SECRET_KEY`"),
        "{}",
        all(&out)
    );
    for (name, value) in [
        ("POSTGRES_USERS.commcare.username", "commcarehq"),
        ("POSTGRES_USERS.commcare.password", "pg-SENTINEL"),
    ] {
        let out = bed.cchq(
            &["staging", "secrets", "edit", name, "--value", value],
            &aws,
            None,
        );
        assert!(out.status.success(), "{}", all(&out));
    }
    let out = bed.cchq(
        &[
            "staging",
            "secrets",
            "edit",
            "SIMPLE_API_KEYS",
            "--from-stdin",
            "--yaml",
        ],
        &aws,
        Some("- a\n- 2\n"),
    );
    assert!(out.status.success(), "{}", all(&out));

    // View all: every secret by name, as YAML; view one, a path, a vault-style name.
    let out = bed.cchq(&["staging", "secrets", "view"], &aws, None);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(
        text(&out.stdout),
        "POSTGRES_USERS:\n  commcare:\n    password: pg-SENTINEL\n    username: commcarehq\nSECRET_KEY: new \"key\" $x\nSIMPLE_API_KEYS:\n- a\n- 2\n"
    );
    let out = bed.cchq(&["staging", "secrets", "view", "SECRET_KEY"], &aws, None);
    assert_eq!(text(&out.stdout), "new \"key\" $x\n", "{}", all(&out));
    let out = bed.cchq(
        &[
            "staging",
            "secrets",
            "view",
            "secrets.POSTGRES_USERS.commcare.password",
        ],
        &aws,
        None,
    );
    assert_eq!(text(&out.stdout), "pg-SENTINEL\n", "{}", all(&out));
    let out = bed.cchq(
        &["staging", "secrets", "view", "POSTGRES_USERS.nobody"],
        &aws,
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("hint: its keys: commcare"),
        "{}",
        all(&out)
    );
    assert!(
        !text(&out.stderr).contains("SENTINEL"),
        "no value in errors: {}",
        all(&out)
    );

    // Stored as commcare-cloud stores them: JSON, read back by moto's own API.
    let stored = get_secret_string(&moto.url, "commcare-staging/SECRET_KEY");
    assert_eq!(stored.as_deref(), Some(r#""new \"key\" $x""#));

    // Another region holds none of them.
    let mut other = aws.clone();
    other.retain(|(k, _)| *k != "AWS_REGION");
    other.push(("AWS_REGION", "eu-west-1"));
    let out = bed.cchq(&["staging", "secrets", "view", "SECRET_KEY"], &other, None);
    assert!(
        text(&out.stderr).contains("(region `eu-west-1` from AWS_REGION)"),
        "{}",
        all(&out)
    );
    // terraform.yml's region is the environment's (commcare-cloud pins it).
    std::fs::write(
        bed.root().join("staging/terraform.yml"),
        "aws_profile: acct\nregion: us-east-1\n",
    )
    .unwrap();
    let out = bed.cchq(&["staging", "secrets", "view", "SECRET_KEY"], &other, None);
    assert_eq!(text(&out.stdout), "new \"key\" $x\n", "{}", all(&out));
}

/// `GetSecretValue` by hand: moto's answer, read without cchq.
fn get_secret_string(endpoint: &str, id: &str) -> Option<String> {
    let python = moto_program()?.with_file_name("python");
    let script = "import boto3,sys\nc=boto3.client('secretsmanager',region_name='us-east-1',endpoint_url=sys.argv[1],aws_access_key_id='t',aws_secret_access_key='t')\nprint(c.get_secret_value(SecretId=sys.argv[2])['SecretString'],end='')";
    let out = Command::new(python)
        .args(["-c", script, endpoint, id])
        .output()
        .ok()?;
    out.status.success().then(|| text(&out.stdout))
}

/// A stand-in that answers every request with AWS's `AccessDeniedException`.
fn access_denied_stub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            let mut target = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("x-amz-target:") {
                    target = v.trim().trim_start_matches("secretsmanager.").to_owned();
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let answer = format!(
                r#"{{"__type":"AccessDeniedException","Message":"User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:{target}"}}"#
            );
            let _ = write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: AccessDeniedException\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

#[test]
fn access_denied_is_an_error_naming_the_secret_and_region() {
    let bed = Bed::new();
    let url = access_denied_stub();
    let aws = creds(&url);
    let aws = refs(&aws);
    let out = bed.cchq(&["staging", "secrets", "view", "SECRET_KEY"], &aws, None);
    assert_eq!(out.status.code(), Some(6), "{}", all(&out));
    assert_eq!(
        text(&out.stderr),
        "error: access denied: GetSecretValue of secret `commcare-staging/SECRET_KEY` in AWS Secrets Manager (region `us-east-1` from \
         AWS_REGION), with the credentials of AWS_ACCESS_KEY_ID\n\
         hint: that identity needs `secretsmanager:GetSecretValue` on `arn:aws:secretsmanager:us-east-1:*:secret:commcare-staging/*`; or use \
         another profile (AWS_PROFILE)\n"
    );
    let out = bed.cchq(
        &[
            "staging",
            "secrets",
            "edit",
            "SECRET_KEY",
            "--value",
            "v-SENTINEL",
        ],
        &aws,
        None,
    );
    assert_eq!(out.status.code(), Some(6), "{}", all(&out));
    assert!(
        text(&out.stderr)
            .contains("access denied: PutSecretValue of secret `commcare-staging/SECRET_KEY`"),
        "{}",
        all(&out)
    );
    assert!(!all(&out).contains("v-SENTINEL"));
}

#[test]
fn no_credentials_is_an_error_listing_where_cchq_looked() {
    let bed = Bed::new();
    // Nothing listens there: the instance metadata service is absent, as off EC2.
    let closed = format!(
        "http://127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let out = bed.cchq(
        &["staging", "secrets", "view"],
        &[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(6), "{}", all(&out));
    let err = text(&out.stderr);
    let home = bed.tmp.path().join("home/.aws");
    assert!(
        err.starts_with(
            "error: no AWS credentials for the secrets of `staging`; looked at: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set); "
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "profile `default` in `{}` and `{}`",
            home.join("credentials").display(),
            home.join("config").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("the EC2 instance metadata service at `{closed}`")),
        "{err}"
    );
    assert!(
        err.contains("\nhint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    // Settings are rendered with the same secrets: update-config stops on the same error first.
    let out = bed.cchq(
        &["staging", "update-config", "--check"],
        &[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(6), "{}", all(&out));
    assert!(
        text(&out.stderr).starts_with("error: no AWS credentials for the secrets of `staging`"),
        "{}",
        all(&out)
    );
}

/// aws.yml: `credential_style: sso` makes the hint say how to sign in by SSO and which profile
/// cchq reads; a key commcare-cloud's schema lacks is refused, naming the file.
#[test]
fn aws_yml_shapes_the_sign_in_hint_and_is_strict() {
    let bed = Bed::new();
    let dir = bed.root().join("staging");
    std::fs::write(
        dir.join("terraform.yml"),
        "aws_profile: acct\nregion: us-east-1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("aws.yml"),
        "credential_style: sso\nsso_config:\n  sso_start_url: https://corp.awsapps.com/start\n  sso_region: us-east-1\n  sso_account_id: '111122223333'\n  region: us-east-1\n",
    )
    .unwrap();
    let closed = format!(
        "http://127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let aws = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed.as_str()),
    ];
    let out = bed.cchq(&["staging", "secrets", "view"], &aws, None);
    assert_eq!(out.status.code(), Some(6), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: no AWS credentials for the secrets of `staging`; looked at: "),
        "{err}"
    );
    assert!(
        err.contains("profile `acct:session`, `acct`, `default` in"),
        "{err}"
    );
    assert!(
        err.contains(
            "\nhint: aws.yml has `credential_style: sso`: sign in with `commcare-cloud staging aws-sign-in` (AWS SSO, start URL \
             `https://corp.awsapps.com/start`, region `us-east-1`, account `111122223333`), which writes the session's keys to \
             profile `acct:session` in ~/.aws/credentials, where cchq reads them; or `aws sso login --profile acct:session`"
        ),
        "{err}"
    );
    std::fs::write(
        dir.join("aws.yml"),
        "credential_style: sso\nsso_acount_id: '1'\n",
    )
    .unwrap();
    let out = bed.cchq(&["staging", "secrets", "view"], &aws, None);
    assert!(!out.status.success(), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("aws.yml") && err.contains("unknown field `sso_acount_id`"),
        "{err}"
    );
}
