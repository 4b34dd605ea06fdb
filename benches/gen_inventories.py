"""Writes the per-tool inventories for one fleet size into WORKDIR.

    python3 gen_inventories.py ROOT WORKDIR APP_HOSTS_FILE

Reads ROOT/fleet/inventory.ini (host lines `fleetN ansible_host=ADDR ...` and [all:vars]) and
writes, for the host sets `all` (every host) and `app` (the hosts `cchq service commcare` acts
on, one inventory name per line in APP_HOSTS_FILE):
  hosts-<set>.txt   inventory names        addrs-<set>.txt  addresses (Fabric, the floor)
  pyinfra-<set>.py  pyinfra inventory (ssh_user, ssh_key, ssh_known_hosts_file, strict keys)
  vars.sh           FLEET_USER / FLEET_KEY / FLEET_KNOWN_HOSTS for bash
"""

import re
import sys


def main():
    root, workdir, app_file = sys.argv[1:4]
    addr = {}
    order = []
    allvars = {}
    section = None
    with open(f"{root}/fleet/inventory.ini") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            m = re.match(r"^\[(.+)\]$", line)
            if m:
                section = m.group(1)
                continue
            if section == "all:vars":
                k, _, v = line.partition("=")
                allvars[k.strip()] = v.strip()
                continue
            if section and ":" in section:
                continue
            parts = line.split()
            kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            if "ansible_host" in kv and parts[0] not in addr:
                addr[parts[0]] = kv["ansible_host"]
                order.append(parts[0])
    with open(app_file) as f:
        app = [h.strip() for h in f if h.strip()]
    user = allvars["ansible_user"]
    key = allvars["ansible_ssh_private_key_file"]
    known = f"{root}/fleet/known_hosts"
    for name, hosts in (("all", order), ("app", app)):
        with open(f"{workdir}/hosts-{name}.txt", "w") as f:
            f.write("".join(h + "\n" for h in hosts))
        with open(f"{workdir}/addrs-{name}.txt", "w") as f:
            f.write("".join(addr[h] + "\n" for h in hosts))
        with open(f"{workdir}/pyinfra-{name}.py", "w") as f:
            f.write("# pyinfra inventory written by benches/gen_inventories.py\n")
            f.write("_data = {\n")
            f.write(f"    'ssh_user': {user!r},\n    'ssh_key': {key!r},\n")
            f.write(f"    'ssh_known_hosts_file': {known!r},\n    'ssh_strict_host_key_checking': 'yes',\n")
            f.write("}\n")
            f.write("hosts = [\n")
            for h in hosts:
                f.write(f"    ({h!r}, dict(_data, ssh_hostname={addr[h]!r})),\n")
            f.write("]\n")
    with open(f"{workdir}/vars.sh", "w") as f:
        f.write(f"FLEET_USER={user}\nFLEET_KEY={key}\nFLEET_KNOWN_HOSTS={known}\n")
    print(f"{len(order)} hosts, {len(app)} app hosts")


if __name__ == "__main__":
    main()
