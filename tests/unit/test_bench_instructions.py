"""``bench.instructions.parse_totals``: the instruction count of a callgrind output file."""

from __future__ import annotations

import pytest

from bench.instructions import parse_totals
from bench.procs import BenchError

DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 2980
cmd:  python -m bench.launch_gateway gateway
part: 1

events: Ir
summary: 527777144

fn=(1) main
16 3
totals: 527777144
"""


def test_the_totals_line_is_the_count() -> None:
    assert parse_totals(DUMP) == 527777144


def test_summary_serves_when_there_is_no_totals_line() -> None:
    assert parse_totals(DUMP.replace("totals: 527777144\n", "")) == 527777144


def test_a_dump_without_a_count_is_an_error() -> None:
    with pytest.raises(BenchError, match="no totals line"):
        parse_totals("# callgrind format\nevents: Ir\n")
    with pytest.raises(BenchError, match="malformed totals"):
        parse_totals("totals: many\n")
