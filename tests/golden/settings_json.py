"""Prints the settings a localsettings.py defines, as canonical JSON (for the golden test).

    python3 settings_json.py FILE

The file is parsed with `ast` (only imports, assignments, function definitions and expression
statements at the top level are accepted) and run with a stand-in for `celery.schedules.crontab`
(the only third-party name commcare-cloud's localsettings uses), so that a setting compares by
the value Python gives it, whatever its spelling (`json.loads('{"a": 1}')` and `{'a': 1}` are
one value; so are `"x"` and `'x'`). Output: {"NAME": value, ...} for every top-level name that is
not a module; tuples become {"tuple": [...]}, functions {"function": "<its source>"},
crontab(...) {"crontab": {...}}.
"""
import ast
import json
import sys
import types


class Crontab:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def canonical(v):
    if isinstance(v, Crontab):
        return {"crontab": canonical(v.kwargs)}
    if isinstance(v, tuple):
        return {"tuple": [canonical(x) for x in v]}
    if isinstance(v, list):
        return [canonical(x) for x in v]
    if isinstance(v, dict):
        return {str(k): canonical(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return {"repr": repr(v)}


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    tree = ast.parse(text, path)
    functions = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = ast.dump(node)
        elif not isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)):
            raise SystemExit(f"{path}:{node.lineno}: unexpected {type(node).__name__} at the top level")
    celery = types.ModuleType("celery")
    schedules = types.ModuleType("celery.schedules")
    schedules.crontab = Crontab
    celery.schedules = schedules
    sys.modules.setdefault("celery", celery)
    sys.modules.setdefault("celery.schedules", schedules)
    namespace = {"__file__": "/settings/localsettings.py", "__name__": "localsettings"}
    exec(compile(tree, path, "exec"), namespace)
    out = {}
    for name, value in namespace.items():
        if name.startswith("__") or isinstance(value, types.ModuleType) or value is Crontab:
            continue
        if callable(value) and name in functions:
            out[name] = {"function": functions[name]}
        elif isinstance(value, type) or callable(value):
            continue
        else:
            out[name] = canonical(value)
    json.dump(out, sys.stdout, sort_keys=True, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
