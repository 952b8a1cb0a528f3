"""``edgeproxy`` settings: a flag, else its EDGEPROXY_* variable, else the default, each shown in
``--help`` with its default and variable; every command's help has examples."""

from __future__ import annotations

import argparse

import pytest

from edgeproxy.cli import COMMANDS, DEFAULT_PORT, build_parser
from edgeproxy.commands.options import resolve_settings

# What a container sets (issue 17): each must be a serve setting with a variable.
SERVE_VARIABLES = {
    "--policy": "EDGEPROXY_POLICY",
    "--host": "EDGEPROXY_HOST",
    "--port": "EDGEPROXY_PORT",
    "--log-level": "EDGEPROXY_LOG_LEVEL",
    "--log-format": "EDGEPROXY_LOG_FORMAT",
    "--keepalive-timeout": "EDGEPROXY_KEEPALIVE_TIMEOUT",
    "--header-timeout": "EDGEPROXY_HEADER_TIMEOUT",
    "--max-connections": "EDGEPROXY_MAX_CONNECTIONS",
    "--allowed-hosts": "EDGEPROXY_ALLOWED_HOSTS",
    "--drain-delay": "EDGEPROXY_DRAIN_DELAY",
    "--drain-timeout": "EDGEPROXY_DRAIN_TIMEOUT",
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def parse(argv: list[str], environ: dict[str, str]) -> tuple[argparse.Namespace, str | None]:
    args = build_parser().parse_args(argv)
    return args, resolve_settings(args, environ)


def test_serve_help_lists_every_setting_with_its_default_and_variable() -> None:
    serve = subparsers()["serve"]
    helps = {a.option_strings[0]: a.help or "" for a in serve._actions if a.option_strings}
    for flag, variable in SERVE_VARIABLES.items():
        assert f"env {variable}" in helps[flag], flag
        assert "(default: " in helps[flag], flag
    text = serve.format_help()
    assert f"default: {DEFAULT_PORT}" in text and "default: 127.0.0.1" in text
    for variable in (
        "EDGEPROXY_ADMIN_TOKEN",
        "EDGEPROXY_METRICS_TOKEN",
        "EDGEPROXY_FLEET_REDIS",
        "OTEL_",
    ):
        assert variable in text  # secrets: variables only, listed in the epilog


def test_every_command_shows_examples_and_every_option_a_default() -> None:
    commands = subparsers()
    assert set(commands) == {
        "serve", "demo", "sim", "policy", "status", "tasks", "eval", "auto", "keys",
    }  # fmt: skip
    assert len(COMMANDS) == len(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert "examples:\n  edgeproxy " in text, name
        for action in parser._actions:
            flag = action.option_strings[0] if action.option_strings else None
            takes_value = action.nargs != 0 and flag not in (None, "-h")
            if takes_value and flag != "--fault":
                assert "default" in (action.help or ""), f"{name} {flag}"


def test_every_policy_subcommand_shows_examples() -> None:
    policy = subparsers()["policy"]
    action = next(a for a in policy._actions if isinstance(a, argparse._SubParsersAction))
    assert set(action.choices) == {"check", "explain", "diff", "schema", "docs"}
    for name, parser in action.choices.items():
        assert f"examples:\n  edgeproxy policy {name}" in parser.format_help(), name


def test_a_flag_beats_its_variable_and_a_variable_beats_the_default() -> None:
    args, problem = parse(["serve"], {})
    assert problem is None and args.port == DEFAULT_PORT and args.host == "127.0.0.1"
    assert args.log_format == "json" and args.policy is None  # None: the built-in policy
    args, _ = parse(["serve"], {"EDGEPROXY_PORT": "9000", "EDGEPROXY_LOG_FORMAT": "TEXT"})
    assert args.port == 9000 and args.log_format == "text"
    args, _ = parse(["serve", "--port", "9001"], {"EDGEPROXY_PORT": "9000"})
    assert args.port == 9001
    args, _ = parse(["serve"], {"EDGEPROXY_PORT": ""})  # set but empty: as if unset
    assert args.port == DEFAULT_PORT
    args, _ = parse(["serve"], {"EDGEPROXY_MAX_CONNECTIONS": "64", "EDGEPROXY_DRAIN_DELAY": "0"})
    assert args.max_connections == 64 and args.drain_delay == 0.0
    assert args.keepalive_timeout is None  # unset: connections.py's own default applies


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EDGEPROXY_PORT", "http", "EDGEPROXY_PORT='http': expected a whole number"),
        ("EDGEPROXY_PORT", "70000", "a port is 0 (any free port) to 65535"),
        ("EDGEPROXY_LOG_LEVEL", "verbose", "expected one of debug, info, warning, error"),
        ("EDGEPROXY_MAX_CONNECTIONS", "0", "must be at least 1"),
        ("EDGEPROXY_DRAIN_TIMEOUT", "-1", "0 or more"),
        ("EDGEPROXY_KEEPALIVE_TIMEOUT", "nan", "finite"),
    ],
)
def test_a_bad_variable_is_reported_by_its_name(variable: str, value: str, message: str) -> None:
    _, problem = parse(["serve"], {variable: value})
    assert problem is not None and problem.startswith(f"{variable}={value!r}: ")
    assert message in problem


def test_a_bad_flag_is_reported_by_argparse_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--drain-delay", "soon"])
    assert "argument --drain-delay: expected seconds as a number" in capsys.readouterr().err


def test_demo_and_sim_ignore_the_serve_variables() -> None:
    # A container's EDGEPROXY_POLICY names the production policy; `edgeproxy demo` in the same
    # container keeps to its own.
    args, problem = parse(["demo"], {"EDGEPROXY_POLICY": "/etc/edgeproxy/policy.yaml"})
    assert problem is None and args.policy is None
    args, _ = parse(["sim"], {"EDGEPROXY_LOG_LEVEL": "debug"})
    assert args.log_level == "info"
