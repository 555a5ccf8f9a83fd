"""The names the library offers (data sets, structures, ELBOs, schedules, estimators, files), without torch.

The command line builds its parser from this module alone, so ``pyro-vae COMMAND --help`` and argparse's
own errors come at once instead of after importing torch, Pyro and matplotlib (seconds on a small
machine). The registries that implement these names (``models.MODELS``, ``inference.ELBOS``,
``networks.ACTIVATIONS``, ``studies.estimators.ESTIMATORS``, ``training.OPTIMIZERS``) are checked
against them when they are imported, so the two cannot drift apart.
"""
from __future__ import annotations

import math

DATASETS = ("binarized-mnist", "binarized-mnist-labelled", "mnist-test-release", "mnist", "fashion-mnist", "kmnist",
            "cifar10", "svhn", "celeba", "dsprites-procedural", "dsprites", "hmm-sequences")
#: data sets with known generating factors (for the disentanglement metrics)
FACTOR_DATASETS = ("dsprites-procedural", "dsprites")
#: the DATASETS that torchvision reads from --data-dir (--download fetches them)
TORCHVISION_NAMES = ("mnist", "fashion-mnist", "kmnist", "cifar10", "svhn", "celeba")
#: the DATASETS of sequences the package makes (pyro_vae.data.sequences), with the exact likelihood of their source
SEQUENCE_DATASETS = ("hmm-sequences",)


def is_dataset_path(name: str) -> bool:
    """Whether ``--dataset`` names the user's own images (a path) rather than a data set of :data:`DATASETS`."""
    return name not in DATASETS


BINARIZE_MODES = ("none", "dynamic", "static")

MODEL_NAMES = ("vae", "beta-vae", "beta-tcvae", "factor-vae", "cvae", "hierarchical-vae", "mixture-prior-vae",
               "bernoulli-mixture", "gmvae", "ss-vae", "vampprior", "hierarchical-vampprior",
               "planar-vae", "iaf-vae", "sylvester-vae", "vampprior-iaf", "flow-prior-vae", "dmm", "hmm")
#: the structures ``beta-sweep`` trains, each with the option its ``--betas`` set: the KL weight of beta-VAE, the
#: total-correlation weight of beta-TCVAE (beta) and of FactorVAE (gamma)
SWEPT_MODELS = {"beta-vae": "beta", "beta-tcvae": "beta", "factor-vae": "gamma"}
#: the values ``beta-sweep`` trains without ``--betas``, per swept weight (gamma: within Kim & Mnih's 10 to 100)
SWEPT_DEFAULTS = {"beta": (0.5, 1.0, 2.0, 4.0, 8.0), "gamma": (10.0, 20.0, 40.0)}
#: the tree ensembles DCI can take its importances from: disentanglement_lib's exact gradient-boosted trees, or the
#: same boosting on binned codes, about 11 times faster (pyro_vae.disentanglement.metrics.dci)
DCI_TREES = ("gbt", "histogram")
#: the structures whose ``default_elbo`` is "enum" (their discrete sites are summed out exactly)
ENUM_MODELS = ("bernoulli-mixture", "gmvae", "ss-vae", "hmm")

#: pixel likelihoods p(x | z) (``--likelihood``; one class each in pyro_vae/likelihoods.py) -> the pixels they take:
#: "binary" (0 or 1), "8-bit" (a distribution over the 256 values k / 255), "categories" (a distribution over
#: categories: whole numbers 0 to C - 1 of vectors and sequences, C from the data, or the 256 values of 8-bit pixels)
#: or "density" (a density on [0, 1] or the line, trained and evaluated on uniformly dequantized 8-bit data); and
#: networks (``--net``)
LIKELIHOOD_PIXELS = {"bernoulli": "binary", "continuous-bernoulli": "density", "gaussian": "density",
                     "gaussian-shared": "density", "discretized-logistic": "8-bit", "categorical": "categories"}
LIKELIHOOD_NAMES = tuple(LIKELIHOOD_PIXELS)
#: the likelihoods whose full name counts something the data decide: ``categorical-C``, C categories
COUNTED_LIKELIHOODS = ("categorical",)
#: the likelihood of a run that names none
DEFAULT_LIKELIHOOD = "bernoulli"


def likelihood_name(spec: str) -> str:
    """The ``--likelihood`` name of a likelihood as a run records it: ``categorical`` for ``categorical-5`` (five
    categories, counted from the data), else the spec itself."""
    base, _, count = spec.rpartition("-")
    return base if base in COUNTED_LIKELIHOODS and count.isdigit() else spec


def takes_binary_pixels(likelihood: str) -> bool:
    """Whether ``likelihood`` needs pixels that are 0 or 1."""
    return LIKELIHOOD_PIXELS[likelihood_name(likelihood)] == "binary"


def is_discrete_likelihood(likelihood: str) -> bool:
    """Whether ``likelihood`` is a distribution over the pixel values, rather than a density."""
    return LIKELIHOOD_PIXELS[likelihood_name(likelihood)] != "density"


LIKELIHOOD_HELP = ("'bernoulli' for binary pixels; 'continuous-bernoulli' (Loaiza-Ganem & Cunningham 2019), a "
                   "density on [0, 1]; 'gaussian' with a learned scale per pixel, 'gaussian-shared' with one scale "
                   "for all (on vectors and sequences: any real values); 'discretized-logistic', a distribution "
                   "over the 256 values of 8-bit pixels; 'categorical', each feature one of C categories: the whole "
                   "numbers 0 to C - 1 of vectors and sequences (C = their largest value + 1), or the 256 values of "
                   "8-bit pixels (a softmax over them). The continuous ones train and are evaluated on uniformly "
                   "dequantized 8-bit data")
NET_NAMES = ("mlp", "conv")
DEFAULT_NET = "mlp"
NET_HELP = ("'mlp': fully connected networks of --hidden-dims; 'conv': convolutional encoder and decoder (32-64 "
            "channels, kernel 4, stride 2, for 28x28 and 32x32; 32-32-64-64 for 64x64 and up, Burgess et al. 2018)")

ACTIVATION_NAMES = ("relu", "softplus", "tanh", "gated")
OPTIMIZER_NAMES = ("adam", "fused-adam", "clipped-adam")
BASELINES = ("none", "average", "neural")

ELBO_NAMES = ("trace", "meanfield", "enum", "tracegraph", "iwae", "stl", "dreg", "miwae", "piwae", "ciwae", "rws",
              "vimco", "renyi", "tmc")
ELBO_HELP = ("'trace' is Trace_ELBO (Monte Carlo KL); 'meanfield' TraceMeanField_ELBO (analytic KL; every latent "
             "must be reparameterized); 'enum' TraceEnum_ELBO (discrete sites marked infer={'enumerate': "
             "'parallel'} summed out exactly); 'tracegraph' TraceGraph_ELBO (score function for discrete sites, "
             "Rao-Blackwellized, with --baseline); 'iwae' the importance-weighted bound of Burda et al. 2016 with K = "
             "--num-particles samples per image (log-mean-exp of K weights; the ELBO at K = 1; enumerated sites "
             "summed inside each weight); 'stl' the ELBO of K draws with sticking-the-landing guide gradients (Roeder "
             "et al. 2017); 'dreg' the IWAE bound with doubly reparameterized guide gradients (Tucker et al. 2019); "
             "'miwae' the mean of --outer-particles M IWAE bounds of K draws, 'piwae' the model on IWAE(M K) and the "
             "guide on MIWAE(M, K), 'ciwae' --ciwae-beta ELBO + (1 - beta) IWAE (Rainforth et al. 2018); 'rws' "
             "reweighted wake-sleep, wake phases, per image (Bornschein & Bengio 2015); 'vimco' the IWAE bound of K "
             "discrete draws with leave-one-out baselines (Mnih & Rezende 2016); 'renyi' Pyro's RenyiELBO with "
             "--alpha (Li & Turner 2016); 'tmc' Pyro's TraceTMC_ELBO, K draws of every latent site combined")

#: the objectives of inference/multisample.py (not JIT-compiled)
MULTI_SAMPLE_ELBOS = ("stl", "dreg", "miwae", "piwae", "ciwae", "rws", "vimco", "tmc")
#: the objectives that weigh several draws per image (KL warm-up has no KL term to weigh in them)
WEIGHTED_ELBOS = ("iwae", "dreg", "miwae", "piwae", "ciwae", "rws", "vimco", "renyi", "tmc")
#: the objectives' own parameters: config field -> (the ELBOs that read it, its default, its option)
ELBO_PARAMETERS = {"alpha": (("renyi",), 0.5, "--alpha"), "outer_particles": (("miwae", "piwae"), 8, "--outer-particles"),
                   "ciwae_beta": (("ciwae",), 0.5, "--ciwae-beta")}

SCHEDULES = ("constant", "iwae", "step", "exponential", "plateau")
SCHEDULE_HELP = ("'constant'; 'iwae', the IWAE paper's 8 stages of 3^i epochs at lr * 10^(-i/7) (3,280 epochs); "
                 "'step', lr * gamma every --lr-step epochs; 'exponential', lr * gamma^(epoch - 1); 'plateau', "
                 "lr * gamma when the validation ELBO (IWAE bound with --elbo iwae) has not improved for --lr-patience "
                 "epochs")

CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"  # the model of the epoch with the highest validation ELBO (IWAE bound: --elbo iwae) so far
METRICS = "metrics.jsonl"
CONFIG = "config.json"
CHECKPOINT_CHOICES = ("best", "last")

#: gradient estimators of compare-estimators and discrete-estimators: name -> what it is
CONCRETE_TEMPERATURES = (1.0, 0.5, 0.1)


def concrete_name(temperature: float) -> str:
    return f"concrete-{temperature:g}"


def concrete_summary(temperature: float) -> str:
    return (f"TraceMeanField_ELBO, one-hot sites relaxed (Gumbel-softmax) at temperature {temperature:g}, "
            "exact categorical KL")


ESTIMATOR_SUMMARIES = {
    "reparam": "Trace_ELBO, reparameterized latent sites",
    "score": "TraceGraph_ELBO, score function, no baseline",
    "score-avg-baseline": "TraceGraph_ELBO, score function, decaying-average baseline",
    "score-nn-baseline": "TraceGraph_ELBO, score function, decaying average + neural baseline",
    "meanfield": "TraceMeanField_ELBO, reparameterized, analytic KL",
    "iwae": "RenyiELBO(alpha=0), 5 particles: the importance-weighted bound",
    "enum": "TraceEnum_ELBO, sites marked for enumeration summed out exactly",
    **{concrete_name(t): concrete_summary(t) for t in CONCRETE_TEMPERATURES},
}
#: what compare-estimators runs without --estimators
DEFAULT_ESTIMATORS = tuple(ESTIMATOR_SUMMARIES)
#: the multi-sample estimators after 2016 (inference/multisample.py; Pyro's RenyiELBO and TraceTMC_ELBO): K draws
#: per image, 5 unless compare-estimators --num-particles says otherwise
ESTIMATOR_SUMMARIES.update({
    "stl": "STL_ELBO: the ELBO, sticking-the-landing guide gradient (no score term; Roeder et al. 2017)",
    "dreg": "DReG_ELBO: the IWAE bound, doubly reparameterized guide gradient (Tucker et al. 2019)",
    "miwae": "MIWAE_ELBO: the mean of M = 2 IWAE bounds of K draws each (Rainforth et al. 2018)",
    "piwae": "PIWAE_ELBO: model on IWAE(2 K draws), guide on MIWAE(2, K) (Rainforth et al. 2018)",
    "ciwae": "CIWAE_ELBO: 0.5 ELBO + 0.5 IWAE bound on the same K draws (Rainforth et al. 2018)",
    "rws": "RWS_ELBO: reweighted wake-sleep, wake phases, per image (Bornschein & Bengio 2015)",
    "vimco": "VIMCO_ELBO: the IWAE bound of K discrete draws, leave-one-out baselines (Mnih & Rezende 2016)",
    "renyi": "RenyiELBO(alpha=0.5): the Renyi bound of K draws (Li & Turner 2016)",
    "tmc": "TMC_ELBO: Pyro's TraceTMC_ELBO, K draws of every latent site combined",
})
MULTI_SAMPLE_ESTIMATORS = ("iwae", "stl", "dreg", "miwae", "piwae", "ciwae", "rws", "vimco", "renyi", "tmc")
#: compare-estimators --num-particles with no --estimators: Rainforth et al.'s and Tucker et al.'s comparison
SNR_ESTIMATORS = ("reparam", "iwae", "dreg", "stl", "miwae", "piwae")
#: the estimators of ``discrete-estimators`` besides the Concrete ones, which --temperatures names
DISCRETE_BASE_ESTIMATORS = ("enum", "score", "score-avg-baseline", "score-nn-baseline")
DISCRETE_SAMPLE_SIZES = (1, 4, 16, 64)
#: the sample sizes N of reparam-toy (studies/toy.py)
TOY_SAMPLE_SIZES = (10, 100, 1000, 10_000, 100_000)


def concrete_temperature(name: str) -> float | None:
    """T of an estimator named ``concrete-T`` (T > 0 finite); None for other names; ValueError for a bad T."""
    prefix, _, temperature = name.partition("-")
    if prefix != "concrete":
        return None
    try:
        value = float(temperature)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"the Concrete temperature in {name!r} must be a positive number, as in concrete-0.5")
    return value


def is_estimator_name(name: str) -> bool:
    """Whether ``name`` is a known estimator or ``concrete-T`` for a temperature T > 0."""
    try:
        return name in ESTIMATOR_SUMMARIES or concrete_temperature(name) is not None
    except ValueError:
        return False


def is_file_spec(name: str) -> bool:
    """Whether ``--model`` names a structure in a file (``path/to/file.py:ClassName``) rather than a built-in one."""
    return name.endswith(".py") or ".py:" in name


def check_registry(kind: str, registry, names) -> None:
    """Raise at import if a registry and this catalog offer different names (a developer's mistake)."""
    if tuple(registry) != tuple(names):
        raise AssertionError(f"the {kind} registry {tuple(registry)} and pyro_vae.catalog {tuple(names)} differ")
