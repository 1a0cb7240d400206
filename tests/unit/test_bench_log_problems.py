"""``bench.procs.log_problems``: which lines of a gateway log a benchmark run reports as problems."""

from __future__ import annotations

from bench.procs import log_problems

LOG = """\
2026-12-07 20:45:56,001 INFO hybrid.gateway: gateway listening on 127.0.0.1:4000 (http/ws)
2026-12-07 20:45:56,002 INFO hybrid.gateway: POST /x: the sender went away; ERROR and WARNING are only words here
2026-12-07 20:45:56,003 WARNING hybrid.gateway.directory: redis redis://127.0.0.1:1/0 unreachable (ConnectionError)
2026-12-07 20:45:56,004 ERROR aiohttp.server: Error handling request from 127.0.0.1
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: boom
2026-12-07 20:45:56,005 CRITICAL hybrid.gateway: out of file descriptors
Endpoint=sb://127.0.0.1:4000/;SharedAccessKeyName=Root;SharedAccessKey=abc
"""


def test_warnings_errors_criticals_and_tracebacks_are_problems() -> None:
    assert log_problems(LOG) == [
        ("2026-12-07 20:45:56,003 WARNING hybrid.gateway.directory: redis redis://127.0.0.1:1/0 unreachable "
         "(ConnectionError)"),
        "2026-12-07 20:45:56,004 ERROR aiohttp.server: Error handling request from 127.0.0.1",
        "Traceback (most recent call last):",
        "2026-12-07 20:45:56,005 CRITICAL hybrid.gateway: out of file descriptors",
    ]


def test_info_lines_are_not_problems_whatever_words_they_contain() -> None:
    assert log_problems(LOG.splitlines()[0] + "\n" + LOG.splitlines()[1]) == []
    assert log_problems("") == []
