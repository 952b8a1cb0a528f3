"""Evals: suites x candidates -> scorecards, the evidence the ``auto`` route switches on.

- ``suite.py``: the suite format (items, graders, rubrics) and its loader; suites shipped with
  edgeproxy live in ``suites/`` (``market``: the simulated market's suite).
- ``graders.py``: exact, contains, regex, json_schema, numeric; ``judge.py``: LLM-as-judge
  (the prompt, the verdict, pairwise judging in both orders).
- ``client.py``: one call to a candidate through the proxy's own upstream client and wire.
- ``budget.py``: the USD cap (checked before each call) and request pacing.
- ``runner.py``: ``edgeproxy eval run`` (concurrency, retries, grading, resumable progress:
  ``progress.py``); ``aggregate.py`` + ``stats.py``: records -> scorecard cells.
- ``scorecard.py``: the versioned scorecard type, ``load_scorecard`` / ``save_scorecard``.
- ``objective.py``: cost per success, latency, quality, capability per dollar-second; ranking,
  intervals and the switching rule (``beats``) the ``auto`` route uses.
- ``compare.py``: ``edgeproxy eval compare OLD NEW``, the "why we switched" report.

docs/evals.md documents all of it.
"""
