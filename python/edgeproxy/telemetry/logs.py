"""Log lines as JSON (for machines) or text (for people), with the request id on each.

Both formats keep one record on one line whatever a client put in it: JSON through ``orjson``
(which escapes control characters), text through ``escape.text_value`` (control characters
escaped, values with spaces quoted); a traceback's lines are indented so none of them can pass
for a record. Every line passes through the redactor.

``configure_logging`` (what ``edgeproxy serve``, ``demo`` and ``sim`` call) also installs the
access log's batched writer in the same format when the level lets ``info`` lines through
(``access_log.AccessLogWriter``); at ``warning`` and above the access log is off.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from edgeproxy.telemetry import access_log
from edgeproxy.telemetry.escape import escape_controls, text_value
from edgeproxy.telemetry.redact import redact

# LogRecord attributes that are not "extra" fields passed by the caller.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line, default=str).decode())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [
            f"{stamp} {record.levelname:<7} {record.name}: {escape_controls(record.getMessage())}"
        ]
        parts += [f"{k}={text_value(v)}" for k, v in _extras(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            # Indented: a line of the traceback (which may quote client input) never starts
            # like a record does (with its time).
            text += "".join(f"\n  {escape_controls(line)}" for line in trace.splitlines())
        return redact(text)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log duplicates ours and would print client addresses per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    stream = getattr(sys.stderr, "buffer", None)  # None if stderr was swapped for a text buffer
    if not logging.getLogger(access_log.LOGGER).isEnabledFor(logging.INFO):
        access_log.install(access_log.NoAccessLog())
    elif stream is not None:
        access_log.install(access_log.AccessLogWriter(stream, fmt))
    else:
        access_log.install(None)
