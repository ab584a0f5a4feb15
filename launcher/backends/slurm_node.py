"""What runs on each SLURM node (``NodeTask``, pickled by submitit): plan the attempt, meet the
other nodes at the head, supervise this node's ranks while the nodes' link watches the others, then
record the verdict and requeue: on pre-emption, and after a failed or hung attempt while
``--max-restarts`` allows. A requeued job continues from the latest complete checkpoint by itself."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import protocol
from launcher.backends.base import Plan, rendered_for
from launcher.backends.slurm_jobs import exclusions, job_state, requeue, usable_nodes
from launcher.backends.slurm_plan import NAME, plan
from launcher.records import rundir
from launcher.records.restarts import Restart, faulty_hosts, restart_after
from launcher.records.verdict import Verdict, record_verdict
from launcher.rules.exclusion import FAULTS_TO_EXCLUDE, to_exclude
from launcher.run import rendezvous, supervisor
from launcher.run.nodelink import Link, PeerEnd
from launcher.spec.decided import Resolved
from launcher.spec.faults import hang_timeout

SAVE_GRACE_SECONDS = 60.0  # of submitit's 90 s warning before the time limit, for the save
FIRST_PORT, JOBS_APART, PORTS_PER_JOB = 20000, 2000, 10
IN_PLACE, REQUEUED = "in place", "requeued"  # what follows a failed or hung attempt
NEXT = "next.json"  # in the attempt folder: the head's word on what follows it
NEXT_WAIT_SECONDS = 60.0  # how long the other nodes wait for that word
RESTARTABLE = ("failed", "hung")


def port_for(job_id: str, in_place: int = 0) -> int:
    """The same on every node of a job, different for jobs running side by side and for each
    restart in place (each uses two ports: torchrun's and the pre-flight's)."""
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit()) or "0"
    return FIRST_PORT + (int(digits) % JOBS_APART) * PORTS_PER_JOB + (2 * in_place) % PORTS_PER_JOB


def in_place_restarts(run_dir: Path, first_attempt: int) -> int:
    """The attempts since ``first_attempt`` that were restarts in place (not SLURM's requeues)."""
    numbers = [n for n in rundir.attempt_numbers(run_dir) if n >= first_attempt]
    statuses = (rundir.read_json_quiet(rundir.attempt_path(run_dir, n) / rundir.STATUS) for n in numbers)
    return sum(1 for status in statuses if status.get("in_place"))


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

        started = time.time()  # the job's clock: its time limit starts again on requeue only
        job = submitit.JobEnvironment()
        hosts, node_rank, job_id = list(job.hostnames), job.node, str(job.job_id)
        attempt = self.attempt()
        for in_place in itertools.count():
            port = port_for(str(job.raw_job_id), in_place)
            verdict, link = self.run_attempt(attempt, hosts, node_rank, job_id, port, started, in_place > 0)
            follows = self.after(verdict, attempt, node_rank, job_id, link)
            if follows == REQUEUED:
                return follows
            if follows != IN_PLACE:
                break
            attempt += 1
        if verdict.state == "preempted":
            if node_rank == 0 and "time limit" in verdict.message:
                requeue(job_id)  # stopped before the limit by itself: no signal, no submitit
            return verdict.state  # saved and stopped on purpose; the job is requeued
        if verdict.exit_code != 0:
            raise RuntimeError(f"ftlaunch: node {node_rank} ({hosts[node_rank]}): {verdict.message}")
        return verdict.state

    def run_attempt(
        self,
        attempt: int,
        hosts: list[str],
        node_rank: int,
        job_id: str,
        port: int,
        started: float,
        in_place: bool,
    ) -> tuple[Verdict, Link]:
        """Plan this node's part of the attempt, meet the other nodes, supervise its ranks."""
        resolved = self.resolved_for(attempt)  # always a SLURM spec: this module plans it
        rendered = rendered_for(resolved, self.run_dir, attempt)
        the_plan = plan(resolved, rendered, self.run_dir, attempt, self.cwd)
        attempt_dir = rundir.write_attempt(self.run_dir, attempt, the_plan.files())
        head = os.environ.get("FTLAUNCH_HEAD_ADDR") or hosts[0]
        if node_rank == 0:
            self.record_start(attempt, attempt_dir, the_plan, job_id, hosts, f"{head}:{port}", in_place)
        link = Link(node_rank, hosts, {})
        verdict = self.run_node(the_plan, attempt_dir, node_rank, hosts, head, port, started, link)
        return verdict, link

    def record_start(
        self,
        attempt: int,
        attempt_dir: Path,
        the_plan: Plan,
        job_id: str,
        hosts: list[str],
        head: str,
        in_place: bool,
    ) -> None:
        """The head's record of a starting attempt: the compute node's facts (the submit-time record
        described the login node), also for an attempt no launcher wrote, and why it runs."""
        from launcher.machine import envreport

        restart = self.restart_before(attempt) if attempt > self.first_attempt else None
        facts = envreport.at_launch(self.cwd, the_plan.resolved.spec.recipe, NAME)
        rundir.write_json(attempt_dir / rundir.ENVIRONMENT, facts)
        rundir.update_status(
            attempt_dir,
            state="running",
            backend=NAME,
            job_id=job_id,
            hosts=hosts,
            started=time.time(),
            world_size=the_plan.world_size,
            head=head,
            **({"restart": restart.number, "cause": restart.cause} if restart else {}),
            **({"in_place": True} if in_place else {}),
        )

    def after(self, verdict: Verdict, attempt: int, node_rank: int, job_id: str, link: Link) -> str:
        """What follows this attempt: a restart in place, a requeue, or nothing. The head decides
        (node 1 when the head is gone) and writes it into the attempt (``next.json``); the other
        nodes of a failed or hung attempt wait for that word."""
        attempt_dir = rundir.attempt_path(self.run_dir, attempt)
        if node_rank == 0 or (node_rank == 1 and link.head_lost()):
            record_verdict(attempt_dir, verdict)
            decided = self.restart_after_attempt(verdict, attempt, job_id, link)
            if verdict.state in RESTARTABLE:
                rundir.write_json(attempt_dir / NEXT, {"next": decided or "stop"})
            return decided
        if verdict.state not in RESTARTABLE:
            return ""
        deadline = time.monotonic() + NEXT_WAIT_SECONDS
        while time.monotonic() < deadline:
            said = rundir.read_json_quiet(attempt_dir / NEXT).get("next")
            if said:
                return str(said)
            time.sleep(0.2)
        return ""

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

    def restart_after_attempt(self, verdict: Verdict, attempt: int, job_id: str, link: Link) -> str:
        """After a failed or hung attempt, while ``--max-restarts`` allows: the next attempt starts
        at once on the same nodes (IN_PLACE), from the latest complete checkpoint; or, when a node's
        task is gone or a node should be left out, SLURM requeues the job (REQUEUED). Said on the
        console either way; "" when nothing follows."""
        if verdict.state not in RESTARTABLE or cancelled(self.run_dir):
            return ""
        allowed = self.restarts_allowed()
        restart, why_not = restart_after(self.run_dir, attempt, allowed)
        if restart is None:
            why_not = "not requeued (--no-requeue)" if self.resolved.spec.slurm.no_requeue else why_not
            print(f"ftlaunch: {why_not}", file=sys.stderr, flush=True)
            return ""
        said = f"restart {restart.number}/{allowed} after {restart.cause}"
        exclude = self.exclusions_after(attempt, job_id)
        if not exclude and link.lost is None:
            state = job_state(job_id)
            if state not in ("RUNNING", ""):  # scancel, a time limit: SLURM is ending the job
                print(f"ftlaunch: not restarted: job {job_id} is {state}", file=sys.stderr, flush=True)
                return ""
            print(f"ftlaunch: restarting in place on the same nodes: {said}", file=sys.stderr, flush=True)
            return IN_PLACE
        print(f"ftlaunch: requeueing job {job_id}: {said}", file=sys.stderr, flush=True)
        try:
            trouble = requeue(job_id, exclude)
        except (OSError, subprocess.SubprocessError) as err:
            print(
                f"ftlaunch: scontrol requeue {job_id} failed ({err}); "
                f"continue with: ftlaunch resume {self.run_dir}",
                file=sys.stderr,
                flush=True,
            )
            return ""
        if trouble:
            print(f"ftlaunch: {trouble}", file=sys.stderr, flush=True)
        elif exclude:
            rundir.update_status(rundir.attempt_path(self.run_dir, attempt), excluded=exclude)
        return REQUEUED

    def exclusions_after(self, attempt: int, job_id: str) -> list[str]:
        """The nodes the requeued job leaves out from now on (``rules/exclusion.py``): a node the
        attempts' faults happened on twice, while the partition keeps enough others; said on the
        console and recorded in the attempt's status."""
        faulty = faulty_hosts(self.run_dir, attempt)
        if not any(count >= FAULTS_TO_EXCLUDE for count in faulty.values()):
            return []
        try:
            excluded, usable = set(exclusions(job_id)), usable_nodes(job_id)
        except (OSError, subprocess.SubprocessError) as err:
            print(f"ftlaunch: cannot read the partition's nodes ({err}); no node excluded", file=sys.stderr)
            return []
        hosts, why_not = to_exclude(faulty, excluded, usable, self.resolved.spec.topology.nodes)
        said = f"excluding {', '.join(hosts)} from job {job_id} (faults there in 2+ attempts)"
        print(f"ftlaunch: {said if hosts else why_not}", file=sys.stderr, flush=True)
        return hosts

    def attempt(self) -> int:
        """This task's attempt: each requeue of the job is the next one (SLURM counts them), and so
        is each restart in place (the head marks those in their status when they start)."""
        requeues = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        return self.first_attempt + requeues + in_place_restarts(self.run_dir, self.first_attempt)

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
            link.lost = PeerEnd(-1, "?", "lost", str(err))  # a node that did not come: requeue
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
