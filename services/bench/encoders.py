"""The ceilings: encoder-only throughput on the real tweet-length distribution, per precision."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from models.registry import ScoringHead
from pipelines.scoring import InferenceEngine

log = logging.getLogger("voxpop.bench")


@dataclass
class Rate:
    name: str
    posts: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.posts / self.seconds


def _timed(warm: Callable[[], object], timed: Callable[[], object], n: int, name: str) -> Rate:
    """Run `warm` (allocator, oneDNN kernels, quantised weights), then time `timed` once."""
    warm()
    t = time.perf_counter()
    timed()
    return Rate(name, n, time.perf_counter() - t)


def _split_warm(texts: list[str], batch: int) -> tuple[list[str], list[str]]:
    """Warm-up posts and timed posts, disjoint: every timed post is new to the encoder.

    Re-encoding the same posts flatters the encoder: their bucket shapes recur, so oneDNN's kernels
    and the pages they touch are all warm, so repeated posts run faster and fault fewer pages than
    new ones. A scorer only ever sees new posts, so the ceilings do too.
    """
    k = min(4 * batch, len(texts) // 4)
    return texts[:k], texts[k:]


def text_ceiling(head: ScoringHead, texts: list[str], precision: str, batch: int = 64, bucket: int = 0) -> Rate:
    """Encoder alone (tokenise + forward), batches of `batch` in stream order, each post once."""
    eng = InferenceEngine(head, precision=precision, bucket_call_tokens=bucket)
    warm, timed = _split_warm(texts, batch)

    def run(tx: list[str]) -> Callable[[], None]:
        def go() -> None:
            for i in range(0, len(tx), batch):
                chunk = tx[i : i + batch]
                eng.encode(chunk, tokens=eng.tokenize(chunk))

        return go

    label = f"text {precision} b{batch}" + (f" bucket{bucket}" if bucket else "")
    return _timed(run(warm), run(timed), len(timed), label)


def text_single(head: ScoringHead, texts: list[str]) -> Rate:
    eng = InferenceEngine(head, precision="fp32")
    warm, timed = _split_warm(texts, 1)
    return _timed(
        lambda: [eng.encode([t]) for t in warm],
        lambda: [eng.encode([t]) for t in timed],
        len(timed),
        "text fp32 one post at a time",
    )


def image_ceiling(paths: list[Path], precision: str, batch: int = 32) -> Rate:
    from models.image_encoder import ImageEncoder

    enc = ImageEncoder().eval()
    imgs = [Image.open(p).convert("RGB") for p in paths]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def run() -> None:
        with ctx:
            for i in range(0, len(imgs), batch):
                enc.encode(torch.stack([enc.preprocess(im) for im in imgs[i : i + batch]]))

    return _timed(run, run, len(imgs), f"image {precision} b{batch}")


def text_ceiling_per_core(
    model: str,
    texts: list[str],
    precision: str,
    procs: int,
    bucket: int = 32,
    batch: int = 64,
    seconds: float = 8.0,
    compile: bool = False,
) -> Rate:
    """`procs` encoder-only processes of one torch thread each, timed over the same window.

    On small CPUs one single-threaded process per core beats one process with every core (no
    OpenMP hand-offs on tweet-sized matrices), so this is part of the ceiling the scorer is
    measured against. Each child takes its own contiguous share of `texts` (as each scorer gets
    its own partitions), warms up on the share's first batches and says it is ready; once every
    child is, all are told to go and encode the rest of their share in order for `seconds`, each
    post once; the rates add up. A handshake rather than a start time: a busy machine makes the
    loading and compiling slow, never the measurement wrong.
    Give it enough posts that no child runs out (one that does starts its share again, and the
    result says so: repeated posts run faster, see `_split_warm`).
    """
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    cmd = [
        sys.executable,
        "-m",
        "services.bench.encoders",
        model,
        precision,
        f.name,
        str(bucket),
        str(batch),
        str(seconds),
        "1" if compile else "0",
    ]
    kids = [
        subprocess.Popen([*cmd, str(i), str(procs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for i in range(procs)
    ]
    try:
        for k in kids:  # each child loads, compiles and warms up, then says so
            assert k.stdout is not None and k.stdin is not None
            if k.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a ceiling child exited ({k.wait()}) before it was ready; see its stderr above")
        for k in kids:
            stdin = k.stdin
            if stdin is None:  # never: the children are started with stdin=PIPE
                raise RuntimeError("a ceiling child has no stdin pipe")
            stdin.write("go\n")
            stdin.flush()
        rates = [json.loads(k.communicate(timeout=max(300.0, 20 * seconds))[0].strip().splitlines()[-1]) for k in kids]
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()
        Path(f.name).unlink(missing_ok=True)
    if any(r["repeated"] for r in rates):
        log.warning(
            "a ceiling child ran out of new posts and encoded %d again: give it more than %d posts",
            max(r["repeated"] for r in rates),
            len(texts),
        )
    return Rate(
        f"text {precision}{' compiled' if compile else ''} b{batch} bucket{bucket} x{procs} processes",
        sum(r["posts"] for r in rates),
        max(r["seconds"] for r in rates),
    )


def _child(
    model: str,
    precision: str,
    texts_path: str,
    bucket: str,
    batch: str,
    seconds: str,
    compile: str,
    part: str,
    parts: str,
) -> None:
    import json
    import sys

    from models.registry import load_head
    from pipelines.allocator import keep_freed_memory

    keep_freed_memory()  # as the scorer does: the ceiling gets the same allocator
    torch.set_num_threads(1)
    texts = json.loads(Path(texts_path).read_text())
    texts = texts[len(texts) * int(part) // int(parts) : len(texts) * (int(part) + 1) // int(parts)]
    eng = InferenceEngine(load_head(model), precision=precision, bucket_call_tokens=int(bucket), compile=compile == "1")
    b = int(batch)
    chunks = [texts[i : i + b] for i in range(0, len(texts), b)]
    warm = min(4, len(chunks) // 4)
    for c in chunks[:warm]:
        eng.encode(c, tokens=eng.tokenize(c))
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every child is warm
    t0, n, i = time.perf_counter(), 0, warm
    while time.perf_counter() - t0 < float(seconds):
        c = chunks[i % len(chunks)]
        eng.encode(c, tokens=eng.tokenize(c))
        n, i = n + len(c), i + 1
    repeated = sum(len(chunks[j % len(chunks)]) for j in range(len(chunks), i))
    print(json.dumps({"posts": n, "seconds": time.perf_counter() - t0, "repeated": repeated}))


if __name__ == "__main__":
    import sys

    _child(*sys.argv[1:])
