"""A load test of `lrptext serve` on this machine: 2,000 POST /v1/explain requests (one document each) at concurrency
1, 8 and 32 against two local servers with the bundled model, one merging concurrent requests into one pass through
the kernels and one with --no-batching; throughput, p50/p99 latency, errors, and each server's resident memory
before and after. Two workloads: whole e-mails of the SpamAssassin test split (up to 10,000 characters; their
lengths vary, and a pass pads its documents to the longest) and their first 200 characters (short documents, where
the cost of a call rather than the arithmetic dominates).

    python benchmarks/serve_load.py [--requests 2000] [--concurrency 1,8,32] [--repeats 2]

Bounded: every level stops after --requests requests or --deadline seconds, whichever comes first, and each request
after 60 s; the servers listen on 127.0.0.1 only and are stopped at the end. The two servers are loaded in turn,
level by level and repetition by repetition (interleaved), and the medians over repetitions are reported. The
client is a minimal asyncio HTTP/1.1 client with one keep-alive connection per concurrent user, so that it takes
as little of the CPU as possible from the server it shares the machine with.

Writes serve.json and serve.md to benchmarks/results/.
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse
import asyncio
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lrptext.datasets import load
from lrptext.text.classifier import DEFAULT_COMPOSITE

MAX_CHARACTERS = 10_000  # the e-mails sent: the test split's, in file order, those up to this length
SHORT = 200  # characters of the short workload's documents


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, batching: bool):
        self.batching = batching
        self.port = free_port()
        command = [sys.executable, "-m", "lrptext.cli", "serve", "--model", "default", "--port", str(self.port),
                   "--max-documents", "64"]
        self.process = subprocess.Popen(command + ([] if batching else ["--no-batching"]),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.health()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"the server did not start: {self.process.communicate()[1][-2000:]}")
                time.sleep(0.3)

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
            return json.load(response)

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def request_bytes(port: int, text: str) -> bytes:
    body = json.dumps({"texts": [text]}).encode()
    head = (f"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def user(port: int, payloads: list[bytes], counter: list[int], total: int, deadline: float,
               latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while counter[0] < total and time.monotonic() < deadline:
            i = counter[0]
            counter[0] += 1
            start = time.perf_counter()
            try:
                writer.write(payloads[i % len(payloads)])
                await writer.drain()
                status_line = await asyncio.wait_for(reader.readline(), 60)
                length = 0
                while (line := await asyncio.wait_for(reader.readline(), 60)) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = await asyncio.wait_for(reader.readexactly(length), 60)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as error:
                errors.append(type(error).__name__)
                break
            latencies.append(time.perf_counter() - start)
            status = status_line.split(b" ", 2)[1]
            if status != b"200" or not body.startswith(b'{"model"'):
                errors.append(status.decode())
    finally:
        writer.close()


async def load_level(port: int, payloads: list[bytes], concurrency: int, total: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    counter = [0]
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(user(port, payloads, counter, total, deadline, latencies, errors)
                           for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return {"requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "seconds": elapsed, "per_second": len(latencies) / elapsed, "p50_ms": 1e3 * percentile(0.50),
            "p99_ms": 1e3 * percentile(0.99), "complete": len(latencies) == total and not errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per level at most")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite serve.md from serve.json, no load")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.report_only:
        result = json.loads((args.out / "serve.json").read_text())
        result["summary"] = {w: {name: {int(c): v for c, v in by_level.items()} for name, by_level in by.items()}
                             for w, by in result["summary"].items()}
        (args.out / "serve.md").write_text(report(result, levels))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers (finally) when stopped
    emails = [t for t in load("spam-assassin").test.texts if len(t) <= MAX_CHARACTERS]
    workloads = {"e-mails": emails, "short": [t[:SHORT] for t in emails]}
    servers = {"batching": Server(True), "no batching": Server(False)}
    try:
        payloads = {(w, name): [request_bytes(s.port, t) for t in texts]
                    for w, texts in workloads.items() for name, s in servers.items()}
        for name, server in servers.items():  # warm-up: first kernel calls, allocator pools for the largest passes
            for w in workloads:
                asyncio.run(load_level(server.port, payloads[w, name], max(levels), 500, args.deadline))
        rss_before = {name: s.rss_mib() for name, s in servers.items()}
        runs = {w: {name: {c: [] for c in levels} for name in servers} for w in workloads}
        rss_after_level: dict[str, dict[str, float]] = {name: {} for name in servers}
        for repeat in range(args.repeats):
            for w in workloads:
                for c in levels:
                    for name, server in servers.items():
                        health = server.health()
                        result = asyncio.run(load_level(server.port, payloads[w, name], c, args.requests,
                                                        args.deadline))
                        after = server.health()
                        merged = after["batches"] - health["batches"]
                        result["requests_per_batch"] = (after["requests"] - health["requests"]) / max(merged, 1)
                        runs[w][name][c].append(result)
                        rss_after_level[name][f"{w}, c={c}"] = server.rss_mib()
                        print(f"{w:>8} {name:>12} c={c:<3} rep {repeat}: {result['per_second']:7.1f} req/s, p50 "
                              f"{result['p50_ms']:7.1f} ms, p99 {result['p99_ms']:7.1f} ms, {result['errors']} "
                              f"errors, {result['requests_per_batch']:.1f} requests per batch", flush=True)
        rss_after = {name: s.rss_mib() for name, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    summary = {w: {name: {c: {k: statistics.median(r[k] for r in runs[w][name][c])
                              for k in ("per_second", "p50_ms", "p99_ms", "requests_per_batch")}
                          | {"errors": sum(r["errors"] for r in runs[w][name][c]),
                             "complete": all(r["complete"] for r in runs[w][name][c])}
                          for c in levels} for name in servers} for w in workloads}
    result = {"environment": environment.describe(), "composite": DEFAULT_COMPOSITE,
              "requests": args.requests, "repeats": args.repeats,
              "documents": len(emails), "max_characters": MAX_CHARACTERS, "short": SHORT, "runs": runs,
              "summary": summary, "rss_mib": {"after_warm_up": rss_before, "after_level": rss_after_level,
                                              "at_the_end": rss_after}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve.md").write_text(report(result, levels))
    print(report(result, levels))


def report(result: dict, levels: list[int]) -> str:
    env, summary, rss = result["environment"], result["summary"], result["rss_mib"]
    lines = [
        "# `lrptext serve` under load",
        "",
        f"{result['requests']:,} POST /v1/explain requests per level and server, one document each, against two "
        f"local servers with the bundled CNN (composite {result.get('composite', 'epsilon_gamma')}): one merges "
        "concurrent requests into one "
        "batch (then explained in one pass per group of similar length), the other (`--no-batching`) explains "
        f"each request alone. Documents: the {result['documents']} SpamAssassin test e-mails of up to "
        f"{result['max_characters']:,} characters in turn (e-mails), or their first {result['short']} characters "
        f"(short). Machine: {env['cpu']}, {env['cores']} cores shared with the load generator (a minimal asyncio "
        "client) and with other users of the machine during the run, so the absolute numbers are this machine's "
        f"and the comparison between the two servers is what carries over; torch {env['torch']}, "
        f"{env['torch_threads']} threads. Medians over {result['repeats']} interleaved repetitions; latency is per "
        "request, measured by the client. Regenerate: `python benchmarks/serve_load.py`.",
        "",
        "| documents | concurrency | server | requests / s | p50 ms | p99 ms | errors | requests per batch |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for w in summary:
        for c in levels:
            for name in summary[w]:
                s = summary[w][name][c]
                lines.append(f"| {w} | {c} | {name} | {s['per_second']:.1f} | {s['p50_ms']:.1f} | "
                             f"{s['p99_ms']:.1f} | {s['errors']} | {s['requests_per_batch']:.1f} |")
    lines += ["", "At concurrency 1 no request ever waits for another, so both servers run the same code: their "
              "difference there is the run-to-run noise of this shared machine, against which the other rows are "
              "to be read."]
    stages = list(next(iter(rss["after_level"].values())))
    lines += ["", "Resident memory of each server process (MiB) after the warm-up, after each level (the last "
              "repetition's) and at the end:", "",
              "| server | after warm-up | " + " | ".join(stages) + " | at the end |",
              "|---|---:|" + "---:|" * (len(stages) + 1)]
    for name in rss["after_warm_up"]:
        lines.append(f"| {name} | {rss['after_warm_up'][name]:.0f} | "
                     + " | ".join(f"{rss['after_level'][name][stage]:.0f}" for stage in stages)
                     + f" | {rss['at_the_end'][name]:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
