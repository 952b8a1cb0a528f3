"""Policy hot reload, trigger by trigger, on a real proxy in front of real sims.

Watching files takes real time: the debounce is 50 ms here and every wait polls a condition with
a deadline (``wait_until``), never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeproxy.snapshot import Policy
from fixtures.reloadkit import ReloadStack, wait_until, write_in_place, write_then_rename
from harness import LoopThread

ROOT = Path(__file__).resolve().parents[2]


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
        stack.close()


def served_by(stack: ReloadStack) -> tuple[str, str]:
    response = stack.chat()
    assert response.status_code == 200, response.text
    return response.headers["x-edgeproxy-policy-version"], response.headers["x-edgeproxy-provider"]


def test_in_place_edit_is_picked_up(make_reload_stack: Callable[..., ReloadStack]) -> None:
    stack = make_reload_stack()
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    stack.start(a)
    assert served_by(stack) == (stack.version_of(a), "pa")
    write_in_place(stack.path, b)
    stack.wait_for_version(stack.version_of(b))
    assert served_by(stack) == (stack.version_of(b), "pb")
    assert stack.reloader.counts.applied == 1
    assert stack.reloader.counts.rejected == 0


def test_editor_write_then_rename_is_picked_up(
    make_reload_stack: Callable[..., ReloadStack],
) -> None:
    stack = make_reload_stack()
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    stack.start(a)
    write_then_rename(stack.path, b)
    stack.wait_for_version(stack.version_of(b))
    assert served_by(stack) == (stack.version_of(b), "pb")
    # And back again: the watch survives the inode being replaced.
    write_then_rename(stack.path, a)
    stack.wait_for_version(stack.version_of(a))
    assert served_by(stack) == (stack.version_of(a), "pa")


def test_deleted_then_recreated_file(make_reload_stack: Callable[..., ReloadStack]) -> None:
    stack = make_reload_stack()
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    stack.start(a)
    stack.path.unlink()
    # Deleted: the reload is rejected ("cannot read"), the last good policy keeps serving.
    wait_until(lambda: stack.reloader.counts.rejected >= 1, what="the deletion to be rejected")
    assert "cannot read the policy" in str(stack.reloader.last_error)
    assert served_by(stack) == (stack.version_of(a), "pa")
    stack.path.write_text(b)
    stack.wait_for_version(stack.version_of(b))
    assert stack.reloader.last_error is None
    assert served_by(stack) == (stack.version_of(b), "pb")


def _configmap_swap(directory: Path, name: str, text: str, stamp: str) -> None:
    """What the kubelet does: a new timestamped dir, then ``..data`` renamed onto it."""
    new = directory / f"..{stamp}"
    new.mkdir()
    (new / name).write_text(text)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    tmp = directory / "..data_tmp"
    os.symlink(new.name, tmp)
    os.replace(tmp, directory / "..data")
    if old is not None:
        shutil.rmtree(directory / old)


def test_configmap_symlink_swap(
    make_reload_stack: Callable[..., ReloadStack], tmp_path: Path
) -> None:
    mount = tmp_path / "config"
    mount.mkdir()
    _configmap_swap(mount, "policy.yaml", "placeholder", "2024_01_01_00_00_00.1")
    os.symlink("..data/policy.yaml", mount / "policy.yaml")
    stack = make_reload_stack(mount / "policy.yaml")
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    # start() writes through the symlink into the current timestamped directory.
    stack.start(a)
    assert served_by(stack) == (stack.version_of(a), "pa")
    _configmap_swap(mount, "policy.yaml", b, "2024_01_01_00_01_00.2")
    stack.wait_for_version(stack.version_of(b))
    assert served_by(stack) == (stack.version_of(b), "pb")
    _configmap_swap(mount, "policy.yaml", a, "2024_01_01_00_02_00.3")
    stack.wait_for_version(stack.version_of(a))
    assert served_by(stack) == (stack.version_of(a), "pa")


def test_invalid_edit_is_rejected_with_its_line_and_fixing_it_recovers(
    make_reload_stack: Callable[..., ReloadStack],
) -> None:
    stack = make_reload_stack()
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    stack.start(a)
    # A route that would leave its residency set: pc is tagged jurisdiction=us.
    write_in_place(stack.path, stack.text("pc", "pb"))
    wait_until(lambda: stack.reloader.counts.rejected == 1, what="the bad policy to be rejected")
    error = stack.reloader.last_error
    assert error is not None and error.outcome == "rejected"
    (problem,) = error.problems
    assert (problem.line, problem.column) == (20, 13)
    assert "outside this route's residency requirement" in problem.message
    assert served_by(stack) == (stack.version_of(a), "pa")
    assert stack.requests_to("c") == 0
    # The error is on /admin/policy (loopback, no token configured).
    info = stack.http.get("/admin/policy").json()
    assert info["version"] == stack.version_of(a)
    assert info["reload"]["counts"]["rejected"] == 1
    assert info["reload"]["last_error"]["problems"][0]["text"].startswith(
        f"{stack.path}:20:13: routes.m.chain[0]: pc/main/m is outside"
    )
    write_in_place(stack.path, b)
    stack.wait_for_version(stack.version_of(b))
    assert stack.http.get("/admin/policy").json()["reload"]["last_error"] is None
    assert served_by(stack) == (stack.version_of(b), "pb")


def test_swap_hook_sees_old_and_new(make_reload_stack: Callable[..., ReloadStack]) -> None:
    stack = make_reload_stack()
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    stack.start(a)
    swaps: list[tuple[str, str]] = []

    def hook(old: Policy, new: Policy) -> None:
        swaps.append((old.version, new.version))

    stack.reloader.add_swap_hook(hook)
    write_in_place(stack.path, b)
    stack.wait_for_version(stack.version_of(b))
    # Touching the file with the same content is a no-op: no swap, no hook.
    write_in_place(stack.path, b)
    wait_until(lambda: stack.reloader.counts.unchanged >= 1, what="an unchanged reload")
    assert swaps == [(stack.version_of(a), stack.version_of(b))]


def test_admin_reload_needs_the_token(make_reload_stack: Callable[..., ReloadStack]) -> None:
    stack = make_reload_stack(watch=False, admin_token="s3cret-admin")
    a, b = stack.text("pa", "pb"), stack.text("pb", "pa")
    stack.start(a)
    good = {"Authorization": "Bearer s3cret-admin"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-admin"}):
        response = stack.http.post("/admin/reload", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "invalid_admin_token"
        assert "s3cret-admin" not in response.text
    assert stack.http.get("/admin/policy").status_code == 401
    write_in_place(stack.path, b)
    # Not watching: nothing changes until someone asks.
    assert stack.http.get("/admin/policy", headers=good).json()["version"] == stack.version_of(a)
    response = stack.http.post("/admin/reload", headers=good)
    assert response.status_code == 200
    assert response.json()["outcome"] == "applied"
    assert response.json()["version"] == stack.version_of(b)
    assert served_by(stack) == (stack.version_of(b), "pb")
    # Again: unchanged. Then a broken file: 422 with the problems, the old version serving.
    assert stack.http.post("/admin/reload", headers=good).json()["outcome"] == "unchanged"
    write_in_place(stack.path, b.replace("chain:", "chian:"))
    response = stack.http.post("/admin/reload", headers=good)
    assert response.status_code == 422
    result = response.json()
    assert result["outcome"] == "rejected" and result["version"] == stack.version_of(b)
    typo = next(p for p in result["problems"] if p["path"] == "routes.m.chian")
    assert (typo["line"], typo["column"]) == (20, 5)
    assert "did you mean 'chain'" in typo["message"]
    assert served_by(stack) == (stack.version_of(b), "pb")
    counts = stack.http.get("/admin/policy", headers=good).json()["reload"]["counts"]
    assert counts == {
        "applied": 1,
        "rejected": 1,
        "unchanged": 1,
        "by_trigger": {"admin": 3},
    }


def test_sighup_reloads_a_serving_process(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    base = (ROOT / "policies/default.yaml").read_text()
    path.write_text(base)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGEPROXY_ADMIN_TOKEN", None)
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeproxy.cli",
            "serve",
            "--policy",
            str(path),
            "--port",
            str(port),
            "--no-watch",
            "--log-format",
            "text",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/admin/policy"
    try:
        wait_until(lambda: _get_json(url) is not None, timeout=30, what="the proxy to start")
        before = _get_json(url)
        assert before is not None
        path.write_text(base.replace("max_attempts: 3 ", "max_attempts: 2 "))
        serve.send_signal(signal.SIGHUP)
        wait_until(
            lambda: (_get_json(url) or {}).get("version") != before["version"],
            what="SIGHUP to reload the policy",
        )
        after = _get_json(url)
        assert after is not None
        assert after["routes"]["gpt-4o"]["max_attempts"] == 2
        assert after["reload"]["counts"]["by_trigger"] == {"sighup": 1}
        assert after["reload"]["watching"] is False
    finally:
        serve.send_signal(signal.SIGTERM)
        out = serve.communicate(timeout=20)[0]
    assert serve.returncode == 0, out
    assert "policy reloaded" in out and "trigger=sighup" in out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> dict[str, object] | None:
    try:
        response = httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    data: dict[str, object] = response.json()
    return data
