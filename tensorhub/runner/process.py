"""One task attempt as a supervised subprocess: start it, poll it, kill its process group,
and read what it left behind (outcome file, output log)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson

from tensorhub.runner.child import ENV_PARENT
from tensorhub.tasks.claims import Claim, Outcome
from tensorhub.tasks.context import ENV_ATTEMPT, ENV_PROJECT, ENV_TASK, ENV_URI

if TYPE_CHECKING:
    from tensorhub.hub import TensorHub

OUTPUT_TAIL = 4000


class TaskProcess:
    """A running attempt: ``poll()`` until it exits, then ``outcome()``; ``kill()`` any time."""

    def __init__(self, hub: "TensorHub", claim: Claim, gpu: str | None, workroot: str | None = None) -> None:
        self.claim = claim
        self.workdir = Path(tempfile.mkdtemp(prefix=f"task-{claim.task_id}-{claim.seq}-", dir=workroot))
        self.workdir.joinpath("task.bson").write_bytes(bson.encode(claim.task))
        code = claim.task["code"]
        if code["kind"] == "function":
            self.workdir.joinpath("function.dill").write_bytes(hub.blobs.read_bytes(code["blob"]["id"]))
        env = {**os.environ, ENV_URI: hub.uri, ENV_PROJECT: hub.project_name, ENV_TASK: str(claim.task_id),
               ENV_ATTEMPT: str(claim.seq), ENV_PARENT: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        # The child imports the very tensorhub this runner runs, installed or not.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu  # the task sees only its slot's GPU
        self.log_path = self.workdir / "output.log"
        with open(self.log_path, "wb") as log:
            # start_new_session: the task and anything it spawns form one process group to kill.
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tensorhub.runner.child", str(self.workdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir, start_new_session=True)
        self.started = time.monotonic()
        self.kill_reason: dict[str, Any] | None = None
        self.log_ref: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def kill(self, reason: dict[str, Any] | None = None) -> None:
        """SIGKILL the whole process group (the task and its children) and reap it."""
        if reason is not None and self.kill_reason is None:
            self.kill_reason = reason
        self._kill_group()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:  # stuck in the kernel (a wedged GPU driver, say)
            pass

    def _kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def outcome(self) -> Outcome:
        """What the attempt produced, once it has exited (or been killed)."""
        output = {"tail": self.output_tail(), "exit_code": self.popen.returncode}
        if self.kill_reason is not None:
            return Outcome("failed", error=self.kill_reason, output=output)
        path = self.workdir / "outcome.bson"
        if path.exists():
            data = bson.decode(path.read_bytes())
            if data.get("ok"):
                return Outcome("finished", result=data.get("result") or {}, output=output)
            return Outcome("failed", error=data.get("error"), output=output)
        code = self.popen.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        return Outcome("failed", error={"type": "ProcessDied", "message": f"the task process {how} "
                                        "before reporting a result"}, output=output)

    def output_tail(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - OUTPUT_TAIL))
            return log.read().decode("utf-8", errors="replace")

    def cleanup(self) -> None:
        """Remove the work dir, and anything the task left running in its process group."""
        self._kill_group()
        shutil.rmtree(self.workdir, ignore_errors=True)
