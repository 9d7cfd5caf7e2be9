"""poeem.KMeans and poeem.IvfPqCodec."""

import numpy as np
import pytest

import poeem
from conftest import clustered


def test_kmeans_fit_assign(xb):
    km = poeem.KMeans(16, max_iter=10, seed=3).fit(xb, threads=2)
    c = km.centroids
    assert c.shape == (16, 24) and c.dtype == np.float32
    assert len(km.inertia) >= 1 and km.inertia[-1] <= km.inertia[0]
    labels, dist = km.assign(xb)
    assert labels.dtype == np.int64 and dist.dtype == np.float32
    exact = ((xb[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, exact.min(1), rtol=1e-3, atol=1e-3)
    assert np.mean(labels == exact.argmin(1)) > 0.999
    again = poeem.KMeans(16, max_iter=10, seed=3).fit(xb.astype(np.float64), threads=1)
    np.testing.assert_array_equal(again.centroids, c)  # thread count and dtype do not matter
    assert "fitted" in repr(km)


def test_kmeans_errors(xb):
    with pytest.raises(poeem.InvalidArgumentError, match="not fitted"):
        poeem.KMeans(4).centroids
    with pytest.raises(poeem.InvalidArgumentError, match="init = nope"):
        poeem.KMeans(4, init="nope")
    with pytest.raises(poeem.InvalidArgumentError):
        poeem.KMeans(5000).fit(xb)
    km = poeem.KMeans(4, max_iter=2).fit(xb)
    bad = xb[:10].copy()
    bad[2, 3] = np.nan
    with pytest.raises(poeem.InvalidArgumentError, match="row 2, column 3"):
        km.assign(bad)
    with pytest.raises(poeem.InvalidArgumentError, match="expected 24 columns"):
        km.assign(xb[:, :5])


@pytest.mark.parametrize("opq,n_bits", [(False, 8), (True, 10)])
def test_codec_encode_decode(xb, opq, n_bits):
    x = clustered(3000, 24, seed=5)
    codec = poeem.IvfPqCodec.train(x, n_lists=8, n_subspaces=6, n_bits=n_bits, opq=opq,
                                   opq_rounds=2, kmeans_iterations=5, seed=1)
    assert (codec.dim, codec.n_lists, codec.n_subspaces, codec.n_bits) == (24, 8, 6, n_bits)
    lists, codes = codec.encode(x)
    assert lists.shape == (3000,) and codes.shape == (3000, 6)
    assert codes.dtype == (np.uint16 if n_bits > 8 else np.uint8)
    decoded = codec.decode(lists, codes)
    assert decoded.shape == x.shape
    error = ((decoded - x) ** 2).sum(1).mean() / (x ** 2).sum(1).mean()
    assert error < 0.2
    with pytest.raises(poeem.InvalidArgumentError, match="list 8 at row 0"):
        codec.decode(np.array([8]), codes[:1])
    with pytest.raises(poeem.InvalidArgumentError, match="is not below"):
        codec.decode(lists[:1], np.full((1, 6), 1 << n_bits))
    with pytest.raises(poeem.InvalidArgumentError, match="shape"):
        codec.decode(lists[:2], codes[:1])


def test_codec_matches_build_index(xb):
    """The codec trained like build_index encodes the items as the index stores them."""
    codec = poeem.IvfPqCodec.train(xb, n_lists=8, n_subspaces=6, n_bits=6, kmeans_iterations=5,
                                   seed=4)
    index = poeem.build_index(xb, n_lists=8, n_subspaces=6, n_bits=6, kmeans_iterations=5,
                              seed=4)
    lists, codes = codec.encode(xb)
    np.testing.assert_allclose(codec.decode(lists, codes), index.reconstruct(np.arange(len(xb))),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("opq", [False, True])
def test_codec_parts_round_trip_quantize_and_index(xb, opq):
    """from_parts(parts of a codec) is the same codec bit for bit; quantize is encode + decode;
    index() is the encode-only index, equal to build_index's for the codec build_index trains."""
    x = xb[:, :22]  # 22 columns, 4 subspaces: padded to 24
    codec = poeem.IvfPqCodec.train(x, n_lists=8, n_subspaces=4, n_bits=5, opq=opq,
                                   opq_rounds=2, kmeans_iterations=5, seed=2)
    assert codec.padded_dim == 24
    assert codec.coarse_centroids.shape == (8, 24)
    assert codec.codebooks.shape == (4, 32, 6)
    assert codec.rotation.shape == (24, 24)
    again = poeem.IvfPqCodec.from_parts(codec.coarse_centroids, codec.codebooks,
                                        codec.rotation, dim=22)
    lists, codes = codec.encode(x)
    for a, b in zip((lists, codes), again.encode(x)):
        np.testing.assert_array_equal(a, b)
    q_lists, q_codes, rotated, decoded = again.quantize(x)
    np.testing.assert_array_equal(q_lists, lists)
    np.testing.assert_array_equal(q_codes, codes)
    np.testing.assert_array_equal(decoded, codec.decode(lists, codes))
    assert rotated.shape == (len(x), 24)
    np.testing.assert_allclose(rotated[:, :22] if not opq else rotated,
                               x if not opq else np.c_[x, np.zeros((len(x), 2))] @ codec.rotation,
                               rtol=0, atol=1e-4)
    built = poeem.build_index(x, n_lists=8, n_subspaces=4, n_bits=5, opq=opq, opq_rounds=2,
                              kmeans_iterations=5, seed=2)
    ours = again.index(x)
    sections = [{s["name"]: (s["length"], s["crc32"]) for s in i.info()["sections"]
                 if s["name"] != "metadata"} for i in (built, ours)]
    assert sections[0] == sections[1]


def test_codec_from_parts_errors():
    books = np.zeros((4, 16, 3), dtype=np.float32)
    with pytest.raises(poeem.InvalidArgumentError, match="3-D"):
        poeem.IvfPqCodec.from_parts(np.zeros((2, 12), np.float32), books[0])
    with pytest.raises(poeem.InvalidArgumentError, match="power of two"):
        poeem.IvfPqCodec.from_parts(np.zeros((2, 12), np.float32), books[:, :15])
    with pytest.raises(poeem.InvalidArgumentError, match="12 columns"):
        poeem.IvfPqCodec.from_parts(np.zeros((2, 11), np.float32), books)
    with pytest.raises(poeem.InvalidArgumentError, match="rotation"):
        poeem.IvfPqCodec.from_parts(np.zeros((2, 12), np.float32), books,
                                    np.ones((12, 12), np.float32))
    with pytest.raises(poeem.InvalidArgumentError, match="dim = 5"):
        poeem.IvfPqCodec.from_parts(np.zeros((2, 12), np.float32), books, dim=5)
    flat = poeem.IvfPqCodec.from_parts(np.zeros((0, 12), np.float32), books)
    assert flat.n_lists == 1 and flat.coarse_centroids.shape == (0, 12)  # one list at the origin
