"""Memory arithmetic for ``ftlaunch estimate`` and ``--zero auto``: pure functions of a model config
and a workload (``estimate``), their text (``text``), reading a model's config (``modelconfig``) and
the ``--zero auto`` decision (``zeroauto``). The machine's facts come from ``machine/memory.py``."""
