"""SnapStart runtime hooks for Python, as Lambda's Python runtimes offer them
(the public `snapshot_restore_py` API): `register_before_snapshot` and
`register_after_restore`, each usable as a decorator or as a call with the
hook's arguments, and `get_before_snapshot` / `get_after_restore` for the
runtime. emberd sends this file at /var/runtime beside ember_bootstrap.py,
which runs the before-snapshot hooks in reverse order of registration and
the after-restore hooks in order of registration, as Lambda documents."""

_before_snapshot = []
_after_restore = []


def register_before_snapshot(func, *args, **kwargs):
    """Runs `func(*args, **kwargs)` before the snapshot is taken; returns
    `func`, so it works as a decorator."""
    _before_snapshot.append((func, args, kwargs))
    return func


def register_after_restore(func, *args, **kwargs):
    """Runs `func(*args, **kwargs)` in every environment restored from the
    snapshot, before its first invocation; returns `func`."""
    _after_restore.append((func, args, kwargs))
    return func


def get_before_snapshot():
    """The before-snapshot hooks as (func, args, kwargs), registration order."""
    return _before_snapshot


def get_after_restore():
    """The after-restore hooks as (func, args, kwargs), registration order."""
    return _after_restore
