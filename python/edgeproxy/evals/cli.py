"""``edgeproxy eval run | compare | show | schedule``: the command line of the evaluator
(docs/evals.md)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edgeproxy.evals.objective import OBJECTIVES, Limits, Objective, rank, value
from edgeproxy.snapshot import Candidate, Policy

if TYPE_CHECKING:  # the commands import what they use: `edgeproxy serve` starts without it
    from rich.console import Console
    from rich.table import Table

    from edgeproxy.evals.runner import EvalOptions
    from edgeproxy.evals.scorecard import Scorecard

EXIT_CAPPED: Final = 3
EXIT_INTERRUPTED: Final = 130
# Without --policy: the built-in policy (in the wheel as in the repository), as `edgeproxy serve`.
BUILTIN: Final = "the built-in policy"


def candidate_pool(policy: Policy) -> dict[str, Candidate]:
    """Every candidate the policy compiles, by key: ``evals.candidates``, the judge and every
    route's chain."""
    pool = dict(policy.evals.pool)
    for name in policy.route_names:
        for candidate in policy.routes[name].chain:
            pool.setdefault(candidate.key, candidate)
    return pool


def pick_candidates(policy: Policy, names: str | None, route: str | None) -> list[Candidate]:
    """``--candidates a/b/c,...``, else ``--route R``'s chain (an auto route's pool), else
    ``evals.candidates``;
    ValueError says what is wrong."""
    pool = candidate_pool(policy)
    if names is not None and route is not None:
        raise ValueError("give --candidates or --route, not both")
    if route is not None:
        found = policy.route_for(route)
        if found is None:
            raise ValueError(f"no route {route!r} (routes: {', '.join(policy.route_names)})")
        if found.auto is not None:  # an auto route: its pool
            return list(found.auto.pool) or list(found.chain)
        return list(found.chain)
    keys = (
        [k.strip() for k in names.split(",") if k.strip()]
        if names is not None
        else list(policy.evals.candidates)
    )
    if not keys:
        raise ValueError(
            "no candidates: pass --candidates or --route, or set evals.candidates in the policy"
        )
    unknown = [k for k in keys if k not in pool]
    if unknown:
        raise ValueError(
            f"not in the policy: {', '.join(unknown)} (known: {', '.join(sorted(pool))})"
        )
    return [pool[k] for k in dict.fromkeys(keys)]


def summary_table(card: Scorecard, title: str = "eval summary") -> Table:
    """Per task, candidates best cost per success first."""
    from rich.table import Table

    from edgeproxy.evals.compare import fmt

    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("task", "left"),
        ("candidate", "left"),
        ("n", "right"),
        ("quality [95%]", "right"),
        ("cost/req", "right"),
        ("cost/success", "right"),
        ("out tok", "right"),
        ("ttft p50", "right"),
        ("latency p50/p95", "right"),
        ("errors", "right"),
        ("retries", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for task in card.tasks:
        ranked = [r.cell for r in rank(card.for_task(task), "cost_per_success")]
        rest = [c for c in card.for_task(task) if c not in ranked]
        for i, cell in enumerate(ranked + rest):
            q = cell.quality
            table.add_row(
                task if i == 0 else "",
                cell.candidate,
                str(cell.requests),
                f"{q.mean:.1%} [{q.low:.0%}, {q.high:.0%}]",
                f"${cell.cost_usd:.3g}",
                fmt("cost_per_success", value(cell, "cost_per_success")),
                f"{cell.output_tokens:.0f}",
                fmt("latency", cell.ttft_s.p50),
                f"{fmt('latency', cell.latency_s.p50)} / {fmt('latency', cell.latency_s.p95)}",
                f"{cell.error_rate:.1%}",
                f"{cell.retry_rate:.2f}",
                end_section=i == len(ranked) + len(rest) - 1,
            )
    return table


def wide_console() -> Console:
    """stdout; when it is not a terminal (a file, CI), 160 columns rather than rich's 80 (a
    table wrapped in every cell is harder to read than a long line)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _policy(path: str) -> Policy:
    from edgeproxy.policy import load_policy

    return load_policy(path)


def _policy_file(args: argparse.Namespace) -> None:
    """``--policy`` as given, else the built-in policy's packaged file."""
    if args.policy is None:
        from edgeproxy.builtin import default_policy_path

        args.policy = str(default_policy_path())


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgeproxy.errors import PolicyError
    from edgeproxy.evals.runner import EvalOptions
    from edgeproxy.evals.suite import SuiteError, load_suite, resolve_suite

    err = Console(stderr=True)
    _policy_file(args)
    try:
        policy = _policy(args.policy)
    except PolicyError as exc:
        err.print(f"edgeproxy eval: the policy {args.policy} is not valid:", markup=False)
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False)
        return 2
    base_dir = Path(policy.source).parent
    try:
        suite_name = args.suite or policy.evals.suite
        if suite_name is None:
            raise ValueError("no suite: pass --suite or set evals.suite in the policy")
        suite = load_suite(resolve_suite(suite_name, base_dir))
        candidates = pick_candidates(policy, args.candidates, args.route)
        judge = candidate_pool(policy).get(policy.evals.judge) if policy.evals.judge else None
        options = EvalOptions(
            policy=policy,
            suite=suite,
            candidates=candidates,
            out=Path(args.out),
            judge=judge,
            repeats=args.repeats,
            max_cost=policy.evals.max_cost if args.max_cost is None else args.max_cost,
            concurrency=args.concurrency,
            rps=args.rps,
            retries=args.retries,
            timeout=args.timeout,
            fresh=args.fresh,
        )
    except (ValueError, SuiteError) as exc:
        err.print(f"edgeproxy eval: {exc}", markup=False)
        return 2
    unpriced = [c.key for c in (*candidates, *([judge] if judge else [])) if c.price is None]
    if unpriced:
        err.print(
            f"edgeproxy eval: no price for {', '.join(unpriced)}: their calls count as $0 "
            "against the cap",
            markup=False,
        )
    return _run_with_progress(options, show=not args.no_progress, err=err)


def _run_with_progress(options: EvalOptions, *, show: bool, err: Console) -> int:
    import uvloop
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from edgeproxy.evals.progress import ProgressError, Record
    from edgeproxy.evals.runner import EvalRun, RunResult
    from edgeproxy.evals.scorecard import save_scorecard

    progress = Progress(
        TextColumn("[bold]eval[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("${task.fields[spent]:.4f}"),
        TimeElapsedColumn(),
        console=err,
        disable=not show,
        transient=False,
    )
    task_id = progress.add_task(options.suite.name, total=None, spent=0.0)
    spent = [0.0]

    def started(total: int, done: int) -> None:
        progress.update(task_id, total=total, completed=done)
        if done:
            err.print(f"resuming: {done} of {total} already done", markup=False)

    def on_record(record: Record) -> None:
        spent[0] += record.cost_usd + record.judge_cost_usd
        progress.update(task_id, advance=1, spent=spent[0])

    run = EvalRun(options, on_record=on_record, on_start=started)
    try:
        with progress:
            result: RunResult = uvloop.run(run.run())
    except KeyboardInterrupt:
        err.print(
            f"edgeproxy eval: interrupted; finished items are kept in "
            f"{options.out.name}.progress.jsonl: run the same command to resume",
            markup=False,
        )
        return EXIT_INTERRUPTED
    except ProgressError as exc:
        err.print(f"edgeproxy eval: {exc}", markup=False)
        return 2
    save_scorecard(result.scorecard, options.out)
    out = wide_console()
    out.print(summary_table(result.scorecard, f"{options.suite.name}: {options.out}"))
    card = result.scorecard
    out.print(
        f"ran {result.ran}, resumed {result.skipped}; spent ${card.spent_usd:.4f} on candidates, "
        f"${card.judge_spent_usd:.4f} on the judge"
        + (f" (cap ${card.max_cost_usd:g})" if card.max_cost_usd is not None else ""),
        markup=False,
    )
    if result.stopped == "max_cost":
        err.print(
            "edgeproxy eval: stopped by the cost cap before every item ran; the scorecard is "
            "marked incomplete (raise --max-cost and run again to finish)",
            markup=False,
        )
        return EXIT_CAPPED
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgeproxy.evals.compare import compare, markdown, write_plot
    from edgeproxy.evals.scorecard import ScorecardError, load_scorecard

    err = Console(stderr=True)
    try:
        old, new = load_scorecard(args.old), load_scorecard(args.new)
    except ScorecardError as exc:
        err.print(f"edgeproxy eval compare: {exc}", markup=False)
        return 2
    objective: Objective = args.objective
    limits = Limits(min_quality=args.min_quality)
    comparisons = compare(old, new, objective, limits)
    plot_name = None
    if args.out is not None:
        plot_path = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
        why_not = write_plot(comparisons, objective, plot_path)
        if why_not is None:
            plot_name = (
                plot_path.name if plot_path.parent == Path(args.out).parent else str(plot_path)
            )
        else:
            err.print(f"edgeproxy eval compare: no plot: {why_not}", markup=False)
    text = markdown(
        old,
        new,
        comparisons,
        objective,
        limits,
        old_name=args.old,
        new_name=args.new,
        plot=plot_name,
        margin=args.margin / 100,
    )
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        err.print(f"wrote {args.out}" + (f" and {plot_name}" if plot_name else ""), markup=False)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgeproxy.evals.scorecard import ScorecardError, load_scorecard

    try:
        card = load_scorecard(args.scorecard)
    except ScorecardError as exc:
        Console(stderr=True).print(f"edgeproxy eval show: {exc}", markup=False)
        return 2
    wide_console().print(summary_table(card, f"{card.suite.name}: {args.scorecard}"))
    return 0


def _scheduled_options(
    policy_path: str, when: Any, args: argparse.Namespace
) -> tuple[EvalOptions, Policy]:
    """A scheduled run's options, from the policy file as it is now."""
    from edgeproxy.evals.runner import EvalOptions
    from edgeproxy.evals.schedule import out_path
    from edgeproxy.evals.suite import load_suite, resolve_suite

    policy = _policy(policy_path)
    name = policy.evals.suite
    if name is None:
        raise ValueError("no suite: set evals.suite in the policy")
    suite = load_suite(resolve_suite(name, Path(policy.source).parent))
    judge = candidate_pool(policy).get(policy.evals.judge) if policy.evals.judge else None
    options = EvalOptions(
        policy=policy,
        suite=suite,
        candidates=pick_candidates(policy, None, None),
        out=out_path(policy, suite.name, when),
        judge=judge,
        repeats=args.repeats or policy.evals.schedule.repeats,
        max_cost=policy.evals.max_cost if args.max_cost is None else args.max_cost,
        concurrency=args.concurrency,
        fresh=True,
    )
    return options, policy


def cmd_schedule(args: argparse.Namespace) -> int:
    """``edgeproxy eval schedule``: the suite every ``evals.schedule.every`` (``--once``: one
    run if one is due, for cron)."""
    import uvloop
    from rich.console import Console

    from edgeproxy.clock import SystemClock
    from edgeproxy.errors import PolicyError
    from edgeproxy.evals.runner import EvalRun
    from edgeproxy.evals.schedule import Scheduler, human, newest_run, watched_patterns
    from edgeproxy.evals.scorecard import save_scorecard
    from edgeproxy.evals.suite import SuiteError

    err = Console(stderr=True)
    _policy_file(args)
    try:
        policy = _policy(args.policy)
    except PolicyError as exc:
        err.print(f"edgeproxy eval schedule: the policy {args.policy} is not valid:", markup=False)
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False)
        return 2
    every = args.every or policy.evals.schedule.every

    def written(options: EvalOptions, card: Scorecard) -> None:
        save_scorecard(card, options.out)
        if card.complete:  # a finished run needs no resuming
            Path(f"{options.out}.progress.jsonl").unlink(missing_ok=True)

    async def run_once(when: Any) -> Path | None:
        options, _ = await asyncio.to_thread(_scheduled_options, args.policy, when, args)
        result = await EvalRun(options).run()
        card = result.scorecard
        await asyncio.to_thread(written, options, card)
        print(
            f"wrote {options.out}: {len(card.cells)} cells, spent ${card.spent_usd:.4f} on "
            f"candidates and ${card.judge_spent_usd:.4f} on the judge"
            + ("" if card.complete else " (stopped by the cost cap: incomplete)"),
            flush=True,
        )
        return options.out

    def newest() -> Any:
        return newest_run(watched_patterns(_policy(args.policy)))

    scheduler = Scheduler(every, run_once, newest, SystemClock())

    async def main() -> int:
        if args.once:
            wait = scheduler.due_in()
            if wait > 0:
                at = scheduler.now() + timedelta(seconds=wait)
                print(f"not due: the next run is at {at:%Y-%m-%d %H:%M}Z (in {human(wait)})")
                return 0
            await scheduler.run_if_due()
            return 0
        print(f"edgeproxy eval schedule: every {human(every)}", flush=True)
        await scheduler.run_forever()
        return 0

    try:
        return uvloop.run(main())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ValueError, SuiteError, PolicyError) as exc:
        err.print(f"edgeproxy eval schedule: {exc}", markup=False)
        return 2


def _duration(text: str) -> float:
    from edgeproxy.policy.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind: type[Any]) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_eval_commands(sub: argparse._SubParsersAction[Any]) -> None:
    evals = sub.add_parser(
        "eval",
        help="evaluate candidates on a suite; compare scorecards",
        description="Run a suite against candidates into a scorecard, show one, or compare two "
        "(docs/evals.md).",
        epilog="examples:\n"
        "  edgeproxy eval run --policy policy.yaml --out scorecard.json   # suite x candidates\n"
        "  edgeproxy eval show scorecard.json                             # the summary table\n"
        "  edgeproxy eval compare old.json new.json                       # why we switched\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_sub = evals.add_subparsers(dest="eval_command", required=True)

    run = eval_sub.add_parser("run", help="run a suite against candidates into a scorecard")
    run.add_argument("--policy", help=f"the policy: candidates, prices (default: {BUILTIN})")
    run.add_argument("--suite", help="suite file or shipped suite name (default: evals.suite)")
    run.add_argument("--out", required=True, help="the scorecard to write (JSON)")
    run.add_argument("--candidates", help="provider/region/model,... (default: evals.candidates)")
    run.add_argument("--route", help="evaluate this route's chain")
    run.add_argument("--repeats", type=_positive(int), default=1)
    run.add_argument(
        "--max-cost", type=_non_negative, help="USD cap for the run (default: evals.max_cost)"
    )
    run.add_argument("--concurrency", type=_positive(int), default=8)
    run.add_argument("--rps", type=_positive(float), help="calls per second at most")
    run.add_argument("--retries", type=int, default=2, help="retries per item (default 2)")
    run.add_argument("--timeout", type=_positive(float), default=120.0, help="seconds per call")
    run.add_argument("--fresh", action="store_true", help="ignore an earlier run's progress")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    comp = eval_sub.add_parser("compare", help="why the winner of each task changed")
    comp.add_argument("old")
    comp.add_argument("new")
    comp.add_argument("--objective", choices=OBJECTIVES, default="cost_per_success")
    comp.add_argument("--min-quality", type=_non_negative, help="quality floor (0..1)")
    comp.add_argument(
        "--margin",
        type=_non_negative,
        default=5.0,
        help="the auto route's margin in percent, for its column (default 5)",
    )
    comp.add_argument("--out", help="write the markdown report here (default: stdout)")
    comp.add_argument("--plot", help="the PNG plot (default: next to --out)")
    comp.set_defaults(func=cmd_compare)

    schedule = eval_sub.add_parser(
        "schedule", help="re-run the suite every evals.schedule.every (docs/evals.md)"
    )
    schedule.add_argument("--policy", help=f"the policy, re-read per run (default: {BUILTIN})")
    schedule.add_argument("--every", type=_duration, help="default: evals.schedule.every")
    schedule.add_argument("--repeats", type=_positive(int), help="default: evals.schedule.repeats")
    schedule.add_argument(
        "--max-cost", type=_non_negative, help="USD cap per run (default: evals.max_cost)"
    )
    schedule.add_argument("--concurrency", type=_positive(int), default=8)
    schedule.add_argument(
        "--once", action="store_true", help="run once if a run is due, then exit (for cron)"
    )
    schedule.set_defaults(func=cmd_schedule)

    show = eval_sub.add_parser("show", help="print a scorecard's summary table")
    show.add_argument("scorecard")
    show.set_defaults(func=cmd_show)
