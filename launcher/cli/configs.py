"""``ftlaunch configs``: print or write the rendered accelerate and DeepSpeed files of a spec, and
regenerate the golden-tested presets in ``accelerate_configs/`` and ``ds_configs/``."""

from __future__ import annotations

import argparse
from pathlib import Path

from launcher.cli.flags import Once, add_spec_flags, spec_from_args
from launcher.errors import Parser, SpecError
from launcher.launch import print_texts
from launcher.records import rundir
from launcher.render import DEEPSPEED_FILE, json_text, render_all, texts, yaml_text
from launcher.rules.validate import validate
from launcher.spec.launchspec import clip

# ---------------------------------------------------------------- configs


def configs(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch configs",
        description="Print (or write) the accelerate YAML, the DeepSpeed JSON and the trainer overrides "
        "for the given launch flags, or the presets kept in accelerate_configs/ and ds_configs/.",
        epilog="examples:\n  ftlaunch configs --gpus 8 --zero 3 --micro-batch 1 --grad-accum 8\n"
        "  ftlaunch configs --zero 2 --write --out my_configs/\n"
        "  ftlaunch configs --presets --write        # refresh accelerate_configs/ and ds_configs/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_flags(parser)
    parser.add_argument("--presets", action="store_true", help="the committed presets instead of one spec")
    parser.add_argument("--write", action="store_true", help="write the files instead of printing them")
    parser.add_argument(
        "--out", metavar="DIR", action=Once, help="where --write puts them (default: . for presets)"
    )
    parser.add_argument("--force", action="store_true", help="with --write: replace files that differ")
    ns = parser.parse_args(argv)
    if ns.out and not ns.write:
        raise SpecError(
            [
                f"configs --out {clip(ns.out)}: nothing is written without --write (the files are only "
                "printed); add --write"
            ]
        )
    if ns.presets:
        return write_presets(Path(ns.out or ".")) if ns.write else print_presets()
    resolved = validate(spec_from_args(ns, None, ()))
    if ns.write and not ns.out:
        raise SpecError(["configs --write needs --out DIR (where to write the three files)"])
    out = Path(ns.out or ".")
    rendered = render_all(resolved, deepspeed_path=str(out / DEEPSPEED_FILE))
    if not ns.write:
        print_texts(texts(rendered))
        return 0
    return write_files({out / name: text for name, text in texts(rendered).items()}, ns.force)


def write_files(files: dict[Path, str], force: bool) -> int:
    """Write generated files, refusing to replace a different file (perhaps edited by hand)
    unless ``--force``; everything is checked before anything is written."""
    blocked = (rundir.blocked_folder(path.parent) for path in files)
    problems = [f"--out: {why}; give a folder you can write in" for why in blocked if why]
    changed = [p for p, text in files.items() if p.is_file() and p.read_bytes() != text.encode()]
    if changed and not force:
        names = ", ".join(clip(str(p)) for p in changed)
        problems.append(f"{names}: exists and differs from what would be written; add --force to replace")
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_atomic(path, text)
        print(f"wrote {path}")
    return 0


def preset_texts() -> dict[str, str]:
    """Relative path -> text of every committed preset file."""
    from launcher.spec.presets import ACCELERATE_DIR, DEEPSPEED_DIR, PRESETS

    texts = {}
    for name, spec in PRESETS.items():
        ds_path = f"{DEEPSPEED_DIR}/{name}.json"
        rendered = render_all(validate(spec), deepspeed_path=ds_path)
        texts[f"{ACCELERATE_DIR}/{name}.yaml"] = yaml_text(rendered.accelerate)
        if rendered.deepspeed is not None:
            texts[ds_path] = json_text(rendered.deepspeed)
    return texts


def print_presets() -> int:
    for path, text in preset_texts().items():
        print(f"# --- {path}")
        print(text, end="")
    return 0


def write_presets(root: Path) -> int:
    """The presets are generated files: refreshing them replaces them (git shows any change)."""
    return write_files({root / path: text for path, text in preset_texts().items()}, force=True)
