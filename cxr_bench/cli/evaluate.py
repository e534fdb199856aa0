"""``cxr-bench evaluate``: a model trained elsewhere, scored into the run store beside the suite's runs.

Two ways in, one result (a run whose metrics.json is made by the same function as a trained run's):

  cxr-bench evaluate --predictions preds.csv --name mymodel
      one row per test image: image, then one probability column per label (docs/evaluate.md)
  cxr-bench evaluate --model timm:resnet18 --head gap --weights model.pt
      inference of a saved model on the split (its state dict: cxr-bench or plain torchvision/timm keys)

Then `cxr-bench leaderboard --runs runs` lists it and `cxr-bench compare --runs runs --pair A B` tests it
against a baseline run, paired by patient. --dataset NAME scores finished runs on an external test set.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..runner.suite import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="score outside predictions or a saved model into the run store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to score (one of)")
    src.add_argument("--predictions", metavar="FILE",
                     help="CSV (or .parquet) of test-set predictions: image + one column per label")
    src.add_argument("--model", metavar="BACKBONE", help="a backbone of the registry (`cxr-bench models`) or "
                     "timm:<name>, with --weights")
    src.add_argument("--run-dir", dest="run", metavar="RUN_DIR", help="a finished run, scored on --dataset")
    p.add_argument("--val-predictions", metavar="FILE", help="validation-set predictions in the same format; they "
                   "choose the operating thresholds (sensitivity, specificity, underdiagnosis), as for a trained "
                   "run. Without them those columns stay empty")
    p.add_argument("--logits", action="store_true", help="the prediction files hold logits, not probabilities")
    p.add_argument("--head", default="gap", help="head of --model (default gap)")
    p.add_argument("--weights", metavar="FILE", help="weights of --model: a state dict (.pt/.pth/.safetensors)")
    p.add_argument("--name", help="the model's name in tables (default: the file name)")
    p.add_argument("--seed", type=int, default=None,
                   help="the seed of the training run that made the file (files of one --name with several seeds "
                        "are averaged over seeds like a suite's runs; default 0)")
    p.add_argument("--label-set", default=None, metavar="NAME", help="label set of the columns (default chestxray14)")
    p.add_argument("--split", default=None, choices=("official", "random-image", "random-patient"),
                   help="which test list the file covers (default official)")
    p.add_argument("--data-root", metavar="DIR", help="the NIH release the split is taken from (default: the "
                   "bundled sample); with --dataset, that dataset's folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="any other config key, e.g. --set eval.bootstrap=200 --set data.image_size=512")
    p.add_argument("--runs", default="runs", metavar="STORE", help="run store (default: ./runs, as for `run`)")
    p.add_argument("--suite", default=None, metavar="NAME",
                   help="the suite folder of the store the run goes into (default: evaluate); with --dataset, "
                        "the suite whose runs are scored")
    p.add_argument("--dataset", metavar="NAME", help="an external test set to score --run (or --runs/--suite) on")
    p.add_argument("--json", action="store_true", help="print the run's metrics.json summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = parse_overrides(args.overrides)
    for key, value in (("data.root", args.data_root), ("data.label_set", args.label_set),
                       ("data.split", args.split), ("seed", args.seed)):
        if value is not None:
            out[key] = value
    return out


def _command(args: argparse.Namespace) -> str:
    """The command as it would be typed again (the options that change what is scored)."""
    parts = ["cxr-bench", "evaluate"]
    for flag in ("predictions", "val_predictions", "model", "head", "weights", "name", "seed", "label_set",
                 "split", "data_root", "suite"):
        value = getattr(args, flag)
        if value is not None and not (flag == "head" and args.model is None):
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.logits:
        parts.append("--logits")
    for item in args.overrides:
        parts += ["--set", item]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.dataset is not None:
        from ..external import evaluate_external_cli

        other = [f"--{k.replace('_', '-')}" for k in ("predictions", "model", "weights", "val_predictions")
                 if getattr(args, k) is not None] + (["--set"] if args.overrides else []) + \
            (["--logits"] if args.logits else []) + (["--json"] if args.json else [])
        if other:
            raise ConfigError(f"--dataset scores finished runs on an external set; {', '.join(other)} belong to "
                              "scoring a predictions file or weights (run those first, then --dataset)")

        return int(evaluate_external_cli(args, echo=print))
    modes = [m for m in ("predictions", "model") if getattr(args, m) is not None]
    if len(modes) != 1:
        raise ConfigError("cxr-bench evaluate needs one of --predictions FILE or --model BACKBONE --weights FILE"
                          + (" (not both)" if len(modes) > 1 else "")
                          + ("; --run-dir is scored on an external test set with --dataset NAME" if args.run else ""))
    suite = args.suite or "evaluate"
    if args.model is not None:
        if args.weights is None:
            raise ConfigError("--model needs --weights FILE (the saved model's state dict)")
        if args.val_predictions is not None or args.logits:
            raise ConfigError("--val-predictions and --logits go with --predictions; --model predicts val and test "
                              "itself")
        from ..runner.evaluate import evaluate_checkpoint_file

        result = evaluate_checkpoint_file(args.weights, args.model, args.head, store=args.runs, suite=suite,
                                          name=args.name, overrides=_overrides(args), command=_command(args),
                                          progress=False if args.no_progress else None)
    else:
        if args.weights is not None:
            raise ConfigError("--weights goes with --model, not with --predictions")
        from ..runner.evaluate import evaluate_predictions

        result = evaluate_predictions(args.predictions, store=args.runs, suite=suite, name=args.name,
                                      overrides=_overrides(args), val_predictions=args.val_predictions,
                                      logits=args.logits, command=_command(args))
    test = result.metrics.get("test") or {}
    if args.json:
        import json

        print(json.dumps({"run_dir": str(result.run_dir), "suite": result.suite, "run_id": result.run_id,
                          "name": result.name, "reused": result.reused, "mean_auc": test.get("mean_auc"),
                          "mean_auc_ci": test.get("mean_auc_ci"), "n_images": test.get("n_images")}, indent=1))
        return 0
    ci = test.get("mean_auc_ci") or [None, None]
    auc = test.get("mean_auc")
    shown = "n/a" if auc is None else f"{auc:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if None not in ci else "")
    verb = "already evaluated, kept" if result.reused else "wrote"
    print(f"{verb} {result.run_dir} ({result.name}): test mean AUC {shown} on {test.get('n_images')} images, "
          f"{test.get('n_patients')} patients")
    print(f"next: cxr-bench leaderboard --runs {shlex.quote(str(args.runs))}; cxr-bench compare --runs "
          f"{shlex.quote(str(args.runs))} --pair BASELINE_RUN {result.suite}/{result.run_id}", file=sys.stderr)
    return 0
