"""Writer processes for the crash-safety tests, forked from one server process per test module.

A writer that a test kills with SIGKILL must be a process of its own. Starting one costs an interpreter
start, the imports (spora-sd, spatialdata, dask, zarr...) and what a first write loads (e.g. the UniProt
table behind channel names): seconds per process, for writes that take a fraction of one. The server
pays that once: it imports what the writers import, runs an optional ``preload()`` (caches that start
no thread), checks that no thread runs (so forking is safe) and then forks one child per job. A kill
costs the job's own time; the child is a real process, killed for real.

A test module gives the server, as source text (:class:`ForkServer` ``setup``), module-level functions:

- ``run(job)``: the write of one job (a JSON object); it may raise: the exit code says what happened;
- ``warm_up(folder)``: a representative write into an empty ``folder``, run once in a forked child that
  reports which modules it imported (the server then imports them, without running any writer code);
- ``preload()`` (optional): run in the server after that, e.g. to fill ``functools.cache`` tables.

Requests and replies are JSON lines on the server's stdin and stdout:

- ``{"job": job, "kill_after": seconds | null}`` -> ``{"status": code}``; the child sets ``job["env"]``
  in its environment first, and is killed after ``kill_after`` seconds when given;
- ``{"jobs": [job, ...]}`` -> ``{"status": [code, ...]}``: children forked at the same instant;
- ``{"stopped": job, "meanwhile": job, "listing": folder}``: the first job stops itself (SIGSTOP at a
  fault point), the second runs meanwhile, then the first is continued; the reply has
  ``first_stopped``, ``second``, ``listing_meanwhile`` (the folder's names) and ``first``.

A child's code is 0 when ``run`` returned, :data:`LOCKED` on :class:`~spora_sd.errors.TargetLockedError`,
1 on any other exception (printed to stderr) and minus the signal number when a signal ended it.

Example (in a test module)::

    SETUP = "def warm_up(folder): ...\\ndef run(job): ..."

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        with ForkServer(tmp_path_factory.mktemp("server"), SETUP) as srv:
            yield srv

    def test_x(server):
        assert server.ask({"job": {...}})["status"] == -signal.SIGKILL
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from spora_sd.io.atomic import FAULT_POINT_ENV

__all__ = ["FAILED", "LOCKED", "OK", "ForkServer"]

#: Exit codes of a forked writer (a negative code is the signal that ended it).
OK, FAILED, LOCKED = 0, 1, 3

_PROTOCOL = textwrap.dedent(
    """
    import importlib, json, os, signal, sys, tempfile, threading, time, traceback
    from pathlib import Path

    from spora_sd.errors import TargetLockedError


    def _learn_imports():
        # a forked child runs warm_up() and lists the modules it imported; the server imports them
        listing = Path(tempfile.mkdtemp()) / "modules.json"
        pid = os.fork()
        if pid == 0:
            before = set(sys.modules)
            warm_up(listing.parent)
            listing.write_text(json.dumps(sorted(set(sys.modules) - before)))
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        for name in json.loads(listing.read_text()):
            try:
                importlib.import_module(name)
            except ImportError:
                pass


    _learn_imports()
    if "preload" in globals():
        preload()
    assert threading.active_count() == 1, threading.enumerate()  # forking is safe


    def start(job):
        pid = os.fork()
        if pid:
            return pid
        code = 0
        try:
            os.environ.update(job.get("env", {}))
            begun = time.monotonic()
            try:
                run(job)
            finally:
                if job.get("timing"):
                    Path(job["timing"]).write_text(str(time.monotonic() - begun))
        except TargetLockedError as exc:
            sys.stderr.write(f"TargetLockedError: {exc}\\n")
            code = 3
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)


    def wait(pid):
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        reply = {}
        if "jobs" in request:  # forked at the same instant
            pids = [start(job) for job in request["jobs"]]
            reply["status"] = [wait(pid) for pid in pids]
        elif "stopped" in request:  # the first job stops itself at a fault point, the second runs meanwhile
            first = start(request["stopped"])
            _, status = os.waitpid(first, os.WUNTRACED)
            reply["first_stopped"] = os.WIFSTOPPED(status)
            reply["second"] = wait(start(request["meanwhile"]))
            reply["listing_meanwhile"] = sorted(os.listdir(request["listing"]))
            os.kill(first, signal.SIGCONT)
            reply["first"] = wait(first)
        else:
            pid = start(request["job"])
            if request.get("kill_after") is not None:
                time.sleep(request["kill_after"])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reply["status"] = wait(pid)
        print(json.dumps(reply), flush=True)
    """
)


class ForkServer:
    """The server process: ``setup`` (source text defining ``run``, ``warm_up``, maybe ``preload``)."""

    def __init__(self, workdir: Path, setup: str) -> None:
        script = workdir / "fork_server.py"
        script.write_text(textwrap.dedent(setup) + "\n" + _PROTOCOL)
        env = {k: v for k, v in os.environ.items() if k != FAULT_POINT_ENV}
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert json.loads(self._readline()) == {"ready": True}

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        assert line, f"the fork server died (exit code {self.proc.poll()})"
        return line

    def ask(self, request: dict) -> dict:
        """Send one request, wait for its reply."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
