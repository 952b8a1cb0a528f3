"""The ``auto`` route: per task, the best candidate of a pool by the latest eval scorecard leads,
and a new winner takes over carefully (docs/auto.md).

- ``evidence.py``: one scorecard read for one route x task: which candidates may be chosen
  (the objective's floor and limits, enough samples) and their ranking; the fallback order.
- ``decide.py``: the switching rule with hysteresis, and the per route x task state machine it
  drives (incumbent, challenger, streak of confirmations, decision records).
- ``ramp.py``: the canary ramp of a challenger and its rollback on live errors, latency or
  shadow-graded quality.
- ``live.py``: what the request path tells ``auto`` (a per-request observer of the exchange's
  events) and the live statistics it keeps.
- ``scorecards.py``: the scorecards a policy names (files or globs), the last good one kept when
  a new one is corrupt, reloaded when the files change.
- ``router.py``: ``AutoRouter``, the process-wide object the exchange asks for a task's chain.
- ``shadow.py``: opt-in shadow traffic to a task's challenger, graded by the judge.
- ``status.py``: ``GET /admin/auto`` and ``edgeproxy auto status``.

The Auto tour of ``edgeproxy demo`` is ``edgeproxy.auto_tour`` (it drives a proxy, above
``server``).

The package sits above ``evals`` (it reads scorecards and ranks with the eval objectives) and
below ``server`` (the exchange asks it); nothing below it imports it.
"""
