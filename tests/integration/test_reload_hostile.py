"""Hot reload against input that would take it down (issue 15, item 11), on a real proxy.

Each attack is written to the watched policy file the way an SRE's mistake or an attacker would
put it there; the reload must be rejected with a located problem, the last good policy must keep
serving, nothing of the file may be quoted back (log, ``GET /admin/policy``), and the proxy must
still stop promptly (a blocked read used to wedge the reloader and SIGTERM).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.reloadkit import ReloadStack, wait_until, write_in_place, write_then_rename
from harness import LoopThread


@pytest.fixture
def make_reload_stack(
    loop_thread: LoopThread, tmp_path: Path
) -> Iterator[Callable[..., ReloadStack]]:
    stacks: list[ReloadStack] = []

    def make(path: Path | None = None, **kwargs: Any) -> ReloadStack:
        stack = ReloadStack(loop_thread, path or tmp_path / "policy.yaml", **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()  # a wedged reloader would hang here


def _serving(stack: ReloadStack, text: str) -> None:
    response = stack.chat()
    assert response.status_code == 200, response.text
    assert response.headers["x-edgeproxy-policy-version"] == stack.version_of(text)
    assert response.headers["x-edgeproxy-provider"] == "pa"


def _rejected(stack: ReloadStack, before: int) -> str:
    wait_until(lambda: stack.reloader.counts.rejected > before, what="the reload to be rejected")
    error = stack.reloader.last_error
    assert error is not None
    return "\n".join(str(p) for p in error.problems)


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\nversion: *a9\n"  # 9^10 = 3.5e9 values once expanded


def test_oversized_files_and_alias_bombs_are_rejected_and_the_last_policy_serves(
    make_reload_stack: Callable[..., ReloadStack],
) -> None:
    stack = make_reload_stack()
    good = stack.text()
    stack.start(good)
    rejected = stack.reloader.counts.rejected
    write_then_rename(stack.path, good + "# padding\n" * 200_000)  # ~2 MB
    assert "the policy is larger than 1 MiB, the limit: refused" in _rejected(stack, rejected)
    _serving(stack, good)

    rejected = stack.reloader.counts.rejected
    write_then_rename(stack.path, _alias_bomb())
    problems = _rejected(stack, rejected)
    assert "expands to more than 100000 values (YAML aliases repeating each other?)" in problems
    _serving(stack, good)
    # Fixing the file is enough.
    fixed = stack.text("pa", "pb", **{"total: 5s": "total: 6s"})
    write_then_rename(stack.path, fixed)
    stack.wait_for_version(stack.version_of(fixed))


def test_a_key_file_that_blocks_is_rejected_without_wedging_the_reloader(
    make_reload_stack: Callable[..., ReloadStack], tmp_path: Path
) -> None:
    stack = make_reload_stack()
    good = stack.text()
    stack.start(good)
    os.mkfifo(tmp_path / "key.fifo")  # nothing ever writes to it: a read would block forever
    with_fifo = good.replace(
        "  pa:\n    kind: openai\n", "  pa:\n    kind: openai\n    api_key_file: key.fifo\n"
    )
    rejected = stack.reloader.counts.rejected
    write_in_place(stack.path, with_fifo)
    problems = _rejected(stack, rejected)
    assert "providers.pa.api_key_file: the key file" in problems
    assert "is a FIFO, not a regular file: refused" in problems
    _serving(stack, good)
    # The reloader is free: the admin endpoint reloads (and rejects again) at once.
    answer = stack.http.post("/admin/reload")
    assert answer.status_code == 422 and "is a FIFO" in answer.text
    # And the policy path itself replaced by a FIFO.
    stack.path.unlink()
    os.mkfifo(stack.path)
    answer = stack.http.post("/admin/reload")
    assert answer.status_code == 422, answer.text
    assert "the policy is a FIFO, not a regular file: refused" in answer.text
    _serving(stack, good)


PASSWD_LIKE = """\
root:x:0:0:root:/root:/bin/bash: login
alice:x:1000:1000:Alice Liddell, Room 1: /home/alice
sk-live-0123456789abcdefghijklmnop: rotated
"""


def test_a_policy_symlinked_to_another_file_is_not_quoted_back(
    make_reload_stack: Callable[..., ReloadStack],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    stack = make_reload_stack(config / "policy.yaml")
    good = stack.text()
    stack.start(good)
    secrets = tmp_path / "passwd"
    secrets.write_text(PASSWD_LIKE)
    tmp_link = config / ".policy.yaml.tmp"
    tmp_link.symlink_to(secrets)
    rejected = stack.reloader.counts.rejected
    with caplog.at_level(logging.ERROR, logger="edgeproxy.policy"):
        os.replace(tmp_link, stack.path)
        problems = _rejected(stack, rejected)
    admin = stack.http.get("/admin/policy").text
    for shown in (problems, admin, caplog.text):
        for secret in ("root:x", "Alice", "/bin/bash", "0123456789abcdef"):
            assert secret not in shown
    assert "unknown key a key at line 1" in problems
    assert "policy rejected; the last good policy keeps serving" in caplog.text
    _serving(stack, good)
