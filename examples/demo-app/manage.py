#!/usr/bin/env python3
"""The demo app's management commands: the same shape as CommCare HQ's manage.py.

Long-running (run under supervisor): runweb, celery, celerybeat, flower, run_ptop.
Deploy steps: migrate, preindex_everything [--check], collectstatic, record_deploy_success.
Operations: check_services, check, shell, showmigrations.
"""
import sys

from demo import commands

if __name__ == "__main__":
    sys.exit(commands.main(sys.argv[1:]))
