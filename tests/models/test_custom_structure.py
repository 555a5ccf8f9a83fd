"""A structure declared in one file outside the package works through the API and the CLI unchanged."""
import importlib.util

import pytest

from conftest import REPO, assert_one_sentence_error
from pyro_vae import PyroVAEError
from pyro_vae.models import build_model

EXAMPLE = REPO / "examples" / "custom_structure.py"
SPEC = f"{EXAMPLE}:LaplacePriorVAE"


@pytest.mark.slow
def test_the_example_trains_evaluates_and_samples_through_the_api(tmp_path):
    spec = importlib.util.spec_from_file_location("custom_structure_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--epochs", "1", "--subset", "200", "--z-dim", "3", "--hidden-dims", "24",
                           "--num-samples", "20", "--repeats", "20", "--run-dir", str(tmp_path / "run")])
    assert result["nll"] > 0 and result["nll"] <= -result["elbo"] + 5
    variance = {row["estimator"]: row["guide_total_variance"] for row in result["gradients"]}
    assert variance["score"] > variance["reparam"]
    assert (tmp_path / "run" / "samples.png").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_the_cli_takes_a_file_and_class(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--model", SPEC, "--run-dir", run, "--subset", 200, "--epochs", 1,
                         "--hidden-dims", 24, "--z-dim", 2, "--eval-samples", 4, "--no-progress")
    assert code == 0, err
    assert (run / "latent_space.png").is_file()
    assert cli("evaluate", run, "-K", 3)[0] == 0
    assert cli("sample", run, "--num", 4, "--out", tmp_path / "s.png")[0] == 0
    code, out, err = cli("compare-estimators", "--run-dir", run, "--estimators", "reparam,score", "--repeats", 5,
                         "--train-steps", 4, "--eval-every", 2, "--batch-size", 20,
                         "--out", tmp_path / "compare", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "compare" / "gradient_statistics.csv").is_file()
    assert type(build_model(SPEC, z_dim=2, hidden_dims=[8])).__name__ == "LaplacePriorVAE"


@pytest.mark.parametrize("spec, message", [(f"{EXAMPLE}:NoSuchClass", "defines no LatentStructure subclass named"),
                                           ("missing/file.py:Model", "no such file"),
                                           (str(EXAMPLE), "name the class too")])
def test_bad_custom_model_specs(cli, tmp_path, spec, message):
    with pytest.raises(PyroVAEError, match=message):
        build_model(spec)
    code, _, err = cli("train", "--model", spec, "--run-dir", tmp_path / "run", "--subset", 100, "--no-progress")
    assert_one_sentence_error(code, err, message)
    assert not (tmp_path / "run").exists()


FORWARDING = '''
from pyro_vae.models import VAE


class ScaledPriorVAE(VAE):
    def __init__(self, prior_scale: float = 1.0, **kwargs):  # everything else is the VAE's (and the base's)
        super().__init__(**kwargs)
        self.prior_scale = prior_scale
'''


def test_a_structure_passing_kwargs_on_takes_its_parents_options_and_no_others(tmp_path):
    from pyro_vae.models import BetaVAE, check_model_options
    from pyro_vae.models.base import structure_parameters

    parameters = structure_parameters(BetaVAE)
    assert list(parameters) == ["x_dim", "z_dim", "hidden_dims", "activation", "beta", "image_shape", "likelihood", "net"]
    assert parameters["likelihood"].annotation is str and parameters["beta"].annotation is float
    (tmp_path / "scaled.py").write_text(FORWARDING)
    spec = f"{tmp_path / 'scaled.py'}:ScaledPriorVAE"
    structure = build_model(spec, x_dim=784, z_dim=2, hidden_dims=[8], prior_scale=2.0, likelihood="continuous-bernoulli")
    assert structure.prior_scale == 2.0 and structure.likelihood.spec == "continuous-bernoulli"
    with pytest.raises(PyroVAEError, match="has no option 'bogus'; its options are prior_scale, x_dim, z_dim, "
                                           "hidden_dims, activation, image_shape, likelihood, net$"):
        check_model_options(spec, {"bogus": 1})
    with pytest.raises(PyroVAEError, match="the model option likelihood of ScaledPriorVAE must be text, got 3"):
        check_model_options(spec, {"likelihood": 3})
    with pytest.raises(PyroVAEError, match="the model option z_dim of ScaledPriorVAE must be a positive whole number"):
        check_model_options(spec, {"z_dim": 0})
