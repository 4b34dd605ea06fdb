//! formplayer as an artifact, as commcare-cloud deploys it (`roles/formplayer`): each formplayer
//! host downloads `formplayer.jar` from `formplayer_build_url` (public.yml; commcare-cloud's
//! default: Dimagi's latest successful build on S3, `staging/` for the `staging` environment)
//! into `formplayer_build/releases/<name>/`, which `current` then points at; supervisord runs it
//! with `java -jar` and the release's `application.properties`.
//!
//! cchq adds what commcare-cloud's `get_url` does not: the jar's SHA-256 is checked against
//! `formplayer_build_sha256` when the environment gives one, else against `<url>.sha256` when the
//! build server publishes one; every host must have downloaded the same jar (a "latest" URL that
//! moves during a deploy stops it); the release records the jar's SHA-256, which stands for the
//! commit in the deploy's outcome, resumes and `list-releases`.

use serde_json::Value as J;

use crate::command::quote;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};

/// commcare-cloud's default build URL (`roles/formplayer/vars/main.yml`).
pub const DEFAULT_URL: &str =
    "https://s3.amazonaws.com/dimagi-formplayer-jars/latest-successful/formplayer.jar";
/// commcare-cloud's default build URL for the `staging` environment.
pub const STAGING_URL: &str =
    "https://s3.amazonaws.com/dimagi-formplayer-jars/staging/latest-successful/formplayer.jar";
/// The file in a formplayer release that holds its jar's SHA-256.
pub const SHA_FILE: &str = ".cchq-artifact-sha256";

/// Where the jar comes from and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The build URL (`http(s)://` or `file://`).
    pub url: String,
    /// The SHA-256 it must have (lowercase hex), when the environment gives one.
    pub sha256: Option<String>,
}

/// The build URL and checksum of `env` (public.yml's `formplayer_build_url` and
/// `formplayer_build_sha256`, Jinja resolved; commcare-cloud's default URL otherwise).
///
/// # Errors
/// A URL that is not `http(s)://` or `file://`, or holds a quote or line break; a checksum that is
/// not 64 hex digits; a variable that does not resolve.
pub fn source(env: &Environment, vars: &J) -> Result<Source> {
    let get = |k: &str| -> Option<String> {
        match vars.get(k) {
            Some(J::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        }
    };
    let url = get("formplayer_build_url").unwrap_or_else(|| {
        if env.meta.deploy_env == "staging" {
            STAGING_URL.to_owned()
        } else {
            DEFAULT_URL.to_owned()
        }
    });
    let ok_scheme = ["https://", "http://", "file:///"]
        .iter()
        .any(|p| url.starts_with(p));
    if !ok_scheme
        || url
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c.is_control())
    {
        return Err(Error::new(
            ErrorKind::Config,
            format!("`formplayer_build_url` is not a usable URL: `{url}`"),
        )
        .with_hint("give an http(s):// or file:/// URL of formplayer.jar in public.yml"));
    }
    let sha256 =
        get("formplayer_build_sha256").map(|s| s.trim_start_matches("sha256:").to_lowercase());
    if let Some(s) = &sha256
        && !(s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Error::new(
            ErrorKind::Config,
            format!("`formplayer_build_sha256` is not a SHA-256: `{s}`"),
        )
        .with_hint("64 hexadecimal digits (`sha256sum formplayer.jar`)"));
    }
    Ok(Source { url, sha256 })
}

/// The shell script that downloads the jar into `<tmp>` (curl, else Python), checks it, and
/// renames `<tmp>` to `<release>` when complete; it prints `ARTIFACT=<sha256>` of the release's
/// jar (also when it was downloaded before: a resume).
pub fn download_script(src: &Source, release: &str, info: &str) -> String {
    let (r, tmp) = (quote(release), quote(&format!("{release}.tmp")));
    let url = quote(&src.url);
    let sums = quote(&format!("{}.sha256", src.url));
    let expected = quote(src.sha256.as_deref().unwrap_or(""));
    format!(
        "set -e; mkdir -p \"$(dirname {r})\"; \
         fetch() {{ if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 2 -o \"$2\" \"$1\"; \
           else python3 -c 'import shutil,sys,urllib.request as u; shutil.copyfileobj(u.urlopen(sys.argv[1], timeout=120), open(sys.argv[2], \"wb\"))' \"$1\" \"$2\"; fi; }}; \
         if [ -f {r}/.checkout-done ]; then echo 'download: already done'; else \
           rm -rf {tmp}; mkdir -p {tmp}; \
           fetch {url} {tmp}/formplayer.jar || {{ echo 'cannot download '{url} >&2; exit 6; }}; \
           sum=$(sha256sum {tmp}/formplayer.jar | cut -d' ' -f1); expected={expected}; \
           if [ -z \"$expected\" ] && fetch {sums} {tmp}/.published.sha256 2>/dev/null; then expected=$(cut -d' ' -f1 < {tmp}/.published.sha256 | tr 'A-F' 'a-f'); fi; \
           if [ -n \"$expected\" ] && [ \"$sum\" != \"$expected\" ]; then echo \"formplayer.jar has SHA-256 $sum, not $expected\" >&2; exit 7; fi; \
           chmod 0744 {tmp}/formplayer.jar; printf '%s\\n' \"$sum\" > {tmp}/{SHA_FILE}; printf '%s\\n' {info} > {tmp}/{release_info}; \
           touch {tmp}/.checkout-done; if [ -e {r} ]; then mv {r} {r}.fail-$(date +%s); fi; mv -T {tmp} {r}; echo 'download: done'; fi; \
         echo \"ARTIFACT=$(cat {r}/{SHA_FILE})\"",
        info = quote(info),
        release_info = super::layout::markers::RELEASE_INFO,
    )
}

/// The SHA-256 a host's download printed.
pub fn artifact_of(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ARTIFACT="))
        .map(str::trim)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        crate::fixture_env("test")
    }

    #[test]
    fn the_source_defaults_to_commcare_clouds_and_is_checked() {
        let e = env();
        assert_eq!(
            source(&e, &serde_json::json!({})).unwrap(),
            Source {
                url: DEFAULT_URL.into(),
                sha256: None
            }
        );
        let s = source(&e, &serde_json::json!({"formplayer_build_url": "file:///srv/fp.jar", "formplayer_build_sha256": format!("sha256:{}", "AB".repeat(32))})).unwrap();
        assert_eq!(
            (s.url.as_str(), s.sha256.unwrap()),
            ("file:///srv/fp.jar", "ab".repeat(32))
        );
        for bad in [
            "ftp://x/fp.jar",
            "https://x/a b.jar",
            "https://x/'$(id)'.jar",
            "/srv/fp.jar",
        ] {
            assert!(
                source(&e, &serde_json::json!({"formplayer_build_url": bad})).is_err(),
                "{bad}"
            );
        }
        assert!(source(&e, &serde_json::json!({"formplayer_build_sha256": "abc"})).is_err());
    }

    /// The script on this machine: a download from a file URL, its checksum checked against the
    /// published one, a mismatch refused, and a second run is a no-op that prints the same sum.
    #[test]
    fn the_download_checks_the_published_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let jar = tmp.path().join("fp.jar");
        std::fs::write(&jar, b"PK fake jar").unwrap();
        let sum = {
            let o = std::process::Command::new("sha256sum")
                .arg(&jar)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        let url = format!("file://{}", jar.display());
        let run = |src: &Source, rel: &str| {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(download_script(
                    src,
                    &tmp.path().join(rel).display().to_string(),
                    "{}",
                ))
                .output()
                .unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        let src = Source {
            url: url.clone(),
            sha256: None,
        };
        let (code, out, err) = run(&src, "releases/r1");
        assert_eq!(code, Some(0), "{out}{err}");
        assert_eq!(artifact_of(&out).as_deref(), Some(sum.as_str()));
        let (code, out, _) = run(&src, "releases/r1");
        assert!(
            code == Some(0)
                && out.contains("already done")
                && artifact_of(&out).as_deref() == Some(sum.as_str())
        );
        // A published checksum that does not match: refused, no release.
        std::fs::write(
            tmp.path().join("fp.jar.sha256"),
            format!("{}  formplayer.jar\n", "0".repeat(64)),
        )
        .unwrap();
        let (code, _, err) = run(&src, "releases/r2");
        assert_eq!(code, Some(7), "{err}");
        assert!(err.contains("not 0000"), "{err}");
        assert!(!tmp.path().join("releases/r2").exists());
        // The environment's own checksum wins over the published one.
        let (code, _, err) = run(
            &Source {
                url,
                sha256: Some(sum.clone()),
            },
            "releases/r3",
        );
        assert_eq!(code, Some(0), "{err}");
        let (code, _, err) = run(
            &Source {
                url: "file:///nonexistent/fp.jar".into(),
                sha256: None,
            },
            "releases/r4",
        );
        assert_eq!(code, Some(6), "{err}");
    }
}
