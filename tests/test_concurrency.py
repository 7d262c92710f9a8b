"""Threads, processes, determinism and leaks: explain() in services and notebooks."""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import weakref

import pytest
import torch

import lrptext
from core_settings import core_threads
from lrptext import Explainer
from models import KimCNN
from workers import explain_in_child, model_and_inputs


def test_four_threads_give_the_serial_results():
    model, x = model_and_inputs()
    explainer = Explainer(model, composite="epsilon_gamma_box", low=0.0, high=1.0)
    serial = [explainer.explain(x[i: i + 2]).relevance for i in range(0, 8, 2)]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = explainer.explain(x[2 * i: 2 * i + 2]).relevance
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and all(not t.is_alive() for t in threads)
    for i in range(4):
        assert torch.equal(results[i], serial[i])


@pytest.mark.parametrize("threads", [1, 2])
def test_bitwise_determinism_for_a_fixed_thread_count(threads):
    model, x = model_and_inputs()
    with core_threads(threads):
        runs = [lrptext.explain(model, x, composite="epsilon_plus_flat").relevance for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_worker_processes_with_spawn_after_the_parent_ran_kernels():
    """The documented set-up: after lrptext (or torch) ran an OpenMP region, start workers with 'spawn' (a forked
    child can hang in libgomp)."""
    model, x = model_and_inputs()
    expected = lrptext.explain(model, x).relevance.sum().item()  # the parent's OpenMP pool is now running
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=explain_in_child, args=(queue,))
    child.start()
    child.join(timeout=240)
    assert child.exitcode == 0
    assert queue.get(timeout=10) == pytest.approx(expected, rel=1e-6)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_over_1000_calls():
    torch.manual_seed(2)
    model = KimCNN(vocab=500, dim=24, channels=8).eval()
    ids = torch.randint(0, 500, (4, 40))
    explainer = Explainer(model, composite="epsilon_gamma")
    for _ in range(100):  # warm-up: allocator pools, prepared weights, first kernel calls
        explainer.explain(ids)
    gc.collect()
    before = rss_mb()
    for _ in range(1000):
        explainer.explain(ids)
    gc.collect()
    growth = rss_mb() - before
    print(f"RSS before {before:.1f} MB, after 1,000 more calls {before + growth:.1f} MB")
    assert growth < 8.0, f"RSS grew by {growth:.1f} MB over 1,000 explain() calls"


def test_no_reference_to_the_model_is_left_behind():
    model, x = model_and_inputs()
    lrptext.explain(model, x)
    explainer = Explainer(model)
    explainer.explain(x)
    alive = weakref.ref(model)
    del model, explainer
    gc.collect()
    assert alive() is None
