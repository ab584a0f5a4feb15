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

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from launcher import console, node, rendezvous, rundir, saving
from launcher.backends.base import HEAD, NODE_RANK, PORT, Plan, rendered_for
from launcher.backends.local import accelerate_argv, record_verdict
from launcher.render import Rendered, attempt_texts
from launcher.rules import Resolved, time_minutes

NAME = "slurm"
DEFAULT_TIME_MIN = 24 * 60  # submitit would otherwise ask for 5 minutes
FIRST_PORT, PORT_RANGE = 20000, 20000
SAVE_GRACE_SECONDS = 60.0  # of submitit's 90 s warning before the time limit, for the save

# Spec field of the `slurm` section -> submitit's SlurmExecutor parameter (the one table).
PARAMETERS = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "cpus_per_task": "cpus_per_task",
    "exclusive": "exclusive",
    "setup": "setup",
}


def submitit_parameters(resolved: Resolved, job_name: str) -> dict[str, Any]:
    spec = resolved.spec
    s = spec.slurm
    params: dict[str, Any] = {"job_name": job_name, "nodes": spec.topology.nodes, "ntasks_per_node": 1}
    params["time"] = time_minutes(s.time) if s.time else DEFAULT_TIME_MIN
    if spec.topology.gpus is not None:
        params["gpus_per_node"] = spec.topology.gpus
    for field_name, parameter in PARAMETERS.items():
        value = getattr(s, field_name)
        if value not in (None, (), False):
            params[parameter] = list(value) if isinstance(value, tuple) else value
    extra = dict(option.split("=", 1) for option in s.sbatch)
    if s.mem is not None:
        extra["mem"] = s.mem  # submitit's own `mem` takes gigabytes as a number
    if extra:
        params["additional_parameters"] = {k.strip().lstrip("-"): v for k, v in extra.items()}
    return params


def submitit_folder(run_dir: Path, cwd: str) -> Path:
    """Absolute, as submitit makes it, so the planned sbatch text is the submitted one."""
    return (Path(cwd) / run_dir / rundir.SLURM).absolute()


def sbatch_text(folder: Path, params: dict[str, Any]) -> str:
    """The script ``SlurmExecutor`` writes for these parameters (its own function and command)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return str(_make_sbatch_string(command=command, folder=folder, **params))


def plan(resolved: Resolved, rendered: Rendered, run_dir: Path, attempt: int, cwd: str) -> Plan:
    attempt_dir = rundir.attempt_path(run_dir, attempt)
    machine = ["--machine_rank", NODE_RANK, "--main_process_ip", HEAD, "--main_process_port", PORT]
    params = submitit_parameters(resolved, run_dir.name)
    return Plan(
        backend=NAME,
        run_dir=run_dir,
        attempt=attempt,
        cwd=cwd,
        argv=accelerate_argv(resolved, attempt_dir, machine),
        env=rendered.env,
        rendered=attempt_texts(rendered),
        world_size=resolved.world_size,
        per_node=resolved.spec.topology.per_node,
        resolved=resolved,
        slurm=params,
        sbatch=sbatch_text(submitit_folder(run_dir, cwd), params),
    )


def problems(resolved: Resolved) -> list[str]:
    import shutil

    missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
    if missing:
        return [f"--slurm: {', '.join(missing)} not found on PATH; run ftlaunch on a SLURM login node"]
    return []


def port_for(job_id: str) -> int:
    """The same on every node of a job, different for jobs running side by side."""
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit()) or "0"
    return FIRST_PORT + int(digits) % PORT_RANGE


# ---------------------------------------------------------------- on the nodes


@dataclass(frozen=True)
class NodeTask:
    """What submitit runs on each node. Pickled with the resolved spec, never with the environment."""

    resolved: Resolved
    run_dir: Path
    first_attempt: int
    cwd: str

    def __call__(self) -> str:
        import submitit

        started = time.time()  # this attempt's clock: the time limit starts again on requeue
        job = submitit.JobEnvironment()
        hosts = list(job.hostnames)
        node_rank = job.node
        attempt = self.attempt()
        resolved = self.resolved_for(attempt)  # always a SLURM spec: this module plans it
        rendered = rendered_for(resolved, self.run_dir, attempt)
        the_plan = plan(resolved, rendered, self.run_dir, attempt, self.cwd)
        attempt_dir = rundir.write_attempt(self.run_dir, attempt, the_plan.files())
        head = os.environ.get("FTLAUNCH_HEAD_ADDR") or hosts[0]
        port = port_for(str(job.raw_job_id))
        if node_rank == 0:
            from launcher import envreport

            # The compute node's facts (the submit-time record described the login node), also
            # for a requeued attempt, which no launcher wrote.
            facts = envreport.at_launch(self.cwd, resolved.spec.recipe, NAME)
            rundir.write_json(attempt_dir / rundir.ENVIRONMENT, facts)
            rundir.update_status(
                attempt_dir,
                state="running",
                backend=NAME,
                job_id=job.job_id,
                hosts=hosts,
                started=time.time(),
                world_size=the_plan.world_size,
                head=f"{head}:{port}",
            )
        verdict = self.run_node(the_plan, attempt_dir, node_rank, hosts, head, port, started)
        if node_rank == 0:
            record_verdict(attempt_dir, verdict)
        if verdict.state == "preempted":
            if node_rank == 0 and "time limit" in verdict.message:
                requeue(str(job.job_id))  # stopped before the limit by itself: no signal, no submitit
            return verdict.state  # saved and stopped on purpose; the job is requeued
        if verdict.exit_code != 0:
            raise RuntimeError(f"ftlaunch: node {node_rank} ({hosts[node_rank]}): {verdict.message}")
        return verdict.state

    def resolved_for(self, attempt: int) -> Resolved:
        """A requeued job continues from the run's latest complete checkpoint (every node decides
        the same: nothing trains while the job waits in the queue); with none yet, it starts over."""
        if attempt == self.first_attempt:
            return self.resolved
        from launcher import resume
        from launcher.errors import SpecError

        try:
            resolved, warnings = resume.decide(self.run_dir, self.resolved.spec)
        except SpecError as err:
            print(f"ftlaunch: attempt {attempt} starts over: {err}", file=sys.stderr)
            return dataclasses.replace(self.resolved, resume=None)
        for warning in warnings:
            print(f"ftlaunch: {warning}", file=sys.stderr)
        return resolved

    def attempt(self) -> int:
        """Each requeue of the job is the next attempt; SLURM counts them for us."""
        return self.first_attempt + int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)

    def run_node(
        self,
        the_plan: Plan,
        attempt_dir: Path,
        node_rank: int,
        hosts: list[str],
        head: str,
        port: int,
        started: float,
    ) -> node.Verdict:
        timeout = float(os.environ.get("FTLAUNCH_PREFLIGHT_TIMEOUT", rendezvous.DEFAULT_TIMEOUT))
        try:
            rendezvous.barrier(node_rank, hosts, head, port + 1, timeout)
        except rendezvous.PreflightError as err:
            print(str(err), file=sys.stderr, flush=True)
            with open(attempt_dir / rundir.LOGS / f"node{node_rank}.log", "a") as log:
                log.write(f"{err}\n")
            return node.Verdict("failed", 1, str(err))
        env = {**the_plan.env, "FTLAUNCH_HEAD": head, "FTLAUNCH_PORT": str(port)}
        limit = the_plan.slurm["time"] if the_plan.slurm else None
        if limit:  # the ranks save and stop while a step and a save still fit (launcher.saving)
            env[saving.DEADLINE_ENV] = str(started + int(limit) * 60)
        argv = the_plan.node_argv(node_rank, head, port)
        return node.supervise(
            argv, env, the_plan.cwd, attempt_dir, node_rank, the_plan.world_size, own_signals=False
        )

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit (first node only) on pre-emption or time-out, after SLURM signalled
        every rank too: wait while the ranks save at the current step and exit, then requeue this
        same task; the restarted job is the next attempt and resumes from that checkpoint."""
        from submitit.helpers import DelayedSubmission

        saved = node.wait_for_ranks(timeout=SAVE_GRACE_SECONDS)
        print(
            f"ftlaunch: pre-emption: ranks {'saved and stopped' if saved else 'still running'}; requeueing",
            file=sys.stderr,
            flush=True,
        )
        attempt_dir = rundir.attempt_path(self.run_dir, self.attempt())
        if attempt_dir.is_dir():
            rundir.update_status(attempt_dir, state="requeued", ended=time.time())
        return DelayedSubmission(self)


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
        """Follow the first node's log of the newest attempt on the console until the job ends.
        Ctrl-C stops following only: the job is the cluster's now, and ``cancel`` stops it."""
        follower = LogFollower(self.run_dir)
        try:
            while not self.job.done(force_check=True):
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
    latest = rundir.latest_attempt(run_dir)
    status = rundir.read_json(latest / rundir.STATUS) if latest and (latest / rundir.STATUS).exists() else {}
    if "exit_code" in status:
        return int(status["exit_code"])
    return 0 if slurm_state == "COMPLETED" else 1


class LogFollower:
    """Prints what was appended to node 0's log of the newest attempt since the last call."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.consoles: dict[Path, console.Console] = {}

    def print_new(self) -> None:
        """The first node's new lines, through the same console filter as a local launch."""
        latest = rundir.latest_attempt(self.run_dir)
        if latest is None:
            return
        path = latest / rundir.LOGS / "node0.log"
        if not path.exists():
            return
        shown = self.consoles.get(latest)
        if shown is None:
            for earlier in self.consoles.values():  # a requeue: the previous attempt is over
                earlier.close()
            shown = self.consoles[latest] = console.Console(
                latest, print, everything=console.wants_everything(os.environ)
            )
        with open(path, "rb") as f:
            f.seek(self.offsets.get(path, 0))
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offsets[path] = self.offsets.get(path, 0) + len(complete)
        for line in complete.splitlines(keepends=True):
            shown.feed(line)
        shown.tick()

    def close(self) -> None:
        for shown in self.consoles.values():
            shown.close()


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


# ---------------------------------------------------------------- job control, no submitit import


def states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (``sacct``; queued jobs may only show in ``squeue``)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        found[job_id.strip()] = state.split()[0] if state.strip() else "UNKNOWN"
    return found


def requeue(job_id: str) -> None:
    """What submitit does on a time-out signal (``scontrol requeue``), for a job whose ranks saved
    and stopped before the limit on their own."""
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=60)


def cancel(run_dir: Path, job_id: str) -> None:
    import submitit

    submitit.SlurmJob(folder=run_dir / rundir.SLURM, job_id=job_id).cancel(check=True)
