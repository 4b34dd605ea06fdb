"""Minimal pkg_resources for the fleet's supervisord launcher (see ../supervisord).

Implements what supervisor's daemon uses (EntryPoint.parse(...).resolve());
any other attribute loads and defers to the real pkg_resources.
"""
import importlib
import os
import sys


class EntryPoint:
    def __init__(self, name, module, attrs):
        self.name, self.module_name, self.attrs = name, module, attrs

    @classmethod
    def parse(cls, src, dist=None):
        name, _, spec = src.partition("=")
        module, _, attrs = spec.strip().partition(":")
        attrs = tuple(a for a in attrs.strip().split(".") if a)
        return cls(name.strip(), module.strip(), attrs)

    def resolve(self):
        obj = importlib.import_module(self.module_name)
        for attr in self.attrs:
            obj = getattr(obj, attr)
        return obj

    def load(self, require=True, *args, **kwargs):
        return self.resolve()


_REAL = None


def _real():
    global _REAL
    if _REAL is None:
        here = os.path.dirname(os.path.abspath(__file__))
        shim = sys.modules.pop(__name__)
        saved = sys.path[:]
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        try:
            _REAL = importlib.import_module("pkg_resources")
        finally:
            sys.path[:] = saved
            sys.modules[__name__] = shim
    return _REAL


def __getattr__(name):
    return getattr(_real(), name)
