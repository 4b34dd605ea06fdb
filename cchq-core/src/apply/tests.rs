use super::*;
use crate::drift::*;
use crate::transport::Output;
use crate::transport::memory::MemoryTransport;
use std::path::Path;

const SECRET: &str = "sekrit-key-SENTINEL";

/// A small environment: `web1` (web app), `fp1` (formplayer), and `web2` whose template needs
/// a variable that only exists when `broken` is set.
fn env_dir(tmp: &Path) -> Environment {
    let dir = tmp.join("t");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nweb1\n[django_manage]\nweb1\n[formplayer]\nfp1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "localsettings:\n  HQ_INSTANCE: tt\n  DEPLOY_MACHINE_NAME: '{{ inventory_hostname }}'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vault.yml"),
        format!("localsettings_private:\n  SECRET_KEY: {SECRET}\n  DB_PASSWORD: hunter22x\nsecrets:\n  other: zzzz-other\n"),
    )
    .unwrap();
    std::fs::write(dir.join("proxy.yml"), "SITE_HOST: tt.example\n").unwrap();
    std::fs::write(dir.join("app-processes.yml"), "{}\n").unwrap();
    Environment::load(tmp, "t").unwrap()
}

fn vault_of(env: &Environment) -> Value {
    match &env.vault {
        crate::environment::Vault::Plain(v) => v.clone(),
        _ => panic!("plain vault expected"),
    }
}

/// Answers the probe as a host whose `current` exists (and `formplayer_build/current` when
/// `formplayer_build`), with the given file modes.
fn answer_probe(t: &MemoryTransport, host: &str, formplayer_build: bool, modes: &[(&str, &str)]) {
    let mut text = "dir\t/home/cchq/www/tt/current\t/home/cchq/www/tt/releases/r1\n".to_owned();
    if formplayer_build {
        text.push_str("dir\t/home/cchq/www/tt/formplayer_build/current\t/home/cchq/www/tt/formplayer_build/releases/f9\n");
    }
    for (p, m) in modes {
        text.push_str(&format!("mode\t{p}\t{m}\n"));
    }
    t.respond_with(Some(host), move |cmd| {
        cmd.inner_shell()
            .contains("readlink -f")
            .then(|| Output::new(0, text.clone(), ""))
    });
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const LS: &str = "/home/cchq/www/tt/current/localsettings.py";
const FP_FALLBACK: &str = "/home/cchq/www/tt/current/formplayer/application.properties";
const FP_BUILD: &str = "/home/cchq/www/tt/formplayer_build/current/application.properties";

#[test]
fn plan_diff_apply_then_no_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1", "fp1"]);
    answer_probe(&t, "web1", false, &[]);
    answer_probe(&t, "fp1", false, &[]);
    let hosts = vec!["web1".to_owned(), "fp1".to_owned()];
    let rt = rt();
    let plan = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    assert_eq!(plan.changed_hosts(), hosts);
    let ls = &plan.hosts[0].files[0];
    assert_eq!(
        (ls.path.as_str(), ls.write_mode(), ls.note.is_none()),
        (LS, 0o600, true)
    );
    assert!(
        ls.file.contents.contains(SECRET),
        "the rendered file holds the secret"
    );
    assert!(
        !format!("{plan:?}").contains(SECRET),
        "Debug never shows secrets"
    );
    let diff = plan.diff("web1", ls);
    assert!(diff.contains("+SECRET_KEY = '********'"), "{diff}");
    assert!(
        diff.contains("+COUCH_LOG_FILE = os.path.join(LOG_HOME, 'web1-commcarehq.couch.log')"),
        "{diff}"
    );
    assert!(
        !diff.contains(SECRET) && !diff.contains("hunter22x"),
        "{diff}"
    );
    // formplayer falls back into the app release, and says so; its release is the app's.
    let fp = &plan.hosts[1].files[0];
    assert_eq!(fp.path, FP_FALLBACK);
    assert!(
        fp.note
            .as_deref()
            .unwrap()
            .contains("formplayer_build/current"),
        "{:?}",
        fp.note
    );
    assert!(
        fp.file.contents.contains("\nsentry.release=r1-tt\n"),
        "{}",
        fp.file.contents
    );

    let results = rt.block_on(apply(&env, &t, &plan, &hosts));
    for (h, r) in &results {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{h}: {e}"));
        assert!(r.recorded && r.written.len() == 1, "{r:?}");
    }
    assert_eq!(t.file_mode("web1", LS), Some(0o600));
    assert_eq!(t.file("web1", LS).unwrap(), ls.file.contents.as_bytes());
    let record: Applied = serde_json::from_slice(
        &t.file("web1", "/home/cchq/www/tt/.cchq-applied.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record.files[LS], sha256_hex(ls.file.contents.as_bytes()));
    assert_eq!(
        (record.env_commit.as_deref(), record.cchq_version.as_str()),
        (None, env!("CARGO_PKG_VERSION"))
    );
    assert!(
        record.by.contains('@') && record.at.ends_with('Z'),
        "{record:?}"
    );

    let again = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    assert!(again.changed_hosts().is_empty());
    assert!(
        again
            .hosts
            .iter()
            .all(|h| h.drift.is_empty() && h.record_current(None))
    );
    t.clear_calls();
    let results = rt.block_on(apply(&env, &t, &again, &hosts));
    assert!(results.iter().all(|(_, r)| {
        r.as_ref()
            .is_ok_and(|r| r.written.is_empty() && !r.recorded)
    }));
    assert!(
        t.calls()
            .iter()
            .all(|c| !c.command.to_string().contains("write-file")),
        "nothing written: {:?}",
        t.calls()
    );
}

#[test]
fn existing_modes_are_kept_and_formplayer_build_is_preferred() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1", "fp1"]);
    t.put_file("web1", LS, "OLD = 1\nSECRET_KEY = 'an-old-rotated-value'\n");
    answer_probe(&t, "web1", false, &[(LS, "640")]);
    answer_probe(&t, "fp1", true, &[]);
    let hosts = vec!["web1".to_owned(), "fp1".to_owned()];
    let rt = rt();
    let plan = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    let ls = &plan.hosts[0].files[0];
    assert_eq!(ls.write_mode(), 0o640);
    let diff = plan.diff("web1", ls);
    // Lines that are not public by construction show their key only, whatever they hold.
    assert!(diff.contains("-OLD = ********"), "{diff}");
    // The old value is not in the vault any more: masked by its key.
    assert!(!diff.contains("an-old-rotated-value"), "{diff}");
    assert!(diff.contains("-SECRET_KEY = '********'"), "{diff}");
    let fp = &plan.hosts[1].files[0];
    assert_eq!((fp.path.as_str(), fp.note.is_none()), (FP_BUILD, true));
    assert!(
        fp.file.contents.contains("\nsentry.release=f9-tt\n"),
        "{}",
        fp.file.contents
    );
    rt.block_on(apply(&env, &t, &plan, &hosts));
    assert_eq!(t.file_mode("web1", LS), Some(0o640));
    assert!(t.file("fp1", FP_BUILD).is_some());
}

#[test]
fn hand_edits_are_drift_and_block_only_hosts_that_would_change() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1"]);
    answer_probe(&t, "web1", false, &[]);
    let hosts = vec!["web1".to_owned()];
    let rt = rt();
    let p = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    rt.block_on(apply(&env, &t, &p, &hosts));
    let mut edited = t.file("web1", LS).unwrap();
    edited.extend_from_slice(b"DEBUG = True\n");
    t.put_file("web1", LS, edited);
    let p = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    let h = &p.hosts[0];
    assert!(h.changed() && h.blocked(), "{h:?}");
    assert_eq!(h.drift[0].kind, DriftKind::HandEdit);
    assert!(
        h.drift[0].message.contains(LS) && h.drift[0].message.contains("edited by hand"),
        "{}",
        h.drift[0].message
    );
    // The same through the API the deploy engine uses.
    let err = rt.block_on(check_drift(&env, &t, &hosts)).unwrap_err();
    assert!(
        err.message().contains("web1") && err.hint().unwrap().contains("--force"),
        "{err}"
    );
    assert!(!err.message().contains(SECRET));
    // record_applied (after a deploy wrote the files) makes the host consistent again.
    let files = crate::settings::render_for_host(&env, "web1", Some(&vault), Some("r1")).unwrap();
    t.put_file("web1", LS, files[0].contents.clone());
    rt.block_on(record_applied(&env, &t, "web1", &files))
        .unwrap();
    rt.block_on(check_drift(&env, &t, &hosts)).unwrap();
}

#[test]
fn update_checks_then_applies_and_the_guard_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1", "fp1"]);
    answer_probe(&t, "web1", false, &[]);
    answer_probe(&t, "fp1", false, &[]);
    let mut warnings = Vec::new();
    let hosts = update_hosts(&env, None, &mut |w| warnings.push(w.to_owned())).unwrap();
    assert_eq!(hosts, ["web1", "fp1"]);
    let err = update_hosts(&env, Some("web9"), &mut |w| warnings.push(w.to_owned())).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Pattern);
    assert!(err.message().contains("web9"), "{err}");
    let hosts = update_hosts(&env, Some("web1:fp1:web9"), &mut |w| {
        warnings.push(w.to_owned())
    })
    .unwrap();
    assert!(warnings.iter().any(|w| w.contains("web9")), "{warnings:?}");
    let rt = rt();
    let events = std::sync::Mutex::new(Vec::new());
    let sink = |e: &crate::events::Event| events.lock().unwrap().push(e.clone());

    // check: every file with its masked diff, nothing written.
    let check = UpdateOptions {
        check: true,
        force: false,
    };
    let report = rt
        .block_on(update(&env, &t, &hosts, Some(&vault), check, &sink))
        .unwrap();
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        !json.contains(SECRET) && !json.contains("hunter22x"),
        "{json}"
    );
    assert_eq!(
        (report.check, report.changed_files, report.ok),
        (true, 2, true)
    );
    let ls = &report.hosts[0].files[0];
    assert_eq!(
        (ls.path.as_str(), ls.changed, ls.new, ls.component),
        (LS, true, true, Component::Commcare)
    );
    assert!(ls.diff.contains("+SECRET_KEY = '********'"), "{}", ls.diff);
    assert!(t.file("web1", LS).is_none());

    // apply: written and recorded.
    let apply_opts = UpdateOptions {
        check: false,
        force: false,
    };
    let report = rt
        .block_on(update(&env, &t, &hosts, Some(&vault), apply_opts, &sink))
        .unwrap();
    assert_eq!(report.hosts[0].written, [LS]);
    assert_eq!(report.hosts[1].written, [FP_FALLBACK]);
    assert!(report.hosts.iter().all(|h| h.recorded && h.error.is_none()) && report.ok);
    assert!(
        t.file("web1", LS)
            .unwrap()
            .windows(SECRET.len())
            .any(|w| w == SECRET.as_bytes())
    );
    let phases: Vec<(String, Option<bool>)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            crate::events::Event::Phase { phase, ok, .. } => Some((phase.clone(), *ok)),
            _ => None,
        })
        .collect();
    let p = |s: &str, ok| (s.to_owned(), ok);
    assert_eq!(
        phases,
        [
            p("plan", None),
            p("plan", Some(true)),
            p("plan", None),
            p("plan", Some(true)),
            p("apply", None),
            p("apply", Some(true))
        ]
    );

    // A hand edit blocks that host (the error masked), unless forced; a host that fails to
    // write is in the report.
    let mut edited = t.file("web1", LS).unwrap();
    edited.extend_from_slice(b"DEBUG = True\n");
    t.put_file("web1", LS, edited);
    let plan = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    assert_eq!(
        plan.decide(&env, false).unwrap_err().kind(),
        crate::ErrorKind::Config
    );
    let decision = plan.decide(&env, true).unwrap();
    assert_eq!(
        (
            decision.changed.as_slice(),
            decision.refresh.len(),
            decision.forced.len()
        ),
        (&["web1".to_owned()][..], 0, 1)
    );
    let err = rt
        .block_on(update(&env, &t, &hosts, Some(&vault), apply_opts, &sink))
        .unwrap_err();
    assert!(
        err.message().contains("edited by hand") && err.hint().unwrap().contains("--force"),
        "{err}"
    );
    // An unreachable host is in the report; the others are planned.
    t.set_reachable("fp1", false);
    let report = rt
        .block_on(update(&env, &t, &hosts, Some(&vault), check, &sink))
        .unwrap();
    let names: Vec<&str> = report.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, ["web1", "fp1"]);
    assert!(
        report.hosts[1].unreachable && report.hosts[1].error.is_some() && !report.ok,
        "{report:?}"
    );
    assert!(!report.hosts[0].unreachable && !report.hosts[0].files.is_empty());
    t.set_reachable("fp1", true);
    let forced = UpdateOptions {
        check: false,
        force: true,
    };
    let report = rt
        .block_on(update(&env, &t, &hosts, Some(&vault), forced, &sink))
        .unwrap();
    assert!(
        report.forced
            && report.ok
            && report.hosts[0].written == [LS]
            && report.hosts[1].written.is_empty()
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, crate::events::Event::Warning { message, .. } if message.contains("edited by hand")))
    );

    // A record out of date (no file changes) is refreshed.
    t.put_file(
        "web1",
        &applied_path(&env),
        "{\"by\":\"x\",\"at\":\"y\",\"cchq_version\":\"0\",\"env_commit\":null,\"dirty\":false,\"files\":{}}",
    );
    let plan = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    assert_eq!(plan.decide(&env, false).unwrap().targets(), ["web1"]);
    let report = rt
        .block_on(update(&env, &t, &hosts, Some(&vault), apply_opts, &sink))
        .unwrap();
    assert!(
        report.hosts[0].recorded && report.hosts[0].written.is_empty() && !report.hosts[1].recorded
    );
}

/// An environment whose vault values are escaped by the templates (a quote, a backslash, a
/// newline), hold unicode, or are a part of public text; `application.properties` (overridden)
/// uses one raw, where its newline makes two lines.
fn escaping_env(tmp: &Path) -> Environment {
    let dir = tmp.join("t");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nweb1\n[django_manage]\nweb1\n[formplayer]\nweb1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "localsettings:\n  HQ_INSTANCE: tt\n  EMAIL_SMTP_HOST: smtp.tt-production-SITE.example\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vault.yml"),
        "FP_SECRET: \"fp-SENTA\\nfp.key=SENTB\"\n\
         localsettings_private:\n\
         \x20 SECRET_KEY: \"it's-SENTC\"\n\
         \x20 EMAIL_LOGIN: 'C:\\SENTD\\x'\n\
         \x20 EMAIL_PASSWORD: \"one\\nSENTE\"\n\
         \x20 BITLY_OAUTH_TOKEN: \"pässwörd-SENTF-中\"\n\
         \x20 GMAPS_API_KEY: \"production-SITE\"\n\
         \x20 BANK_ACCOUNT_NUMBER: 424242\n\
         \x20 MAPBOX_ACCESS_TOKEN: \"same-SENTG\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("proxy.yml"), "SITE_HOST: tt.example\n").unwrap();
    std::fs::write(dir.join("app-processes.yml"), "{}\n").unwrap();
    std::fs::write(
        dir.join("templates/application.properties.hbs"),
        "build.version={{release_name}}\nfp.secret={{FP_SECRET}}\nfp.host={{SITE_HOST}}\n",
    )
    .unwrap();
    Environment::load(tmp, "t").unwrap()
}

/// Every encoding a value can have in a settings file (raw, Python-escaped) and its parts.
const SENTINELS: &[&str] = &[
    "SENT",
    "424242",
    "pässwörd",
    "C:\\\\",
    "it\\'s",
    "GMAPS_API_KEY = 'production",
    "OLDVALUE",
];

/// Issue 12: masking by construction. Diffs show the settings rendered with placeholders for
/// the vault's values, and of the host's file only what is public: no vault value, in whatever
/// encoding the template gives it, and no old value of a changed or removed secret appears;
/// a changed secret still shows its key.
#[test]
fn diffs_hold_no_secret_in_any_encoding_nor_an_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let env = escaping_env(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1"]);
    answer_probe(&t, "web1", false, &[]);
    let hosts = vec!["web1".to_owned()];
    let rt = rt();
    // What the host has: an older rendering, with old secrets, a removed secret key, and the
    // secrets that did not change.
    let real = crate::settings::render_for_host(&env, "web1", Some(&vault), Some("r1")).unwrap();
    let ls = &real[0].contents;
    for v in [
        "'it\\'s-SENTC'",
        "'C:\\\\SENTD\\\\x'",
        "'one\\nSENTE'",
        "'pässwörd-SENTF-中'",
        "'424242'",
        "'production-SITE'",
    ] {
        assert!(ls.contains(v), "the file holds {v}: {ls}");
    }
    let old = ls.replace("'it\\'s-SENTC'", "'OLDVALUE-it\\'s'").replace("'one\\nSENTE'", "'OLDVALUE\\none'").replace(
        "DEBUG = False\n",
        "DEBUG = False\nREMOVED_TOKEN = 'OLDVALUE-removed'\nOLD_DICT = {'PASSWORD': 'OLDVALUE-pw',\n    'HOST': 'OLDVALUE-h'}\n",
    );
    t.put_file("web1", LS, old.clone());
    t.put_file(
        "web1",
        FP_FALLBACK,
        real[1].contents.replace("fp-SENTA", "fp-OLDVALUE"),
    );
    let events = std::sync::Mutex::new(Vec::new());
    let sink = |e: &crate::events::Event| events.lock().unwrap().push(e.clone());
    let report = rt
        .block_on(update(
            &env,
            &t,
            &hosts,
            Some(&vault),
            UpdateOptions {
                check: true,
                force: false,
            },
            &sink,
        ))
        .unwrap();
    let json = serde_json::to_string(&report).unwrap();
    let events = format!("{:?}", events.lock().unwrap());
    for leak in SENTINELS {
        assert!(!json.contains(leak), "`{leak}` in {json}");
        assert!(!events.contains(leak), "`{leak}` in {events}");
    }
    let diff = &report.hosts[0].files[0].diff;
    // Changed secrets show their key on both sides; unchanged ones are not a change.
    for key in ["SECRET_KEY", "EMAIL_PASSWORD"] {
        assert!(
            diff.contains(&format!("-{key} = '********'\n"))
                && diff.contains(&format!("+{key} = '********'\n")),
            "{key}: {diff}"
        );
    }
    for key in [
        "BITLY_OAUTH_TOKEN",
        "EMAIL_LOGIN",
        "BANK_ACCOUNT_NUMBER",
        "MAPBOX_ACCESS_TOKEN",
        "GMAPS_API_KEY",
    ] {
        assert!(
            !diff.contains(&format!("-{key} ")) && !diff.contains(&format!("+{key} ")),
            "{key}: {diff}"
        );
    }
    // A removed key shows, its value does not; nor does any line not known to be public.
    assert!(
        diff.contains("-REMOVED_TOKEN = '********'\n") && diff.contains("-OLD_DICT = ********\n"),
        "{diff}"
    );
    assert!(diff.contains("-    'HOST': ********\n"), "{diff}");
    // Public text around a secret that is a part of it is shown as it is, not mangled.
    assert!(
        diff.contains(" EMAIL_SMTP_HOST = 'smtp.tt-production-SITE.example'\n")
            && diff.contains(" DEBUG = False\n"),
        "{diff}"
    );
    // A raw value with a newline (two lines of the file) is masked too, and a change of it shows.
    let fp = &report.hosts[0].files[1];
    assert!(
        fp.changed && fp.diff.contains("+fp.secret=********\n"),
        "{}",
        fp.diff
    );
    assert!(fp.diff.contains(" fp.host=tt.example\n"), "{}", fp.diff);
    // The plan is what is written: the real values.
    let plan = rt
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    assert_eq!(plan.hosts[0].files[0].file.contents, *ls);
    assert!(plan.hosts[0].files[0].changed());
    // A host that has the file rendered now shows no diff; one that has none shows the public rendering.
    assert_eq!(
        masked_diff(
            Some(ls),
            ls,
            plan.hosts[0].files[0].public.as_ref().unwrap(),
            "a",
            "b"
        ),
        ""
    );
    let new = masked_diff(
        None,
        ls,
        plan.hosts[0].files[0].public.as_ref().unwrap(),
        "/dev/null",
        "b",
    );
    assert!(
        new.contains("+SECRET_KEY = '********'\n") && !SENTINELS.iter().any(|s| new.contains(s)),
        "{new}"
    );
}

/// A file whose rendering with placeholders fails (a template that needs a vault value to be a
/// number, say) shows that it changed, and why its diff is not shown, without a secret.
#[test]
fn a_file_that_renders_only_with_the_vault_shows_no_diff() {
    let file = PlannedFile {
        file: SettingsFile {
            component: Component::Commcare,
            relative_path: "localsettings.py".into(),
            contents: "S = 'SENT'\n".into(),
            mode: 0o600,
        },
        public: Err("localsettings.py:1: `__CCHQ_SECRET_1__` is not a number".into()),
        path: LS.into(),
        current: Some(b"S = 'OLDVALUE'\n".to_vec()),
        existing_mode: None,
        note: None,
    };
    let plan = Plan {
        hosts: Vec::new(),
        checkout: None,
        masker: Masker::default(),
    };
    let diff = plan.diff("web1", &file);
    assert!(
        diff.contains("not shown") && diff.contains("`********` is not a number"),
        "{diff}"
    );
    assert!(
        !diff.contains("SENT") && !diff.contains("OLDVALUE"),
        "{diff}"
    );
}

#[test]
fn masked_errors_keep_their_kind() {
    let m = Masker::with(vec!["s3cr3t-value".to_owned()], []);
    let e = m.mask_error(&Error::config("bad s3cr3t-value").with_hint("not s3cr3t-value"));
    assert_eq!(
        (e.kind(), e.message(), e.hint()),
        (
            crate::ErrorKind::Config,
            "bad ********",
            Some("not ********")
        )
    );
}

#[test]
fn a_template_error_on_any_host_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    std::fs::create_dir_all(env.dir.join("templates")).unwrap();
    std::fs::write(
        env.dir.join("templates/application.properties.hbs"),
        "a=1\nb={{ nowhere }}\n",
    )
    .unwrap();
    let env = Environment::load(tmp.path(), "t").unwrap();
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1", "fp1"]);
    answer_probe(&t, "web1", false, &[]);
    answer_probe(&t, "fp1", false, &[]);
    let err = rt()
        .block_on(super::plan(
            &env,
            &t,
            &["web1".to_owned(), "fp1".to_owned()],
            Some(&vault),
        ))
        .unwrap_err();
    assert!(
        err.message().contains("fp1")
            && err.message().contains("application.properties:2")
            && err.message().contains("`nowhere`"),
        "{err}"
    );
    assert!(
        t.calls()
            .iter()
            .all(|c| !c.command.to_string().contains("write-file"))
    );
}

#[test]
fn a_host_without_a_live_release_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let t = MemoryTransport::new(["web1"]);
    t.respond_with(None, |cmd| {
        cmd.inner_shell()
            .contains("readlink -f")
            .then(|| Output::new(0, "", ""))
    });
    let err = rt()
        .block_on(super::plan(&env, &t, &["web1".to_owned()], None))
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    assert!(err.message().contains("/home/cchq/www/tt/current"), "{err}");
}

#[test]
fn probe_output_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let l = parse_probe(
        &env,
        &format!("dir\t/home/cchq/www/tt/current\t/x/releases/2026\nmode\t{LS}\t600\nnoise\n"),
    );
    assert_eq!(l.release_name(Component::Commcare), Some("2026"));
    assert_eq!(l.release_name(Component::Formplayer), Some("2026"));
    assert_eq!(l.modes.get(LS), Some(&0o600));
    let cmd = probe_command(&env);
    assert_eq!(cmd.become_as(), Some("cchq"));
    // The probe runs in a real shell too; without `data-end` it did not read the files.
    assert_eq!(l.contents, None);
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd.inner_shell())
        .output()
        .unwrap();
    assert!(out.status.success());
    let l = parse_probe(&env, &String::from_utf8_lossy(&out.stdout));
    let contents = l.contents.expect("the probe read the files");
    assert!(
        contents.contains_key(LS) && contents.contains_key(&applied_path(&env)),
        "{contents:?}"
    );
    assert!(
        contents.values().all(Option::is_none),
        "nothing exists here: {contents:?}"
    );
    // Contents come back byte for byte, and are not shown by Debug.
    let text = format!(
        "data\t{LS}\t{}\ndata-end\n",
        crate::command::base64(b"SECRET = 'x'\n")
    );
    let l = parse_probe(&env, &text);
    let contents = l.contents.clone().unwrap();
    assert_eq!(contents[LS].as_deref(), Some(&b"SECRET = 'x'\n"[..]));
    assert_eq!(contents[FP_BUILD], None);
    assert!(!format!("{l:?}").contains("SECRET"));
}

#[test]
fn plan_and_apply_take_one_round_trip_each_per_host() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1"]);
    // A probe that read the files (none exist yet).
    t.respond_with(Some("web1"), |cmd| {
        cmd.inner_shell().contains("readlink -f").then(|| {
            Output::new(
                0,
                "dir\t/home/cchq/www/tt/current\t/home/cchq/www/tt/releases/r1\ndata-end\n",
                "",
            )
        })
    });
    let hosts = vec!["web1".to_owned()];
    let plan = rt()
        .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
        .unwrap();
    assert_eq!(
        t.calls().len(),
        1,
        "the probe is the only call of the plan: {:?}",
        t.calls()
    );
    assert!(plan.hosts[0].changed() && plan.hosts[0].applied.is_none());
    t.clear_calls();
    let results = rt().block_on(super::apply(&env, &t, &plan, &hosts));
    assert!(results[0].1.is_ok(), "{results:?}");
    let writes: Vec<String> = t.calls().iter().map(|c| c.command.to_string()).collect();
    assert_eq!(
        writes.last().map(String::as_str),
        Some(format!("write-file {}", applied_path(&env)).as_str()),
        "record last: {writes:?}"
    );
}

#[test]
fn masking_covers_values_and_secret_keys() {
    let m = Masker::with(vec!["topsecretvalue".into()], ["COUCH_PASSWORD".to_owned()]);
    let text = "+X = 'topsecretvalue'\n-COUCH_PASSWORD = 'old-one'\n spring.datasource.password=abc123\n\
                DATABASES = {'default': {'PASSWORD': \"pw1\", 'HOST': 'db'}}\nSORT_ORDER = 'asc'\napi_key: zzz\n";
    let out = m.mask(text);
    for leaked in ["topsecretvalue", "old-one", "abc123", "pw1", "zzz"] {
        assert!(!out.contains(leaked), "{leaked} in {out}");
    }
    assert!(
        out.contains("'HOST': 'db'") && out.contains("SORT_ORDER = 'asc'"),
        "{out}"
    );
    assert!(
        out.contains("-COUCH_PASSWORD = '********'") && out.contains("'PASSWORD': \"********\""),
        "{out}"
    );
    // Compact structures do not hide a secret from the key rule.
    let out = m.mask("DATABASES = {'default':{'PASSWORD':'old-pw','HOST':'db'}}\n");
    assert!(
        !out.contains("old-pw") && out.contains("'HOST':'db'"),
        "{out}"
    );
    // The keys of secret values are learnt from rendered files.
    let m = Masker::with(vec!["topsecretvalue".into()], Vec::<String>::new());
    assert_eq!(
        m.keys_of_secret_lines("A = 1\nDB = {'USER': 'u', 'WORD': 'topsecretvalue'}\n"),
        ["WORD"]
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn record(commit: Option<&str>, dirty: bool) -> Applied {
    Applied {
        by: "alice@laptop".into(),
        at: "2026-11-26T16:00:05Z".into(),
        cchq_version: "0.1.0".into(),
        env_commit: commit.map(str::to_owned),
        dirty,
        files: BTreeMap::new(),
    }
}

#[test]
fn drift_follows_git_ancestry() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("envs");
    std::fs::create_dir_all(repo.join("prod")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("prod/public.yml"), "a: 1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let c1 = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("prod/public.yml"), "a: 2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let c2 = git(&repo, &["rev-parse", "HEAD"]);
    let none = BTreeMap::new();

    // At c2: a record from c1 (older) or c2 is fine.
    let co = Checkout::of(&repo.join("prod")).unwrap();
    assert_eq!(
        (co.commit.as_str(), co.dirty, co.behind),
        (c2.as_str(), false, None)
    );
    assert!(assess("h", &record(Some(&c1), false), Some(&co), &none).is_empty());
    assert!(assess("h", &record(Some(&c2), false), Some(&co), &none).is_empty());
    // A commit this checkout does not know (someone else's newer one) blocks.
    let d = assess(
        "h",
        &record(Some("0123456789abcdef0123456789abcdef01234567"), false),
        Some(&co),
        &none,
    );
    assert_eq!(
        (d.len(), d[0].kind, d[0].blocking),
        (1, DriftKind::NewerEnvironment, true)
    );
    assert!(
        d[0].message
            .contains("alice@laptop at 2026-11-26T16:00:05Z")
            && d[0].message.contains("commit 0123456789ab "),
        "{}",
        d[0].message
    );
    // Dirty applies at the same commit warn only.
    let d = assess("h", &record(Some(&c2), true), Some(&co), &none);
    assert_eq!((d[0].kind, d[0].blocking), (DriftKind::DirtyApply, false));

    // Back at c1: the record from c2 is newer, and blocks.
    git(&repo, &["checkout", "-q", &c1]);
    let co = Checkout::of(&repo.join("prod")).unwrap();
    let d = assess("h", &record(Some(&c2), false), Some(&co), &none);
    assert_eq!(d[0].kind, DriftKind::NewerEnvironment);
    // Diverged: a commit on another branch from c1.
    git(&repo, &["checkout", "-q", "-b", "other"]);
    std::fs::write(repo.join("prod/public.yml"), "a: 3\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "three"]);
    let co = Checkout::of(&repo.join("prod")).unwrap();
    assert_eq!(
        assess("h", &record(Some(&c2), false), Some(&co), &none)[0].kind,
        DriftKind::NewerEnvironment
    );
    // Uncommitted changes make the checkout dirty.
    std::fs::write(repo.join("prod/public.yml"), "a: 4\n").unwrap();
    assert!(Checkout::of(&repo.join("prod")).unwrap().dirty);
    // No git: cannot tell, does not block.
    let d = assess("h", &record(Some(&c2), false), None, &none);
    assert_eq!((d[0].kind, d[0].blocking), (DriftKind::Unverifiable, false));
}

#[test]
fn checkout_warnings_report_dirty_and_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = tmp.path().join("up");
    std::fs::create_dir_all(&upstream).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    let env_src = env_dir(&upstream);
    drop(env_src);
    git(&upstream, &["add", "."]);
    git(&upstream, &["commit", "-q", "-m", "one"]);
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let env = Environment::load(&clone, "t").unwrap();
    assert!(
        checkout_warnings(&env).is_empty(),
        "{:?}",
        checkout_warnings(&env)
    );
    std::fs::write(
        upstream.join("t/public.yml"),
        "localsettings: {HQ_INSTANCE: tt}\n",
    )
    .unwrap();
    git(&upstream, &["commit", "-q", "-am", "two"]);
    git(&clone, &["fetch", "-q"]);
    std::fs::write(clone.join("t/proxy.yml"), "SITE_HOST: changed.example\n").unwrap();
    let w = checkout_warnings(&env);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("uncommitted changes") && w[1].contains("1 commit(s) behind"),
        "{w:?}"
    );
}

/// Issue 13: right after a deploy of release `r2`, update-config has nothing to change, whether
/// the deploy rendered the settings into `r2` (a first deploy, `--update-config`, formplayer's
/// own build) or copied `localsettings.py` from the release before (`r1`, a deploy without
/// `--update-config`): `localsettings.py` does not name its release, and files that do
/// (`build.version`) are rendered with the release `current` points to, as the deploy renders them.
#[test]
fn update_config_right_after_a_deploy_has_nothing_to_change() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_dir(tmp.path());
    let vault = vault_of(&env);
    let t = MemoryTransport::new(["web1", "fp1"]);
    for h in ["web1", "fp1"] {
        let text = "dir\t/home/cchq/www/tt/current\t/home/cchq/www/tt/releases/r2\n\
                    dir\t/home/cchq/www/tt/formplayer_build/current\t/home/cchq/www/tt/formplayer_build/releases/f2\n";
        t.respond_with(Some(h), move |cmd| {
            cmd.inner_shell()
                .contains("readlink -f")
                .then(|| Output::new(0, text, ""))
        });
    }
    let hosts = vec!["web1".to_owned(), "fp1".to_owned()];
    let rt = rt();
    // As `deploy` renders: the app's release for localsettings.py, formplayer's for its properties.
    let renderer = settings::SettingsRenderer::new(&env, Some(&vault));
    let deployed = |h: &str, release: &str, component: Component| {
        renderer
            .render(h, Some(release))
            .unwrap()
            .into_iter()
            .find(|f| f.component == component)
            .unwrap()
            .contents
    };
    for copied_from in ["r2", "r1"] {
        t.put_file(
            "web1",
            LS,
            deployed("web1", copied_from, Component::Commcare),
        );
        t.put_file(
            "fp1",
            FP_BUILD,
            deployed("fp1", "f2", Component::Formplayer),
        );
        let plan = rt
            .block_on(super::plan(&env, &t, &hosts, Some(&vault)))
            .unwrap();
        let diffs: Vec<String> = plan
            .hosts
            .iter()
            .flat_map(|h| h.files.iter().map(|f| plan.diff(&h.host, f)))
            .collect();
        assert!(
            plan.changed_hosts().is_empty(),
            "settings of {copied_from} in r2: {diffs:?}"
        );
    }
    assert!(deployed("fp1", "f2", Component::Formplayer).contains("\nsentry.release=f2-tt\n"));
}
