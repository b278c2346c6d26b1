"""The alert stream end to end: `alertvision predict` on N Avro packets, timed whole and per stage,
against a plain fastavro read of the same bytes in the same run.

    python benchmarks/predict_stream.py [--n 3000] [--threads 1 2] [--arch convnext] [--repeats 3]

The packets are the twelve real ZTF packets of the tests re-serialised with varied objectIds, candids
and jd, one packet per .avro file as in ZTF's nightly archives. The model is the config's multi-modal
``--arch`` (random weights: the speed does not depend on them) exported to ONNX as `alertvision export`
does. Stages, each over all packets on one thread: the plain fastavro read (the baseline: every field of
every packet and of every ``prv_candidates`` entry into dicts), predict's Avro decode of every field
(``project=False``) and its projected decode (only the fields scoring reads:
``alertvision.surveys.ztf.projected_schema``), stamps (gunzip, FITS, normalise: the pipeline's triplet
function), features (the packet's 25), model (the production back-end, batches of `predict`'s size, at 1
thread and at each ``--threads``). End to end: `predict` at each ``--threads``, with the full decode and
with the projected one (the default), the runs interleaved repeat by repeat. Each figure is the median of
``--repeats`` runs; printed per line:
seconds, alerts/s, milliseconds per alert, CPU milliseconds per alert (the process's, all threads) and the
ratio of alerts/s to the plain read's. Then where the CPU milliseconds of one alert go: the decode side
(decode + stamps + features, one thread) and the model (one thread), and the rate a two-stage pipeline on
two cores can reach at most, 1000 / the larger of the two.
The machine's load (``os.getloadavg``) is printed before and after: others' work slows every line alike
only when it is steady, so compare ratios, not alerts/s, across runs.

``--survey lsst``: the 7 real Rubin alerts of the tests (tests/data/lsst_alerts), re-serialised with new
diaSourceIds as Rubin's wire packets (byte 0, the schema id 1000, the schemaless body; the schema from
the installed lsst-alert-packet), one per file as a consumer of Rubin's stream would store them. The
baseline is fastavro's schemaless read of the same bytes; the stages are the LSST plugin's (FITS cutouts,
resampling rule, features from diaSource / diaObject / prvDiaSources); the model is the multi-modal
``--arch`` with the plugin's 23 features; ``predict --survey lsst`` end to end (no projected decode yet).
Both models carry a minimal export contract (random weights, marked synthetic: scores mean nothing, only
the speed counts).
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

from alertvision.config import load_config  # noqa: E402
from alertvision.data.ingest.avro import read_packet_file  # noqa: E402
from alertvision.deploy.predict import BATCH_SIZE, load_model, predict  # noqa: E402
from alertvision.models import build_model  # noqa: E402
from alertvision.models.onnx import onnx_bytes  # noqa: E402
from alertvision.study.jobs import model_spec, training_params  # noqa: E402
from alertvision.surveys import get_survey  # noqa: E402
from alertvision.surveys.ztf import projected_schema  # noqa: E402

REAL_PACKETS = ROOT / "tests" / "data" / "ztf_alerts"
REAL_LSST = ROOT / "tests" / "data" / "lsst_alerts" / "part-2-918301.avro"
LSST_VERSION = "10.0"


def rubin_schema() -> dict:
    """Rubin's alert schema of :data:`LSST_VERSION`, from the installed lsst-alert-packet (never copied)."""
    from lsst.alert.packet import Schema, get_schema_path

    major, minor = LSST_VERSION.split(".")
    return Schema.from_file(f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc").definition


def write_lsst_packets(folder: Path, n: int) -> tuple[list[Path], dict]:
    """``n`` wire packets (one per file) made from the real Rubin alerts with new diaSourceIds; and the
    parsed schema."""
    from alertvision.surveys.lsst.packets import encode_wire, schema_id

    schema = fastavro.parse_schema(rubin_schema())
    with open(REAL_LSST, "rb") as fh:
        records = list(fastavro.reader(fh))
    # the redistributing broker writes an absent sub-record as a record of nulls where Rubin's is null
    records = [
        {k: None if isinstance(v, dict) and all(x is None for x in v.values()) else v for k, v in r.items()}
        for r in records
    ]
    paths = []
    for i in range(n):
        base = records[i % len(records)]
        aid = 3_000_000_000_000 + i
        packet = {**base, "diaSourceId": aid, "diaSource": {**base["diaSource"], "diaSourceId": aid}}
        path = folder / f"{aid}.avro"
        path.write_bytes(encode_wire(packet, schema, schema_id(LSST_VERSION)))
        paths.append(path)
    return paths, schema


def with_contract(blob: bytes, survey: str, features: list[str], channels: list[str], size: int) -> bytes:
    """A bare ONNX model with the minimal alertvision contract predict checks (random weights: synthetic)."""
    import json

    import onnx

    block = get_survey(survey).survey_block()
    props = {
        "alertvision.survey": survey.upper(),
        "alertvision.survey_block": {**block, "config": {}},
        "alertvision.inputs": ["triplet", "metadata"],
        "alertvision.input_shapes": {
            "triplet": ["batch", len(channels), size, size],
            "metadata": ["batch", len(features)],
        },
        "alertvision.channels": channels,
        "alertvision.metadata_features": features,
        "alertvision.metadata_fill": {"policy": "zero", "values": [0.0] * len(features), "inside_graph": True},
        "alertvision.calibration": {"method": "none"},
        "alertvision.thresholds": {"policies": {}},
        "alertvision.synthetic": True,
    }
    proto = onnx.load_from_string(blob)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    return proto.SerializeToString()


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


def export_model(config: dict, arch: str, folder: Path, survey: str = "ztf") -> Path:
    """The config's multi-modal ``arch`` (random weights, zero fill) for ``survey``'s inputs as an ONNX file
    with the minimal contract :func:`with_contract` writes."""
    import torch

    plugin = get_survey(survey)
    features = list(plugin.feature_names)
    torch.manual_seed(0)
    spec = model_spec(config, arch, "multimodal").with_values(metadata_fill="zero")
    fill = [0.0] * len(features)
    model = build_model(
        spec, training_params(config, arch, "multimodal"), metadata_fill=fill, metadata_features=features
    )
    model = model.eval()
    channels = list(plugin.triplet_spec.channels)
    path = folder / "model.onnx"
    path.write_bytes(with_contract(onnx_bytes(model), survey, features, channels, plugin.triplet_spec.size))
    return path


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """The median wall-clock seconds of ``repeats`` calls of ``fn`` and the median CPU seconds of this process
    over them (all its threads: above the wall time where several work at once)."""
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="packets (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="predict's --threads (default: 1 2)")
    parser.add_argument("--arch", default="convnext", help="the config's architecture (default: %(default)s)")
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--survey", choices=("ztf", "lsst"), default="ztf", help="whose packets (default: ztf)")
    args = parser.parse_args()
    config = load_config(args.config)
    lsst = args.survey == "lsst"
    plugin = get_survey(args.survey)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "packets").mkdir()
        if lsst:
            paths, schema = write_lsst_packets(tmp / "packets", args.n)
        else:
            paths = write_packets(tmp / "packets", args.n)
        model_path = export_model(config, args.arch, tmp, args.survey)
        blobs = [p.read_bytes() for p in paths]
        if lsst:
            packets = [fastavro.schemaless_reader(io.BytesIO(b[5:]), schema, None) for b in blobs]
        else:
            packets = [next(iter(fastavro.reader(io.BytesIO(b)))) for b in blobs]
        triplets = np.stack([plugin.triplet(p) for p in packets])
        features = np.stack([plugin.features(p) for p in packets])

        def read_plain() -> None:
            for path in paths:
                if lsst:  # the file's bytes, read whole as a consumer does, past the 5-byte wire header
                    body = io.BytesIO(path.read_bytes())
                    body.seek(5)
                    fastavro.schemaless_reader(body, schema, None)
                    continue
                with open(path, "rb") as fh:
                    for _ in fastavro.reader(fh):
                        pass

        def decode() -> None:
            for path in paths:
                for _ in plugin.read(path.read_bytes(), str(path)):
                    pass

        def decode_predict(project) -> None:  # predict's reader of ZTF files
            for path in paths:
                for _ in read_packet_file(path, project):
                    pass

        def score(threads: int) -> None:
            session = models[threads]
            for start in range(0, len(packets), BATCH_SIZE):
                session.logits(triplets[start : start + BATCH_SIZE], features[start : start + BATCH_SIZE])

        models = {t: load_model(model_path, threads=t, survey=args.survey) for t in sorted({1, *args.threads})}
        n = len(paths)
        load_before = os.getloadavg()
        lines = [("plain fastavro read (baseline)", median_seconds(read_plain, args.repeats))]
        if lsst:
            lines.append(("stage: decode (the survey plugin's reader)", median_seconds(decode, args.repeats)))
        else:
            lines.append(
                ("stage: Avro decode, every field", median_seconds(lambda: decode_predict(None), args.repeats))
            )
            lines.append(
                (
                    "stage: Avro decode, projected",
                    median_seconds(lambda: decode_predict(projected_schema), args.repeats),
                )
            )
        stamps = "stamps (FITS cutouts, NaN rule, fit, normalise)" if lsst else "stamps (gunzip, FITS, normalise)"
        lines.append((f"stage: {stamps}", median_seconds(lambda: [plugin.triplet(p) for p in packets], args.repeats)))
        lines.append(("stage: features", median_seconds(lambda: [plugin.features(p) for p in packets], args.repeats)))
        for threads in sorted(models):
            lines.append(
                (
                    f"stage: model ({args.arch}@63, onnxruntime, {threads} thread{'s' if threads > 1 else ''})",
                    median_seconds(lambda: score(threads), args.repeats),
                )
            )
        runs = [(False, t, None) for t in args.threads]  # every field decoded (the path before projection)
        if not lsst:
            runs += [(True, t, None) for t in args.threads]
            runs += [(True, t, t) for t in args.threads if t > 1]  # the model on all threads, beside the decode
        # the end-to-end runs interleaved, repeat by repeat, so that a change in the machine's load falls on all
        timed: dict[tuple, list[tuple[float, float]]] = {run: [] for run in runs}
        for _ in range(args.repeats):
            for project, threads, model_threads in runs:
                timed[(project, threads, model_threads)].append(
                    median_seconds(
                        lambda: predict(
                            [tmp / "packets"],
                            model_path,
                            tmp / f"out{threads}.parquet",
                            threads=threads,
                            progress=False,
                            survey=args.survey,
                            project=project,
                            model_threads=model_threads,
                        ),
                        1,
                    )
                )
        for (project, threads, model_threads), times in timed.items():
            how = "" if lsst else (", projected decode" if project else ", every field decoded")
            how += "" if threads == 1 else f", model on {model_threads or threads - 1}"
            seconds = (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))
            lines.append((f"predict end to end, --threads {threads}{how}", seconds))
        load_after = os.getloadavg()

    baseline = lines[0][1][0]
    print(
        f"{n} {args.survey.upper()} packets, {os.cpu_count()} CPUs; median of {args.repeats} runs; "
        "ratio = alerts/s / plain read's"
    )
    print(
        "load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
            *load_before, *load_after
        )
    )
    print(f"{'':66s} {'seconds':>8s} {'alerts/s':>9s} {'ms/alert':>9s} {'CPU ms':>7s} {'ratio':>6s}")
    for name, (seconds, cpu) in lines:
        print(
            f"{name:66s} {seconds:8.2f} {n / seconds:9.0f} {1000 * seconds / n:9.3f} {1000 * cpu / n:7.3f} "
            f"{baseline / seconds:6.2f}"
        )
    # where one alert's milliseconds go, in CPU time (what a busy machine's other work inflates least)
    per_alert = {name: 1000 * cpu / n for name, (_, cpu) in lines}
    decode_line = "stage: decode (the survey plugin's reader)" if lsst else "stage: Avro decode, projected"
    side = per_alert[decode_line] + per_alert[f"stage: {stamps}"] + per_alert["stage: features"]
    model_ms = next(v for k, v in per_alert.items() if k.startswith("stage: model") and "1 thread)" in k)
    print(
        f"one alert, CPU: decode side {side:.3f} ms (decode {per_alert[decode_line]:.3f} + stamps "
        f"{per_alert[f'stage: {stamps}']:.3f} + features {per_alert['stage: features']:.3f}), model {model_ms:.3f} ms "
        f"(1 thread); two stages on two cores reach at most {1000 / max(side, model_ms):.0f} alerts/s "
        f"({'model' if model_ms > side else 'decode'}-bound), one core {1000 / (side + model_ms):.0f}"
    )


if __name__ == "__main__":
    main()
