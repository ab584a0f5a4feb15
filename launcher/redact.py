"""Secrets in recipe arguments: handed to the recipe, never written down or printed.

A value is a secret when its flag is named like one (``--hub_token``, ``--api-key``,
``--db_password``, ``--client_secret``) or when it looks like a well-known token wherever it
appears (``hf_...``, ``sk-...``, ``ghp_...``, ``xoxb-...``, ``AKIA...``, a URL carrying a
password). ``conceal`` replaces each by a placeholder naming an environment variable,
``${FTLAUNCH_SECRET_HUB_TOKEN}``, and returns the values; the CLI puts them in its own environment,
which the node command inherits locally and sbatch exports to the job (so a requeue has them too).
Every record (spec.json, decided.json, plan.json, command.sh, the dry run) therefore holds the
placeholder only, and each rank puts the value back (``reveal``) just before the recipe runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from launcher.errors import SpecError

PREFIX = "FTLAUNCH_SECRET_"


PLACEHOLDER = re.compile(r"\$\{(" + PREFIX + r"[A-Z0-9_]+)\}")


SECRET_NAME = re.compile(
    r"(^|[_-])(token|password|passwd|passphrase|secret|api[_-]?key|key|credentials?|auth)([_-]|$)", re.I
)


NOT_SECRET_NAMES = {  # tokenizer special tokens, not credentials
    "pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token", "mask_token",
}  # fmt: skip


SECRET_VALUE = re.compile(
    r"hf_[A-Za-z0-9]{30,}"
    r"|sk-[A-Za-z0-9_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    # a scheme starts a word and is short: anything looser backtracks quadratically on long text
    r"|(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://[^/@:\s]*:[^/@\s]+@"
)


def is_secret_flag(flag: str) -> bool:
    name = flag.lstrip("-").replace("-", "_").lower()
    return flag.startswith("-") and name not in NOT_SECRET_NAMES and bool(SECRET_NAME.search(name))


def looks_secret(value: str) -> bool:
    return bool(SECRET_VALUE.search(value))


def conceal(args: Sequence[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """``args`` with every secret value replaced by a placeholder, and variable name -> value."""
    public: list[str] = []
    values: dict[str, str] = {}

    def hide(value: str, name: str) -> str:
        var = PREFIX + (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() or "ARG")
        unique, n = var, 1
        while unique in values and values[unique] != value:
            n += 1
            unique = f"{var}_{n}"
        values[unique] = value
        return "${" + unique + "}"

    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        if arg.startswith("-") and eq and (is_secret_flag(flag) or looks_secret(value)):
            public.append(f"{flag}={hide(value, flag)}")
        elif is_secret_flag(arg) and i + 1 < len(args) and not args[i + 1].startswith("--"):
            public += [arg, hide(args[i + 1], arg)]
            i += 1
        elif looks_secret(arg):
            public.append(hide(arg, f"ARG{i + 1}"))
        else:
            public.append(arg)
        i += 1
    return tuple(public), values


def missing(args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """One problem per placeholder whose variable is not set (a resume from a new shell, say)."""
    names = dict.fromkeys(m.group(1) for arg in args for m in PLACEHOLDER.finditer(arg))
    return [
        f"a recipe argument was a secret and is not recorded: set {name} in the environment "
        f"(export {name}=...) and run the command again"
        for name in names
        if name not in environ
    ]


def reveal(args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The recipe's real arguments: each placeholder replaced by its variable's value."""
    problems = missing(args, environ)
    if problems:
        raise SpecError(problems)
    return [PLACEHOLDER.sub(lambda m: environ[m.group(1)], arg) for arg in args]


# Environment worth keeping to reproduce a run; anything that looks like a credential is dropped.
_KEEP_PREFIXES = (
    "CUDA_",
    "NCCL_",
    "TORCH_",
    "DS_",
    "ACCELERATE_",
    "HF_",
    "OMP_",
    "MASTER_",
    "SLURM_",
    "PYTORCH_",
    "TRANSFORMERS_",
    "FTLAUNCH_",
    "WORLD_SIZE",
    "PYTHONPATH",
    "LOCAL_",
    "GLOO_",
)


_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|AUTH|PRIVATE", re.IGNORECASE)


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The launching shell's relevant variables: secrets by name dropped, credentials in URLs masked."""
    return {
        k: redact_url_credentials(v)
        for k, v in sorted(env.items())
        if k.startswith(_KEEP_PREFIXES) and not _SECRET.search(k)
    }


_URL_CREDENTIALS = re.compile(  # a short scheme at a word start: no quadratic backtracking
    r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,30}://)(?P<user>[^/@:\s]*)(?::[^/@\s]*)?@"
)


def redact_url_credentials(text: str) -> str:
    """``https://user:pass@host`` -> ``https://user:***@host``; ``https://token@host`` -> ``https://***@host``."""

    def mask(m: re.Match[str]) -> str:
        password = m.group(0)[len(m.group("scheme")) + len(m.group("user")) :].startswith(":")
        user = f"{m.group('user')}:***" if password else "***"
        return f"{m.group('scheme')}{user}@"

    return _URL_CREDENTIALS.sub(mask, text)
