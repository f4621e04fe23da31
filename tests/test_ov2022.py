"""Finding Python 3.10 for the OpenVINO 2022.3 tests, with no machine-specific path."""

import sys

import ov2022


def test_only_a_python_that_runs_as_3_10_is_taken(tmp_path):
    assert ov2022.real_python310(sys.executable) is None  # the suite's own Python is 3.11
    assert ov2022.real_python310(str(tmp_path / "python3.10")) is None
    found = ov2022.find_python310()
    if found is not None:
        assert found.is_absolute() and ov2022.real_python310(str(found)) == found


def test_the_override_wins_and_a_bad_one_finds_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(ov2022.PY310_ENV, str(tmp_path / "missing"))
    ov2022.find_python310.cache_clear()
    try:
        assert ov2022.find_python310() is None
    finally:
        ov2022.find_python310.cache_clear()
