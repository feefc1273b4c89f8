"""Every malformed payload and configuration of `harness.bad_inputs` is refused clearly.

For each case: the server does not raise; the bad client is dropped from the round with a
reason naming the problem (or the run stops at start with an error naming the bad value); the
other clients complete; the global adapter is finite and equals the honest clients' result.
"""

import pytest

from experiments.bad_inputs import write_table
from harness.bad_inputs import CASES, Bench, Result


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Bench(tmp_path_factory.mktemp("bad-inputs"))


def test_the_case_list_covers_both_transports_and_the_configuration():
    planes = [c.plane for c in CASES]
    assert len(CASES) >= 25 and len({c.kind for c in CASES}) == len(CASES)
    assert {p: planes.count(p) >= 10 for p in ("flower", "stream", "config")} == {
        "flower": True, "stream": True, "config": True}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.plane}: {c.kind}" for c in CASES])
def test_a_bad_input_is_refused_with_a_clear_reason(bench, case):
    result = bench.run(case)
    assert not result.problems(), result.outcome()


def test_a_case_that_slips_through_is_reported(bench, tmp_path):
    """The checks themselves can fail: a run that accepts the input is flagged, in the table
    too."""
    slipped = Result(CASES[0], reason="", completed=3, sampled=3, matches_reference=False)
    assert len(slipped.problems()) == 3
    write_table([slipped], tmp_path)
    table = (tmp_path / "bad_inputs.md").read_text()
    assert "1 kinds tried, 0 handled" in table and "PROBLEM" in table
    assert (tmp_path / "bad_inputs.csv").read_text().startswith("plane,kind,sent,reason,outcome")
