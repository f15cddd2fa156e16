"""Worked examples and the hostile battery for the sandboxed ``python`` tool.

Each hostile program must end ok=False (or harmlessly) within its limit, leave no files in
the world-writable directories or $HOME, leave no process behind, and leak no secret."""

import ast
import os
import pathlib
import time

import pytest

import spark_jax.tools as tools
from spark_jax.tools import ToolsConfig, run_tool
from spark_jax.tools.isolation.sandbox import close_pools, processes_of_uid, run_python, sandbox_layers
from spark_jax.tools.python_tool import sandbox_settings
from tests.tools.isolation.attacks import snapshot

TIMEOUT = 2.0
SECRET = "sk-test-DO-NOT-LEAK-1234567890"
OWN_WORKDIRS = f"spark-sbx-{os.getpid()}-"  # other test processes may be running sandboxes too
WATCHED = ["/tmp", "/var/tmp", "/dev/shm", str(pathlib.Path.home())]


def _snapshot() -> set[str]:
    return snapshot(WATCHED)


@pytest.fixture
def secret_env(monkeypatch):
    # No warm worker, so that any spark-sbx-* directory left over is a real leak.
    tools.configure(ToolsConfig(sandbox_prefork=False))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    return SECRET


@pytest.mark.parametrize(
    "code, expected",
    [
        ("print(sum(range(101)))", "5050"),
        ("x = 6\nx * 7", "42"),  # a final bare expression is printed
        ("import numpy as np\nprint(np.linalg.det(np.array([[1., 2.], [3., 4.]])).round(6))", "-2.0"),
        ("import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 4, x))", "[-2, 2]"),
        ("from scipy import optimize\nprint(round(optimize.brentq(lambda t: t*t - 2, 0, 2), 6))", "1.414214"),
        ("import math\nprint(math.comb(52, 5))", "2598960"),
        ("open('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())", "hi"),
        ("import threading\nt = threading.Thread(target=lambda: print('thread ran'))\nt.start(); t.join()", "thread ran"),
    ],
)
def test_worked_examples(code, expected):
    r = run_tool("python", code, timeout_s=15)
    assert r.ok, r.error
    assert r.output.strip() == expected


def test_user_error_is_readable():
    r = run_tool("python", "def f():\n    return 1 / 0\nf()")
    assert not r.ok
    assert "ZeroDivisionError" in r.error
    assert 'File "<tool>", line 2' in r.output


def test_syntax_error_is_readable():
    r = run_tool("python", "print(")
    assert not r.ok and "SyntaxError" in r.error


def test_no_output_is_said():
    r = run_tool("python", "x = 1")
    assert r.ok and "no output" in r.output


HOSTILE = {
    "infinite_loop": "while True:\n    pass",
    "sleep_forever": "import time\ntime.sleep(60)",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "fork_bomb_ctypes": (
        "import ctypes\nlibc = ctypes.CDLL(None)\nfor _ in range(100000):\n"
        "    if libc.fork() < 0:\n        raise SystemExit('fork refused')"
    ),
    "multiprocessing": "import multiprocessing as mp\np = mp.Process(target=print)\np.start()",
    "memory_blowup": "x = bytearray(50 * 1024**3)",
    "memory_creep": "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))",
    "huge_output": "while True:\n    print('x' * 10000)",
    "huge_output_stderr": "import sys\nwhile True:\n    sys.stderr.write('y' * 10000)",
    "write_home": "open('/root/pwned_by_sandbox', 'w').write('x')",
    "write_home_env": "import os\nopen(os.path.expanduser('~') + '/../pwned_by_sandbox', 'w').write('x')",
    "write_tmp": "open('/tmp/pwned_by_sandbox', 'w').write('x')",
    "write_var_tmp": "open('/var/tmp/pwned_by_sandbox', 'w').write('x')",
    "write_dev_shm": "open('/dev/shm/pwned_by_sandbox', 'w').write('x')",
    "write_tmp_ctypes": (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.open(b'/tmp/pwned_by_sandbox_c', 0o101, 0o644)\n"
        "assert fd >= 0, ctypes.get_errno()"
    ),
    "mkdir_tmp": "import os\nos.mkdir('/tmp/pwned_dir_by_sandbox')",
    "big_file": "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 10**6)",
    "socket_loopback": "import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=1)",
    "socket_ctypes": (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\nassert fd >= 0, ctypes.get_errno()"
    ),
    "socket_udp": "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('8.8.8.8', 53))",
    "shell_os_system": "import os\nos.system('echo pwned > /tmp/pwned_by_sandbox')",
    "shell_subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'id'], check=True)",
    "shell_exec": "import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])",
    "shell_exec_ctypes": (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.execv(b'/bin/sh', None)\nraise SystemExit(f'execv returned {rc}')"
    ),
    "import_trick": "__import__('os').system('id')",
    "import_trick_builtins": "getattr(__builtins__, '__import__')('subprocess').check_output(['id'])",
    "huge_int": "print(9**9**9**9)",
    "huge_int_str": "print(len(str(10**10**8)))",
    "recursion": "def f(n):\n    return f(n + 1)\nf(0)",
    "kill_parent": "import os\nos.kill(os.getppid(), 9)",
    "setuid_root": "import os\nos.setuid(0)",
    "exit_code": "raise SystemExit(3)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_battery(name, secret_env):
    before = _snapshot()
    start = time.perf_counter()
    r = run_tool("python", HOSTILE[name], timeout_s=TIMEOUT)
    elapsed = time.perf_counter() - start
    assert not r.ok, (name, r.output[:300])
    assert r.error
    assert elapsed < TIMEOUT + 5.0, f"{name} took {elapsed:.1f}s"
    assert secret_env not in r.output + r.error
    leftovers = _snapshot() - before
    assert not [p for p in leftovers if "pwned" in p or OWN_WORKDIRS in p], leftovers
    assert os.getppid() > 1  # we are alive and so is our parent


def test_limits_are_named(secret_env):
    assert "timed out" in run_tool("python", HOSTILE["infinite_loop"], timeout_s=1).error
    assert "too much output" in run_tool("python", HOSTILE["huge_output"], timeout_s=TIMEOUT).error
    assert "MemoryError" in run_tool("python", HOSTILE["memory_blowup"], timeout_s=TIMEOUT).error


@pytest.mark.parametrize(
    "code",
    [
        "import os\nprint(dict(os.environ))",
        "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())",
        "print(open('/proc/1/environ').read())",
        "import os\nfor p in os.listdir('/proc'):\n"
        "    try:\n        print(open(f'/proc/{p}/environ').read())\n    except Exception:\n        pass",
    ],
)
def test_secrets_do_not_leak(code, secret_env):
    r = run_tool("python", code, timeout_s=TIMEOUT)
    assert secret_env not in r.output + (r.error or "")


def test_no_processes_or_workdirs_remain():
    settings = sandbox_settings(ToolsConfig(), ())
    outcome = run_python(HOSTILE["fork_bomb_ctypes"], TIMEOUT, settings, prefork=False)
    assert not outcome.ok
    if outcome.uid is not None:
        assert processes_of_uid(outcome.uid) == []
    outcome = run_python("import time\ntime.sleep(30)", 0.5, settings, prefork=False)
    assert outcome.timed_out
    if outcome.uid is not None:
        assert processes_of_uid(outcome.uid) == []


def test_calls_are_isolated_from_each_other():
    tools.configure(ToolsConfig(sandbox_prefork=True))
    before = _snapshot()
    first = run_tool("python", "open('state.txt', 'w').write('x')\nimport builtins\nbuiltins.LEAK = 1\nprint('ok')")
    assert first.ok
    second = run_tool("python", "import os, builtins\nprint(os.listdir('.'), hasattr(builtins, 'LEAK'))")
    assert second.ok and second.output.strip() == "[] False"
    close_pools()  # the warm worker waiting for a third call goes, with its directory
    assert not [p for p in _snapshot() - before if OWN_WORKDIRS in p]


def test_layers_report():
    layers = sandbox_layers()
    if layers["mode"] == "unavailable":
        # Strict mode on a host without namespaces: the refusal must say what is missing.
        assert layers["error"].startswith("sandbox unavailable: ") and "unsafe" in layers["error"]
        return
    assert layers["mode"] in ("root", "user-namespace")
    assert layers.get("audit_hook") == "on"
    assert "RLIMIT_AS" in layers["rlimits"] and "RLIMIT_CPU" in layers["rlimits"]
    for key in ("mountns", "netns", "ipcns", "pidns", "seccomp", "no_new_privs"):
        assert layers[key] == "on", (key, layers[key])  # strict mode runs with all of them or not at all
    assert layers["mounts"][0] == "pivot_root" and layers["workdir"] == "/sandbox"
    if os.geteuid() == 0:
        assert isinstance(layers["uid"], int) and layers["uid"] > 0
        assert "RLIMIT_NPROC" in layers["rlimits"]
    else:
        assert layers["uid"] == "65534 (unmapped)"
    assert layers["memory_cgroup"] == "on" or layers["memory_cgroup"].startswith("off: ")


def test_seccomp_refuses_raw_syscalls_when_active():
    layers = sandbox_layers()
    if layers.get("seccomp") != "on":
        pytest.skip(f"seccomp layer not active here: {layers.get('seccomp')}")
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "res = []\n"
        "for call in (lambda: libc.fork(), lambda: libc.socket(2, 1, 0),\n"
        "             lambda: libc.execv(b'/bin/true', None), lambda: libc.unshare(0x40000000)):\n"
        "    ctypes.set_errno(0)\n"
        "    res.append((call(), ctypes.get_errno()))\n"
        f"ctypes.set_errno(0)\nprint(res, (libc.kill({os.getpid()}, 0), ctypes.get_errno()))\n"
        "print(libc.kill(os.getpid(), 0))"
    )
    r = run_tool("python", code, timeout_s=5)
    assert r.ok, r.error
    # The host's pid does not exist in the sandbox's PID namespace (ESRCH).
    assert r.output.splitlines() == ["[(-1, 1), (-1, 1), (-1, 1), (-1, 1)] (-1, 3)", "0"]


def test_concurrent_calls_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    tools.configure(ToolsConfig(sandbox_prefork=True))
    codes = [f"print({i} * {i})" for i in range(6)]
    with ThreadPoolExecutor(max_workers=3) as ex:
        results = list(ex.map(lambda c: run_tool("python", c, timeout_s=10), codes))
    assert [r.output.strip() for r in results] == [str(i * i) for i in range(6)]
    close_pools()


def test_odd_source_bytes_are_errors_not_crashes():
    r = run_tool("python", "print('a')\x00")
    assert not r.ok and "null" in (r.error + r.output).lower()
    r = run_tool("python", "print('\ud800')")
    assert r.ok or r.error


def test_nothing_outside_the_workdir_is_writable():
    repo = str(pathlib.Path(__file__).resolve().parents[2])
    candidates = ["/", "/root", "/home", "/etc", "/usr", "/var", "/opt", "/tmp", "/var/tmp", "/dev/shm",
                  "/run/lock", str(pathlib.Path.home()), repo, os.path.dirname(os.__file__)]
    code = (
        "import os\n"
        f"dirs = {candidates!r}\n"
        "print([d for d in dirs if os.path.isdir(d) and os.access(d, os.W_OK)])\n"
        "print(os.access(os.getcwd(), os.W_OK))"
    )
    r = run_tool("python", code, timeout_s=10)
    assert r.ok, r.error
    layers = sandbox_layers()
    if isinstance(layers.get("uid"), int):
        writable, own = r.output.splitlines()
        # /tmp-like directories may stay writable without a mount namespace (then swept).
        allowed = set() if isinstance(layers.get("mounts"), list) else {"/tmp", "/var/tmp", "/dev/shm", "/run/lock"}
        assert set(ast.literal_eval(writable)) <= allowed
        assert own == "True"
