"""SLURM backend: one submitit task per node, each running the same node supervisor as a local launch.

``plan`` is pure: submitit's parameters come from the spec through one table, the sbatch text is
submitit's own (``_make_sbatch_string``, exactly what ``SlurmExecutor`` writes for them), and the
per-node command holds tokens that only the node fills in: its rank (``SLURM_NODEID`` via
submitit, never expanded at submit time), the head (the allocation's first host) and a port derived
from the job id, so concurrent jobs do not collide. DeepSpeed's multi-node launcher is ``standard``
(accelerate's torchrun on each node; never pdsh).

The submitted callable, ``NodeTask``, is checkpointable: on pre-emption or time-out submitit
requeues the job, and the restarted tasks run as the next attempt of the same run folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from launcher.backends.base import Plan
from launcher.backends.slurm_node import NodeTask, cancelled
from launcher.backends.slurm_plan import NAME as NAME  # the Backend protocol: slurm.NAME
from launcher.backends.slurm_plan import plan as plan  # the Backend protocol: slurm.plan
from launcher.backends.slurm_plan import submitit_folder
from launcher.records import rundir
from launcher.run.follow import LogFollower
from launcher.spec.decided import Resolved


def problems(resolved: Resolved) -> list[str]:
    import shutil

    missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
    if missing:
        return [f"--slurm: {', '.join(missing)} not found on PATH; run ftlaunch on a SLURM login node"]
    return []


# ---------------------------------------------------------------- submitting and following


@dataclass
class SlurmJob:
    """A submitted run: SLURM's state through submitit, the outcome from the run folder."""

    job: Any  # submitit.SlurmJob
    run_dir: Path

    @property
    def job_id(self) -> str | None:
        return str(self.job.job_id)

    def report(self) -> list[str]:  # each node's console (SLURM's output file) has its own
        return []

    def wait(self) -> int:
        """Follow the first node's log of the newest attempt on the console until the job ends or
        is cancelled (then at once: SLURM may take a while to end its tasks, and they record no
        verdict). Ctrl-C stops following only: the job is the cluster's now; ``cancel`` stops it."""
        follower = LogFollower(self.run_dir)
        try:
            while not self.job.done(force_check=True) and not cancelled(self.run_dir):
                follower.print_new()
                time.sleep(2)
        except KeyboardInterrupt:
            print(
                f"\nftlaunch: stopped following; SLURM job {self.job_id} goes on. "
                f"Stop it with: ftlaunch cancel {self.run_dir}",
                file=sys.stderr,
            )
            return 130
        follower.print_new()
        follower.close()
        return outcome(self.run_dir, str(self.job.state))


def outcome(run_dir: Path, slurm_state: str) -> int:
    if cancelled(run_dir):
        return 130  # stopped by the user, as Ctrl-C on a local run
    latest = rundir.latest_attempt(run_dir)
    status = rundir.read_json(latest / rundir.STATUS) if latest and (latest / rundir.STATUS).exists() else {}
    if "exit_code" in status:
        return int(status["exit_code"])
    return 0 if slurm_state == "COMPLETED" else 1


def submit(the_plan: Plan) -> SlurmJob:
    import submitit

    assert the_plan.slurm is not None
    from submitit.core.utils import FailedJobError

    executor = submitit.SlurmExecutor(folder=submitit_folder(the_plan.run_dir, the_plan.cwd))
    executor.update_parameters(**the_plan.slurm)
    try:
        job = executor.submit(NodeTask(the_plan.resolved, the_plan.run_dir, the_plan.attempt, the_plan.cwd))
    except FailedJobError as err:
        refused(the_plan, str(err).strip())
    rundir.update_status(the_plan.attempt_dir, state="queued", backend=NAME, job_id=str(job.job_id))
    run_file = the_plan.run_dir / rundir.RUN
    known = rundir.read_json(run_file).get("job_ids", [])
    rundir.update_json(run_file, job_ids=[*known, str(job.job_id)])
    return SlurmJob(job, the_plan.run_dir)


def refused(the_plan: Plan, said: str) -> NoReturn:
    """sbatch said no: nothing was queued. The attempt records why; the user gets exit 2."""
    from launcher.errors import SpecError

    said = " ".join(line.strip() for line in said.splitlines() if line.strip())
    rundir.update_status(the_plan.attempt_dir, state="refused", backend=NAME, message=f"sbatch: {said}")
    raise SpecError(
        [
            f"sbatch refused the job ({said}); nothing was queued. Check --partition, --time, --account, "
            f"--qos and --sbatch (sinfo lists partitions and their limits). Record: {the_plan.run_dir}"
        ]
    )
