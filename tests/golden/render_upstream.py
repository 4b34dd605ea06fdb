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

What cannot come from a live run, and what stands in for it:
- Gathered facts. The one these templates reach is `ansible_hostname` (development's proxy.yml:
  `SITE_HOST: "{{ hostvars[groups.proxy.0].ansible_hostname }}"`). It is set, for hosts with a
  `hostname` inventory variable only, to that variable: commcare-cloud's `common` role sets the
  machine's hostname to it ("Sets hostname"). Other hosts get no `ansible_hostname`.
- `current_formplayer_release`: the formplayer role registers `readlink current` first; on a
  release deploy it is `formplayer_release_name` (`<release_name>-<env_monitoring_id>`), which is
  what this uses (`_should_update_formplayer_in_place` is false outside update-config).
- `ansible_managed` (a comment) is commcare-cloud's ansible.cfg's text.
- `dev_users`: environments whose `meta.yml` names a users file that the fixtures do not have get
  an empty one in the throwaway copy (users do not reach these templates).
"""
import json
import os
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
    with open(os.path.join(ansible_dir, "golden_settings.yml"), "w") as f:
        f.write(PLAYBOOK)
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

    for name, hosts in plan.items():
        paths = DefaultPaths(name, environments_dir=envs_dir)
        with open(paths.meta_yml) as f:
            meta = yaml.safe_load(f)
        for org in meta.get("users", []):
            users = paths.get_users_yml(org)
            if not os.path.exists(users):
                os.makedirs(os.path.dirname(users), exist_ok=True)
                with open(users, "w") as f:
                    f.write("dev_users:\n  present: []\n  absent: []\n")
        env = Environment(paths)
        env.release_name = RELEASE
        env._create_generated_yml(save=True)
        out = os.path.join(work, "out", name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
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
            "-e", json.dumps({"golden_out": out, "golden_hosts": hosts}),
        ]
        run_env = dict(os.environ)
        run_env.update({
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
        dest = os.path.join(out_root, name)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out, dest)


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
