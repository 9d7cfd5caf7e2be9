"""The toy two-tower model and the training loop the DDP test runs, in each process (spawned by
torch.multiprocessing) and, for the single-process comparison, in the test itself."""

import hashlib
import io

import numpy as np
import torch
from torch import nn

import poeem.torch as pt

DIM = 16
FEATURES = 12
WORLD = 2
LOCAL_BATCH = 32
STEPS = 10
RESUME_AT = 6
LR = 0.05


def layer_settings(catalogue=False):
    """The layer of the test: the buffer fills over two calls (two global batches, or with
    `catalogue` two global catalogue samples; the layer gathers each call's rows in rank order,
    which is the global order)."""
    return dict(n_lists=4, n_subspaces=4, n_bits=4, warmup_steps=2,
                buffer_size=2 * LOCAL_BATCH * WORLD, regularizer_weight=0.1,
                rotation="givens-greedy", givens_learning_rate=5e-3,
                warm_start_items="catalogue" if catalogue else "batches",
                kmeans_iterations=5, seed=7, threads=1)


class TwoTower(nn.Module):
    """With `catalogue`, the layer's warm start and coarse level learn from a catalogue sample
    (`learn_coarse_from`) embedded by the item tower at each step."""

    def __init__(self, catalogue=False):
        super().__init__()
        torch.manual_seed(0)
        self.query = nn.Linear(FEATURES, DIM)
        self.item = nn.Linear(FEATURES, DIM)
        settings = layer_settings(catalogue)
        self.layer = pt.IndexingLayer(DIM, settings.pop("n_lists"), settings.pop("n_subspaces"),
                                      settings.pop("n_bits"), **settings)

    def forward(self, queries, items, catalogue=None):
        out = self.query(queries), self.layer(self.item(items))
        if catalogue is not None:
            with torch.no_grad():
                self.layer.learn_coarse_from(self.item(catalogue))
        return out


def global_batch(step, catalogue=False):
    """The global batch of `step`: (queries, items) features, 64 rows, fixed by the step, and
    with `catalogue` the step's global catalogue sample (64 rows of other features), else
    None."""
    rng = np.random.default_rng(1000 + step)
    items = rng.standard_normal((LOCAL_BATCH * WORLD, FEATURES)).astype(np.float32)
    mix = np.random.default_rng(0).standard_normal((FEATURES, FEATURES)).astype(np.float32)
    queries = items @ mix + 0.1 * rng.standard_normal(items.shape).astype(np.float32)
    sample = None
    if catalogue:
        sample = torch.from_numpy(2 * rng.standard_normal(items.shape).astype(np.float32) + 1)
    return torch.from_numpy(queries), torch.from_numpy(items), sample


def shard_loss(q, v):
    """In-batch softmax over a shard: each query's positive is its own row."""
    logits = q @ v.T
    return nn.functional.cross_entropy(logits, torch.arange(len(q)))


def state_digest(layer):
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def train_ddp(rank, model, opt, steps, out, catalogue=False):
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(model)
    for step in steps:
        queries, items, sample = global_batch(step, catalogue)
        shard = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        was_initialized = bool(model.layer.initialized)
        if model.layer.phase == "joint" and not was_initialized:
            out["buffer"] = model.layer.state_dict()["_extra_state"]["buffer"].clone()
        q, v = ddp(queries[shard], items[shard], None if sample is None else sample[shard])
        if not was_initialized and bool(model.layer.initialized):
            out["init"] = {k: model.layer.state_dict()[k].clone()
                           for k in ("coarse_centroids", "codebooks")}
        loss = shard_loss(q, v) + model.layer.regularizer_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.setdefault("digests", []).append(state_digest(model.layer))
        if step + 1 == RESUME_AT:
            out["checkpoint"] = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, out["checkpoint"])


def worker(rank, init_file, out_dir, catalogue=False):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=WORLD)
    model = TwoTower(catalogue)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    out = {}
    train_ddp(rank, model, opt, range(STEPS), out, catalogue)
    items = global_batch(99)[1]
    with torch.no_grad():
        embeddings = model.item(items)
    model.layer.export(embeddings, np.arange(len(items)), f"{out_dir}/rank{rank}.poeem")
    # Resume from the checkpoint taken after step RESUME_AT, in fresh objects.
    out["checkpoint"].seek(0)
    saved = torch.load(out["checkpoint"])
    resumed = TwoTower(catalogue)
    resumed.load_state_dict(saved["model"])
    opt2 = torch.optim.SGD(resumed.parameters(), lr=LR)
    opt2.load_state_dict(saved["opt"])
    out2 = {}
    train_ddp(rank, resumed, opt2, range(RESUME_AT, STEPS), out2, catalogue)
    torch.save({"digests": out["digests"], "resumed_digests": out2["digests"],
                "init": out["init"], "buffer": out["buffer"], "layer": model.layer.state_dict(),
                "model": model.state_dict(), "resumed_layer": resumed.layer.state_dict()},
               f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def train_single(catalogue=False):
    """The single-process run DDP approximates: the layer sees each global batch (and catalogue
    sample) at once; the loss is the mean over the shards of their in-batch losses plus the
    regularizer over the global batch divided by the world size (DistributedDataParallel
    averages gradients), and the Givens step size is divided by the world size (the DDP layer
    averages the skew gradient)."""
    model = TwoTower(catalogue)
    model.layer.givens_learning_rate = layer_settings()["givens_learning_rate"] / WORLD
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    init = buffer = None
    for step in range(STEPS):
        queries, items, sample = global_batch(step, catalogue)
        was_initialized = bool(model.layer.initialized)
        if model.layer.phase == "joint" and not was_initialized:
            buffer = model.layer.state_dict()["_extra_state"]["buffer"].clone()
        q, v = model(queries, items, sample)
        if not was_initialized and bool(model.layer.initialized):
            init = {k: model.layer.state_dict()[k].clone()
                    for k in ("coarse_centroids", "codebooks")}
        losses = [shard_loss(q[s:s + LOCAL_BATCH], v[s:s + LOCAL_BATCH])
                  for s in range(0, len(q), LOCAL_BATCH)]
        loss = (sum(losses) + model.layer.regularizer_loss()) / WORLD
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, init, buffer
