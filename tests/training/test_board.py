"""train --tensorboard: the event file read back holds metrics.jsonl's numbers, the KL per dimension and pictures."""
import json

import pytest

from tests.conftest import TINY

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


@pytest.mark.slow
def test_the_event_file_holds_the_metrics_the_kl_per_dimension_and_the_pictures(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--run-dir", run, *TINY, "--epochs", 2, "--tensorboard", "--eval-samples", 5)
    assert code == 0, err
    board = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    board.Reload()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key, tag in (("train_loss", "train/loss"), ("valid_elbo", "valid/elbo"), ("lr", "train/lr")):
        events = board.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    tags = board.Tags()
    assert {"kl_per_dim/0", "kl_per_dim/1", "kl_per_dim/2", "collapse/kl", "collapse/active_units"} <= set(
        tags["scalars"])  # TINY's z-dim 3
    total = sum(board.Scalars(f"kl_per_dim/{i}")[-1].value for i in range(3))
    assert board.Scalars("collapse/kl")[-1].value == pytest.approx(total, rel=1e-5)
    assert {"samples", "reconstructions"} <= set(tags["images"])


@pytest.mark.slow
def test_tensorboard_can_be_turned_on_when_a_run_is_resumed(cli, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, out, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--tensorboard", "--eval-samples", 5)
    assert code == 0, err
    assert any((run / "tensorboard").iterdir())
