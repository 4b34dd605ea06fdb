use std::path::Path;

use super::*;
use crate::yaml;

fn names(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.name.as_str()).collect()
}

fn apply_yaml(steps: Vec<Step>, text: &str) -> Result<Vec<Step>> {
    let path = Path::new("cchq.yml");
    apply(steps, yaml::load(text, path)?, path)
}

#[test]
fn the_builtin_profiles_load_in_upstreams_order() {
    let c = builtin("commcare").unwrap();
    assert_eq!(
        names(&c),
        [
            "virtualenv",
            "kafka_checkpoints",
            "node_modules",
            "yarn_install",
            "staticfiles_collect",
            "staticfiles_compress",
            "update_translations",
            "migrate",
            "staticfiles_pull_manifest",
            "preindex",
            "check",
            "record_deploy_success"
        ]
    );
    assert!(
        c.iter()
            .filter(|s| s.after_switch)
            .map(|s| s.name.as_str())
            .eq(["record_deploy_success"])
    );
    assert_eq!(c[5].on, Where::Hosts("proxy[0]".into()));
    let d = builtin("django").unwrap();
    assert_eq!(
        names(&d),
        ["virtualenv", "collectstatic", "migrate", "check"]
    );
    assert!(
        !d.iter().any(|s| s.run.contains("record_deploy_success")),
        "no CommCare-only step"
    );
    let e = builtin("rails").unwrap_err();
    assert!(e.hint().unwrap().contains("commcare, django"), "{e:?}");
}

#[test]
fn overrides_add_replace_remove_and_reorder() {
    let base = builtin("django").unwrap();
    let s = apply_yaml(
        base.clone(),
        "remove: [check]\n\
         replace:\n  - name: migrate\n    timeout_secs: 600\n\
         add:\n  - name: compilemessages\n    run: '{{ manage }} compilemessages'\n    after: collectstatic\n  - name: smoke\n    run: curl -fsS localhost\n    after_switch: true\n    on_failure: warn\n",
    )
    .unwrap();
    assert_eq!(
        names(&s),
        [
            "virtualenv",
            "collectstatic",
            "compilemessages",
            "migrate",
            "smoke"
        ]
    );
    let m = &s[3];
    assert_eq!(
        (m.timeout_secs, m.run.as_str(), &m.on),
        (Some(600), base[2].run.as_str(), &Where::Once),
        "a replace keeps what it does not give"
    );
    assert!(s[4].after_switch && s[4].on_failure == OnFailure::Warn);
    let s = apply_yaml(
        base.clone(),
        "order: [virtualenv, migrate, collectstatic, check]\n",
    )
    .unwrap();
    assert_eq!(
        names(&s),
        ["virtualenv", "migrate", "collectstatic", "check"]
    );
}

#[test]
fn every_name_in_the_overrides_must_be_a_step() {
    let base = builtin("django").unwrap();
    for (text, says) in [
        ("remove: [chek]\n", "`steps.remove` names `chek`"),
        (
            "replace:\n  - name: nope\n    run: x\n",
            "`steps.replace` names `nope`",
        ),
        (
            "add:\n  - name: x\n    run: y\n    after: nope\n",
            "`steps.add[].after` names `nope`",
        ),
        (
            "add:\n  - name: migrate\n    run: y\n",
            "a step named `migrate` exists",
        ),
        ("add:\n  - name: x\n", "step `x` has no `run`"),
        ("add:\n  - name: 'a b'\n    run: y\n", "is not a step name"),
        (
            "order: [virtualenv, migrate]\n",
            "leaves out `collectstatic`, `check`",
        ),
        (
            "order: [virtualenv, migrate, migrate, collectstatic, check]\n",
            "names `migrate` twice",
        ),
        (
            "order: [virtualenv, migrate, collectstatic, check, nope]\n",
            "`steps.order` names `nope`",
        ),
        (
            "replace:\n  - name: migrate\n    run: '{{ unclosed'\n",
            "not a valid template",
        ),
        ("remove: [check]\nextra: 1\n", "extra"),
    ] {
        let e = apply_yaml(base.clone(), text).unwrap_err();
        assert!(e.to_string().contains(says), "{text}: {e}");
    }
}

#[test]
fn commands_render_from_the_deploys_variables_and_empty_ones_skip() {
    let c = builtin("commcare").unwrap();
    let mut vars = Vars::default();
    vars.map
        .insert("manage".into(), J::from("python_env/bin/python manage.py"));
    vars.map
        .insert("ignore_kafka_checkpoint_warning".into(), J::from(true));
    vars.map.insert("skip_record".into(), J::from(false));
    vars.map.insert("by".into(), J::from("ann@ctl"));
    let kafka = c
        .iter()
        .find(|s| s.name.as_str() == "kafka_checkpoints")
        .unwrap();
    assert_eq!(
        render(kafka, &vars).unwrap(),
        "python_env/bin/python manage.py validate_kafka_pillow_checkpoints --print-only"
    );
    let record = c
        .iter()
        .find(|s| s.name.as_str() == "record_deploy_success")
        .unwrap();
    assert_eq!(
        render(record, &vars).unwrap(),
        "python_env/bin/python manage.py record_deploy_success --user ann@ctl"
    );
    vars.map.insert("skip_record".into(), J::from(true));
    assert_eq!(render(record, &vars).unwrap(), "");
}

#[test]
fn a_group_runs_each_step_behind_its_marker_and_names_the_one_that_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Path::new("t.yml");
    let spec = |name: &str, run: &str, extra: &str| -> Step {
        let text = format!("name: {name}\nrun: '{run}'\n{extra}");
        yaml::from_str::<StepSpec>(&text, path)
            .unwrap()
            .into_step(path)
            .unwrap()
    };
    let a = spec("a", "echo ran-a >> log", "");
    let w = spec("w", "exit 3", "on_failure: warn\n");
    let s = spec("s", "echo ran-s >> log", "when: '[ -f nothing ]'\n");
    let b = spec("b", "echo ran-b >> log; exit 5", "");
    let group = [
        (&a, a.run.clone()),
        (&w, w.run.clone()),
        (&s, s.run.clone()),
        (&b, b.run.clone()),
    ];
    let run = |g: &[(&Step, String)]| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script(g))
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let o = run(&group);
    assert_eq!(o.status.code(), Some(5));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(failed_step(&out).as_deref(), Some("b"), "{out}");
    assert_eq!(warned_steps(&out), ["w 3"]);
    assert!(
        tmp.path().join(".a-done").exists()
            && tmp.path().join(".w-done").exists()
            && tmp.path().join(".s-done").exists()
    );
    assert!(!tmp.path().join(".b-done").exists());
    // Again: only the failed step runs.
    let o = run(&group);
    assert_eq!(o.status.code(), Some(5));
    let log = std::fs::read_to_string(tmp.path().join("log")).unwrap();
    assert_eq!(
        log, "ran-a\nran-b\nran-b\n",
        "a ran once, s was skipped by its condition"
    );
    assert!(!strip_markers(&String::from_utf8_lossy(&o.stdout)).contains("::cchq"));
}

#[test]
fn a_timeout_kills_the_step() {
    let path = Path::new("t.yml");
    let st = yaml::from_str::<StepSpec>("name: slow\nrun: sleep 30\ntimeout_secs: 1\n", path)
        .unwrap()
        .into_step(path)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script(&[(&st, st.run.clone())]))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(124), "{o:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

/// A stand-in `uv` on `PATH` (the virtualenv step's behaviour is the shell around uv): `venv`
/// makes the directory, `pip install` "installs" (or fails as uv does on a refused certificate
/// when `UV_STUB_FAIL` is set); every call is logged with the `UV_NATIVE_TLS` it saw.
fn uv_stub(dir: &Path) -> (String, std::path::PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("uv.log");
    let uv = bin.join("uv");
    std::fs::write(
        &uv,
        format!(
            "#!/bin/sh\necho \"$1 UV_NATIVE_TLS=$UV_NATIVE_TLS\" >> {log}\n\
             case \"$1\" in\n\
             venv) for a; do d=$a; done; mkdir -p \"$d/bin\";;\n\
             pip) [ -z \"$UV_STUB_FAIL\" ] || {{ echo 'invalid peer certificate: UnknownIssuer' >&2; exit 2; }}\n\
               for a; do [ \"$p\" = --python ] && py=$a; p=$a; done; echo installed > \"${{py%/bin/python}}/installed\";;\n\
             esac\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        log,
    )
}

/// The layout of the `development` fixture with its shared directory in `dir`.
fn layout_in(
    dir: &Path,
) -> (
    crate::environment::Environment,
    crate::deploy::layout::Layout,
) {
    let env = crate::fixture_env("development");
    let mut layout = crate::deploy::layout::Layout::new(&env, crate::deploy::Component::Commcare);
    layout.shared = dir.join("shared").display().to_string();
    (env, layout)
}

/// Runs the virtualenv step in a new release `name` (under `dir`) with `requirements`.
fn virtualenv_in(
    dir: &Path,
    name: &str,
    requirements: &str,
    fail: bool,
) -> (std::process::Output, std::path::PathBuf) {
    let (env, layout) = layout_in(dir);
    let (path, _) = uv_stub(dir);
    let rel = dir.join("releases").join(name);
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::write(rel.join("requirements.txt"), requirements).unwrap();
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(virtualenv_script(&env, &layout))
        .current_dir(&rel)
        .env("PATH", &path);
    if fail {
        c.env("UV_STUB_FAIL", "1");
    }
    (c.output().unwrap(), rel)
}

/// The virtualenv step fails when an install fails (it used to end with `ln`, whose success hid
/// the failure: a release without its packages went on to collectstatic), and asks uv for the
/// host's trust store (over SSH no `SSL_CERT_FILE` is inherited; a TLS-inspecting proxy's CA is
/// only in the system store).
#[test]
fn the_virtualenv_step_fails_when_the_install_fails_and_uses_the_system_trust_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, rel) = virtualenv_in(tmp.path(), "r1", "django\n", true);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        !rel.join("python_env").exists(),
        "no python_env for a failed install"
    );
    let log = std::fs::read_to_string(tmp.path().join("uv.log")).unwrap();
    assert_eq!(log, "venv UV_NATIVE_TLS=1\npip UV_NATIVE_TLS=1\n");
    // Fixed, the same release's step runs again and builds the environment from scratch.
    let (o, rel) = virtualenv_in(tmp.path(), "r1", "django\n", false);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(rel.join("python_env/installed")).unwrap(),
        "installed\n"
    );
}

/// Releases with the same dependencies link one environment, built once and marked complete
/// last; other dependencies get another; editable or local requirements are never shared.
#[test]
fn releases_with_unchanged_dependencies_share_one_complete_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let venvs = tmp.path().join("shared/venvs");
    let (o, r1) = virtualenv_in(tmp.path(), "r1", "django\ngunicorn\n", false);
    assert!(o.status.success(), "{o:?}");
    let (o, r2) = virtualenv_in(tmp.path(), "r2", "django\ngunicorn\n", false);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("dependencies unchanged"),
        "{o:?}"
    );
    let link = |r: &Path| std::fs::read_link(r.join(".venv")).unwrap();
    assert_eq!(link(&r1), link(&r2));
    assert!(link(&r1).starts_with(&venvs) && link(&r1).join(".cchq-complete").exists());
    assert_eq!(
        std::fs::read_to_string(r2.join("python_env/installed")).unwrap(),
        "installed\n"
    );
    let log = std::fs::read_to_string(tmp.path().join("uv.log")).unwrap();
    assert_eq!(log.matches("pip ").count(), 1, "installed once: {log}");
    // Other dependencies: another environment; r1's is left as it was.
    let (o, r3) = virtualenv_in(tmp.path(), "r3", "django\ngunicorn\nsentry-sdk\n", false);
    assert!(o.status.success(), "{o:?}");
    assert_ne!(link(&r3), link(&r1));
    // An incomplete one (a build cut short) is built again, not used.
    std::fs::remove_file(link(&r3).join(".cchq-complete")).unwrap();
    let (o, r4) = virtualenv_in(tmp.path(), "r4", "django\ngunicorn\nsentry-sdk\n", false);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("building"),
        "{o:?}"
    );
    assert_eq!(link(&r4), link(&r3));
    // The project itself, or a local path: the release's own environment.
    for (name, req) in [
        ("r5", "-e .\n"),
        ("r6", "django\n./vendor/thing\n"),
        ("r7", "-r base.txt\n"),
        ("r8", "thing @ file:///x\n"),
    ] {
        let (o, r) = virtualenv_in(tmp.path(), name, req, false);
        assert!(o.status.success(), "{o:?}");
        assert!(
            std::fs::symlink_metadata(r.join(".venv")).unwrap().is_dir(),
            "{req:?}: its own environment"
        );
    }
}

/// A step with `reuse` hard-links its outputs from the previous release when its inputs (the
/// checkout's tree, a file, a link's target) are the same there, and runs otherwise.
#[test]
fn a_reusable_step_takes_its_outputs_from_the_previous_release_when_its_inputs_did_not_change() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Path::new("t.yml");
    let st = yaml::from_str::<StepSpec>(
        "name: build_static\nrun: 'mkdir -p out && echo built >> ../count && cat settings.py > out/f'\n\
         reuse: {inputs: [., settings.py, venv], outputs: [out]}\n",
        path,
    )
    .unwrap()
    .into_step(path)
    .unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let o = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@x",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    };
    let release = |name: &str, code: &str, settings: &str, venv: &str| -> std::path::PathBuf {
        let r = tmp.path().join(name);
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("app.py"), code).unwrap();
        git(&r, &["init", "-q"]);
        git(&r, &["add", "app.py"]);
        git(&r, &["commit", "-qm", "c"]);
        std::fs::write(r.join("settings.py"), settings).unwrap();
        std::os::unix::fs::symlink(venv, r.join("venv")).unwrap();
        r
    };
    let run = |r: &Path, previous: Option<&Path>| {
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(script(&[(&st, st.run.clone())]))
            .current_dir(r);
        if let Some(p) = previous {
            c.env("cchq_previous", p);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let count = || {
        std::fs::read_to_string(tmp.path().join("count"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let r1 = release("r1", "A = 1\n", "S = 1\n", "/venvs/k1");
    run(&r1, None);
    assert_eq!(count(), 1);
    // Same code, settings and environment: reused, as hard links.
    let r2 = release("r2", "A = 1\n", "S = 1\n", "/venvs/k1");
    let out = run(&r2, Some(&r1));
    assert!(out.contains("reused from the previous release"), "{out}");
    assert_eq!(count(), 1);
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(
        std::fs::metadata(r2.join("out/f")).unwrap().ino(),
        std::fs::metadata(r1.join("out/f")).unwrap().ino()
    );
    // Any input changed: it runs.
    for (name, code, settings, venv) in [
        ("r3", "A = 2\n", "S = 1\n", "/venvs/k1"),
        ("r4", "A = 1\n", "S = 2\n", "/venvs/k1"),
        ("r5", "A = 1\n", "S = 1\n", "/venvs/k2"),
    ] {
        let before = count();
        let r = release(name, code, settings, venv);
        let out = run(&r, Some(&r1));
        assert!(!out.contains("reused"), "{name}: {out}");
        assert_eq!(count(), before + 1, "{name}");
        assert_ne!(
            std::fs::metadata(r.join("out/f")).unwrap().ino(),
            std::fs::metadata(r1.join("out/f")).unwrap().ino()
        );
    }
    // The previous release without the output (or the key): it runs.
    let r6 = release("r6", "A = 1\n", "S = 1\n", "/venvs/k1");
    std::fs::remove_file(r1.join(".build_static-key")).unwrap();
    let before = count();
    run(&r6, Some(&r1));
    assert_eq!(count(), before + 1);
}

/// Without outputs, `reuse` skips a step whose inputs did not change (a check they decide).
#[test]
fn a_reusable_step_without_outputs_is_skipped_when_its_inputs_did_not_change() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Path::new("t.yml");
    let st = yaml::from_str::<StepSpec>(
        "name: check\nrun: 'echo ran >> ../count'\nreuse: {inputs: [settings.py]}\n",
        path,
    )
    .unwrap()
    .into_step(path)
    .unwrap();
    let run = |name: &str, settings: &str, previous: Option<&str>| {
        let r = tmp.path().join(name);
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("settings.py"), settings).unwrap();
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(script(&[(&st, st.run.clone())]))
            .current_dir(&r);
        if let Some(p) = previous {
            c.env("cchq_previous", tmp.path().join(p));
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
    };
    let count = || {
        std::fs::read_to_string(tmp.path().join("count"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    run("r1", "S = 1\n", None);
    run("r2", "S = 1\n", Some("r1"));
    assert_eq!(count(), 1, "skipped: the same inputs");
    run("r3", "S = 2\n", Some("r2"));
    assert_eq!(count(), 2, "ran: the settings changed");
}

#[test]
fn reuse_names_paths_inside_the_release() {
    let path = Path::new("t.yml");
    for (reuse, want) in [
        ("{inputs: [], outputs: [x]}", "needs `inputs`"),
        (
            "{inputs: [.], outputs: [../x]}",
            "not a path inside the release",
        ),
        (
            "{inputs: [/etc/passwd], outputs: [x]}",
            "not a path inside the release",
        ),
        ("{inputs: [a], outputs: [.]}", "cannot be an output"),
    ] {
        let text = format!("name: s\nrun: 'true'\nreuse: {reuse}\n");
        let e = yaml::from_str::<StepSpec>(&text, path)
            .unwrap()
            .into_step(path)
            .unwrap_err();
        assert!(e.message().contains(want), "{reuse}: {}", e.message());
    }
}
