"""Writes commcare-cloud's generated Ansible variables for cchq's fixture environments.

    python generated_vars.py CC_SRC FIXTURE_ENVS WORK OUT_ROOT ENV...

Run by ./regenerate in its virtualenv (commcare-cloud's source on PYTHONPATH). For each
environment, commcare-cloud's `Environment._create_generated_yml` (the `.generated.yml` every
`commcare-cloud ENV ansible-playbook` passes with `-e @`) is computed on a throwaway copy of the
fixtures and written as `OUT_ROOT/<env>/generated_vars.json`, which
cchq-core/tests/golden_generated_vars.rs compares with `cchq ENV ap`'s generated variables.
Paths under the throwaway copy become `$ENVIRONMENTS` (cchq's test puts its own fixtures' path
there). `release_name` is left out: commcare-cloud sets it only in deploys.
"""
import json
import os
import shutil
import sys

import yaml

from render_upstream import ensure_users_files


def main(cc_src, fixtures_envs, work, out_root, names):
    envs_dir = os.path.realpath(os.path.join(work, "generated-vars-environments"))
    shutil.rmtree(envs_dir, ignore_errors=True)
    shutil.copytree(fixtures_envs, envs_dir)
    os.environ["COMMCARE_CLOUD_ENVIRONMENTS"] = envs_dir
    sys.path.insert(0, os.path.join(cc_src, "src"))
    from commcare_cloud.environment.main import Environment
    from commcare_cloud.environment.paths import DefaultPaths

    for name in names:
        paths = DefaultPaths(name, environments_dir=envs_dir)
        ensure_users_files(paths)
        env = Environment(paths)
        env._create_generated_yml(save=True)
        with open(paths.generated_yml) as f:
            text = f.read()
        os.remove(paths.generated_yml)
        data = yaml.safe_load(text.replace(envs_dir, "$ENVIRONMENTS"))
        data.pop("release_name", None)
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "generated_vars.json"), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
