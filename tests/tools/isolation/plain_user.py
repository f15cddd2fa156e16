"""Runs a command as a plain non-root user (kernel uid 1000, no user namespace), started by root:
``python -m tests.tools.isolation.plain_user UID -- COMMAND...``.

Hosts often keep the Python installation under a directory only root may enter (pyenv under
/root). In a private mount namespace of this process only, each such directory on the way to the
installation is covered by a tmpfs that others may enter, with the one entry that leads on bound
back into it; the host's directories are not changed, and everything goes when the command ends.
Then the process drops to UID (no groups) and executes the command. Exits 77 when this host does
not allow it (not root, no mount namespace), printing why.
"""

from __future__ import annotations

import ctypes
import os
import sys

MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
CLONE_NEWNS = 0x00020000
SKIP = 77


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}")


def _closed_steps(path: str) -> list[tuple[str, str]]:
    """(closed directory, the entry in it that leads to ``path``), outermost first."""
    steps, current = [], ""
    parts = os.path.realpath(path).split(os.sep)[1:]
    for i, part in enumerate(parts[:-1]):
        current += os.sep + part
        if not os.stat(current).st_mode & 0o001:
            steps.append((current, parts[i + 1]))
    return steps


def open_up(paths) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(CLONE_NEWNS)) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    for path in paths:
        for closed, entry in _closed_steps(path):
            held = os.open(os.path.join(closed, entry), os.O_PATH | os.O_CLOEXEC)
            _mount(libc, "tmpfs", closed, "tmpfs", 0, "size=64k,mode=0755")
            os.makedirs(os.path.join(closed, entry), exist_ok=True)
            _mount(libc, f"/proc/self/fd/{held}", os.path.join(closed, entry), None, MS_BIND | MS_REC)
            os.close(held)


def main() -> None:
    uid = int(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    if os.geteuid() != 0:
        print("plain_user: needs root to start", file=sys.stderr)
        sys.exit(SKIP)
    prefixes = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    try:
        open_up(sorted(prefixes))
    except OSError as e:
        print(f"plain_user: {e}: {os.strerror(e.errno or 0)}", file=sys.stderr)
        sys.exit(SKIP)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
