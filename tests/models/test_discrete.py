"""Discrete latents: exact enumeration in the ELBO and in importance sampling, the semi-supervised VAE,
the ELBO choice for non-reparameterizable sites, and the commands on the discrete structures."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.nn.functional import one_hot

from conftest import TINY, assert_one_sentence_error
from pyro_vae.data import Split, load_dataset, semi_supervised, semi_supervised_batches
from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import classification_accuracy, elbo_per_datapoint, log_likelihood_iwae
from pyro_vae.inference import make_elbo
from pyro_vae.models import LatentStructure, build_model
from pyro_vae.training import TrainConfig, Trainer

SMALL = {"z_dim": 2, "hidden_dims": [16]}


def mixture_terms(mixture, x):
    """log pi_c + log p(x | c) and q(c | x) of the Bernoulli mixture, written out: both (batch, K)."""
    log_pi = torch.log_softmax(mixture.prior.logits, -1)
    logits = mixture.components.weight.T + mixture.components.bias
    log_joint = log_pi + dist.Bernoulli(logits=logits).log_prob(x.unsqueeze(-2)).sum(-1)
    return log_joint, torch.softmax(mixture.encoder(x), -1)


# ---------------------------------------------------------------- exact sums


def test_enumerated_elbo_of_the_mixture_is_the_exact_sum_over_components(batch):
    mixture = build_model("bernoulli-mixture", hidden_dims=[16], num_components=4).double()
    x = batch[:20].double()  # float64, so that the two sums agree to rounding
    log_joint, q = mixture_terms(mixture, x)
    exact = (q * (log_joint - q.log())).sum()
    loss = make_elbo("enum", max_plate_nesting=1).differentiable_loss(mixture.model, mixture.guide, x)
    assert -loss.item() == pytest.approx(exact.item(), rel=1e-12)
    # and so is its gradient: no sampling anywhere
    loss.backward()
    enumerated = mixture.encoder[0].weight.grad.clone()
    mixture.zero_grad()
    (-exact).backward()
    torch.testing.assert_close(enumerated, mixture.encoder[0].weight.grad, rtol=1e-9, atol=1e-12)


def test_importance_sampling_is_exact_on_the_mixture(batch):
    mixture = build_model("bernoulli-mixture", hidden_dims=[16], num_components=5)
    x = batch[:30]
    exact = mixture.log_marginal(x)
    torch.testing.assert_close(log_likelihood_iwae(mixture.model, mixture.guide, (x,), num_samples=5000), exact,
                               atol=0.01, rtol=0)
    # the ELBO misses log p(x) by exactly KL(q(c | x) || p(c | x))
    log_joint, q = mixture_terms(mixture, x)
    posterior = torch.log_softmax(log_joint, -1)
    kl = (q * (q.log() - posterior)).sum(-1)
    elbo = elbo_per_datapoint(mixture.model, mixture.guide, [(x,)])
    assert elbo == pytest.approx((exact - kl).mean().item(), rel=1e-5)


class MixtureOfLinearGaussians(LatentStructure):
    """c ~ Categorical(pi), z ~ N(0, I_2), x | z, c ~ N(W_c z + b_c, s^2 I_3), so that
    p(x) = sum_c pi_c N(x; b_c, W_c W_c^T + s^2 I) in closed form. The guide enumerates c and samples z;
    with ``exact_guide`` it is the true posterior p(c | x) p(z | x, c) and every importance weight is p(x)."""

    def __init__(self, exact_guide: bool):
        super().__init__(x_dim=3)
        generator = torch.Generator().manual_seed(1)
        self.W = torch.randn(3, 3, 2, generator=generator)
        self.b = 2 * torch.randn(3, 3, generator=generator)
        self.log_pi = torch.log(torch.tensor([0.2, 0.5, 0.3]))
        self.noise = 0.7
        self.exact_guide = exact_guide

    def component(self, c):
        W = (c @ self.W.reshape(3, 6)).reshape(c.shape[:-1] + (3, 2))
        return W, c @ self.b

    def log_evidence_by_component(self, x):
        cov = self.W @ self.W.transpose(-1, -2) + self.noise ** 2 * torch.eye(3)
        return self.log_pi + dist.MultivariateNormal(self.b, cov).log_prob(x.unsqueeze(-2))

    def log_marginal(self, x):
        return self.log_evidence_by_component(x).logsumexp(-1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.OneHotCategorical(logits=self.log_pi))
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            W, b = self.component(c)
            pyro.sample("x", dist.Normal((W @ z.unsqueeze(-1)).squeeze(-1) + b, self.noise).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.OneHotCategorical(logits=self.log_evidence_by_component(x)),
                            infer={"enumerate": "parallel"})
            W, b = self.component(c)
            cov = torch.linalg.inv(torch.eye(2) + W.transpose(-1, -2) @ W / self.noise ** 2)
            loc = ((x - b).unsqueeze(-2) @ W @ cov).squeeze(-2) / self.noise ** 2
            if not self.exact_guide:  # a deliberately wrong guide for z given c
                loc, cov = loc + 0.3, 0.5 * torch.eye(2)
            pyro.sample("z", dist.MultivariateNormal(loc, cov))


def test_importance_sampling_sums_enumerated_sites_and_samples_the_others():
    points = torch.randn(25, 3) * 3.0
    exact = MixtureOfLinearGaussians(exact_guide=True)
    truth = exact.log_marginal(points)
    torch.testing.assert_close(log_likelihood_iwae(exact.model, exact.guide, (points,), num_samples=3), truth,
                               atol=1e-4, rtol=0)
    wrong = MixtureOfLinearGaussians(exact_guide=False)
    estimate = log_likelihood_iwae(wrong.model, wrong.guide, (points,), num_samples=4000, max_rows=20_000)
    elbo = elbo_per_datapoint(wrong.model, wrong.guide, [(points,)], num_particles=1000)
    assert elbo < truth.mean().item() - 0.3  # the wrong guide leaves a real gap
    assert estimate.mean().item() == pytest.approx(truth.mean().item(), abs=0.05)


def test_enumerated_sites_inside_another_plate_are_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]), pyro.plate("pixels", 3, dim=-2):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x.T)

    def guide(x):
        with pyro.plate("data", x.shape[0]), pyro.plate("pixels", 3, dim=-2):
            pyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})

    with pytest.raises(PyroVAEError, match="also inside plate 'pixels'"):
        log_likelihood_iwae(model, guide, (torch.zeros(4, 3),), num_samples=2)


# ---------------------------------------------------------------- the semi-supervised VAE


@pytest.mark.parametrize("elbo", ["trace", "enum"])
def test_ss_vae_loss_with_every_label_known_is_the_supervised_objective(small_data, elbo):
    model = build_model("ss-vae", aux_weight=2.5, **SMALL)
    x, y = small_data.test.images[:20], small_data.test.labels[:20]
    pyro.set_rng_seed(3)
    loss = make_elbo(elbo, max_plate_nesting=1).loss(model.model, model.guide, x, y)
    pyro.set_rng_seed(3)
    z = poutine.trace(model.guide).get_trace(x, y).nodes["z"]["value"]
    label = one_hot(y, 10).float()
    with torch.no_grad():
        loc, scale = model.encoder(torch.cat([x, label], -1))
        log_q = dist.Normal(loc, scale).log_prob(z).sum()
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum()
        log_py = 20 * math.log(1 / 10)
        log_px = dist.Bernoulli(logits=model.decoder(torch.cat([z, label], -1))).log_prob(x).sum()
        log_classifier = torch.log_softmax(model.classifier(x), -1)[torch.arange(20), y].sum()
    expected = -(log_px + log_py + log_pz - log_q + 2.5 * log_classifier)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_ss_vae_unlabelled_elbo_is_the_sum_over_classes_weighted_by_the_classifier(small_data):
    """sum_y q(y | x) [log p(x | y, z_y) + log p(y) + log p(z_y) - log q(z_y | x, y) - log q(y | x)], with
    the z_y that TraceEnum_ELBO drew (one per class and image: enumeration draws nothing else)."""
    model = build_model("ss-vae", **SMALL)
    x = small_data.test.images[:6]
    pyro.set_rng_seed(4)
    enumerated = -make_elbo("enum", max_plate_nesting=1).loss(model.model, model.guide, x)
    pyro.set_rng_seed(4)
    z = poutine.trace(poutine.enum(model.guide, first_available_dim=-2)).get_trace(x).nodes["z"]["value"]
    assert z.shape == (10, 6, 2)
    label = torch.eye(10).unsqueeze(1).expand(10, 6, 10)
    with torch.no_grad():
        loc, scale = model.encoder(torch.cat([x.expand(10, 6, 784), label], -1))
        log_q_z = dist.Normal(loc, scale).log_prob(z).sum(-1)
        log_p_z = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_p_x = dist.Bernoulli(logits=model.decoder(torch.cat([z, label], -1))).log_prob(x).sum(-1)
        log_q_y = torch.log_softmax(model.classifier(x), -1).T
    by_hand = (log_q_y.exp() * (log_p_x + math.log(1 / 10) + log_p_z - log_q_z - log_q_y)).sum()
    assert enumerated == pytest.approx(by_hand.item(), rel=1e-5)


def test_semi_supervised_split_of_binarized_mnist():
    dataset = semi_supervised(load_dataset(subset=500), 40, seed=3)
    assert len(dataset.train) == 500 and dataset.train.labels is None
    assert len(dataset.labelled) == 40
    assert torch.equal(dataset.labelled.labels.bincount(minlength=10), torch.full((10,), 4))
    assert len(dataset.test) == 500 and dataset.test.labels is not None  # the held-out labelled images
    again = semi_supervised(load_dataset(subset=500), 40, seed=3)
    assert torch.equal(again.labelled.images, dataset.labelled.images)


def test_semi_supervised_split_of_labelled_data_keeps_labelled_images_out_of_the_unlabelled_set():
    full = load_dataset("binarized-mnist-labelled")
    dataset = semi_supervised(full, 100, seed=0)
    assert len(dataset.train) + len(dataset.labelled) == len(full.train) == 7000
    pixels = {tuple(row.nonzero().flatten().tolist()) for row in dataset.labelled.images}
    overlap = sum(tuple(row.nonzero().flatten().tolist()) in pixels for row in dataset.train.images)
    duplicates_in_release = len(full.train) - len({tuple(r.nonzero().flatten().tolist()) for r in full.train.images})
    assert overlap <= duplicates_in_release


@pytest.mark.parametrize("num_labelled, message", [(15, "multiple of the 10 classes"), (0, "multiple"),
                                                   (20_000, "needs 2000 images of class")])
def test_semi_supervised_split_refuses_impossible_counts(num_labelled, message):
    with pytest.raises(PyroVAEError, match=message):
        semi_supervised(load_dataset(subset=200), num_labelled)


def test_semi_supervised_batches_spread_the_labelled_ones_and_cover_every_image():
    unlabelled = Split(torch.arange(300.0).unsqueeze(-1))
    labelled = Split(torch.arange(300.0, 400.0).unsqueeze(-1), torch.arange(100) % 10)
    batches = list(semi_supervised_batches(unlabelled, labelled, 50, generator=torch.Generator().manual_seed(0)))
    kinds = [len(batch) for batch in batches]
    assert kinds == [1, 1, 2, 1, 1, 1, 2, 1]  # 6 unlabelled (x,), 2 labelled (x, y), spread out
    seen = torch.cat([batch[0] for batch in batches]).flatten().sort().values
    assert torch.equal(seen, torch.arange(400.0))


def test_classification_accuracy_known_answer():
    class Fixed:
        def classify(self, x):
            return x[:, 0].long()

    split = Split(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([0, 1, 0, 3]))
    assert classification_accuracy(Fixed(), split, batch_size=3) == pytest.approx(0.75)
    with pytest.raises(PyroVAEError, match="needs labelled images"):
        classification_accuracy(Fixed(), Split(split.images))


# ---------------------------------------------------------------- choosing the ELBO


def quiet_trainer(tmp_path, notes, **options):
    settings = dict(subset=200, batch_size=50, epochs=1, **SMALL)
    settings.update(options)
    return Trainer(TrainConfig(**settings), tmp_path / "run", progress=False, log=notes.append)


def test_structures_with_discrete_sites_default_to_enumeration_and_continuous_ones_do_not(tmp_path):
    notes = []
    trainer = quiet_trainer(tmp_path, notes, model="gmvae")
    assert trainer.config.elbo == "enum" and type(trainer.elbo).__name__ == "TraceEnum_ELBO"
    assert trainer.elbo.max_plate_nesting == 1
    assert quiet_trainer(tmp_path / "vae", notes).config.elbo == "trace"
    assert notes == []


def test_plain_score_function_is_named_once_and_meanfield_refused(tmp_path):
    notes = []
    quiet_trainer(tmp_path, notes, model="bernoulli-mixture", elbo="trace")
    assert len(notes) == 1
    assert "'c' (OneHotCategorical)" in notes[0] and "plain score function" in notes[0]
    assert "--elbo enum" in notes[0] and "--baseline average" in notes[0]
    with pytest.raises(PyroVAEError, match="needs every latent site reparameterized.*'c'"):
        quiet_trainer(tmp_path / "mf", notes, model="gmvae", elbo="meanfield")
    with pytest.raises(PyroVAEError, match="--baseline average is for --elbo tracegraph"):
        quiet_trainer(tmp_path / "bl", notes, model="gmvae", elbo="enum", baseline="average")
    notes.clear()
    quiet_trainer(tmp_path / "tg", notes, model="gmvae", elbo="tracegraph", baseline="average")
    assert notes == []


def train_twice(tmp_path, **options):
    """The same run trained 2 epochs at once, and 1 epoch then resumed to 2: both models."""
    settings = dict(subset=200, batch_size=40, seed=5, **SMALL)
    settings.update(options)
    whole = Trainer(TrainConfig(epochs=2, **settings), tmp_path / "whole", progress=False, log=lambda _: None)
    whole.fit()
    pyro.clear_param_store()
    Trainer(TrainConfig(epochs=1, **settings), tmp_path / "split", progress=False, log=lambda _: None).fit()
    pyro.clear_param_store()
    resumed = Trainer(TrainConfig(epochs=2, **settings), tmp_path / "split", resume=True, progress=False,
                      log=lambda _: None)
    resumed.fit()
    return whole, resumed


@pytest.mark.parametrize("options", [
    {"model": "ss-vae", "num_labelled": 30},  # enumeration, JIT, labelled and unlabelled batches
    {"model": "ss-vae", "num_labelled": 30, "labelled_every": 2},  # labelled images cycled
    {"model": "bernoulli-mixture", "elbo": "tracegraph", "baseline": "neural"},  # baselines' state
], ids=["ss-vae-enum", "ss-vae-cycled", "mixture-tracegraph-neural"])
@pytest.mark.slow
def test_resumed_discrete_run_equals_uninterrupted_run(tmp_path, options):
    whole, resumed = train_twice(tmp_path, **options)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in resumed.history]
    assert [r.get("valid_accuracy") for r in whole.history] == [r.get("valid_accuracy") for r in resumed.history]
    assert whole.best_epoch()["epoch"] == resumed.best_epoch()["epoch"]
    if whole.baseline_networks is not None:
        for a, b in zip(whole.baseline_networks.parameters(), resumed.baseline_networks.parameters()):
            assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["none", "average", "neural"])
def test_tracegraph_training_with_each_baseline_improves_the_mixture(tmp_path, baseline):
    trainer = quiet_trainer(tmp_path, [], model="bernoulli-mixture", elbo="tracegraph", baseline=baseline,
                            epochs=3, batch_size=30, lr=3e-3)
    history = trainer.fit()
    assert history[-1]["valid_elbo"] > history[0]["valid_elbo"]


# ---------------------------------------------------------------- the commands


USER_MIXTURE = '''
import pyro, pyro.distributions as dist, torch
from pyro_vae.models import LatentStructure
from pyro_vae.networks import mlp

class CategoricalMixture(LatentStructure):
    code_site = "c"

    def __init__(self, x_dim=784, z_dim=10, hidden_dims=(200,), activation="relu"):
        super().__init__(x_dim)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.logits = torch.nn.Linear(z_dim, x_dim)
        self.encoder = mlp([x_dim, *self.hidden_dims, z_dim], activation)

    def config(self):
        return {"x_dim": self.x_dim, "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation}

    def model(self, x):
        pyro.module("logits", self.logits)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(self.z_dim)))
            pyro.sample("x", dist.Bernoulli(logits=self.logits.weight.T[c] + self.logits.bias).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=self.encoder(x)))
'''


@pytest.mark.slow
def test_a_users_discrete_structure_trains_with_a_note_and_evaluates(tmp_path, cli):
    path = tmp_path / "mixture.py"
    path.write_text(USER_MIXTURE)
    code, out, err = cli("train", "--model", f"{path}:CategoricalMixture", *TINY, "--z-dim", 4,
                         "--run-dir", tmp_path / "run")
    assert code == 0, err
    assert out.count("plain score function") == 1 and "'c' (Categorical)" in out
    assert "Trace_ELBO" in out


@pytest.mark.slow
def test_ss_vae_through_the_command_line(tmp_path, cli):
    run = tmp_path / "ss"
    code, out, err = cli("train", "--model", "ss-vae", "--num-labelled", 20, *TINY, "--run-dir", run)
    assert code == 0, err
    assert "+ 20 labelled" in out and "classification accuracy" in out
    code, out, err = cli("evaluate", run, "-K", 3)
    assert code == 0, err
    assert "classification accuracy" in out
    code, out, err = cli("evaluate", run, "-K", 2, "--split", "train")  # unlabelled: no accuracy to report
    assert code == 0, err
    assert "classification accuracy" not in out
    code, out, err = cli("sample", run, "--nrow", 3, "--out", tmp_path / "rows.png")
    assert code == 0, err
    assert "3 samples for each of the 10 values of 'y'" in out and (tmp_path / "rows.png").is_file()
    code, out, err = cli("sample", run, "--label", 4, "--num", 5, "--out", tmp_path / "four.png")
    assert code == 0, err
    code, _, err = cli("sample", run, "--num", 5, "--out", tmp_path / "five.png")  # would draw 80 anyway
    assert_one_sentence_error(code, err, "--num 5: this structure draws a row of --nrow images for each of the 10 "
                                         "values", "or --label K for --num images of one class")


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "ss-vae"], "--num-labelled N"),
    (["--model", "ss-vae", "--num-labelled", 15], "multiple of the 10 classes"),
    (["--num-labelled", 10], "--num-labelled is for semi-supervised structures"),
    (["--model", "gmvae", "--elbo", "meanfield"], "needs every latent site reparameterized"),
    (["--model", "gmvae", "--baseline", "neural"], "--baseline neural is for --elbo tracegraph"),
])
def test_discrete_mistakes_are_one_sentence(tmp_path, cli, argv, fragment):
    code, _, err = cli("train", *argv, *TINY, "--run-dir", tmp_path / "run")
    assert_one_sentence_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_rows_of_samples_per_component_and_class():
    gmvae = build_model("gmvae", num_components=3, **SMALL)
    site, images = gmvae.generate_per_value(4)
    assert site == "c" and images.shape == (12, 784)
    mixture = build_model("bernoulli-mixture", num_components=3, **SMALL)
    site, images = mixture.generate_per_value(2)
    # a mixture's component decodes to one image: each row repeats it, and rows differ
    assert torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])
    assert build_model("vae", **SMALL).generate_per_value(4) is None


def test_a_fresh_mixture_run_starts_each_component_at_its_own_training_image(tmp_path):
    trainer = quiet_trainer(tmp_path, [], model="bernoulli-mixture")
    probs = torch.sigmoid(trainer.model.components.weight.T + trainer.model.components.bias)  # (K, pixels)
    images = trainer.dataset.train.images
    candidates = (0.2 * images + 0.8 * images.mean(0)).clamp(0.01, 0.99)
    distances = (probs.detach().unsqueeze(1) - candidates).abs().amax(-1)  # largest pixel difference
    nearest = distances.argmin(-1)
    assert distances.min(-1).values.max() < 1e-5
    assert len(set(nearest.tolist())) == len(probs)  # ten different images
