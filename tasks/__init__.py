"""Benchmark tasks and built-in suites, imported as ``tokbench.tasks``."""
if __name__ != "tokbench.tasks":
    # This folder was reached as a top-level `tasks` because the repo root is on sys.path
    # (a REPL or `python -c` started there). Step aside for the real package of that
    # name further along sys.path, so a contributor's environment is never shadowed.
    # Self-contained on purpose (the same lines are in tokenizers/__init__.py): importing a shared
    # helper would import tokbench, and with it torch, on every `import tasks`.
    import importlib
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _saved_path = sys.path[:]
    del sys.modules[__name__]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    try:
        sys.modules[__name__] = importlib.import_module(__name__)
    finally:
        sys.path[:] = _saved_path
