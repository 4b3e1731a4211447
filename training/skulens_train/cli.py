"""python -m skulens_train {fit,evaluate,export,report} --config NAME|FILE [key=value ...]

  fit       train (resumes from RUN/checkpoint.pt when present)
  evaluate  Recall@K / mAP@R on Fashion-MNIST test + scanner views -> RUN/eval.json
  export    ONNX into model_repo/ (image encoder; the text projection with --text RUN)
  experiments  the methods table, one row per configs/experiment.toml + overrides
  baselines raw pixels and zero-shot Lite0 on the same benchmark -> RUNS/baselines.json
  text      train + evaluate a text branch against an image run (--run RUN, arch=minilm|bilstm)
  category  the clean-category capacity probe: the image tower trained for categories alone
            (model.input_size=64 epochs=3 ...) -> RUNS/probes/category-ARCH-SIZEpx-Nep.json
  objectness  fit scene search's objectness head to the image model in --model-repo, on shelves of
            training articles (seed=1 fit_scenes=400 ...) -> RUN/objectness.json and the model's folder

Every command takes the same key=value grammar (config.py): fit reads config.Config, text
config.Text, category config.Probe, objectness config.Objectness; e.g. optim.steps=50 or model.input_size=96.
  report    the experiments table, plots and markdown (training/REPORT.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _run_dir(args, cfg) -> str:
    return args.run or os.path.join(args.runs, cfg.name)


def _load(ap, args, cls):
    """The command's config (--config + key=value overrides), or a usage error naming the setting."""
    from . import config as C
    try:
        return C.load(args.config, args.overrides, cls)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))


def main(argv=None) -> int:
    from . import config as C
    ap = argparse.ArgumentParser(prog="skulens_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["fit", "evaluate", "export", "report", "experiments", "baselines", "text",
                                            "category", "objectness"])
    ap.add_argument("--only", nargs="*", default=[], help="experiments: just these rows")
    ap.add_argument("--quick", action="store_true", help="the CI-sized config (same as --config quick)")
    ap.add_argument("--config", help="a TOML file, or the name of one in skulens_train/configs/ (main, quick, experiment)")
    ap.add_argument("--runs", default="training/runs", help="where run directories live")
    ap.add_argument("--run", help="run directory (default: RUNS/<config name>)")
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--text", help="text-branch run directory to export beside the image encoder")
    ap.add_argument("--int8", action="store_true", help="export: serve a statically quantised int8 image model "
                    "(off by default: it lost instance R@1 and was slower here, training/REPORT.md)")
    ap.add_argument("--text-fp32", action="store_true", help="export: serve the fp32 text model, not the "
                    "dynamically quantised int8 one (the default: same precision, half the time)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.steps=50")
    args = ap.parse_intermixed_args(argv)
    if args.quick:
        args.config = args.config or "quick"
    if args.command == "experiments":
        from .experiments import run_rows
        run_rows(args.runs, args.only, progress=not args.no_progress)
        return 0
    if args.command == "baselines":
        from .report import baselines
        try:
            threads = C.load(None, args.overrides).threads   # threads=N, as fit reads it
        except ValueError as e:
            ap.error(str(e))
        baselines(args.runs, threads=threads)
        return 0
    if args.command == "text":
        # python -m skulens_train text --run RUNS/main [arch=minilm|bilstm optim.steps=300]
        from .evaluate import Benchmark
        from .text import evaluate_text, fit_text
        tcfg = _load(ap, args, C.Text)
        if not tcfg.image_run:
            tcfg.image_run = args.run or os.path.join(args.runs, "main")
        out = os.path.join(args.runs, f"text-{tcfg.arch}")
        fit_text(tcfg, out, progress=not args.no_progress)
        res = evaluate_text(out, Benchmark(64, 10_000, tcfg.queries))
        with open(os.path.join(out, "eval.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
        return 0
    if args.command == "category":
        from .category_probe import default_path, probe
        pcfg = _load(ap, args, C.Probe)
        out = args.run or default_path(args.runs, pcfg)
        res = probe(pcfg, out, progress=not args.no_progress)
        print(json.dumps({k: v for k, v in res.items() if k != "log"}, indent=1))
        print(f"written: {out}")
        return 0
    if args.command == "objectness":
        from .objectness import fit as fit_objectness
        ocfg = _load(ap, args, C.Objectness)
        if not args.run:
            ap.error("give --run: the run the image model in --model-repo was exported from")
        fit_objectness(args.run, args.model_repo, ocfg, progress=not args.no_progress)
        return 0
    if args.command == "report":
        from .report import main as report
        return report(args.runs)
    try:
        cfg = C.load(args.config, args.overrides) if args.command == "fit" or args.config else None
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    run = args.run or (_run_dir(args, cfg) if cfg else None)
    if run is None:
        ap.error("give --config or --run")
    if args.command != "fit" and not os.path.exists(os.path.join(run, "model.pt")):
        ap.error(f"no finished run in {run} (model.pt is missing: train it with `fit` first)")
    if args.command == "fit":
        from .train import fit
        fit(cfg, run, progress=not args.no_progress)
        print(f"trained: {run}/model.pt")
    elif args.command == "evaluate":
        import torch
        from .evaluate import Benchmark
        from .train import load_run
        _, model = load_run(run)
        cfg = C.load(os.path.join(run, "config.toml"), args.overrides)  # eval.* may be overridden
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        e = cfg.eval
        bench = Benchmark(cfg.model.input_size, e.catalogue, e.queries)
        res = bench.run(model, cfg.name, attack=(e.attack_queries, e.attack_eps, e.attack_steps)
                        if e.attack_queries else None)
        with open(os.path.join(run, "eval.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
    elif args.command == "export":
        from .export import export
        export(run, args.model_repo, text_run=args.text, int8=args.int8, text_int8=not args.text_fp32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
