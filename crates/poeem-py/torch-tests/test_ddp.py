"""Two processes (torch.multiprocessing, gloo) train a toy two-tower model with
DistributedDataParallel and the layer: identical layer state on both ranks after every step,
identical exported indexes, an exact resume, the warm start equal to the single-process one on
the same rows, and the whole run close to its single-process equivalent."""

import hashlib

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import poeem
import poeem.torch as pt
import ddp_worker as w
from conftest import assert_states_equal


@pytest.mark.parametrize("catalogue", [False, True], ids=["batches", "catalogue"])
def test_two_processes_hold_identical_layer_state(tmp_path, catalogue):
    """With `catalogue`, the warm start and the coarse level learn from a catalogue sample
    (`learn_coarse_from`, each rank giving its shard of the step's sample)."""
    mp.spawn(w.worker, args=(str(tmp_path / "init"), str(tmp_path), catalogue), nprocs=w.WORLD,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(w.WORLD)]
    # After every step, every rank's layer state (state_dict bytes: parameters, rotation,
    # counters, warm-start buffer) is the same.
    assert len(ranks[0]["digests"]) == w.STEPS
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(set(ranks[0]["digests"])) == w.STEPS  # the state moved at every step
    assert_states_equal(ranks[0]["layer"], ranks[1]["layer"])
    assert_states_equal(ranks[0]["model"], ranks[1]["model"])
    layer_state = ranks[0]["layer"]
    assert bool(layer_state["initialized"])
    assert int(layer_state["givens_steps"]) > 0
    # Identical exported indexes (bytes: the metadata's creation time aside).
    files = [poeem.Index.open(tmp_path / f"rank{r}.poeem") for r in range(w.WORLD)]
    sections = [{s["name"]: (s["length"], s["crc32"]) for s in f.info()["sections"]}
                for f in files]
    assert {k: v for k, v in sections[0].items() if k != "metadata"} == {
        k: v for k, v in sections[1].items() if k != "metadata"}
    # A run resumed from the state_dict saved after step RESUME_AT continues identically.
    for rank in ranks:
        assert rank["resumed_digests"] == rank["digests"][w.RESUME_AT:]
        assert_states_equal(rank["resumed_layer"], rank["layer"])

    # The warm start is the single-process warm start on the gathered rows, bit for bit.
    buffer = ranks[0]["buffer"]
    assert torch.equal(buffer, ranks[1]["buffer"])
    assert buffer.shape == (2 * w.LOCAL_BATCH * w.WORLD, w.DIM)
    settings = w.layer_settings()
    single = pt.IndexingLayer(w.DIM, settings.pop("n_lists"), settings.pop("n_subspaces"),
                              settings.pop("n_bits"), **dict(settings, warmup_steps=0))
    single(buffer)
    single(buffer[:3])
    for key, value in ranks[0]["init"].items():
        assert torch.equal(single.state_dict()[key], value), key

    # The whole DDP run approximates the single-process run on the global batches
    # (docs/torch.md says how): the same layer up to float rounding.
    model, init, single_buffer = w.train_single(catalogue)
    assert torch.allclose(single_buffer, buffer, rtol=0, atol=1e-5)
    for key in ("coarse_centroids", "codebooks"):
        assert torch.allclose(init[key], ranks[0]["init"][key], atol=1e-4), key
    for key in ("coarse_centroids", "codebooks", "rotation"):
        a, b = model.layer.state_dict()[key], layer_state[key]
        print(f"DDP against one process, {key}: largest difference {float((a - b).abs().max()):.2e}")
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (key, float((a - b).abs().max()))
    for key, value in model.state_dict().items():
        if not key.startswith("layer."):
            assert torch.allclose(value, ranks[0]["model"][key], rtol=0, atol=1e-5), key
