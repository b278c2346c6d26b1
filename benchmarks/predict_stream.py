"""The alert stream end to end: `alertvision predict` on N Avro packets, timed whole and per stage,
against a plain fastavro read of the same bytes in the same run.

    python benchmarks/predict_stream.py [--n 3000] [--threads 1 2] [--arch convnext] [--repeats 3]

The packets are the twelve real ZTF packets of the tests re-serialised with varied objectIds, candids
and jd, one packet per .avro file as in ZTF's nightly archives. The model is the config's multi-modal
``--arch`` (random weights: the speed does not depend on them) exported to ONNX as `alertvision export`
does. Stages, each over all packets on one thread: Avro decode (the plain fastavro read: the
baseline), stamps (gunzip, FITS, normalise: the pipeline's triplet function), features (the packet's
25), model (the production back-end, batches of `predict`'s size). End to end: `predict` at each
``--threads``. Prints alerts/s per line and the ratio to the plain read; each figure is the median
of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import fastavro  # noqa: E402
import numpy as np  # noqa: E402

from alertvision.config import load_config, model_spec, training_params  # noqa: E402
from alertvision.data.ingest.packets import packet_features  # noqa: E402
from alertvision.data.triplet import triplet_from_alert  # noqa: E402
from alertvision.deploy.predict import BATCH_SIZE, load_model, predict  # noqa: E402
from alertvision.models import build_model  # noqa: E402
from alertvision.models.onnx import onnx_bytes  # noqa: E402

REAL_PACKETS = ROOT / "tests" / "data" / "ztf_alerts"


def write_packets(folder: Path, n: int) -> list[Path]:
    """``n`` single-packet .avro files made from the real packets with new objectIds, candids and jd."""
    schema, records = None, []
    for path in sorted(REAL_PACKETS.glob("*.avro")):
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            schema = schema or reader.writer_schema
            records.extend(reader)
    parsed = fastavro.parse_schema(schema)
    paths = []
    for i in range(n):
        base = records[i % len(records)]
        candidate = {**base["candidate"], "jd": base["candidate"]["jd"] + i * 1e-4, "candid": 2_000_000_000_000 + i}
        packet = {**base, "objectId": f"ZTF26bench{i // 3:06d}", "candid": candidate["candid"], "candidate": candidate}
        path = folder / f"{candidate['candid']}.avro"
        with open(path, "wb") as fh:
            fastavro.writer(fh, parsed, [packet])
        paths.append(path)
    return paths


def export_model(config: dict, arch: str, folder: Path) -> Path:
    """The config's multi-modal ``arch`` (random weights) as an ONNX file."""
    import torch

    torch.manual_seed(0)
    spec = model_spec(config, arch, "multimodal")
    model = build_model(spec, training_params(config, arch, "multimodal")).eval()
    path = folder / "model.onnx"
    path.write_bytes(onnx_bytes(model))
    return path


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="packets (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="predict's --threads (default: 1 2)")
    parser.add_argument("--arch", default="convnext", help="the config's architecture (default: %(default)s)")
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "packets").mkdir()
        paths = write_packets(tmp / "packets", args.n)
        model_path = export_model(config, args.arch, tmp)
        blobs = [p.read_bytes() for p in paths]
        packets = [next(iter(fastavro.reader(io.BytesIO(b)))) for b in blobs]
        model = load_model(model_path, threads=1)
        triplets = np.stack([triplet_from_alert(p) for p in packets])
        features = np.stack([packet_features(p) for p in packets])

        def read_plain() -> None:
            for path in paths:
                with open(path, "rb") as fh:
                    for _ in fastavro.reader(fh):
                        pass

        def score() -> None:
            for start in range(0, len(packets), BATCH_SIZE):
                model.logits(triplets[start : start + BATCH_SIZE], features[start : start + BATCH_SIZE])

        n = len(paths)
        lines = [("plain fastavro read (baseline)", median_seconds(read_plain, args.repeats))]
        lines.append(("stage: Avro decode", lines[0][1]))
        lines.append(
            (
                "stage: stamps (gunzip, FITS, normalise)",
                median_seconds(lambda: [triplet_from_alert(p) for p in packets], args.repeats),
            )
        )
        lines.append(("stage: features", median_seconds(lambda: [packet_features(p) for p in packets], args.repeats)))
        lines.append((f"stage: model ({args.arch}@63, onnxruntime, 1 thread)", median_seconds(score, args.repeats)))
        for threads in args.threads:
            out = tmp / f"out{threads}.parquet"
            seconds = median_seconds(
                lambda: predict([tmp / "packets"], model_path, out, threads=threads, progress=False), args.repeats
            )
            lines.append((f"predict end to end, --threads {threads}", seconds))

    baseline = lines[0][1]
    print(f"{n} packets, {os.cpu_count()} CPUs; median of {args.repeats} runs; ratio = alerts/s / plain read's")
    print(f"{'':48s} {'seconds':>8s} {'alerts/s':>9s} {'ratio':>6s}")
    for name, seconds in lines:
        print(f"{name:48s} {seconds:8.2f} {n / seconds:9.0f} {baseline / seconds:6.2f}")


if __name__ == "__main__":
    main()
