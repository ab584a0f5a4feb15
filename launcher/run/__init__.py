"""One node's process tree: the supervisor that starts and owns the ranks (``supervisor``, ``tree``),
what the user sees of them (``console``, ``lines``, ``progress``), the nodes' meeting point
(``rendezvous``) and following a run's logs (``follow``)."""
