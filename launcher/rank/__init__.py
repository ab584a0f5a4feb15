"""Inside each rank, around the recipe: the entry every rank runs (``entry``), the guard that
reconciles the recipe's trainer arguments with the launch (``guard``), rank 0's records
(``recorder``), saving and save-on-signal (``saving``) and the op build guard (``opguard``)."""
