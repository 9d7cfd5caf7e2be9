"""poeem.torch.IndexingLayer on one process: phases, autograd, the regularizer, eval mode,
state_dict round trips, errors, and the exported index against the Rust builds."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

import poeem
import poeem.torch as pt
from conftest import assert_states_equal, clustered

DIM = 12


def small_layer(**kw):
    settings = dict(warmup_steps=2, buffer_size=96, regularizer_weight=0.5, seed=3,
                    kmeans_iterations=6, threads=1)
    settings.update(kw)
    n_lists, n_bits = settings.pop("n_lists", 4), settings.pop("n_bits", 4)
    return pt.IndexingLayer(DIM, n_lists, 4, n_bits, **settings)


def batches(n_batches, n=32, seed=0):
    data = torch.from_numpy(clustered(n * n_batches, DIM, n_clusters=8, seed=seed))
    return list(data.split(n))


def trained(layer, n_batches=8, seed=0):
    """Runs `n_batches` training calls (a plain SGD step on the regularizer after each)."""
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    layer.train()
    for x in batches(n_batches, seed=seed):
        layer(x)
        opt.zero_grad()
        layer.regularizer_loss().backward()
        opt.step()
    return layer


def test_import_poeem_does_not_import_torch():
    code = "import sys, poeem; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_phases_follow_the_rust_layer():
    layer = small_layer()
    xs = batches(6)
    seen = []
    for x in xs:
        phase = layer.phase
        y = layer(x)
        seen.append(phase)
        if phase != "joint":
            assert y is x
            assert float(layer.regularizer_loss()) == 0.0
    # 2 warm-up calls, 96 rows buffered by 3 calls of 32, then the init at the next call.
    assert seen == ["warm-up", "warm-up", "buffering", "buffering", "buffering", "joint"]
    assert bool(layer.initialized) and layer.buffered_rows == 0
    assert int(layer.steps) == 6
    # The init is k-means on the buffered rows: the codec poeem.IvfPqCodec.train gives.
    codec = poeem.IvfPqCodec.train(torch.cat(xs[2:5]).numpy(), n_lists=4, n_subspaces=4,
                                   n_bits=4, kmeans_iterations=6, seed=3, threads=1)
    assert np.array_equal(layer.coarse_centroids.detach().numpy(), codec.coarse_centroids)
    assert np.array_equal(layer.codebooks.detach().numpy(), codec.codebooks)


def test_joint_output_is_the_codec_reconstruction_and_the_gradient_is_straight_through():
    layer = trained(small_layer(), n_batches=6)
    x = batches(1, seed=9)[0].clone().requires_grad_(True)
    y = layer(x)
    codec = layer.codec()
    assert torch.equal(y.detach(), torch.from_numpy(codec.decode(*codec.encode(x.detach().numpy()))))
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, g)  # exactly the incoming gradient
    # The regularizer reaches only the layer's parameters, never x.
    x2 = batches(1, seed=10)[0].clone().requires_grad_(True)
    layer(x2)
    reg = layer.regularizer_loss()
    assert reg.requires_grad
    grads = torch.autograd.grad(reg, [layer.coarse_centroids, layer.codebooks, x2],
                                allow_unused=True)
    assert grads[2] is None


@pytest.mark.parametrize("objective", ["reconstruction", "list-means"])
def test_regularizer_gradient_matches_finite_differences(objective):
    layer = trained(small_layer(coarse_objective=objective, regularizer_weight=0.7), 6)
    x = batches(1, seed=11)[0]
    layer(x)
    reg = layer.regularizer_loss()
    g_coarse, g_books = torch.autograd.grad(reg, [layer.coarse_centroids, layer.codebooks])
    lists, codes, rotated, _ = layer.codec().quantize(x.numpy())
    rotated = rotated.astype(np.float64)
    w = 0.7

    def losses(coarse, books):
        """(w Σ ‖z − x'‖², w Σ ‖x' − v_j‖²) in float64, codes held fixed."""
        v = coarse[lists]
        c = books[np.arange(4), codes].reshape(len(x), -1)
        return w * ((v + c - rotated) ** 2).sum(), w * ((v - rotated) ** 2).sum()

    coarse = layer.coarse_centroids.detach().numpy().astype(np.float64)
    books = layer.codebooks.detach().numpy().astype(np.float64)
    assert float(reg) == pytest.approx(losses(coarse, books)[0], rel=1e-5)
    eps = 1e-3
    rng = np.random.default_rng(0)
    # Codewords: ∂/∂c of w Σ ‖z − x'‖² under both objectives.
    used = [(m, int(codes[b, m])) for b, m in zip(rng.integers(0, len(x), 6), range(4))]
    for m, k in used:
        for t in range(books.shape[2]):
            up, down = books.copy(), books.copy()
            up[m, k, t] += eps
            down[m, k, t] -= eps
            fd = (losses(coarse, up)[0] - losses(coarse, down)[0]) / (2 * eps)
            assert float(g_books[m, k, t]) == pytest.approx(fd, rel=1e-3, abs=1e-3)
    # Coarse centroids: the reconstruction error, or the list's own error ("list-means").
    which = 0 if objective == "reconstruction" else 1
    for j in sorted(set(lists.tolist()))[:3]:
        for t in range(coarse.shape[1]):
            up, down = coarse.copy(), coarse.copy()
            up[j, t] += eps
            down[j, t] -= eps
            fd = (losses(up, books)[which] - losses(down, books)[which]) / (2 * eps)
            assert float(g_coarse[j, t]) == pytest.approx(fd, rel=1e-3, abs=1e-3)


def test_eval_mode_changes_nothing_and_gives_tau():
    for layer in (small_layer(), trained(small_layer(rotation="givens-greedy"), 7)):
        layer.eval()
        before = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                  for k, v in layer.state_dict().items()}
        x = batches(1, seed=4)[0]
        y = layer(x)
        y2 = layer(x)
        assert torch.equal(y, y2)
        if not bool(layer.initialized):
            assert torch.equal(y, x)
        assert_states_equal(before, layer.state_dict())


@pytest.mark.parametrize("rotation", pt.ROTATIONS)
def test_state_dict_round_trip_continues_identically(rotation):
    for stop in (3, 7):  # buffering, joint
        a = small_layer(rotation=rotation)
        opt_a = torch.optim.Adam(a.parameters(), lr=0.01)
        xs = batches(12, seed=5)
        for x in xs[:stop]:
            a(x)
            opt_a.zero_grad()
            a.regularizer_loss().backward()
            opt_a.step()
        saved = io.BytesIO()
        torch.save({"layer": a.state_dict(), "opt": opt_a.state_dict()}, saved)
        saved.seek(0)
        state = torch.load(saved)
        b = small_layer(rotation=rotation)
        b.load_state_dict(state["layer"])
        opt_b = torch.optim.Adam(b.parameters(), lr=0.01)
        opt_b.load_state_dict(state["opt"])
        assert b.phase == a.phase and b.buffered_rows == a.buffered_rows
        for x in xs[stop:]:
            ya, yb = a(x), b(x)
            assert torch.equal(ya, yb)
            for layer, opt in ((a, opt_a), (b, opt_b)):
                opt.zero_grad()
                layer.regularizer_loss().backward()
                opt.step()
        assert_states_equal(a.state_dict(), b.state_dict())
        if rotation != "none":
            r = a.rotation.double()
            assert torch.allclose(r @ r.T, torch.eye(r.shape[0], dtype=torch.float64), atol=1e-5)
        if rotation.startswith("givens-"):
            assert int(a.givens_steps) == 12 - 5
            assert not torch.equal(a.rotation, torch.eye(DIM))


def test_exported_index_reconstructs_tau_and_scores_inner_products(tmp_path, run_cli):
    layer = trained(small_layer(rotation="givens-steepest"), 10).eval()
    items = torch.from_numpy(clustered(300, DIM, n_clusters=8, seed=6))
    ids = np.arange(300, dtype=np.int64) * 3 + 1
    path = tmp_path / "layer.poeem"
    layer.export(items, ids, path, metric="ip")
    index = poeem.Index.open(path)
    assert (len(index), index.dim, index.n_lists, index.n_subspaces, index.n_bits) == (
        300, DIM, 4, 4, 4)
    tau = layer(items)
    # The same codes; the index applies the inverse rotation with its own product, so the
    # reconstructions agree up to float rounding (bit for bit without a rotation, below).
    np.testing.assert_allclose(index.reconstruct(ids), tau.numpy(), rtol=1e-6, atol=1e-6)
    plain = trained(small_layer(), 8).eval()
    plain_index = plain.export(items, ids, tmp_path / "plain.poeem")
    assert np.array_equal(plain_index.reconstruct(ids), plain(items).numpy())
    queries = clustered(20, DIM, n_clusters=8, seed=7)
    scores, found = index.search(queries, 300, nprobe=4)
    exact = queries.astype(np.float64) @ tau.numpy().astype(np.float64).T
    for q in range(20):
        expected = exact[q, (found[q] - 1) // 3]
        # 4-bit indexes scan with fast-scan's 8-bit quantized tables: scores are within
        # M·δ/2 of float ADC (docs/index-format.md), here well inside 1 % of the score range.
        np.testing.assert_allclose(scores[q], expected, atol=0.01 * np.abs(exact).max())
    # The `poeem` command opens and searches it too.
    run_cli("verify", "--index", path)
    np.save(tmp_path / "q.npy", queries)
    run_cli("search", "--index", path, "--queries", tmp_path / "q.npy", "-k", 5, "--nprobe", 4,
            "--threads", 1, "--out", tmp_path / "ids.npy", "--scores", tmp_path / "s.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), found[:, :5])
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), scores[:, :5], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_export_after_the_warm_start_equals_poeem_build(tmp_path, run_cli, metric):
    """Warm start on rows X with OPQ, then export X: the same index, section for section (the
    metadata aside), as `poeem build` and `poeem.build_index` on X with the same settings. The
    layer's export and `poeem export` share the encode-only path (`index_from_codec`), and the
    warm start is the post-hoc codec training, so this pins both."""
    xb = clustered(600, DIM, n_clusters=16, seed=8)
    ids = np.arange(600, dtype=np.int64) * 5 + 2
    layer = pt.IndexingLayer(DIM, 8, 4, 5, warmup_steps=0, buffer_size=600, rotation="opq",
                             opq_rounds=3, kmeans_iterations=7, seed=4, threads=1)
    layer(torch.from_numpy(xb))        # buffering
    layer(torch.from_numpy(xb[:10]))   # the warm start, then a joint call
    layer.export(xb, ids, tmp_path / "layer.poeem", metric=metric)
    if metric != "cosine":  # cosine normalises before encoding, the warm start did not
        np.save(tmp_path / "xb.npy", xb)
        np.save(tmp_path / "ids.npy", ids)
        run_cli("build", "--vectors", tmp_path / "xb.npy", "--ids", tmp_path / "ids.npy",
                "--n-lists", 8, "--n-subspaces", 4, "--n-bits", 5, "--metric", metric,
                "--seed", 4, "--kmeans-iterations", 7, "--opq", "--opq-rounds", 3,
                "--out", tmp_path / "cli.poeem")
        built = poeem.build_index(xb, ids=ids, n_lists=8, n_subspaces=4, n_bits=5,
                                  metric=metric, opq=True, opq_rounds=3, kmeans_iterations=7,
                                  seed=4, threads=1)
        built.save(tmp_path / "py.poeem")
        ours = sections(poeem.Index.open(tmp_path / "layer.poeem").info())
        for other in ("cli.poeem", "py.poeem"):
            theirs = sections(poeem.Index.open(tmp_path / other).info())
            assert ours.keys() == theirs.keys()
            for name in ours:
                if name != "metadata":
                    assert ours[name] == theirs[name], (other, name)
    # The codec's own encode-only index is the same file too (bytes, the metadata aside).
    again = layer.codec().index(xb, ids=ids, metric=metric, threads=1)
    again.save(tmp_path / "codec.poeem")
    a = sections(poeem.Index.open(tmp_path / "layer.poeem").info())
    b = sections(poeem.Index.open(tmp_path / "codec.poeem").info())
    assert {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"}


def sections(info):
    return {s["name"]: (s["length"], s["crc32"]) for s in info["sections"]}


def test_bad_input_raises_clear_errors(tmp_path):
    layer = small_layer()
    with pytest.raises(poeem.InvalidArgumentError, match="float32"):
        layer(torch.zeros(4, DIM, dtype=torch.float64))
    with pytest.raises(poeem.InvalidArgumentError, match=r"shape \(n, 12\)"):
        layer(torch.zeros(4, DIM + 1))
    with pytest.raises(poeem.InvalidArgumentError, match=r"shape \(n, 12\)"):
        layer(torch.zeros(DIM))
    with pytest.raises(poeem.InvalidArgumentError, match="empty"):
        layer(torch.zeros(0, DIM))
    with pytest.raises(poeem.InvalidArgumentError, match="torch.Tensor"):
        layer(np.zeros((4, DIM), dtype=np.float32))
    x = torch.zeros(4, DIM)
    x[2, 5] = float("nan")
    with pytest.raises(poeem.InvalidArgumentError, match="row 2, column 5"):
        layer(x)
    assert int(layer.steps) == 0  # a failed call changes nothing
    with pytest.raises(poeem.InvalidArgumentError, match="before the warm start"):
        layer.export(torch.zeros(3, DIM), np.arange(3), tmp_path / "x.poeem")
    with pytest.raises(poeem.InvalidArgumentError, match="before the warm start"):
        layer.codec()
    assert not (tmp_path / "x.poeem").exists()
    for bad in (dict(rotation="givens"), dict(n_bits=17), dict(buffer_size=3),
                dict(regularizer_weight=float("nan")), dict(coarse_objective="x"),
                dict(threads=0)):
        with pytest.raises(poeem.InvalidArgumentError):
            small_layer(**bad)
    trained_layer = trained(small_layer(), 6)
    with pytest.raises(poeem.InvalidArgumentError, match="columns"):
        trained_layer.export(np.zeros((3, 5), dtype=np.float32), np.arange(3), tmp_path / "y")
    with pytest.raises(poeem.InvalidArgumentError, match="ids"):
        trained_layer.export(np.zeros((3, DIM), dtype=np.float32), np.arange(2), tmp_path / "y")
    other = pt.IndexingLayer(DIM, 8, 4, 4, warmup_steps=2, buffer_size=96)
    with pytest.raises(Exception, match="size mismatch|other settings"):
        other.load_state_dict(trained_layer.state_dict())
    with torch.no_grad():
        trained_layer.codebooks[0, 0, 0] = float("inf")
    with pytest.raises(poeem.InvalidArgumentError, match="codebooks"):
        trained_layer(batches(1)[0])
