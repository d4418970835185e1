"""/v1/score under load: requests/s and p50/p95 latency with 1 and 8 concurrent clients,
with request batching (``--max-batch 8``, merging what is queued, or also waiting 5 ms for more)
and one image per forward pass (``--max-batch 1``).

Each configuration runs ``qsit serve`` as its own process on 127.0.0.1 and
sends a bounded number of requests (one image each) from client threads.

    python bench/server_throughput.py [--model DIR] [--requests 96]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_payloads(n: int) -> list[bytes]:
    sys.path.insert(0, os.path.dirname(__file__))
    from score_throughput import bench_images

    out = []
    for img in bench_images(n):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        out.append(json.dumps({"image": url}).encode())
    return out


def post(url: str, body: bytes) -> float:
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
    return time.perf_counter() - t0


def run_config(model: str, max_batch: int, clients: int, payloads: list[bytes], wait_ms: float = 0.0) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "qsit.cli", "serve", "--model", model, "--port", str(port),
                             "--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.3)
        url = f"{base}/v1/score"
        for body in payloads[:4]:
            post(url, body)  # warm-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(lambda b: post(url, b), payloads))
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = np.array(latencies) * 1000
    return {"max_batch": max_batch, "wait_ms": wait_ms, "clients": clients, "requests": len(payloads), "requests_per_s": len(payloads) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: build the tiny random one)")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--out", default="bench/results/server_throughput.json")
    args = parser.parse_args(argv)
    payloads = image_payloads(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from qsit.tiny import build_tiny_checkpoint

            model = build_tiny_checkpoint(os.path.join(tmp, "tiny"))
        configs = [(1, 0.0), (8, 0.0), (8, 5.0)]
        rows = [run_config(model, b, c, payloads, w) for c in (1, 8) for b, w in configs]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"model": args.model or "tiny (random weights)", "rows": rows}, f, indent=2)
    print("| clients | batching | requests/s | p50 ms | p95 ms |\n|---|---|---|---|---|")
    for r in rows:
        mode = (f"up to {r['max_batch']} per pass, wait {r['wait_ms']:g} ms" if r["max_batch"] > 1
                else "one per pass")
        print(f"| {r['clients']} | {mode} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |")


if __name__ == "__main__":
    main()
