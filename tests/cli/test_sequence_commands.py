"""The command line over sequences: the DMM and the HMM train, evaluate (per sequence, per step, beside the process
that drew the data), sample and go through the estimator comparison like any structure; a structure given the
wrong kind of data is one sentence and exit 2, before any run directory is written."""
import json

import pytest

SMALL = ["--dataset", "hmm-sequences", "--subset", 200, "--epochs", 1, "--batch-size", 50, "--eval-samples", 4, "--no-jit",
         "--hidden-dims", 16, "--z-dim", 3, "--no-progress"]
DMM = ["--model", "dmm", "--model-option", "rnn_dim=16", "--model-option", "transition_dim=16"]
HMM = ["--model", "hmm", "--model-option", "num_states=3"]


@pytest.mark.slow  # a training, five commands on it (six for the DMM)
@pytest.mark.parametrize("structure", [DMM, HMM], ids=["dmm", "hmm"])
def test_a_sequence_structure_trains_evaluates_and_samples(cli, tmp_path, structure):
    run = tmp_path / "run"
    code, out, err = cli("train", *structure, *SMALL, "--run-dir", run)  # uncompiled: the DMM's JIT costs 20 s
    assert code == 0, err
    code, out, err = cli("evaluate", run, "-K", 5)
    assert code == 0, err
    result = json.loads((run / "evaluation-test-K5.json").read_text())
    # the process that drew the data is the bound no model beats, and one epoch is far from it
    assert result["nll"] > result["source_nll"] > 0
    assert result["nll_per_step"] == pytest.approx(result["nll"] * result["images"] / result["steps"])
    assert "nats per step" in out and "the process that drew the data" in out
    if structure is HMM:  # its states are summed out: the ELBO is log p(x) itself
        assert result["elbo"] == pytest.approx(-result["nll"], abs=1e-3)
    else:
        assert -result["elbo"] > result["nll"] - 1e-3
    code, out, err = cli("sample", run, "--num", 4, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    code, out, err = cli("evaluate", run, "-K", 2, "--collapse", "--out", tmp_path / "c.json")
    if structure is HMM:  # nothing in its guide: one sentence, before any evaluation
        assert code == 2 and "no code site in its guide" in err and not (tmp_path / "c.json").exists()
    else:  # the first step's code, a masked diagonal Gaussian: its KL splits by dimension
        assert code == 0 and "units of 'z_0' active; KL" in out, err
    code, out, err = cli("interpolate", run, "--out", tmp_path / "i.png")
    assert code == 2 and "no one path between two sequences" in err
    if structure is DMM:  # the estimator comparison, through the score-function gradients of its 60 sites
        code, out, err = cli("compare-estimators", "--run-dir", run, "--subset", 100, "--estimators", "reparam,score",
                             "--repeats", 2, "--train-steps", 1, "--eval-every", 1, "--batch-size", 10,
                             "--no-progress", "--out", tmp_path / "cmp")
        assert code == 0, err
        assert "reparam" in out and "score" in out


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "vae", "--dataset", "hmm-sequences"], "choose --model dmm or hmm"),
    (["--model", "dmm", "--dataset", "binarized-mnist"], "models sequences (N, T, D)"),
    (["--model", "hmm", "--dataset", "binarized-mnist"], "models sequences (N, T, D)"),
    (["--model", "dmm", "--dataset", "hmm-sequences", "--num-labelled", 11], "whose labels are their lengths"),
    (["--model", "dmm", "--dataset", "hmm-sequences", "--likelihood", "gaussian"], "sequences are binary"),
])
def test_the_wrong_kind_of_data_is_one_sentence_before_any_run(cli, tmp_path, argv, fragment):
    code, out, err = cli("train", *argv, "--subset", 100, "--epochs", 1, "--run-dir", tmp_path / "run")
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
