"""What runs on each SLURM node (``NodeTask``, pickled by submitit): plan the attempt, meet the
other nodes at the head, supervise this node's ranks while the nodes' link watches the others, then
record the verdict and requeue: on pre-emption, and after a failed or hung attempt while
``--max-restarts`` allows. A requeued job continues from the latest complete checkpoint by itself."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import protocol
from launcher.backends.base import Plan, rendered_for
from launcher.backends.slurm_jobs import requeue
from launcher.backends.slurm_plan import NAME, plan
from launcher.records import rundir
from launcher.records.restarts import Restart, restart_after
from launcher.records.verdict import Verdict, record_verdict
from launcher.run import rendezvous, supervisor
from launcher.run.nodelink import Link
from launcher.spec.decided import Resolved
from launcher.spec.faults import hang_timeout

SAVE_GRACE_SECONDS = 60.0  # of submitit's 90 s warning before the time limit, for the save
FIRST_PORT, PORT_RANGE = 20000, 20000


def port_for(job_id: str) -> int:
    """The same on every node of a job, different for jobs running side by side."""
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit()) or "0"
    return FIRST_PORT + int(digits) % PORT_RANGE


# ---------------------------------------------------------------- on the nodes


def cancelled(run_dir: Path) -> bool:
    """``ftlaunch cancel`` says so in the run's record before it asks SLURM."""
    return bool(rundir.read_json_quiet(run_dir / rundir.RUN).get("cancelled"))


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
        restart = self.restart_before(attempt) if attempt > self.first_attempt else None
        if node_rank == 0:
            from launcher.machine import envreport

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
                **({"restart": restart.number, "cause": restart.cause} if restart else {}),
            )
        link = Link(node_rank, hosts, {})
        verdict = self.run_node(the_plan, attempt_dir, node_rank, hosts, head, port, started, link)
        records = node_rank == 0 or (node_rank == 1 and link.head_lost())  # the head could not
        if records:
            record_verdict(attempt_dir, verdict)
            if self.requeue_after(verdict, attempt, str(job.job_id)):
                return "requeued"
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
        from launcher.errors import SpecError
        from launcher.records import resume

        try:
            resolved, warnings = resume.decide(self.run_dir, self.resolved.spec)
        except SpecError as err:
            print(f"ftlaunch: attempt {attempt} starts over: {err}", file=sys.stderr)
            return dataclasses.replace(self.resolved, resume=None)
        for warning in warnings:
            print(f"ftlaunch: {warning}", file=sys.stderr)
        return resolved

    def restarts_allowed(self) -> int:
        return 0 if self.resolved.spec.slurm.no_requeue else self.resolved.spec.faults.max_restarts

    def restart_before(self, attempt: int) -> Restart | None:
        """The restart this attempt is (the one before it failed or hung), as the node that requeued
        the job decided it; None after a pre-emption or a time limit."""
        return restart_after(self.run_dir, attempt - 1, self.restarts_allowed())[0]

    def requeue_after(self, verdict: Verdict, attempt: int, job_id: str) -> bool:
        """After a failed or hung attempt: requeue the job (every node restarts, from the latest
        complete checkpoint) while ``--max-restarts`` allows; said on the console either way."""
        if verdict.state not in ("failed", "hung") or cancelled(self.run_dir):
            return False
        allowed = self.restarts_allowed()
        restart, why_not = restart_after(self.run_dir, attempt, allowed)
        if restart is None:
            why_not = "not requeued (--no-requeue)" if self.resolved.spec.slurm.no_requeue else why_not
            print(f"ftlaunch: {why_not}", file=sys.stderr, flush=True)
            return False
        print(
            f"ftlaunch: requeueing job {job_id}: restart {restart.number}/{allowed} after {restart.cause}",
            file=sys.stderr,
            flush=True,
        )
        try:
            requeue(job_id)
        except (OSError, subprocess.SubprocessError) as err:
            print(
                f"ftlaunch: scontrol requeue {job_id} failed ({err}); "
                f"continue with: ftlaunch resume {self.run_dir}",
                file=sys.stderr,
                flush=True,
            )
            return False
        return True

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
        link: Link,
    ) -> Verdict:
        timeout = float(os.environ.get("FTLAUNCH_PREFLIGHT_TIMEOUT", rendezvous.DEFAULT_TIMEOUT))
        try:
            link.join(rendezvous.barrier(node_rank, hosts, head, port + 1, timeout))
        except rendezvous.PreflightError as err:
            print(str(err), file=sys.stderr, flush=True)
            with open(attempt_dir / rundir.LOGS / f"node{node_rank}.log", "a") as log:
                log.write(f"{err}\n")
            return Verdict("failed", 1, str(err))
        env = {**the_plan.env, "FTLAUNCH_HEAD": head, "FTLAUNCH_PORT": str(port)}
        limit = the_plan.slurm["time"] if the_plan.slurm else None
        if limit:  # the ranks save and stop while a step and a save still fit (rank/saving.py)
            env[protocol.DEADLINE_ENV] = str(started + int(limit) * 60)
        argv = the_plan.node_argv(node_rank, head, port)
        try:
            verdict = supervisor.supervise(
                argv,
                env,
                the_plan.cwd,
                attempt_dir,
                node_rank,
                the_plan.world_size,
                own_signals=False,
                hang_timeout=hang_timeout(the_plan.resolved.spec),
                link=link if len(hosts) > 1 else None,
            )
        except BaseException as err:
            # submitit's pre-emption handler ends the head's task (SystemExit) once the ranks saved
            # and it requeued the job: the other nodes must not take that for a failure.
            calm = isinstance(err, SystemExit)
            link.end("preempted" if calm else "failed", "requeued" if calm else f"its task failed: {err!r}")
            raise
        link.end(verdict.state, verdict.message)
        return verdict

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit (first node only) on pre-emption or time-out, after SLURM signalled
        every rank too: wait while the ranks save at the current step and exit, then requeue this
        same task; the restarted job is the next attempt and resumes from that checkpoint."""
        from submitit.helpers import DelayedSubmission

        saved = supervisor.wait_for_ranks(timeout=SAVE_GRACE_SECONDS)
        print(
            f"ftlaunch: pre-emption: ranks {'saved and stopped' if saved else 'still running'}; requeueing",
            file=sys.stderr,
            flush=True,
        )
        attempt_dir = rundir.attempt_path(self.run_dir, self.attempt())
        if attempt_dir.is_dir():
            rundir.update_status(attempt_dir, state="requeued", ended=time.time())
        return DelayedSubmission(self)
