"""The image encoder at full speed on CPU (issue 18): ONNX Runtime session settings measured, the
stages around inference timed, fp32 against int8, and the image query end to end.

    python bench/encoder_bench.py --model-repo model_repo [--int8-repo /tmp/mr_int8] [--only ort|stages|e2e]

- `ort`: for each model, each session setting: batch-1 latency p50, the process's CPU per inference
  (spinning intra-op threads burn CPU while they wait), and batch-32 time per image.
- `stages`: decode (Pillow, JPEG draft), resize (Pillow; OpenCV when installed), normalise, on
  96 px scanner frames (skulens.data.views) sent as JPEG.
- `e2e`: Search by JPEG through `skulens serve` at concurrency 1 against bare fp32 ONNX Runtime on the
  same preprocessed tensors in the same run; every frame distinct (no query-cache hits).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

OUT = Path(__file__).resolve().parent


def settings():
    """name -> SessionOptions tweaks (over the serving defaults in encode/runners.py)."""
    return {
        "ORT defaults (all cores, spinning)": dict(),
        "1 thread": dict(threads=1),
        "2 threads, no spinning": dict(threads=2, spin=False),
        "1 thread, no spinning": dict(threads=1, spin=False),
        "1 thread, no spinning, basic graph opt": dict(threads=1, spin=False, opt="basic"),
        "1 thread, no spinning, no arena": dict(threads=1, spin=False, arena=False),
        "1 thread, no spinning, IO binding": dict(threads=1, spin=False, iobind=True),
    }


def session(path: str, threads=None, spin=True, opt="all", arena=True, iobind=False):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[opt]
    if threads:
        o.intra_op_num_threads = threads
    if not spin:
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.enable_cpu_mem_arena = arena
    return ort.InferenceSession(path, sess_options=o, providers=["CPUExecutionProvider"])


def _caller(s, x: np.ndarray, iobind: bool):
    name = s.get_inputs()[0].name
    if iobind:
        import onnxruntime as ort
        b = s.io_binding()
        b.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x))
        b.bind_output(s.get_outputs()[0].name)
        return lambda: s.run_with_iobinding(b)
    return lambda: s.run(None, {name: x})


def time_sessions(sessions: dict, x1: np.ndarray, x32: np.ndarray, rounds: int = 7, runs: int = 60) -> dict:
    """Every session timed in interleaved rounds (this VM's noise then falls on all alike): batch-1
    p50 and the process's CPU per inference, and batch-32 time per image; medians over rounds."""
    calls = {k: (_caller(s, x1, iob), _caller(s, x32, False)) for k, (s, iob) in sessions.items()}
    rec = {k: {"b1": [], "cpu": [], "b32": []} for k in sessions}
    for k, (one, _) in calls.items():
        for _ in range(10):
            one()
    for _ in range(rounds):
        for k, (one, many) in calls.items():
            lat = []
            c0 = time.process_time()
            for _ in range(runs):
                t = time.perf_counter_ns()
                one()
                lat.append(time.perf_counter_ns() - t)
            rec[k]["cpu"].append((time.process_time() - c0) / runs)
            rec[k]["b1"].append(np.median(lat) / 1e9)
            t = time.perf_counter()
            many()
            rec[k]["b32"].append((time.perf_counter() - t) / 32)
    return {k: {"b1_p50_ms": float(np.median(r["b1"])) * 1e3, "b1_cpu_ms": float(np.median(r["cpu"])) * 1e3,
                "b32_ms_per_image": float(np.median(r["b32"])) * 1e3} for k, r in rec.items()}


def frames(n: int, size: int = 96, seed: int = 7) -> list[bytes]:
    """Scanner frames of Fashion-MNIST test articles as JPEG bytes (each one distinct)."""
    from PIL import Image

    from skulens.data.datasets import load
    from skulens.data.views import ViewMaker
    raw = load("test")[0][:n]
    views = ViewMaker(raw, size, seed=seed)(np.arange(len(raw)))
    out = []
    for v in views:
        buf = io.BytesIO()
        Image.fromarray(v).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def ort_part(repos: dict, size_of) -> dict:
    out = {}
    for model, path in repos.items():
        size = size_of(model)
        rng = np.random.default_rng(0)
        x1 = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        x32 = rng.standard_normal((32, 3, size, size)).astype(np.float32)
        sessions = {}
        for name, kw in settings().items():
            iob = kw.pop("iobind", False)
            sessions[name] = (session(path, **kw), iob)
        for name, r in time_sessions(sessions, x1, x32).items():
            out[f"{model} | {name}"] = r
            print(f"{model:5s} {name:42s} b1 p50 {r['b1_p50_ms']:.3f} ms  CPU {r['b1_cpu_ms']:.3f} ms  "
                  f"b32 {r['b32_ms_per_image']:.3f} ms/img", flush=True)
    return out


def stages_part(size: int, jpegs: list[bytes]) -> dict:
    from PIL import Image

    from skulens.data.preprocess import fit_square
    from skulens.encode.image import ImageEncoder  # noqa: F401 - the serving decode path below
    from skulens.security.images import ImagePolicy
    pol = ImagePolicy()

    def decode(b):
        im = pol.open(b)
        im.draft("RGB", (size, size))
        im.load()
        return im.convert("RGB") if im.mode not in ("RGB", "L") else im

    def t(fn, items):
        ts = []
        for i in items:
            a = time.perf_counter_ns()
            fn(i)
            ts.append(time.perf_counter_ns() - a)
        return float(np.median(ts)) / 1e3
    ims = [decode(b) for b in jpegs]
    mean = np.asarray([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
    std = np.asarray([58.395, 57.12, 57.375], np.float32).reshape(3, 1, 1)
    px = [fit_square(im, size) for im in ims]
    out = {"frame_px": list(ims[0].size), "jpeg_bytes_p50": float(np.median([len(b) for b in jpegs])),
           "decode_us (Pillow, draft)": t(decode, jpegs),
           "resize+crop_us (Pillow BILINEAR, fit_square)": t(lambda im: fit_square(im, size), ims),
           "normalise_us (numpy, HWC uint8 -> NCHW float32)": t(
               lambda p: (p.transpose(2, 0, 1).astype(np.float32) - mean) / std, px)}
    try:
        import cv2
        arrs = [np.asarray(im) for im in ims]
        out["resize_us (OpenCV INTER_LINEAR)"] = t(lambda a: cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR),
                                                  arrs)
    except ImportError:
        out["resize_us (OpenCV INTER_LINEAR)"] = None
    out["resize_us (Pillow, already at size)"] = t(lambda im: im.resize((size, size), Image.BILINEAR), ims)
    print("stages:", json.dumps(out, indent=1), flush=True)
    return out


def e2e_part(args, jpegs: list[bytes]) -> dict:
    """Search by JPEG through skulens serve (fp32 with today's session settings, fp32 with ORT's
    spinning pool as before, int8 when given), at concurrency 1 against bare fp32 ONNX Runtime on
    the same preprocessed tensors, then at concurrency 4; interleaved rounds, every frame sent once
    per server (the query cache never answers)."""
    import grpc

    import grpc_floor as floor
    from skulens.client.client import search_request
    from skulens.encode import ImageEncoder
    from skulens.v1 import skulens_pb2 as pb
    systems = {"fp32": (args.model_repo, {}), "fp32, spinning ORT pool": (args.model_repo, {"SKULENS_ENCODER_SPIN": "1"})}
    if args.int8_repo:
        systems["int8"] = (args.int8_repo, {})
    half = len(jpegs) // 2
    one, four = jpegs[:half], jpegs[half:]
    enc = ImageEncoder(os.path.join(args.model_repo, "image_encoder"))
    tensors = [enc.preprocess([enc.decode(b)]) for b in one]
    bare = session(os.path.join(args.model_repo, "image_encoder", "1", "model.onnx"), threads=1, spin=False)
    skulens = [str(Path(sys.executable).with_name("skulens")), "serve", "--port", "0"]
    children, res = {}, {}
    work = Path(args.work)
    method = "/skulens.v1.ProductSearch/Search"
    try:
        for i, (name, (repo, env)) in enumerate(systems.items()):
            children[name] = floor.start_child(skulens + ["--data", str(work / f"e2e-{i}"), "--model-repo", repo],
                                               floor.skulens_port, env={**os.environ, **env})
        p1 = [search_request(image=b, top_k=10).SerializeToString() for b in one]
        p4 = [search_request(image=b, top_k=10).SerializeToString() for b in four]
        for rnd in range(3):
            part = slice(rnd * len(p1) // 3, (rnd + 1) * len(p1) // 3)
            ts = []
            for x in tensors[part]:
                a = time.perf_counter_ns()
                bare.run(None, {"pixels": x})
                ts.append(time.perf_counter_ns() - a)
            res.setdefault("bare", []).extend(ts)
            for name, (p, port) in children.items():
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    f = ch.unary_unary(method, response_deserializer=pb.SearchResponse.FromString)
                    lat, srv = [], []
                    for b in p1[part]:
                        a = time.perf_counter_ns()
                        r = f(b)
                        lat.append(time.perf_counter_ns() - a)
                        srv.append((r.timings.total_us, r.timings.decode_us, r.timings.preprocess_us,
                                    r.timings.encode_us, r.timings.search_us, r.timings.cache_hit))
                res.setdefault(name, []).extend(lat[5:] if rnd == 0 else lat)   # the first few warm it
                res.setdefault(name + " server", []).extend(srv[5:] if rnd == 0 else srv)
                q = p4[rnd * len(p4) // 3:(rnd + 1) * len(p4) // 3]
                res.setdefault(name + " c4", []).append(floor.drive(floor.caller(port, method), q, 4, len(q), p.pid))
    finally:
        for p, _ in children.values():
            floor.stop_child(p)
    out = {"bare_fp32_p50_ms": float(np.median(res["bare"])) / 1e6}
    for name in systems:
        lat = np.asarray(res[name]) / 1e6
        srv = np.asarray(res[name + " server"], dtype=np.float64)
        c4 = res[name + " c4"]
        out[name] = {"c1_p50_ms": float(np.median(lat)), "c1_p99_ms": float(np.percentile(lat, 99)),
                     "server_total_p50_ms": float(np.median(srv[:, 0])) / 1e3,
                     "decode_p50_us": float(np.median(srv[:, 1])), "preprocess_p50_us": float(np.median(srv[:, 2])),
                     "encode_p50_us": float(np.median(srv[:, 3])), "search_p50_us": float(np.median(srv[:, 4])),
                     "cache_hits": int(srv[:, 5].sum()),
                     "c1_ratio_to_bare_fp32": float(np.median(lat)) / out["bare_fp32_p50_ms"],
                     "c4_qps": float(np.median([r["qps"] for r in c4])),
                     "c4_p50_ms": float(np.median([r["p50_us"] for r in c4])) / 1e3,
                     "c4_server_cpu_ms_per_query": float(np.median([r["server_cpu_us"] for r in c4])) / 1e3}
        print(f"e2e {name}: {out[name]}", flush=True)
    print(f"bare fp32 ORT p50 {out['bare_fp32_p50_ms']:.3f} ms", flush=True)
    return out


def triton_part(args, jpegs: list[bytes]) -> dict:
    """Image bytes -> embedding at concurrency 1/8/32: in-process ONNX Runtime (decode, preprocess,
    encode here) against the Triton ensemble (bytes sent as they are) with its dynamic batcher on
    and off; interleaved rounds, distinct frames (no cache)."""
    from concurrent.futures import ThreadPoolExecutor

    from skulens.encode import ImageEncoder
    from skulens.encode.triton import TritonServer
    folder = os.path.join(args.model_repo, "image_encoder")
    local = ImageEncoder(folder)
    out = {}
    with TritonServer(args.model_repo, threads=1) as on, TritonServer(args.model_repo, threads=1, batching=False) as off:
        systems = {"in-process ONNX Runtime": lambda b: local.encode(local.preprocess([local.decode(b)])),
                   "Triton ensemble, dynamic batching": ImageEncoder(folder, triton=on.url).encode_bytes,
                   "Triton ensemble, no batching": ImageEncoder(folder, triton=off.url).encode_bytes}
        for name, fn in systems.items():
            fn([jpegs[0]]) if name.startswith("Triton") else fn(jpegs[0])
        for conc in (1, 8, 32):
            rows = {name: [] for name in systems}
            per = len(jpegs) // (3 * len(systems))
            for rnd in range(3):
                for j, (name, fn) in enumerate(systems.items()):
                    part = jpegs[(rnd * len(systems) + j) * per:(rnd * len(systems) + j + 1) * per]
                    call = (lambda b, fn=fn: fn([b])) if name.startswith("Triton") else fn

                    def timed(b, call=call):
                        t = time.perf_counter_ns()
                        call(b)
                        return time.perf_counter_ns() - t
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(conc) as pool:
                        lat = list(pool.map(timed, part))
                    rows[name].append((len(part) / (time.perf_counter() - t0), np.median(lat) / 1e6,
                                       np.percentile(lat, 99) / 1e6))
            for name, r in rows.items():
                a = np.asarray(r)
                row = {"qps": float(np.median(a[:, 0])), "p50_ms": float(np.median(a[:, 1])),
                       "p99_ms": float(np.median(a[:, 2]))}
                out[f"c={conc} | {name}"] = row
                print(f"c={conc:2d} {name:36s} {row['qps']:7.0f} qps  p50 {row['p50_ms']:6.2f} ms  "
                      f"p99 {row['p99_ms']:6.2f} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--int8-repo", help="a model repo exported with `skulens-train export --int8`")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--work", default="/tmp/skulens-encoder-bench")
    ap.add_argument("--only", choices=["ort", "stages", "e2e", "triton"])
    ap.add_argument("--out", type=Path, default=OUT / "encoder_bench.json")
    args = ap.parse_args()
    from scaleout_bench import cpu_model
    from skulens.encode import model_repo
    repos = {"fp32": os.path.join(args.model_repo, "image_encoder", "1", "model.onnx")}
    if args.int8_repo:
        repos["int8"] = os.path.join(args.int8_repo, "image_encoder", "1", "model.onnx")
    size = int(model_repo.read_meta(os.path.join(args.model_repo, "image_encoder"))["input_size"])
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "input_px": size, "command": " ".join(sys.argv)}
    if args.only in (None, "ort"):
        result["ort"] = ort_part(repos, lambda m: size)
    jpegs = frames(2 * args.queries) if args.only in (None, "stages", "e2e", "triton") else []
    if args.only in (None, "stages"):
        result["stages"] = stages_part(size, jpegs[:500])
    if args.only in (None, "e2e"):
        result["e2e"] = e2e_part(args, jpegs)
    if args.only in (None, "triton"):
        result["triton"] = triton_part(args, jpegs)
    old = json.loads(args.out.read_text()) if args.out.exists() and args.only else {}
    args.out.write_text(json.dumps({**old, **result}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
