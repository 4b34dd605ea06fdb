use super::*;

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
    assert!(c.iter().filter(|s| s.after_switch).map(|s| s.name.as_str()).eq(["record_deploy_success"]));
    assert_eq!(c[5].on, Where::Hosts("proxy[0]".into()));
    let d = builtin("django").unwrap();
    assert_eq!(names(&d), ["virtualenv", "collectstatic", "migrate", "check"]);
    assert!(!d.iter().any(|s| s.run.contains("record_deploy_success")), "no CommCare-only step");
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
    assert_eq!(names(&s), ["virtualenv", "collectstatic", "compilemessages", "migrate", "smoke"]);
    let m = &s[3];
    assert_eq!(
        (m.timeout_secs, m.run.as_str(), &m.on),
        (Some(600), base[2].run.as_str(), &Where::Once),
        "a replace keeps what it does not give"
    );
    assert!(s[4].after_switch && s[4].on_failure == OnFailure::Warn);
    let s = apply_yaml(base.clone(), "order: [virtualenv, migrate, collectstatic, check]\n").unwrap();
    assert_eq!(names(&s), ["virtualenv", "migrate", "collectstatic", "check"]);
}

#[test]
fn every_name_in_the_overrides_must_be_a_step() {
    let base = builtin("django").unwrap();
    for (text, says) in [
        ("remove: [chek]\n", "`steps.remove` names `chek`"),
        ("replace:\n  - name: nope\n    run: x\n", "`steps.replace` names `nope`"),
        ("add:\n  - name: x\n    run: y\n    after: nope\n", "`steps.add[].after` names `nope`"),
        ("add:\n  - name: migrate\n    run: y\n", "a step named `migrate` exists"),
        ("add:\n  - name: x\n", "step `x` has no `run`"),
        ("add:\n  - name: 'a b'\n    run: y\n", "is not a step name"),
        ("order: [virtualenv, migrate]\n", "leaves out `collectstatic`, `check`"),
        ("order: [virtualenv, migrate, migrate, collectstatic, check]\n", "names `migrate` twice"),
        ("order: [virtualenv, migrate, collectstatic, check, nope]\n", "`steps.order` names `nope`"),
        ("replace:\n  - name: migrate\n    run: '{{ unclosed'\n", "not a valid template"),
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
    vars.map.insert("manage".into(), J::from("python_env/bin/python manage.py"));
    vars.map.insert("ignore_kafka_checkpoint_warning".into(), J::from(true));
    vars.map.insert("skip_record".into(), J::from(false));
    vars.map.insert("by".into(), J::from("ann@ctl"));
    let kafka = c.iter().find(|s| s.name.as_str() == "kafka_checkpoints").unwrap();
    assert_eq!(render(kafka, &vars).unwrap(), "python_env/bin/python manage.py validate_kafka_pillow_checkpoints --print-only");
    let record = c.iter().find(|s| s.name.as_str() == "record_deploy_success").unwrap();
    assert_eq!(render(record, &vars).unwrap(), "python_env/bin/python manage.py record_deploy_success --user ann@ctl");
    vars.map.insert("skip_record".into(), J::from(true));
    assert_eq!(render(record, &vars).unwrap(), "");
}

#[test]
fn a_group_runs_each_step_behind_its_marker_and_names_the_one_that_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Path::new("t.yml");
    let spec = |name: &str, run: &str, extra: &str| -> Step {
        let text = format!("name: {name}\nrun: '{run}'\n{extra}");
        yaml::from_str::<StepSpec>(&text, path).unwrap().into_step(path).unwrap()
    };
    let a = spec("a", "echo ran-a >> log", "");
    let w = spec("w", "exit 3", "on_failure: warn\n");
    let s = spec("s", "echo ran-s >> log", "when: '[ -f nothing ]'\n");
    let b = spec("b", "echo ran-b >> log; exit 5", "");
    let group = [(&a, a.run.clone()), (&w, w.run.clone()), (&s, s.run.clone()), (&b, b.run.clone())];
    let run = |g: &[(&Step, String)]| std::process::Command::new("sh").arg("-c").arg(script(g)).current_dir(tmp.path()).output().unwrap();
    let o = run(&group);
    assert_eq!(o.status.code(), Some(5));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(failed_step(&out).as_deref(), Some("b"), "{out}");
    assert_eq!(warned_steps(&out), ["w 3"]);
    assert!(tmp.path().join(".a-done").exists() && tmp.path().join(".w-done").exists() && tmp.path().join(".s-done").exists());
    assert!(!tmp.path().join(".b-done").exists());
    // Again: only the failed step runs.
    let o = run(&group);
    assert_eq!(o.status.code(), Some(5));
    let log = std::fs::read_to_string(tmp.path().join("log")).unwrap();
    assert_eq!(log, "ran-a\nran-b\nran-b\n", "a ran once, s was skipped by its condition");
    assert!(!strip_markers(&String::from_utf8_lossy(&o.stdout)).contains("::cchq"));
}

#[test]
fn a_timeout_kills_the_step() {
    let path = Path::new("t.yml");
    let st = yaml::from_str::<StepSpec>("name: slow\nrun: sleep 30\ntimeout_secs: 1\n", path).unwrap().into_step(path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let o = std::process::Command::new("sh").arg("-c").arg(script(&[(&st, st.run.clone())])).current_dir(tmp.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(124), "{o:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

/// The virtualenv step fails when an install fails (it used to end with `ln`, whose success hid
/// the failure: a release without its packages went on to collectstatic), and asks uv for the
/// host's trust store (over SSH no `SSL_CERT_FILE` is inherited; a TLS-inspecting proxy's CA is
/// only in the system store).
#[test]
fn the_virtualenv_step_fails_when_the_install_fails_and_uses_the_system_trust_store() {
    let env = crate::fixture_env("development");
    let layout = crate::deploy::layout::Layout::new(&env, "commcare");
    let script = virtualenv_script(&env, &layout);
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A stand-in uv: `venv` works, `pip install` fails as uv does on a refused certificate.
    let uv = bin.join("uv");
    std::fs::write(
        &uv,
        "#!/bin/sh\necho \"UV_NATIVE_TLS=$UV_NATIVE_TLS\" >> ../uv.log\ncase \"$1\" in venv) mkdir -p .venv/bin;; pip) echo 'invalid peer certificate: UnknownIssuer' >&2; exit 2;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rel = tmp.path().join("release");
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::write(rel.join("requirements.txt"), "django\n").unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let o = std::process::Command::new("sh").arg("-c").arg(&script).current_dir(&rel).env("PATH", &path).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(!rel.join("python_env").exists(), "no python_env for a failed install");
    assert_eq!(std::fs::read_to_string(tmp.path().join("uv.log")).unwrap(), "UV_NATIVE_TLS=1\nUV_NATIVE_TLS=1\n");
}
