"""dSprites: the procedural re-rendering (pyro_vae.data.dsprites.render) and the reader of DeepMind's file."""
import time

import numpy as np
import pytest
import torch

from pyro_vae.data import check_dataset
from pyro_vae.data.dsprites import (FACTOR_NAMES, FACTOR_SIZES, NUM_COMBINATIONS, OFFICIAL_FILE, all_factors,
                                    factor_values, factors_of_index, index_of_factors, load_official,
                                    load_procedural, render, sample_factors)
from pyro_vae.errors import InvalidDataError, PyroVAEError

SQUARE, ELLIPSE, HEART = 0, 1, 2


def one(shape=SQUARE, scale=5, orientation=0, x=16, y=16):
    return [0, shape, scale, orientation, x, y]


def images(rows, resolution=64):
    return render(torch.tensor(rows), resolution).view(len(rows), resolution, resolution)


def centre_x(image):
    """Column centre of mass (in pixels) of a (res, res) image."""
    columns = torch.arange(image.shape[-1], dtype=torch.float32) + 0.5
    return float((image.sum(0) * columns).sum() / image.sum())


def test_constants():
    assert FACTOR_NAMES == ("color", "shape", "scale", "orientation", "position_x", "position_y")
    assert FACTOR_SIZES == (1, 3, 6, 40, 32, 32)
    assert NUM_COMBINATIONS == 737_280


@pytest.mark.parametrize("resolution", [64, 32])
def test_render_is_deterministic_binary_and_shaped(resolution):
    factors = sample_factors(500, torch.Generator().manual_seed(1))
    assert factors.shape == (500, 6) and factors.dtype == torch.int64
    x = render(factors, resolution)
    assert x.shape == (500, resolution * resolution) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert (x.sum(1) > 0).all()  # every sprite is visible
    assert torch.equal(x, render(factors, resolution))
    # the same image whatever else is rendered with it, and from a numpy array
    assert torch.equal(x[7:8], render(factors[7:8].numpy(), resolution))
    assert torch.equal(x.flip(0), render(factors.flip(0), resolution))


def test_shape_changes_the_image():
    x = images([one(SQUARE), one(ELLIPSE), one(HEART)]).flatten(1)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert (x[a] != x[b]).sum() > 0.1 * x[a].sum()


@pytest.mark.parametrize("resolution", [64, 32])
def test_position_x_step_moves_the_centre_of_mass_right(resolution):
    factors = sample_factors(600, np.random.default_rng(2))
    factors[:, 4] = factors[:, 4].clamp(4, 26)  # away from the borders, where sprites are clipped
    moved = factors.clone()
    moved[:, 4] += 1
    a = render(factors, resolution).view(-1, resolution, resolution)
    b = render(moved, resolution).view(-1, resolution, resolution)
    shift = torch.tensor([centre_x(j) - centre_x(i) for i, j in zip(a, b)])
    step = 0.75 * resolution / 31  # the centre spans pixels res / 8 to 7 res / 8 in 31 steps
    assert abs(float(shift.mean()) - step) < 0.05 * step
    assert (shift > 0).float().mean() > 0.9
    # and position_y moves it down (rows): transposed images of a swapped x / y square agree
    square = images([one(SQUARE, 3, 0, 5, 20), one(SQUARE, 3, 0, 20, 5)], resolution)
    assert torch.equal(square[0].T, square[1])


def test_layout_centres_every_shape_on_its_position():
    """At orientation 0 (and 180 degrees, 20 of 40) each shape's bounding box is centred on its position."""
    for x, y in [(2, 29), (10, 20), (29, 2)]:  # away from the borders, where the largest sprites are clipped
        centre = torch.tensor([x, y]) / 31 * 0.75 * 64 + 8  # pixels 8 to 56 of 64
        for shape in (SQUARE, ELLIPSE, HEART):
            for orientation in (0, 20):
                image = images([one(shape, 5, orientation, x, y)])[0]
                on_rows, on_cols = image.nonzero(as_tuple=True)
                box = torch.tensor([on_cols.min() + on_cols.max() + 1, on_rows.min() + on_rows.max() + 1]) / 2
                assert (box - centre).abs().max() <= 1.0, (shape, orientation, x, y, box, centre)


def test_scale_increases_the_on_pixels():
    base = sample_factors(400, 5)
    for shape in (SQUARE, ELLIPSE, HEART):
        counts = []
        for scale in range(6):
            factors = base.clone()
            factors[:, 1], factors[:, 2] = shape, scale
            counts.append(render(factors).sum(1))
        counts = torch.stack(counts)  # (6, 400)
        assert (counts[1:] >= counts[:-1]).all()  # larger shapes contain the smaller ones
        assert (counts[1:].mean(1) > counts[:-1].mean(1) * 1.1).all()


def test_rotations():
    for scale in range(6):
        square = images([one(SQUARE, scale, 0), one(SQUARE, scale, 10), one(SQUARE, scale, 5)]).flatten(1)
        # orientation 10 of np.linspace(0, 2 pi, 40) is 92.3 degrees: nearly the unrotated square
        assert (square[0] != square[1]).sum() <= 0.1 * square[0].sum()
        assert (square[0] != square[2]).sum() > 0.2 * square[0].sum()  # 46 degrees: a diamond
        heart = images([one(HEART, scale, 0), one(HEART, scale, 20)]).flatten(1)
        assert (heart[0] != heart[1]).sum() > 0.3 * heart[0].sum()  # upside down
    # the last orientation is 2 pi, the same as the first (as in the official file)
    assert torch.equal(*images([one(HEART, 5, 0), one(HEART, 5, 39)]))


def test_render_refuses_bad_factors():
    with pytest.raises(InvalidDataError, match="expected \\(N, 6\\)"):
        render(torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(InvalidDataError, match="shape index 3, outside 0 to 2"):
        render(torch.tensor([one(shape=3)]))
    with pytest.raises(InvalidDataError, match="integer"):
        render(torch.zeros(2, 6))
    with pytest.raises(PyroVAEError, match="resolution"):
        render(torch.tensor([one()]), resolution=4)


def test_index_round_trip_over_the_whole_grid():
    index = torch.arange(NUM_COMBINATIONS)
    factors = factors_of_index(index)
    assert factors.shape == (NUM_COMBINATIONS, 6)
    assert torch.equal(index_of_factors(factors), index)
    assert torch.equal(factors.max(0).values + 1, torch.tensor(FACTOR_SIZES))
    # the official file's order: position_y fastest, then position_x, ...; every combination once
    assert factors[:3].tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2]]
    assert factors[32].tolist() == [0, 0, 0, 0, 1, 0]
    decimal = factors @ torch.tensor([10 ** 10, 10 ** 8, 10 ** 6, 10 ** 4, 10 ** 2, 1])  # independent of the bases
    assert len(torch.unique(decimal)) == NUM_COMBINATIONS
    chunks = list(all_factors(100_000))
    assert torch.equal(torch.cat(chunks), factors) and len(chunks) == 8
    values = factor_values(factors[[0, -1]])
    assert values[1].tolist() == pytest.approx([1, 3, 1, 2 * np.pi, 1, 1])
    with pytest.raises(InvalidDataError):
        factors_of_index(torch.tensor([NUM_COMBINATIONS]))


def test_sample_factors_sources():
    a = sample_factors(50, torch.Generator().manual_seed(0))
    assert torch.equal(a, sample_factors(50, torch.Generator().manual_seed(0)))
    assert torch.equal(sample_factors(50, 0), a)
    b = sample_factors(50, np.random.default_rng(0))
    assert torch.equal(b, sample_factors(50, np.random.default_rng(0)))
    for f in (a, b):
        assert f.dtype == torch.int64 and (f >= 0).all() and (f < torch.tensor(FACTOR_SIZES)).all()


def test_load_procedural_splits():
    data = load_procedural(num_train=300, num_valid=100, num_test=100, seed=3, resolution=32)
    check_dataset(data)
    assert data.image_shape == (1, 32, 32)
    assert data.factor_names == FACTOR_NAMES and data.factor_sizes == FACTOR_SIZES
    assert "not DeepMind" in data.description and "\n" not in data.description
    assert [len(s) for s in (data.train, data.valid, data.test)] == [300, 100, 100]
    rows = [index_of_factors(s.factors) for s in (data.train, data.valid, data.test)]
    assert len(torch.unique(torch.cat(rows))) == 500  # no combination twice, within or across splits
    for split in (data.train, data.valid, data.test):
        assert split.factors.dtype == torch.int64 and split.images.dtype == torch.float32
        assert torch.equal(render(split.factors, 32), split.images)
    same = load_procedural(num_train=300, num_valid=100, num_test=100, seed=3, resolution=32)
    other = load_procedural(num_train=300, num_valid=100, num_test=100, seed=4, resolution=32)
    assert torch.equal(same.train.factors, data.train.factors) and torch.equal(same.test.images, data.test.images)
    assert not torch.equal(other.train.factors, data.train.factors)
    full = load_procedural(num_train=50, num_valid=10, num_test=10, seed=3)
    assert full.train.images.shape == (50, 4096) and full.image_shape == (1, 64, 64)
    with pytest.raises(PyroVAEError, match="more than the 737,280"):
        load_procedural(num_train=NUM_COMBINATIONS, num_valid=1, num_test=1)
    with pytest.raises(PyroVAEError, match="num_valid must be a positive number"):
        load_procedural(num_valid=0)


def write_official(path, n=300, seed=0, **overrides):
    """A small file in the official format: n rows of the grid with their images, values and classes."""
    index = np.sort(np.random.default_rng(seed).choice(NUM_COMBINATIONS, n, replace=False))
    classes = factors_of_index(torch.from_numpy(index)).numpy()
    arrays = {
        "imgs": render(classes, 64).numpy().reshape(n, 64, 64).astype(np.uint8),
        "latents_values": factor_values(classes).numpy(),
        "latents_classes": classes,
        "metadata": np.array({"description": "tiny dSprites", "latents_sizes": np.array(FACTOR_SIZES)},
                             dtype=object),
    }
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def one_sentence(message):
    text = str(message)
    return "\n" not in text and text.count(". ") == 0


def test_load_official_round_trip(tmp_path):
    arrays = write_official(tmp_path / OFFICIAL_FILE)
    data = load_official(tmp_path, seed=1)
    check_dataset(data)
    assert data.image_shape == (1, 64, 64) and data.factor_sizes == FACTOR_SIZES
    assert [len(s) for s in (data.train, data.valid, data.test)] == [240, 30, 30]
    seen = torch.cat([index_of_factors(s.factors) for s in (data.train, data.valid, data.test)])
    assert sorted(seen.tolist()) == sorted(index_of_factors(arrays["latents_classes"]).tolist())
    for split in (data.train, data.valid, data.test):
        assert torch.equal(split.images, render(split.factors, 64))  # each image kept with its own factors
    again = load_official(tmp_path / OFFICIAL_FILE, seed=1, num_train=100, num_valid=20, num_test=20)
    assert [len(s) for s in (again.train, again.valid, again.test)] == [100, 20, 20]
    assert not torch.equal(load_official(tmp_path, seed=2).test.factors, data.test.factors)
    with pytest.raises(InvalidDataError, match="too few"):
        load_official(tmp_path, num_train=290, num_valid=10, num_test=10)


def test_load_official_errors(tmp_path):
    with pytest.raises(InvalidDataError, match="was not found") as missing:
        load_official(tmp_path)
    assert one_sentence(missing.value)
    write_official(tmp_path / OFFICIAL_FILE, imgs=None)
    with pytest.raises(InvalidDataError, match="lacks the key imgs") as lacking:
        load_official(tmp_path)
    assert one_sentence(lacking.value)
    write_official(tmp_path / OFFICIAL_FILE, n=20, imgs=np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(InvalidDataError, match="expected \\(N, 64, 64\\)") as wrong:
        load_official(tmp_path)
    assert one_sentence(wrong.value)
    (tmp_path / OFFICIAL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(InvalidDataError, match="could not be read"):
        load_official(tmp_path)


def test_resolution_32_is_faster_and_rendering_is_fast():
    factors = sample_factors(10_000, 7)
    render(factors[:100])  # warm up

    def best_of(resolution, tries=3):
        times = []
        for _ in range(tries):
            start = time.perf_counter()
            x = render(factors, resolution)
            times.append(time.perf_counter() - start)
        assert x.shape == (10_000, resolution * resolution)
        return min(times)

    t64, t32 = best_of(64), best_of(32)
    assert t64 < 2.0, f"10,000 images at 64 x 64 took {t64:.2f} s"
    assert t32 < t64, (t32, t64)


@pytest.mark.slow
def test_the_command_line_trains_on_procedural_dsprites_at_32_pixels(cli, tmp_path):
    from pyro_vae.data import load_dataset

    data = load_dataset("dsprites-procedural", subset=40, image_size=32)
    assert data.image_shape == (1, 32, 32) and data.factor_sizes == FACTOR_SIZES
    assert torch.equal(render(data.test.factors, 32), data.test.images)  # the subset keeps images and factors together
    code, out, err = cli("train", "--dataset", "dsprites-procedural", "--image-size", 32, "--net", "conv", "--subset",
                         100, "--epochs", 1, "--z-dim", 4, "--eval-samples", 2, "--no-progress", "--run-dir",
                         tmp_path / "run")
    assert code == 0, err
    assert "dsprites-procedural" in out
