"""Explaining a whole corpus: the 6,046 SpamAssassin e-mails streamed through the CLI (documents per second, peak
memory of the process), how throughput scales with batch size and threads, and the same corpus through Ray Data
on a local instance, checked to give the same relevance.

    python benchmarks/streaming.py                 # about 9 minutes on 2 cores; needs the extra 'ray'
    python benchmarks/streaming.py --parts full    # measure one part again, keep the others

Writes streaming.json and streaming.md to benchmarks/results/. Each CLI run is a fresh process, so its peak
resident memory (from wait4) is that run's alone.
"""

from __future__ import annotations

import environment

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lrptext.datasets import load
from lrptext.text.classifier import DEFAULT_COMPOSITE

SUMMARY = re.compile(r"explained (\d+) documents in ([\d.]+) s \(([\d.]+) documents/s\)")


def write_corpus(path: Path, limit: int | None = None) -> int:
    data = load("spam-assassin")
    texts = data.train.texts + data.validation.texts + data.test.texts
    texts = texts[:limit] if limit else texts
    with path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    return len(texts)


def run_cli(corpus: Path, out: Path, *, batch: int, threads: int) -> dict:
    """One streamed run in a fresh process: its own documents/s (explanation only) and peak memory."""
    out.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "lrptext.cli", "explain-text", "--file", str(corpus), "--id-field", "id",
               "--format", "jsonl", "--out", str(out), "--batch-size", str(batch)]
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: the child never blocks on a full pipe
        child = subprocess.Popen(command, env=env, stderr=log, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        log.seek(0)
        err = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err}")
    explained, seconds, rate = SUMMARY.search(err).groups()
    return {"batch": batch, "threads": threads, "documents": int(explained), "explain_s": float(seconds),
            "documents_per_s": float(rate), "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def run_ray(corpus: Path, reference: Path, *, batch: int, workers: int) -> dict:
    """The corpus through Ray Data on a local instance, compared row by row with the CLI's output."""
    import ray

    from lrptext.integrations.ray import ExplainTexts

    # One CPU more than workers: Ray Data's read tasks need one while the workers hold theirs.
    ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        began = time.perf_counter()
        rows = (ray.data.read_json(str(corpus))
                .map_batches(ExplainTexts, batch_size=batch, concurrency=workers,
                             fn_constructor_kwargs={"threads": 1})
                .take_all())
        seconds = time.perf_counter() - began
    finally:
        ray.shutdown()
    expected = {r["id"]: r for r in map(json.loads, reference.read_text(encoding="utf-8").splitlines())}
    explained = [r for r in rows if r["error"] is None]
    worst, same_words = 0.0, True
    for row in explained:
        words = expected[row["id"]]["words"]
        same_words &= list(row["words"]) == [w["text"] for w in words]
        worst = max([worst] + [abs(a - w["relevance"]) for a, w in zip(row["relevance"], words)])
    return {"workers": workers, "threads_per_worker": 1, "batch": batch, "rows": len(rows),
            "explained": len(explained),
            "same_documents_as_cli": sorted(expected) == sorted(r["id"] for r in explained),
            "same_words": same_words, "max_abs_relevance_difference": worst, "seconds": round(seconds, 1),
            "documents_per_s": round(len(explained) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--parts", default="full,scaling,ray",
                        help="what to measure again (full, scaling, ray); the others are kept from the last results")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    previous = args.out / "streaming.json"
    result = json.loads(previous.read_text()) if parts != {"full", "scaling", "ray"} else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus, small = tmp / "spam.jsonl", tmp / "spam-600.jsonl"
        result["corpus_documents"] = write_corpus(corpus)
        write_corpus(small, 600)
        if "full" in parts or "ray" in parts:  # Ray is checked against this run's output
            full = run_cli(corpus, tmp / "full.jsonl", batch=64, threads=2)
            print("full corpus:", full, flush=True)
            if "full" in parts:
                result["cli_full"] = full
        if "scaling" in parts:
            result["scaling_600"] = []
            for threads in (1, 2):
                for batch in (1, 8, 32, 64, 128, 256):
                    result["scaling_600"].append(run_cli(small, tmp / "small.jsonl", batch=batch, threads=threads))
                    print("scaling:", result["scaling_600"][-1], flush=True)
        if "ray" in parts:
            result["ray_local"] = run_ray(corpus, tmp / "full.jsonl", batch=64, workers=2)
            print("ray:", result["ray_local"], flush=True)
    result["environment"] = environment.describe()
    result["composite"] = DEFAULT_COMPOSITE
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streaming.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "streaming.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    env, full, ray_run = r["environment"], r["cli_full"], r["ray_local"]
    same = next(s for s in r["scaling_600"] if s["batch"] == full["batch"] and s["threads"] == full["threads"])
    lines = [
        "# Explaining a whole corpus", "",
        f"{env['cpu']}, {env['cores']} cores, torch {env['torch']}; the bundled SpamAssassin CNN, composite "
        f"{r.get('composite', 'epsilon_gamma')}, JSON lines in and out. Regenerate: "
        "`python benchmarks/streaming.py`.", "",
        f"## The {r['corpus_documents']:,} SpamAssassin e-mails through the CLI", "",
        "`lrptext explain-text --file spam.jsonl --id-field id --format jsonl --out explained.jsonl` "
        f"(batch {full['batch']}, {full['threads']} threads): {full['documents']:,} documents explained "
        f"({r['corpus_documents'] - full['documents']} without a known word reported and skipped) in "
        f"{full['explain_s']} s, **{full['documents_per_s']} documents/s**, peak memory of the whole process "
        f"**{full['peak_rss_mb']} MB** ({full['wall_s']} s with start-up).", "",
        "## Throughput and memory against batch size and threads (first 600 e-mails)", "",
        f"Memory is bounded by the batch, not the corpus: at batch {full['batch']} and {full['threads']} threads "
        f"the first 600 e-mails peak at {same['peak_rss_mb']} MB, the whole corpus (10x the documents) at "
        f"{full['peak_rss_mb']} MB.", "",
        "| threads | batch | documents/s | peak memory MB |", "|---:|---:|---:|---:|"]
    for s in r["scaling_600"]:
        lines.append(f"| {s['threads']} | {s['batch']} | {s['documents_per_s']} | {s['peak_rss_mb']} |")
    lines += [
        "", "## The same corpus through Ray Data (local instance)", "",
        f"`ray.data.read_json(...).map_batches(ExplainTexts, batch_size={ray_run['batch']}, "
        f"concurrency={ray_run['workers']})`, one thread per worker: {ray_run['explained']:,} of {ray_run['rows']:,} "
        f"rows explained in {ray_run['seconds']} s ({ray_run['documents_per_s']} documents/s, start-up of the "
        "workers included). Same documents as the CLI: "
        f"{'yes' if ray_run['same_documents_as_cli'] else 'NO'}; same words: "
        f"{'yes' if ray_run['same_words'] else 'NO'}; largest relevance difference "
        f"{ray_run['max_abs_relevance_difference']:.1e}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
