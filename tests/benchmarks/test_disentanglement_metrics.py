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
    # (the exact trees' DCI, more than half of the time at these sizes, is left out: the same row with the other trees)
    benchmark.main(["--num-codes", "200", "--dims", "4", "--score-points", "50", "--dci-trees", "histogram"])
    out = capsys.readouterr().out
    for name in ("MIG", "DCI (histogram trees", "SAP", "modularity", "BetaVAE score (50 / 25 points)",
                 "FactorVAE score (50 / 25"):
        assert name in out
    assert "gradient-boosted" not in out
    # the linear stand-in carries the factors: explicitness well above chance
    explicitness = float(out.split("explicitness_test ")[1].split(",")[0].split()[0])
    assert explicitness > 0.7
