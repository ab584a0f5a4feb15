"""The run folder, the only place that knows its layout: creating runs and attempts (``rundir``),
listing and reading them (``runs``), each attempt's verdict, checkpoints and their universal form,
where a resume continues, and the metrics that ``status``, ``plot`` and ``compare`` read."""
