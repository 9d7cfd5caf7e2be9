"""The coarse level learning from a catalogue sample (`IndexingLayer.learn_coarse_from`, the
Rust layer's fix for popularity-skewed batches): its gradient, its fixed point (the list means
of the sample's rows), the warm start from catalogue rows, and a skewed batch stream that
crowds the lists without it. Generated data only."""

import copy

import numpy as np
import pytest
import torch

import poeem
import poeem.torch as pt
from conftest import assert_states_equal

DIM = 12


def layer(**kw):
    settings = dict(warmup_steps=1, buffer_size=96, regularizer_weight=0.5, seed=3,
                    kmeans_iterations=6, threads=1)
    settings.update(kw)
    return pt.IndexingLayer(DIM, settings.pop("n_lists", 4), 4, 4, **settings)


def rows(n, seed, n_clusters=8):
    """`n` rows around fixed cluster centres (the same for every seed)."""
    centres = np.random.default_rng(0).standard_normal((n_clusters, DIM)) * 3
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, DIM))
    return torch.from_numpy(x.astype(np.float32))


def joint(lay):
    """Takes `lay` (warm-up 1, batches) through its warm start; returns it."""
    lay(rows(8, 100))
    lay(rows(96, 101))
    lay(rows(8, 102))
    assert bool(lay.initialized)
    return lay


@pytest.mark.parametrize("objective", ["list-means", "reconstruction"])
def test_the_centroids_get_the_gradient_of_the_catalogue_rows(objective):
    lay = joint(layer(coarse_objective=objective))
    other = layer(coarse_objective=objective)
    other.load_state_dict(lay.state_dict())
    batch, sample = rows(32, 1), rows(40, 2)
    lay(batch)
    with torch.no_grad():  # as a caller embedding its sample would
        lay.learn_coarse_from(sample)
    reg = lay.regularizer_loss()
    g_coarse, g_books = torch.autograd.grad(reg, [lay.coarse_centroids, lay.codebooks])
    other(batch)
    plain = other.regularizer_loss()
    _, g_books_plain = torch.autograd.grad(plain, [other.coarse_centroids, other.codebooks])
    # The value and the codebooks' gradient are the batch's, as without the sample.
    assert float(reg) == pytest.approx(float(plain), rel=1e-6)
    assert torch.equal(g_books, g_books_plain)
    # The centroids': 2w Σ over the sample's rows of v_j − x' (list means) or z − x'.
    lists, codes, rotated, _ = lay.codec().quantize(sample.numpy())
    v = lay.coarse_centroids.detach().numpy().astype(np.float64)
    if objective == "list-means":
        error = v[lists] - rotated
    else:
        books = lay.codebooks.detach().numpy().astype(np.float64)
        error = v[lists] + books[np.arange(4), codes].reshape(len(sample), -1) - rotated
    expected = np.zeros_like(v)
    np.add.at(expected, lists, 2 * 0.5 * error)
    assert np.abs(g_coarse.numpy() - expected).max() < 1e-4
    assert len(set(lists.tolist())) > 1


def test_the_centroids_settle_on_the_list_means_of_the_catalogue_rows():
    """SGD on the regularizer with a fixed catalogue sample and batches from one corner of the
    space: an online k-means of the sample, whose fixed point is each list's mean of the
    sample's rows, whatever the batches."""
    lay = joint(layer(n_lists=4))
    sample = rows(200, 5)
    opt = torch.optim.SGD([lay.coarse_centroids], lr=0.2 / (0.5 * len(sample)))
    corner = rows(64, 6)
    corner = corner[corner[:, 0] > corner[:, 0].median()]
    for _ in range(150):
        lay(corner)
        lay.learn_coarse_from(sample)
        opt.zero_grad()
        lay.regularizer_loss().backward()
        opt.step()
    lists, _, rotated, _ = lay.codec().quantize(sample.numpy())
    v = lay.coarse_centroids.detach().numpy()
    assert len(set(lists.tolist())) == 4
    for j in range(4):
        assert np.abs(v[j] - rotated[lists == j].mean(0)).max() < 1e-4, j


def test_the_warm_start_runs_on_the_catalogue_rows():
    lay = layer(warm_start_items="catalogue", buffer_size=64)
    samples = [rows(40, 10 + s) for s in range(3)]
    lay(rows(8, 0))  # warm-up: the sample is not kept
    lay.learn_coarse_from(samples[0])
    for s in samples[1:]:
        assert lay.phase == "buffering"
        lay(rows(8, 1))  # the batch is not buffered
        lay.learn_coarse_from(s)
    assert lay.phase == "joint" and lay.buffered_rows == 64
    # Resumed from its state_dict, a layer continues identically.
    resumed = layer(warm_start_items="catalogue", buffer_size=64)
    resumed.load_state_dict(lay.state_dict())
    for each in (lay, resumed):
        each(rows(8, 2))
        each.learn_coarse_from(rows(16, 3))
    assert_states_equal(lay.state_dict(), resumed.state_dict())
    codec = poeem.IvfPqCodec.train(torch.cat(samples[1:])[:64].numpy(), n_lists=4,
                                   n_subspaces=4, n_bits=4, kmeans_iterations=6, seed=3,
                                   threads=1)
    assert np.array_equal(lay.coarse_centroids.detach().numpy(), codec.coarse_centroids)
    assert np.array_equal(lay.codebooks.detach().numpy(), codec.codebooks)


def test_learn_coarse_from_checks_its_input_and_its_place():
    lay = layer(warm_start_items="catalogue")
    with pytest.raises(poeem.InvalidArgumentError, match="no training call"):
        lay.learn_coarse_from(rows(4, 0))
    lay(rows(4, 0))
    for bad, match in ((torch.zeros(4, DIM, dtype=torch.float64), "float32"),
                       (torch.zeros(4, DIM + 1), r"shape \(n, 12\)"),
                       (torch.zeros(0, DIM), "empty"),
                       (np.zeros((4, DIM), dtype=np.float32), "torch.Tensor"),
                       (torch.full((4, DIM), float("inf")), "row 0, column 0")):
        with pytest.raises(poeem.InvalidArgumentError, match=match):
            lay.learn_coarse_from(bad)
    lay.learn_coarse_from(rows(4, 0))
    with pytest.raises(poeem.InvalidArgumentError, match="once per call"):
        lay.learn_coarse_from(rows(4, 0))
    lay(rows(4, 0))  # buffering: the batch is not kept, the sample is
    with pytest.raises(poeem.InvalidArgumentError, match="follow"):
        lay(rows(4, 0))  # the last buffering call had no sample
    assert lay.buffered_rows == 0 and int(lay.steps) == 2
    with pytest.raises(poeem.InvalidArgumentError, match="warm_start_items"):
        layer(warm_start_items="catalog")
    # Eval mode: nothing changes.
    lay.eval()
    before = copy.deepcopy(lay.state_dict())
    lay.learn_coarse_from(rows(4, 0))
    assert_states_equal(before, lay.state_dict())
    # A state saved before the setting existed loads into a layer with the default.
    state = layer().state_dict()
    del state["_extra_state"]["config"]["warm_start_items"]
    layer().load_state_dict(state)
    with pytest.raises(poeem.InvalidArgumentError, match="other settings"):
        layer(warm_start_items="catalogue").load_state_dict(state)


def skewed_run(warm_start_items, sample_in_joint, steps=200):
    """A layer (16 lists) fed popularity-skewed batches of a drifting catalogue: 2,000 unit
    vectors around 16 directions, 91 % of the draws from 3 of them, all rotating slowly (as
    item embeddings keep moving in training). Returns (coarse centroids, final catalogue)."""
    dim, rng = 16, np.random.default_rng(0)
    centres = rng.standard_normal((16, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, 16, 2000)
    x0 = centres[labels] + 0.35 * rng.standard_normal((2000, dim)) / np.sqrt(dim)
    x0 = torch.from_numpy((x0 / np.linalg.norm(x0, axis=1, keepdims=True)).astype(np.float32))
    p = np.where(labels < 3, 50.0, 1.0)
    p /= p.sum()
    g = np.random.default_rng(5).standard_normal((dim, dim))
    drift = torch.from_numpy((g - g.T).astype(np.float32))
    lay = pt.IndexingLayer(dim, 16, 4, 4, warmup_steps=0, buffer_size=512, seed=1, threads=1,
                           kmeans_iterations=10, warm_start_items=warm_start_items)
    opt = torch.optim.SGD(lay.parameters(), lr=0.5)
    draws = np.random.default_rng(2)
    for step in range(steps):
        x = x0 @ torch.matrix_exp(drift * (1.5 * step / steps))
        batch = torch.from_numpy(np.unique(draws.choice(len(x), 256, p=p)))
        lay(x[batch])
        sample = x[torch.from_numpy(draws.integers(0, len(x), 256))]
        if sample_in_joint or not bool(lay.initialized):  # (a no-op when buffering batches)
            lay.learn_coarse_from(sample)
        opt.zero_grad()
        (lay.regularizer_loss() / len(batch)).backward()
        opt.step()
    return lay.coarse_centroids.detach().numpy(), x.numpy()


def coarse_quality(centroids, x):
    """(mean squared distance of the items to their nearest centroid, share of the items whose
    best inner-product centroid, the one an nprobe-1 search probes, is that nearest one)."""
    d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float(d.min(1).mean()), float(((x @ centroids.T).argmax(1) == d.argmin(1)).mean())


def test_skewed_batches_crowd_the_lists_unless_the_coarse_level_learns_from_the_catalogue():
    with_sample = coarse_quality(*skewed_run("catalogue", True))
    centroids, x = skewed_run("catalogue", False)
    without = coarse_quality(centroids, x)
    batches_only = coarse_quality(*skewed_run("batches", False))
    post_hoc = coarse_quality(poeem.IvfPqCodec.train(x, n_lists=16, n_subspaces=4, n_bits=4,
                                                     seed=1, threads=1).coarse_centroids, x)
    print("distortion, nprobe-1 agreement: catalogue sample", with_sample, "warm start only",
          without, "batches only", batches_only, "post-hoc", post_hoc)
    # With the sample the coarse level stays close to a post-hoc k-means of the catalogue.
    assert with_sample[0] < 2.0 * post_hoc[0] and with_sample[1] > 0.95
    # Without it (after a catalogue warm start or not) the centroids of the rarely drawn
    # items fall behind: twice the distortion, and many items probe another list first.
    for run in (without, batches_only):
        assert run[0] > 2.0 * with_sample[0] and run[1] < 0.8
