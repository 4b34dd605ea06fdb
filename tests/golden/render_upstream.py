"""Renders commcare-cloud's own settings templates for cchq's fixtures (run by ./regenerate).

Runs inside a throwaway virtualenv with ansible-core and commcare-cloud's Python dependencies,
with commcare-cloud's source (never committed here) on PYTHONPATH. For each environment:

1. commcare-cloud's `Environment` computes the variables it passes to Ansible
   (`_create_generated_yml`: app_processes_config, postgresql_dbs, ES_SETTINGS, the secrets'
   variables, CELERY_FLOWER_URL, ...), with `release_name` set as in a deploy.
2. `ansible-playbook` runs as commcare-cloud runs it (`-i inventory -e @public.yml
   -e @.generated.yml -e @vault.yml`, commcare-cloud's ansible.cfg) a playbook of ours placed in
   the throwaway copy of commcare-cloud's ansible directory, so that its group_vars and the roles'
   defaults and vars apply with Ansible's precedence. The playbook includes, for the `commcarehq`
   and `formplayer` roles, a role of ours (also only in the throwaway copy) with that role's
   defaults, vars and templates and one `template` task, for upstream's `localsettings.py.j2` /
   `application.properties.j2` (the roles' dependencies are left out: their tasks need Ansible
   collections, and their variables reach neither file).
   Every host runs locally (`ansible_connection=local`), without gathering facts.
3. The same run renders, for every host, the supervisor program files of upstream's
   `deploy_commcarehq.yml` (its `services` plays: the hosts each play runs on and the
   `roles/commcarehq/tasks/*.yml` files it includes, with their `when`), from those task files
   with only their `template` tasks kept and written into the work directory instead of
   `service_home` (see `supervisor_plays`), after upstream's `host_group_aliases.yml` (the
   `commcarehq` group). The `[program:NAME]` names of each host's files become
   `<env>/programs.json`, `{host: [sorted names]}` (every inventory host, `[]` for none), which
   cchq-core/tests/golden_programs.rs compares with cchq's program plan; and each program's
   `command` (as words, upstream's bash runners replaced by what they start), `environment`,
   `directory` and `user` become `<env>/program_commands.json`,
   `{host: {program: {command, runner, environment, directory, user}}}` (see `program_sections`),
   which the same test compares with the program files cchq renders.

What cannot come from a live run, and what stands in for it:
- Gathered facts. The one these templates reach is `ansible_hostname` (development's proxy.yml:
  `SITE_HOST: "{{ hostvars[groups.proxy.0].ansible_hostname }}"`). It is set, for hosts with a
  `hostname` inventory variable only, to that variable: commcare-cloud's `common` role sets the
  machine's hostname to it ("Sets hostname"). Other hosts get no `ansible_hostname`.
- `current_formplayer_release`: the formplayer role registers `readlink current` first; on a
  release deploy it is `formplayer_release_name` (`<release_name>-<env_monitoring_id>`), which is
  what this uses (`_should_update_formplayer_in_place` is false outside update-config).
- `ansible_processor_vcpus` (a fact; the webworkers' gunicorn worker count, no program name):
  the host's own variable if it has one, else 1.
- `ansible_managed` (a comment) is commcare-cloud's ansible.cfg's text.
- `dev_users`: environments whose `meta.yml` names a users file that the fixtures do not have get
  an empty one in the throwaway copy (users do not reach these templates).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

RELEASE = "2026-01-02_03.04"


def main(cc_src, fixtures_envs, work, out_root, plan_json):
    plan = json.loads(plan_json)
    envs_dir = os.path.join(work, "environments")
    shutil.rmtree(envs_dir, ignore_errors=True)
    shutil.copytree(fixtures_envs, envs_dir)
    os.environ["COMMCARE_CLOUD_ENVIRONMENTS"] = envs_dir
    sys.path.insert(0, os.path.join(cc_src, "src"))
    from commcare_cloud.environment.main import Environment
    from commcare_cloud.environment.paths import DefaultPaths

    ansible_dir = os.path.join(cc_src, "src", "commcare_cloud", "ansible")
    plays, task_files = supervisor_plays(ansible_dir)
    with open(os.path.join(ansible_dir, "golden_settings.yml"), "w") as f:
        f.write(PLAYBOOK + SUPERVISOR_PLAYBOOK + yaml.safe_dump(plays, sort_keys=False))
    # A role of ours per upstream role, with that role's defaults, vars, templates and filter
    # plugins (so the same variables apply, with a role's precedence) but not its dependencies
    # (supervisor, nodejs, java: their tasks need collections, their variables reach no setting).
    for role, text in (("commcarehq", COMMCAREHQ_TASKS), ("formplayer", FORMPLAYER_TASKS)):
        upstream = os.path.join(ansible_dir, "roles", role)
        ours = os.path.join(ansible_dir, "roles", "golden_" + role)
        shutil.rmtree(ours, ignore_errors=True)
        for part in ("defaults", "vars", "templates", "filter_plugins"):
            if os.path.isdir(os.path.join(upstream, part)):
                shutil.copytree(os.path.join(upstream, part), os.path.join(ours, part))
        os.makedirs(os.path.join(ours, "tasks"))
        with open(os.path.join(ours, "tasks", "main.yml"), "w") as f:
            f.write(text)
    for name, tasks in task_files.items():
        with open(os.path.join(ansible_dir, "roles", "golden_commcarehq", "tasks", name), "w") as f:
            yaml.safe_dump(tasks, f, sort_keys=False)

    for name, hosts in plan.items():
        paths = DefaultPaths(name, environments_dir=envs_dir)
        ensure_users_files(paths)
        env = Environment(paths)
        env.release_name = RELEASE
        env._create_generated_yml(save=True)
        out = os.path.join(work, "out", name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        supervisor_out = os.path.join(work, "supervisor", name)
        shutil.rmtree(supervisor_out, ignore_errors=True)
        os.makedirs(supervisor_out)
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            os.path.join(ansible_dir, "golden_settings.yml"),
            "-i", paths.inventory_source,
            "-e", "@" + paths.public_yml,
            "-e", "@" + paths.generated_yml,
        ]
        cmd += list(env.secrets_backend.get_extra_ansible_args())
        cmd += [
            "-e", "ansible_connection=local",
            "-e", "ansible_python_interpreter=" + sys.executable,
            "-e", json.dumps({"golden_out": out, "golden_hosts": hosts, "golden_supervisor_out": supervisor_out}),
        ]
        run_env = dict(os.environ)
        run_env.update({
            # upstream's host_group_aliases.yml would gather facts (of this machine)
            "ANSIBLE_GATHERING": "explicit",
            "ANSIBLE_CONFIG": os.path.join(ansible_dir, "ansible.cfg"),
            "ANSIBLE_LOG_PATH": os.path.join(work, "ansible.log"),
            "ANSIBLE_CACHE_PLUGIN": "memory",
            "ANSIBLE_LOCAL_TEMP": os.path.join(work, "tmp"),
            "ANSIBLE_REMOTE_TEMP": os.path.join(work, "tmp"),
            "ANSIBLE_NOCOLOR": "1",
        })
        run_env.update(env.secrets_backend.get_extra_ansible_env_vars())
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=run_env, cwd=ansible_dir, check=True)
        programs, contents = {}, {}
        for host in sorted(os.listdir(supervisor_out)):
            names, host_programs = [], {}
            for conf in glob.glob(os.path.join(supervisor_out, host, "*")):
                with open(conf) as f:
                    text = f.read()
                names += re.findall(r"^\[program:([^\]]+)\]", text, re.M)
                host_programs.update(program_sections(text, os.path.join(supervisor_out, host)))
            programs[host] = sorted(names)
            contents[host] = host_programs
        for file_name, data in (("programs.json", programs), ("program_commands.json", contents)):
            with open(os.path.join(out, file_name), "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
        dest = os.path.join(out_root, name)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out, dest)


def ensure_users_files(paths):
    """Writes an empty users file for each one meta.yml names that is missing (commcare-cloud
    reads them all; the fixtures do not carry every one)."""
    with open(paths.meta_yml) as f:
        meta = yaml.safe_load(f)
    for org in meta.get("users", []):
        users = paths.get_users_yml(org)
        if not os.path.exists(users):
            os.makedirs(os.path.dirname(users), exist_ok=True)
            with open(users, "w") as f:
                f.write("dev_users:\n  present: []\n  absent: []\n")


def program_sections(text, runners_dir):
    """`{program: {command, environment, directory, user, runner}}` of one supervisor file, read
    as supervisord reads it (`key=value`, continuation lines start with whitespace, `;`/`#`
    comment lines, a key given twice keeps its last value: supervisord's parser is not strict).

    - `command`: the command's words (whitespace between words is not significant to
      supervisord). A command run through one of upstream's bash runners
      (`/bin/bash <service_home>/<env>_{celery,django}_bash_runner.sh ARGS`, rendered next to the
      host's supervisor files) is replaced by what the runner starts: its `... &` line, with `$@`
      the arguments, and, for the celery runner, `${HOSTNAME_ARG} ${ARGS}` the `--hostname=`
      argument followed by the others, without the `.<start time>_timestamp` the runner appends to
      the hostname (a time, different on every start). `runner` names the runner (else null).
    - `environment`: `{NAME: value}` of supervisord's `K="v",...` syntax.
    """
    out, program, key = {}, None, None
    for line in text.splitlines():
        m = re.match(r"^\[program:([^\]]+)\]\s*$", line)
        if m:
            program, key = {}, None
            out[m.group(1)] = program
            continue
        if program is None or not line.strip() or line.lstrip().startswith((";", "#")):
            continue
        if line[0].isspace() and key is not None:
            program[key] += " " + line.strip()
            continue
        if line.startswith("["):
            program, key = None, None
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        program[key] = value.strip()
    result = {}
    for name, keys in out.items():
        words = keys.get("command", "").split()
        runner = None
        if len(words) >= 2 and words[0] == "/bin/bash" and words[1].endswith("_bash_runner.sh"):
            runner = os.path.basename(words[1])
            with open(os.path.join(runners_dir, runner)) as f:
                start = [l for l in f.read().splitlines() if l.rstrip().endswith("&") and not l.startswith((" ", "#"))]
            assert len(start) == 1, (runner, start)
            args = words[2:]
            started = start[0].rstrip().rstrip("&").split()
            if "$@" in started:
                i = started.index("$@")
                words = started[:i] + args + started[i + 1:]
            else:
                i = started.index("${HOSTNAME_ARG}")
                assert started[i + 1] == "${ARGS}", started
                host_args = [a for a in args if a.startswith(("--hostname=", "-n="))]
                words = started[:i] + host_args + [a for a in args if a not in host_args] + started[i + 2:]
        env = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"', keys.get("environment", "")))
        result[name] = {
            "command": words,
            "runner": runner,
            "environment": env,
            "directory": keys.get("directory"),
            "user": keys.get("user"),
        }
    return result


def supervisor_plays(ansible_dir):
    """The plays of upstream's deploy_commcarehq.yml that include `roles/commcarehq/tasks/*.yml`
    (by `include_tasks` or `import_role: {name: commcarehq, tasks_from: ...}`), as plays of ours
    including the same task files, rewritten, from our copy of the role: `(plays, {file: tasks})`.

    A task file keeps its `template` tasks only (the supervisor files and the bash runners),
    with their `when`, `with_items` and `vars`, written to `golden_supervisor_out/<host>/` under
    the name upstream gives the file, without `become` or ownership.
    """
    with open(os.path.join(ansible_dir, "deploy_commcarehq.yml")) as f:
        deploy = yaml.safe_load(f)
    plays, task_files = [], {}
    for play in deploy:
        includes = []
        for task in play.get("tasks", []):
            inc = task.get("include_tasks") or task.get("import_tasks")
            role = task.get("import_role") or task.get("include_role") or {}
            if isinstance(inc, str) and inc.startswith("roles/commcarehq/tasks/"):
                name = os.path.basename(inc)
            elif role.get("name") == "commcarehq" and role.get("tasks_from"):
                name = role["tasks_from"]
                name = name if name.endswith(".yml") else name + ".yml"
            else:
                continue
            include = {"include_role": {"name": "golden_commcarehq", "tasks_from": name}}
            if "when" in task:
                include["when"] = task["when"]
            includes.append(include)
            if name not in task_files:
                with open(os.path.join(ansible_dir, "roles", "commcarehq", "tasks", name)) as f:
                    upstream = yaml.safe_load(f) or []
                task_files[name] = [rewrite_template_task(t) for t in upstream if "template" in t]
        if includes:
            plays.append({"name": "upstream: " + play.get("name", ""), "hosts": play["hosts"],
                          "gather_facts": False, "tasks": includes})
    return plays, task_files


def rewrite_template_task(task):
    task = {k: v for k, v in task.items() if k not in ("become", "become_user", "tags")}
    template = dict(task["template"])
    dest = template["dest"].strip()
    if dest.startswith("{{") and dest.endswith("}}"):
        dest = "{{ (%s) | basename }}" % dest[2:-2]
    else:
        dest = os.path.basename(dest)
    template["dest"] = "{{ golden_supervisor_out }}/{{ inventory_hostname }}/" + dest
    for k in ("owner", "group", "mode"):
        template.pop(k, None)
    task["template"] = template
    return task


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: the hostname commcare-cloud's common role gives a host that sets `hostname`
      set_fact:
        ansible_hostname: "{{ hostname }}"
      when: hostname is defined
    - name: localsettings.py
      include_role:
        name: golden_commcarehq
      when: inventory_hostname in golden_hosts.localsettings
    - name: application.properties
      include_role:
        name: golden_formplayer
      when: inventory_hostname in golden_hosts.formplayer
"""

SUPERVISOR_PLAYBOOK = """\
- import_playbook: host_group_aliases.yml
- hosts: all
  gather_facts: false
  tasks:
    - set_fact:
        ansible_processor_vcpus: 1
      when: ansible_processor_vcpus is not defined
    - file:
        path: "{{ golden_supervisor_out }}/{{ inventory_hostname }}"
        state: directory
"""

COMMCAREHQ_TASKS = """\
- file:
    path: "{{ golden_out }}/{{ inventory_hostname }}"
    state: directory
- template:
    src: localsettings.py.j2
    dest: "{{ golden_out }}/{{ inventory_hostname }}/localsettings.py"
"""

FORMPLAYER_TASKS = """\
- file:
    path: "{{ golden_out }}/{{ inventory_hostname }}"
    state: directory
- template:
    src: application.properties.j2
    dest: "{{ golden_out }}/{{ inventory_hostname }}/application.properties"
  vars:
    current_formplayer_release: "{{ formplayer_release_name }}"
"""

if __name__ == "__main__":
    main(*sys.argv[1:])
