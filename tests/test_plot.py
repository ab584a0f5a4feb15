"""``ftlaunch plot`` joins a run's attempts into one curve (a resumed attempt replaces the steps it
re-logged), marks each takeover, skips what a crash cut, and draws a real PNG; ``status`` reads
the same metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.errors import SpecError
from launcher.records import rundir
from launcher.records.curves import Boundary, curves
from launcher.render import DECIDED_FILE


def a_run(runs: Path, name: str, created: float) -> Path:
    run = rundir.create(runs, name)
    rundir.write_json(run / rundir.SPEC, {"recipe": "sft.py", "topology": {"nodes": 1, "procs": 2}})
    rundir.write_json(run / rundir.RUN, {"name": run.name, "backend": "local", "created": created})
    return run


def an_attempt(run: Path, number: int, steps: range, resumed_from: int | None = None) -> Path:
    """An attempt as the trainer's recorder leaves it: one line per log, then the summary line."""
    decided = {"resume": {"checkpoint": f"checkpoint-{resumed_from}", "step": resumed_from}}
    attempt = rundir.write_attempt(
        run, number, {DECIDED_FILE: json.dumps(decided if resumed_from is not None else {"resume": None})}
    )
    rundir.update_status(attempt, state="finished")
    for step in steps:
        rundir.append_json_line(
            attempt / rundir.METRICS,
            {
                "step": step,
                "time": 1.0e9 + step,
                "loss": loss_at(step, number),
                "learning_rate": 1e-4 * (1 - step / 20),
                "grad_norm": 1.5,
                "epoch": step / 10,
            },
        )
    rundir.append_json_line(attempt / rundir.METRICS, {"step": steps[-1], "train_loss": 1.0})
    return attempt


def loss_at(step: int, attempt: int) -> float:
    return 3.0 / step + attempt / 100  # the attempt shows in the value, so a test can tell them apart


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    """Run A: attempt 1 logged steps 1-6 and crashed mid-line, attempt 2 resumed from checkpoint-4
    and logged 5-10. Run B: one attempt with steps 1-8 and an evaluation line."""
    root = tmp_path / "runs"
    a = a_run(root, "alpha", created=1.0)
    first = an_attempt(a, 1, range(1, 7))
    with open(first / rundir.METRICS, "a") as f:
        f.write('{"step": 7, "loss": 0.4')  # cut by the crash
    an_attempt(a, 2, range(5, 11), resumed_from=4)
    b = a_run(root, "beta", created=2.0)
    only = an_attempt(b, 1, range(1, 9))
    rundir.append_json_line(only / rundir.METRICS, {"step": 4, "eval_loss": 0.9, "time": 1.0})
    return {"a": a, "b": b}


def test_attempts_join_into_one_curve_with_the_takeover_marked(runs: dict[str, Path]) -> None:
    a, b = curves([runs["a"], runs["b"]])
    assert a.run == runs["a"].name
    assert [(p.step, p.attempt) for p in a.points if "loss" in p.values] == [(s, 1) for s in range(1, 5)] + [
        (s, 2) for s in range(5, 11)
    ]
    assert a.series("loss")[1] == [loss_at(s, 1) for s in range(1, 5)] + [loss_at(s, 2) for s in range(5, 11)]
    assert a.series("learning_rate")[1][-1] == pytest.approx(1e-4 * 0.5)
    assert a.boundaries == (Boundary(attempt=2, step=4, resumed=True),)
    assert b.series("loss") == (list(range(1, 9)), [loss_at(s, 1) for s in range(1, 9)])  # no eval line
    assert b.series("eval_loss") == ([4], [0.9]) and b.series("train_loss") == ([8], [1.0])
    assert a.series("train_loss") == ([10], [1.0])  # the summary of attempt 1 was never written
    assert b.boundaries == ()


def test_a_restart_without_a_checkpoint_replaces_from_its_first_step(tmp_path: Path) -> None:
    """A requeue that found no checkpoint starts again from step 1: the lost history goes."""
    run = a_run(tmp_path / "runs", "restart", created=1.0)
    an_attempt(run, 1, range(1, 4))
    rundir.write_attempt(run, 2, {})  # failed before logging: no boundary
    an_attempt(run, 3, range(1, 6))
    (c,) = curves([run])
    assert [(p.step, p.attempt) for p in c.points if "loss" in p.values] == [(s, 3) for s in range(1, 6)]
    assert c.boundaries == (Boundary(attempt=3, step=1, resumed=False),)


def test_plot_writes_a_png_with_both_runs_drawn(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import matplotlib.image

    out = tmp_path / "both runs.png"
    argv = ["plot", "--runs-dir", str(tmp_path / "runs"), "alpha", str(runs["b"]), "-o", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    image = matplotlib.image.imread(out)
    assert image.shape == (700, 1000, 4)
    rgb = image[:, :, :3]
    assert rgb.std() > 0.05, "the image is blank"
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's C0 and C1: one per run
        drawn = (abs(rgb - [c / 255 for c in colour]) < 0.02).all(axis=2).sum()
        assert drawn > 200, f"no curve in colour {colour}"


def test_default_output_is_plot_png_here(runs: dict[str, Path], in_tmp: Path) -> None:
    assert main(["plot", str(runs["a"])]) == 0
    assert (in_tmp / "plot.png").stat().st_size > 10_000


def test_a_run_without_metrics_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    empty = a_run(tmp_path / "runs", "gamma", created=3.0)
    rundir.write_attempt(empty, 1, {})
    with pytest.raises(SpecError, match=rf"{empty.name}: no training metric logged yet"):
        curves([runs["a"], empty])
    out = tmp_path / "x.png"
    assert main(["plot", str(runs["a"]), str(empty), "-o", str(out)]) == 2
    assert not out.exists()


def test_bad_output_is_refused_before_reading(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plot", str(runs["a"]), "-o", "plot.txt"]) == 2
    assert "-o plot.txt: the file name must end in .png, .pdf, .svg" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["plot", str(runs["a"]), "-o", str(tmp_path / "file" / "plot.png")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_plot_help_imports_no_matplotlib(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom launcher.cli import main\ntry:\n    main(['plot', '--help'])\n"
        "except SystemExit as exit_:\n    print('exit', exit_.code)\n"
        "print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.stdout.splitlines()[-2:] == ["exit 0", "False False"], done.stderr


def test_status_shows_the_newest_logged_step_and_loss(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rundir.write_attempt(runs["b"], 2, {})  # just started, nothing logged: the previous loss shows
    assert main(["status", "--runs-dir", str(tmp_path / "runs")]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    columns = header.split()
    table = {r.split()[0]: dict(zip(columns, r.split(), strict=False)) for r in rows}
    assert table[runs["a"].name]["STEP"] == "10"
    assert table[runs["a"].name]["METRIC"] == f"loss={loss_at(10, 2):.4g}"
    assert table[runs["b"].name]["STEP"] == "8"
    assert table[runs["b"].name]["METRIC"] == f"loss={loss_at(8, 1):.4g}"


def a_grpo_run(runs: Path) -> Path:
    """What TRL's GRPOTrainer logs: rewards per function, KL, lengths; here no loss at all."""
    run = a_run(runs, "grpo", created=4.0)
    attempt = rundir.write_attempt(run, 1, {})
    for step in range(1, 6):
        rundir.append_json_line(
            attempt / rundir.METRICS,
            {"step": step, "reward": step / 10, "reward_std": 0.1, "kl": step / 100,
             "completions/mean_length": 30.0 + step, "learning_rate": 1e-6, "time": 1.0e9 + step},
        )  # fmt: skip
    rundir.append_json_line(attempt / rundir.METRICS, {"step": 5, "train_loss": 0.0, "train_runtime": 3.0})
    return run


def test_a_grpo_run_plots_its_reward_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from launcher.records.curves import chosen_metrics

    run = a_grpo_run(tmp_path / "runs")
    (c,) = curves([run])
    assert chosen_metrics([c], []) == ["reward", "learning_rate"]
    out = tmp_path / "grpo.png"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert f"{run.name}: steps 1-5, last reward 0.5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("logged", "defaults"),
    [
        (
            {"loss", "rewards/margins", "rewards/accuracies", "learning_rate"},
            ["rewards/margins", "loss", "learning_rate"],
        ),
        ({"loss", "learning_rate", "grad_norm"}, ["loss", "learning_rate"]),
        ({"train_loss"}, ["train_loss"]),  # logged only at the end (logging_steps > max_steps)
    ],
)
def test_default_metrics_follow_what_the_trainer_logged(logged: set[str], defaults: list[str]) -> None:
    from launcher.records.metrics import default_metrics

    assert default_metrics(logged) == defaults


def test_plot_metric_draws_any_logged_key_and_names_the_keys_for_a_wrong_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = a_grpo_run(tmp_path / "runs")
    out = tmp_path / "kl.png"
    assert (
        main(["plot", str(run), "--metric", "kl", "--metric", "completions/mean_length", "-o", str(out)]) == 0
    )
    assert "last kl 0.05" in capsys.readouterr().err and out.stat().st_size > 10_000
    out.unlink()
    assert main(["plot", str(run), "--metric", "rewrd", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--metric rewrd: not logged by {run.name}; did you mean reward" in err
    assert "logged: completions/mean_length, kl, learning_rate, reward, reward_std, train_loss" in err
    assert not out.exists()


def test_compare_takes_a_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = a_grpo_run(tmp_path / "runs"), a_grpo_run(tmp_path / "runs")
    argv = ["compare", str(one), str(two)]
    assert main(argv) == 0  # no loss logged: the reference's key metric, the reward, is compared
    assert main([*argv, "--metric", "kl"]) == 0
    capsys.readouterr()
    assert main([*argv, "--metric", "loss"]) == 2
    assert "--metric loss: not logged by the reference" in capsys.readouterr().err


def test_status_of_one_run_into_a_closed_pipe_reports_no_bad_record(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    for attempt in range(3, 60):  # enough lines to outlast the pipe's buffer
        an_attempt(runs["b"], attempt, range(1, 3))
    command = f"{sys.executable} -m launcher status --runs-dir '{tmp_path / 'runs'}' beta | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("run:") and "unreadable record" not in done.stderr, done.stderr
