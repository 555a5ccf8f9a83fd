"""The metrics benchmark runs and its stand-in representation is informative (so DCI's trees have work to do)."""
import importlib.util

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location(
    "disentanglement_metrics", REPO / "benchmarks" / "disentanglement_metrics.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


@pytest.mark.slow
def test_the_benchmark_times_every_metric(capsys):
    benchmark.main(["--num-codes", "200", "--dims", "4", "--score-points", "50"])  # 400 codes: 13 s, 200: 9 s
    out = capsys.readouterr().out
    for name in ("MIG", "DCI", "SAP", "modularity", "BetaVAE score (50 / 25 points)", "FactorVAE score (50 / 25"):
        assert name in out
    # the linear stand-in carries the factors: explicitness well above chance
    explicitness = float(out.split("explicitness_test ")[1].split(",")[0].split()[0])
    assert explicitness > 0.7
