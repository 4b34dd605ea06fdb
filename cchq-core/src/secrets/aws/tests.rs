//! The client against a small Secrets Manager stand-in on 127.0.0.1 (and an instance metadata
//! one): requests signed and shaped as AWS wants them, errors as the operator should see them.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::*;

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: J,
}

type Handler = dyn Fn(&Seen, &mut BTreeMap<String, String>) -> (u16, String) + Send + Sync;

/// A stand-in HTTP server: `handler` answers each request, given a store of secrets.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    store: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Stub {
    fn start(handler: Box<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(Mutex::new(BTreeMap::new()));
        let (s2, st2) = (Arc::clone(&seen), Arc::clone(&store));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or_default().to_owned(),
                    parts.next().unwrap_or_default().to_owned(),
                );
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len = headers
                    .get("content-length")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                let seen = Seen {
                    method,
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(J::Null),
                };
                let (status, answer) = handler(&seen, &mut st2.lock().unwrap());
                s2.lock().unwrap().push(seen);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Self { url, seen, store }
    }

    /// A Secrets Manager with `secrets` (full name -> SecretString) that refuses the operations
    /// in `denied`.
    fn secrets_manager(secrets: &[(&str, &str)], denied: &'static [&'static str]) -> Self {
        let stub = Self::start(Box::new(move |req, store| {
            let op = req
                .headers
                .get("x-amz-target")
                .and_then(|t| t.strip_prefix("secretsmanager."))
                .unwrap_or_default()
                .to_owned();
            let err = |code: &str, msg: &str| {
                (400, json!({ "__type": code, "message": msg }).to_string())
            };
            if denied.contains(&op.as_str()) {
                return err(
                    "AccessDeniedException",
                    &format!(
                        "User: arn:aws:iam::123:user/x is not authorized to perform: secretsmanager:{op}"
                    ),
                );
            }
            let id = req
                .body
                .get("SecretId")
                .or_else(|| req.body.get("Name"))
                .and_then(J::as_str)
                .unwrap_or_default()
                .to_owned();
            match op.as_str() {
                "GetSecretValue" => match store.get(&id) {
                    Some(v) => (200, json!({ "Name": id, "SecretString": v }).to_string()),
                    None => err(
                        "ResourceNotFoundException",
                        "Secrets Manager can't find the specified secret.",
                    ),
                },
                "PutSecretValue" if store.contains_key(&id) => {
                    store.insert(
                        id.clone(),
                        req.body["SecretString"].as_str().unwrap().to_owned(),
                    );
                    (200, json!({ "Name": id }).to_string())
                }
                "PutSecretValue" => err(
                    "ResourceNotFoundException",
                    "Secrets Manager can't find the specified secret.",
                ),
                "CreateSecret" => {
                    store.insert(
                        id.clone(),
                        req.body["SecretString"].as_str().unwrap().to_owned(),
                    );
                    (200, json!({ "Name": id }).to_string())
                }
                "ListSecrets" => {
                    let prefix = req.body["Filters"][0]["Values"][0]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let list: Vec<J> = store
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .map(|k| json!({ "Name": k }))
                        .collect();
                    (200, json!({ "SecretList": list }).to_string())
                }
                _ => err("InvalidAction", "no"),
            }
        }));
        for (k, v) in secrets {
            stub.store
                .lock()
                .unwrap()
                .insert((*k).to_owned(), (*v).to_owned());
        }
        stub
    }
}

fn staging() -> AwsSecrets {
    AwsSecrets {
        env_name: "staging".into(),
        prefix: "commcare-staging".into(),
        region: None,
        aws_profile: None,
        aws_config: AwsConfig::default(),
    }
}

/// Credentials and region from variables, the endpoint the stub, nothing from `~/.aws`.
fn vars(stub: &Stub, extra: &[(&str, &str)]) -> AwsEnv {
    let mut v: BTreeMap<String, String> = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "sekrit-access-key"),
        ("AWS_REGION", "us-test-1"),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", stub.url.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", "/nonexistent"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, x) in extra {
        v.insert((*k).to_owned(), (*x).to_owned());
    }
    AwsEnv::from_vars(v)
}

#[test]
fn secrets_are_read_written_and_signed_as_aws_wants() {
    let stub = Stub::secrets_manager(
        &[
            ("commcare-staging/SECRET_KEY", "\"k3y\""),
            (
                "commcare-staging/POSTGRES_USERS",
                r#"{"commcare": {"username": "u", "password": "p"}}"#,
            ),
            ("commcare-other/SECRET_KEY", "\"not ours\""),
        ],
        &[],
    );
    let env = vars(&stub, &[("AWS_SESSION_TOKEN", "sess-token")]);
    let s = staging();
    let all = s.fetch_all(&env).unwrap();
    assert_eq!(
        all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["POSTGRES_USERS", "SECRET_KEY"]
    );
    let shaped = s.vault_value(&env).unwrap();
    assert_eq!(
        crate::vault::edit::lookup(&shaped, "localsettings_private.SECRET_KEY")
            .and_then(Value::as_str),
        Some("k3y")
    );
    assert_eq!(
        crate::vault::edit::lookup(&shaped, "secrets.POSTGRES_USERS.commcare.password")
            .and_then(Value::as_str),
        Some("p")
    );

    // Every request: POST / in JSON 1.1, signed for the region and service, with the token.
    {
        let seen = stub.seen.lock().unwrap();
        let first = &seen[0];
        assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/"));
        assert_eq!(first.headers["x-amz-target"], "secretsmanager.ListSecrets");
        assert_eq!(first.headers["content-type"], "application/x-amz-json-1.1");
        assert_eq!(first.headers["x-amz-security-token"], "sess-token");
        let auth = &first.headers["authorization"];
        let date = &first.headers["x-amz-date"][..8];
        assert!(
            auth.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/{date}/us-test-1/secretsmanager/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="
            )),
            "{auth}"
        );
        assert_eq!(
            first.body["Filters"][0],
            json!({ "Key": "name", "Values": ["commcare-staging/"] })
        );
    }

    // One secret, a path into one, vault-style names, a missing one.
    assert_eq!(
        s.view(&env, "SECRET_KEY").unwrap(),
        Value::String("k3y".into())
    );
    assert_eq!(
        s.view(&env, "localsettings_private.SECRET_KEY").unwrap(),
        Value::String("k3y".into())
    );
    assert_eq!(
        s.view(&env, "POSTGRES_USERS.commcare.username").unwrap(),
        Value::String("u".into())
    );
    let e = s.view(&env, "NOPE").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.message(),
        "AWS Secrets Manager has no secret `commcare-staging/NOPE` (region `us-test-1` from AWS_REGION)"
    );
    assert!(
        e.hint().unwrap().contains("cchq staging secrets edit NOPE"),
        "{:?}",
        e.hint()
    );
    let e = s.view(&env, "POSTGRES_USERS.nobody").unwrap_err();
    assert_eq!(e.hint(), Some("its keys: commcare"));
    assert_eq!(s.get(&env, "NOPE").unwrap(), None);

    // Edits: JSON-encoded, put when the secret exists, created when not, paths merged.
    assert!(
        s.set(&env, "SECRET_KEY", Value::String("n\"ew".into()))
            .unwrap()
    );
    assert!(
        !s.set(&env, "ansible_sudo_pass", Value::String("sudo".into()))
            .unwrap()
    );
    assert!(
        s.set(
            &env,
            "secrets.POSTGRES_USERS.commcare.password",
            Value::String("p2".into())
        )
        .unwrap()
    );
    assert!(!s.set(&env, "NEW.a.b", Value::from(3)).unwrap());
    let store = stub.store.lock().unwrap().clone();
    assert_eq!(store["commcare-staging/SECRET_KEY"], r#""n\"ew""#);
    assert_eq!(store["commcare-staging/ansible_sudo_pass"], r#""sudo""#);
    assert_eq!(
        serde_json::from_str::<J>(&store["commcare-staging/POSTGRES_USERS"]).unwrap(),
        json!({"commcare": {"username": "u", "password": "p2"}})
    );
    assert_eq!(store["commcare-staging/NEW"], r#"{"a":{"b":3}}"#);
    let seen = stub.seen.lock().unwrap();
    let create = seen
        .iter()
        .find(|r| r.headers["x-amz-target"] == "secretsmanager.CreateSecret")
        .unwrap();
    assert_eq!(
        create.body["ClientRequestToken"].as_str().map(str::len),
        Some(36)
    );
}

#[test]
fn access_denied_names_the_secret_the_region_and_the_permission() {
    let stub = Stub::secrets_manager(
        &[("commcare-staging/SECRET_KEY", "\"k3y\"")],
        &["GetSecretValue"],
    );
    let env = vars(&stub, &[]);
    for e in [
        staging().view(&env, "SECRET_KEY").unwrap_err(),
        staging().fetch_all(&env).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Vault);
        assert_eq!(
            e.message(),
            "access denied: GetSecretValue of secret `commcare-staging/SECRET_KEY` in AWS Secrets Manager \
             (region `us-test-1` from AWS_REGION), with the credentials of AWS_ACCESS_KEY_ID"
        );
        assert!(
            e.hint().unwrap().contains("`secretsmanager:GetSecretValue` on `arn:aws:secretsmanager:us-test-1:*:secret:commcare-staging/*`")
        );
    }
}

#[test]
fn without_list_permission_the_known_secrets_are_read_one_by_one() {
    let stub = Stub::secrets_manager(
        &[
            ("commcare-staging/SECRET_KEY", "\"k3y\""),
            ("commcare-staging/MINE", "1"),
        ],
        &["ListSecrets"],
    );
    let all = staging().fetch_all(&vars(&stub, &[])).unwrap();
    // MINE is not a name commcare-cloud knows: it cannot be found without ListSecrets.
    assert_eq!(
        all,
        vec![("SECRET_KEY".to_owned(), Value::String("k3y".into()))]
    );
    let gets = stub
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.headers["x-amz-target"] == "secretsmanager.GetSecretValue")
        .count();
    assert_eq!(gets, crate::secrets::KNOWN_SECRETS.len());
}

#[test]
fn values_that_are_not_json_are_errors_that_do_not_show_them() {
    let stub = Stub::secrets_manager(&[("commcare-staging/SECRET_KEY", "raw-secret-value")], &[]);
    let e = staging().fetch_all(&vars(&stub, &[])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().contains("`commcare-staging/SECRET_KEY`") && e.message().contains("not JSON"),
        "{e}"
    );
    assert!(
        !e.message().contains("raw-secret-value")
            && !e.hint().unwrap().contains("raw-secret-value")
    );
}

#[test]
fn bad_credentials_and_other_aws_errors_say_what_aws_said() {
    let stub = Stub::start(Box::new(|_, _| {
        (
            400,
            json!({ "__type": "com.amazon#UnrecognizedClientException", "message": "bad token" })
                .to_string(),
        )
    }));
    let e = staging().view(&vars(&stub, &[]), "SECRET_KEY").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault);
    assert!(
        e.message().contains(
            "AWS refused the credentials of AWS_ACCESS_KEY_ID (UnrecognizedClientException)"
        ),
        "{e}"
    );
    let stub = Stub::start(Box::new(|_, _| (500, "oops".to_owned())));
    let e = staging().view(&vars(&stub, &[]), "SECRET_KEY").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.message().contains("answered HTTP 500"), "{e}");
}

#[test]
fn no_credentials_lists_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let stub = Stub::secrets_manager(&[], &[]);
    let imds = Stub::start(Box::new(|_, _| (404, String::new())));
    let s = AwsSecrets {
        aws_profile: Some("acct".into()),
        ..staging()
    };
    let env = AwsEnv::from_vars([
        ("HOME", home.path().to_str().unwrap()),
        ("AWS_REGION", "us-test-1"),
        ("AWS_ENDPOINT_URL", stub.url.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str()),
    ]);
    let e = s.fetch_all(&env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault);
    let aws = home.path().join(".aws");
    assert_eq!(
        e.message(),
        format!(
            "no AWS credentials for the secrets of `staging`; looked at: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set); \
             profile `acct:session`, `acct`, `default` in `{}` and `{}`; the EC2 instance metadata service at `{}` (HTTP 404 for /latest/api/token)",
            aws.join("credentials").display(),
            aws.join("config").display(),
            imds.url
        )
    );
    assert!(e.hint().unwrap().contains("AWS_ACCESS_KEY_ID"));
    assert!(
        stub.seen.lock().unwrap().is_empty(),
        "nothing is sent without credentials"
    );
    // An SSO profile says why it is not used.
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile acct]\nsso_session = corp\nregion = eu-x-1\n",
    )
    .unwrap();
    let e = s.fetch_all(&env).unwrap_err();
    assert!(
        e.hint()
            .unwrap()
            .starts_with("profile `acct` uses `sso_session`, which cchq does not run"),
        "{:?}",
        e.hint()
    );
}

#[test]
fn profiles_come_from_the_aws_files_as_commcare_cloud_signs_in() {
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = d\n\n[acct:session]\n# commcare-cloud aws-sign-in\naws_access_key_id = AKIDSESSION\naws_secret_access_key = s\naws_session_token = t\n",
    )
    .unwrap();
    std::fs::write(aws.join("config"), "[profile other]\nregion = eu-other-1\naws_access_key_id=AKIDOTHER\naws_secret_access_key=o\n")
        .unwrap();
    let stub = Stub::secrets_manager(&[("commcare-staging/SECRET_KEY", "\"k\"")], &[]);
    let base = [
        ("HOME", home.path().to_str().unwrap()),
        ("AWS_ENDPOINT_URL", stub.url.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        AwsEnv::from_vars(base.iter().chain(extra).map(|(k, v)| (*k, *v)))
    };
    // terraform.yml's aws_profile and region: `<profile>:session`, as commcare-cloud signs in.
    let s = AwsSecrets {
        aws_profile: Some("acct".into()),
        region: Some("us-tf-1".into()),
        ..staging()
    };
    s.view(&with(&[]), "SECRET_KEY").unwrap();
    let auth = stub.seen.lock().unwrap().last().unwrap().headers["authorization"].clone();
    assert!(
        auth.contains("Credential=AKIDSESSION/") && auth.contains("/us-tf-1/secretsmanager/"),
        "{auth}"
    );
    // AWS_PROFILE wins; its region comes from ~/.aws/config when nothing else gives one.
    staging()
        .view(&with(&[("AWS_PROFILE", "other")]), "SECRET_KEY")
        .unwrap();
    let auth = stub.seen.lock().unwrap().last().unwrap().headers["authorization"].clone();
    assert!(
        auth.contains("Credential=AKIDOTHER/") && auth.contains("/eu-other-1/"),
        "{auth}"
    );
    // Else `default`; no region at all is an error saying where to set one.
    let e = staging().view(&with(&[]), "SECRET_KEY").unwrap_err();
    assert_eq!(e.message(), "no AWS region for the secrets of `staging`");
    staging()
        .view(&with(&[("AWS_DEFAULT_REGION", "us-d-1")]), "SECRET_KEY")
        .unwrap();
    assert!(
        stub.seen.lock().unwrap().last().unwrap().headers["authorization"]
            .contains("Credential=AKIDDEFAULT/")
    );
    // An AWS_PROFILE without keys stops there.
    let e = staging()
        .view(
            &with(&[("AWS_PROFILE", "nope"), ("AWS_REGION", "r")]),
            "SECRET_KEY",
        )
        .unwrap_err();
    assert!(e.message().contains("profile `nope` in"), "{e}");
}

#[test]
fn instance_metadata_gives_credentials_with_imdsv2() {
    let imds = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/latest/api/token") if req.headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") => (200, "tok".into()),
        (_, _) if req.headers.get("x-aws-ec2-metadata-token").map(String::as_str) != Some("tok") => (401, String::new()),
        ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "web-role\n".into()),
        ("GET", "/latest/meta-data/iam/security-credentials/web-role") => {
            (200, json!({ "Code": "Success", "AccessKeyId": "AKIDIMDS", "SecretAccessKey": "x", "Token": "imds-token" }).to_string())
        }
        _ => (404, String::new()),
    }
    }));
    let stub = Stub::secrets_manager(&[("commcare-staging/SECRET_KEY", "\"k\"")], &[]);
    let env = AwsEnv::from_vars([
        ("HOME", "/nonexistent"),
        ("AWS_REGION", "us-test-1"),
        ("AWS_ENDPOINT_URL", stub.url.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str()),
    ]);
    assert_eq!(
        staging().view(&env, "SECRET_KEY").unwrap(),
        Value::String("k".into())
    );
    let seen = stub.seen.lock().unwrap();
    let last = seen.last().unwrap();
    assert!(last.headers["authorization"].contains("Credential=AKIDIMDS/"));
    assert_eq!(last.headers["x-amz-security-token"], "imds-token");
}

#[test]
fn the_environment_reads_its_backend_from_meta_yml() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("staging");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
    std::fs::write(dir.join("inventory.ini"), "h1\n").unwrap();
    std::fs::write(dir.join("vault.yml"), "not: read\n").unwrap();
    std::fs::write(
        dir.join("terraform.yml"),
        "aws_profile: acct\nregion: us-tf-1\nservers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: staging\nenv_monitoring_id: s\nusers: []\nsecrets_backend: aws-secrets\n",
    )
    .unwrap();
    let env = crate::Environment::load_dir(&dir).unwrap();
    let crate::environment::Vault::Aws(a) = &env.vault else {
        panic!("{:?}", env.vault)
    };
    assert_eq!(
        (
            a.prefix.as_str(),
            a.region.as_deref(),
            a.aws_profile.as_deref()
        ),
        ("commcare-staging", Some("us-tf-1"), Some("acct"))
    );
    assert!(env.vault.needs_opening() && env.vault.plain().is_none());
    // Settings are not rendered without the secrets.
    let e = crate::settings::require_vault(&env, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault);
    assert!(
        e.message()
            .contains("AWS Secrets Manager (`commcare-staging/...`)"),
        "{e}"
    );
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: staging\nenv_monitoring_id: s\nusers: []\nsecrets_backend: vault\n",
    )
    .unwrap();
    let e = crate::Environment::load_dir(&dir).unwrap_err();
    assert!(
        e.message()
            .ends_with("meta.yml: `secrets_backend` is `vault`"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("ansible-vault, aws-secrets"));
}

/// Settings get the AWS secrets the way they get the vault's: `SECRET_KEY` and a couch password
/// (`{{ COUCH_PASSWORD }}` in public.yml) in localsettings.py, placeholders in the public
/// rendering diffs show.
#[test]
fn settings_render_with_the_aws_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("staging");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "couch_dbs:\n  default: {host: couch1, port: 5984, name: hq, username: hq, password: '{{ COUCH_PASSWORD }}', is_https: no}\n\
         localsettings:\n  HQ_INSTANCE: shown\n",
    )
    .unwrap();
    std::fs::write(dir.join("proxy.yml"), "SITE_HOST: staging.example\n").unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nweb1\n[django_manage]\nweb1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: staging\nenv_monitoring_id: s\nusers: []\nsecrets_backend: aws-secrets\n",
    )
    .unwrap();
    let env = crate::Environment::load_dir(&dir).unwrap();
    let crate::environment::Vault::Aws(a) = &env.vault else {
        panic!()
    };
    let stub = Stub::secrets_manager(
        &[
            ("commcare-staging/SECRET_KEY", "\"aws-SENTINEL-key\""),
            ("commcare-staging/COUCH_PASSWORD", "\"couch-pw\""),
        ],
        &[],
    );
    let vault = a.vault_value(&vars(&stub, &[])).unwrap();
    crate::settings::require_vault(&env, Some(&vault)).unwrap();
    let files = crate::settings::SettingsRenderer::new(&env, Some(&vault))
        .render("web1", Some("r1"))
        .unwrap();
    let ls = &files
        .iter()
        .find(|f| f.relative_path == "localsettings.py")
        .unwrap()
        .contents;
    assert!(
        ls.contains("SECRET_KEY = 'aws-SENTINEL-key'")
            && ls.contains("'COUCH_PASSWORD': 'couch-pw',"),
        "{ls}"
    );
    assert!(ls.contains("'HQ_INSTANCE': 'shown',"), "{ls}");
    let public = crate::redact::public_vault(Some(&vault));
    let shown = crate::settings::SettingsRenderer::new(&env, public.as_ref())
        .render("web1", Some("r1"))
        .unwrap();
    assert!(
        !shown[0].contents.contains("aws-SENTINEL") && shown[0].contents.contains("__CCHQ_SECRET_")
    );
}

/// aws.yml is commcare-cloud's `AwsConfig`: its three keys only, `credential_style` `sso` or
/// `iam` (the default); `sso_config`/`ses_config` take other keys, as upstream's do.
#[test]
fn aws_yml_is_read_as_commcare_clouds_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert_eq!(AwsConfig::load(dir).unwrap(), AwsConfig::default());
    assert_eq!(AwsConfig::default().credential_style, CredentialStyle::Iam);
    std::fs::write(dir.join("aws.yml"), "\n# nothing\n").unwrap();
    assert_eq!(AwsConfig::load(dir).unwrap(), AwsConfig::default());
    std::fs::write(
        dir.join("aws.yml"),
        "credential_style: sso\nsso_config:\n  sso_start_url: https://corp.awsapps.com/start\n  sso_region: us-east-1\n  \
         sso_account_id: '111122223333'\n  region: us-east-1\n  extra: accepted\nses_config:\n  iam_username: ses\n  account_id: '444455556666'\n  \
         role_name: EmailAdmin\n  region: us-east-1\n",
    )
    .unwrap();
    let c = AwsConfig::load(dir).unwrap();
    assert_eq!(c.credential_style, CredentialStyle::Sso);
    assert_eq!(c.account_id(), Some("111122223333"));
    assert_eq!(
        c.sso_config
            .as_ref()
            .and_then(|s| s.sso_start_url.as_deref()),
        Some("https://corp.awsapps.com/start")
    );
    assert_eq!(
        c.ses_config.as_ref().and_then(|s| s.role_name.as_deref()),
        Some("EmailAdmin")
    );
    std::fs::write(dir.join("aws.yml"), "credential_style: ~\nsso_config: ~\n").unwrap();
    assert_eq!(AwsConfig::load(dir).unwrap(), AwsConfig::default());
    for (text, want) in [
        (
            "credential_style: sso\nsso_acount_id: '1'\n",
            "unknown field `sso_acount_id`",
        ),
        ("credential_style: saml\n", "unknown variant `saml`"),
        ("sso_config: {sso_account_id: [1]}\n", "invalid type"),
        ("- a list\n", "invalid type"),
        (
            "sso_config: {sso_account_id: 111122223333}\n",
            "expected a string",
        ),
    ] {
        std::fs::write(dir.join("aws.yml"), text).unwrap();
        let e = AwsConfig::load(dir).unwrap_err();
        assert!(
            e.message().contains("aws.yml") && e.message().contains(want),
            "{text}: {e}"
        );
        assert!(e.hint().unwrap().contains("AwsConfig"), "{:?}", e.hint());
    }
    // The environment refuses it when its secrets are in AWS (the only use cchq has for it).
    std::fs::write(dir.join("aws.yml"), "nope: 1\n").unwrap();
    let e = AwsSecrets::load("staging", dir).unwrap_err();
    assert!(
        e.message().contains("aws.yml") && e.message().contains("nope"),
        "{e}"
    );
    std::fs::write(dir.join("aws.yml"), "credential_style: sso\n").unwrap();
    assert_eq!(
        AwsSecrets::load("staging", dir)
            .unwrap()
            .aws_config
            .credential_style,
        CredentialStyle::Sso
    );
}

/// An instance metadata service for an instance of `account` whose role has `AKIDIMDS`.
fn imds_in(account: &'static str) -> Stub {
    Stub::start(Box::new(move |req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token") => (200, "tok".into()),
            (_, _)
                if req
                    .headers
                    .get("x-aws-ec2-metadata-token")
                    .map(String::as_str)
                    != Some("tok") =>
            {
                (401, String::new())
            }
            ("GET", "/latest/dynamic/instance-identity/document") => (
                200,
                json!({ "accountId": account, "region": "us-east-1", "instanceId": "i-1" })
                    .to_string(),
            ),
            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "web-role\n".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/web-role") => (
                200,
                json!({ "AccessKeyId": "AKIDIMDS", "SecretAccessKey": "x", "Token": "imds-token" })
                    .to_string(),
            ),
            _ => (404, String::new()),
        }
    }))
}

fn in_account(account: &str) -> AwsConfig {
    AwsConfig {
        sso_config: Some(SsoConfig {
            sso_account_id: Some(account.to_owned()),
            ..SsoConfig::default()
        }),
        ..AwsConfig::default()
    }
}

/// As commcare-cloud's `aws_sign_in`: on an EC2 instance of aws.yml's account the instance's
/// role is used, even when `<aws_profile>:session` has keys; in another account, the chain.
#[test]
fn an_instance_in_the_environments_account_uses_its_own_credentials() {
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[acct:session]\naws_access_key_id = AKIDSESSION\naws_secret_access_key = s\n",
    )
    .unwrap();
    let stub = Stub::secrets_manager(&[("commcare-staging/SECRET_KEY", "\"k\"")], &[]);
    let imds = imds_in("111122223333");
    let env = AwsEnv::from_vars([
        ("HOME", home.path().to_str().unwrap()),
        ("AWS_REGION", "us-test-1"),
        ("AWS_ENDPOINT_URL", stub.url.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str()),
    ]);
    let last_key = || stub.seen.lock().unwrap().last().unwrap().headers["authorization"].clone();
    let s = AwsSecrets {
        aws_profile: Some("acct".into()),
        aws_config: in_account("111122223333"),
        ..staging()
    };
    assert_eq!(
        s.view(&env, "SECRET_KEY").unwrap(),
        Value::String("k".into())
    );
    assert!(
        last_key().contains("Credential=AKIDIMDS/"),
        "{}",
        last_key()
    );
    assert_eq!(
        stub.seen.lock().unwrap().last().unwrap().headers["x-amz-security-token"],
        "imds-token"
    );
    let paths: Vec<String> = imds
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.contains(&"/latest/dynamic/instance-identity/document".to_owned()),
        "{paths:?}"
    );

    // Another account: the profile, as commcare-cloud signs in there.
    let s = AwsSecrets {
        aws_config: in_account("999999999999"),
        ..s
    };
    s.view(&env, "SECRET_KEY").unwrap();
    assert!(
        last_key().contains("Credential=AKIDSESSION/"),
        "{}",
        last_key()
    );
    // No account in aws.yml: the metadata service is not asked before the profiles.
    imds.seen.lock().unwrap().clear();
    let s = AwsSecrets {
        aws_config: AwsConfig::default(),
        ..s
    };
    s.view(&env, "SECRET_KEY").unwrap();
    assert!(last_key().contains("Credential=AKIDSESSION/") && imds.seen.lock().unwrap().is_empty());
    // An explicit AWS_PROFILE is the operator's choice and wins, as with boto3.
    std::fs::write(
        aws.join("credentials"),
        "[mine]\naws_access_key_id = AKIDMINE\naws_secret_access_key = m\n",
    )
    .unwrap();
    let s = AwsSecrets {
        aws_config: in_account("111122223333"),
        ..s
    };
    let mut with_profile = env.clone();
    with_profile
        .vars
        .as_mut()
        .unwrap()
        .insert("AWS_PROFILE".into(), "mine".into());
    s.view(&with_profile, "SECRET_KEY").unwrap();
    assert!(
        last_key().contains("Credential=AKIDMINE/"),
        "{}",
        last_key()
    );
}

/// Off EC2 (a metadata address that never answers) the probe for the account costs one short
/// wait, and the service is not asked again at the end of the chain.
#[test]
fn the_account_probe_is_short_off_ec2() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let h2 = Arc::clone(&held);
    std::thread::spawn(move || {
        for c in silent.incoming().flatten() {
            h2.lock().unwrap().push(c); // accepted, never answered
        }
    });
    let stub = Stub::secrets_manager(&[], &[]);
    let env = AwsEnv::from_vars([
        ("HOME", "/nonexistent"),
        ("AWS_REGION", "us-test-1"),
        ("AWS_ENDPOINT_URL", stub.url.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
    ]);
    let s = AwsSecrets {
        aws_config: in_account("111122223333"),
        ..staging()
    };
    let started = std::time::Instant::now();
    let e = s.fetch_all(&env).unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert!(
        e.message().ends_with(&format!(
            "the EC2 instance metadata service at `{url}` (no answer)"
        )),
        "{e}"
    );
    assert_eq!(held.lock().unwrap().len(), 1, "asked once");
}

/// With `credential_style: sso` the hint says how commcare-cloud signs in and what cchq reads.
#[test]
fn no_credentials_with_sso_says_how_to_sign_in() {
    let stub = Stub::secrets_manager(&[], &[]);
    let env = vars(&stub, &[("AWS_ACCESS_KEY_ID", "")]);
    let mut aws_config = in_account("111122223333");
    aws_config.credential_style = CredentialStyle::Sso;
    if let Some(c) = aws_config.sso_config.as_mut() {
        c.sso_start_url = Some("https://corp.awsapps.com/start".into());
        c.sso_region = Some("us-east-1".into());
    }
    let s = AwsSecrets {
        aws_profile: Some("acct".into()),
        aws_config,
        ..staging()
    };
    let e = s.fetch_all(&env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault);
    assert_eq!(
        e.hint().unwrap(),
        "aws.yml has `credential_style: sso`: sign in with `commcare-cloud staging aws-sign-in` (AWS SSO, start URL \
         `https://corp.awsapps.com/start`, region `us-east-1`, account `111122223333`), which writes the session's keys to profile \
         `acct:session` in ~/.aws/credentials, where cchq reads them; or `aws sso login --profile acct:session` and export them \
         (`eval \"$(aws configure export-credentials --profile acct:session --format env)\"`); or set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE to a profile with keys"
    );
    // iam (the default): the MFA sign-in.
    let s = AwsSecrets {
        aws_config: AwsConfig::default(),
        ..s
    };
    let e = s.fetch_all(&env).unwrap_err();
    assert!(
        e.hint()
            .unwrap()
            .contains("sign in with MFA with `commcare-cloud staging aws-sign-in`"),
        "{:?}",
        e.hint()
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("profile `acct:session` in ~/.aws/credentials"),
        "{:?}",
        e.hint()
    );
}
