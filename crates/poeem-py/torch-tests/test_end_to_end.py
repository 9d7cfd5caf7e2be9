"""A toy two-tower model trained with the layer: recall through the exported index is close to
the model's exact recall and not below a post-hoc OPQ index of a model trained without it."""

import numpy as np
import torch
from torch import nn

import poeem
import poeem.torch as pt

N_ITEMS, FEATURES, DIM, TOPICS = 2000, 24, 16, 40


def data(seed=0):
    """Items with features around topics; a query is a noisy copy of its positive item's
    features (train pairs and held-out test pairs)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((TOPICS, FEATURES)).astype(np.float32) * 2
    item_topic = rng.integers(0, TOPICS, N_ITEMS)
    items = (topics[item_topic] + rng.standard_normal((N_ITEMS, FEATURES))).astype(np.float32)

    def pairs(n):
        positive = rng.integers(0, N_ITEMS, n)
        queries = items[positive] + 0.8 * rng.standard_normal((n, FEATURES)).astype(np.float32)
        return torch.from_numpy(queries), torch.from_numpy(positive)

    return torch.from_numpy(items), pairs(20_000), pairs(500)


class TwoTower(nn.Module):
    def __init__(self, layer=None):
        super().__init__()
        torch.manual_seed(0)
        self.query = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, DIM))
        self.item_id = nn.Embedding(N_ITEMS, DIM)
        nn.init.normal_(self.item_id.weight, std=0.01)
        self.item_features = nn.Linear(FEATURES, DIM)
        self.layer = layer

    def items(self, ids, features):
        v = self.item_id(ids) + self.item_features(features)
        return self.layer(v) if self.layer is not None else v


def train(model, items, train_pairs, steps=300, batch=256):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    queries, positives = train_pairs
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        pick = torch.randint(0, len(queries), (batch,), generator=gen)
        ids = positives[pick]
        q = model.query(queries[pick])
        v = model.items(ids, items[ids])
        logits = q @ v.T
        same = ids[:, None] == ids[None, :]
        logits = logits.masked_fill(same & ~torch.eye(batch, dtype=torch.bool), -1e9)
        loss = nn.functional.cross_entropy(logits, torch.arange(batch))
        if model.layer is not None:
            loss = loss + model.layer.regularizer_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def recall(found, positives):
    return float(np.mean([p in row for row, p in zip(found, positives)]))


def test_training_with_the_layer_gives_a_sane_exported_index(tmp_path):
    items, train_pairs, (test_q, test_pos) = data()
    ids = torch.arange(N_ITEMS)
    settings = dict(warmup_steps=50, buffer_size=2048, regularizer_weight=0.05, seed=1,
                    rotation="opq", opq_rounds=4, kmeans_iterations=10, threads=1)
    joint = train(TwoTower(pt.IndexingLayer(DIM, 32, 4, 6, **settings)), items, train_pairs)
    plain = train(TwoTower(), items, train_pairs)
    k, results = 20, {}
    with torch.no_grad():
        for name, model in (("joint", joint), ("plain", plain)):
            layer, model.layer = model.layer, None
            vectors = model.items(ids, items).numpy()
            queries = model.query(test_q).numpy()
            model.layer = layer
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
            results[name, "exact"] = recall(exact, test_pos.numpy())
            if name == "joint":
                index = joint.layer.export(vectors, np.arange(N_ITEMS), tmp_path / "j.poeem")
            else:
                index = poeem.build_index(vectors, n_lists=32, n_subspaces=4, n_bits=6,
                                          opq=True, opq_rounds=4, kmeans_iterations=10, seed=1,
                                          threads=1)
            for nprobe in (2, 8):
                found = index.search(queries, k, nprobe=nprobe)[1]
                results[name, nprobe] = recall(found, test_pos.numpy())
    print(results)
    assert results["joint", "exact"] > 0.5
    for nprobe in (2, 8):
        # The exported index keeps most of the model's exact recall, and a jointly trained
        # index is not worse than a post-hoc one (the tolerance: a toy's seed noise).
        assert results["joint", nprobe] >= 0.6 * results["joint", "exact"], results
        assert results["joint", nprobe] >= results["plain", nprobe] - 0.05, results
