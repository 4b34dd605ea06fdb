"""Settings: defaults, overridden by localsettings.py (rendered by cchq from the environment)."""
import os
import pathlib

BASE_DIR = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = os.environ.get("CCHQ_SHARED_DIR", str(BASE_DIR.parent.parent / "shared"))
HQ_INSTANCE = "demo"
DEPLOY_MACHINE_NAME = os.environ.get("CCHQ_HOST", "localhost")
SECRET_KEY = None

try:  # noqa: SIM105
    import localsettings  # type: ignore  # rendered into the release by cchq
    for _name in dir(localsettings):
        if _name.isupper():
            globals()[_name] = getattr(localsettings, _name)
except ImportError:
    pass

# CommCare HQ's localsettings.py (as commcare-cloud writes it) names the instance in its analytics
# settings; an older or hand-written one may set HQ_INSTANCE itself.
HQ_INSTANCE = globals().get("ANALYTICS_CONFIG", {}).get("HQ_INSTANCE") or HQ_INSTANCE

DATABASE = os.path.join(SHARED_DIR, "demo.sqlite3")
STATE_DIR = os.path.join(SHARED_DIR, "state")
