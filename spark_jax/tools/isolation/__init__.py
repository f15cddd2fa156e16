"""Process isolation for the tools: the Python sandbox and the host-tool worker processes.

Host side (imported by the tools):

- ``sandbox``: spawns one confined worker per python/sympy call, feeds it code, collects capped
  output within the wall-clock limit and kills everything after (``run_python``).
- ``sandbox_types``: the sandbox's settings and the outcome of one run.
- ``sandbox_cgroup``, ``sandbox_cleanup``: a cgroup per sandbox worker; what an unsafe-mode run
  leaves behind.
- ``tool_worker``: the pool of killable worker processes that run the host-side tools;
  ``tool_worker_main`` is what those workers run.
- ``seccomp``: the syscall allow list, for the sandbox and (without signals) the tool workers.
- ``spawn``: starting worker processes from one long-lived thread of a non-dumpable host.

``child``: the code that runs inside the sandbox's worker process, standard library only (the
sandbox's root holds no spark_jax; an import-linter contract keeps it from importing the rest of
the package). The tool workers use its ``confine`` too.
"""
