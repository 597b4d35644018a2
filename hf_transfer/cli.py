"""hf-transfer command line: finetune, check, evaluate, predict, rank, bench, push.

Mistakes a user can fix (recipe, data, model, output folder) print one message and exit with
code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

from .errors import HfTransferError, user_message
from .registry import load_plugins

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
_DEFAULT_COMMIT_MESSAGE = "Upload model trained with hf-transfer"  # hub.DEFAULT_COMMIT_MESSAGE, without importing hub

# Each command imports what it runs inside its function: `hf-transfer --help`, `check` of a bad recipe and the
# error paths stay free of torch, transformers and datasets, which take seconds to import.


class OneLineParser(argparse.ArgumentParser):
    """argparse's mistakes (a missing value, an unknown flag) as one ``error:`` line and exit code 2, like every
    other user error; the usage block is one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field, e.g. --set training.learning_rate=3e-5 (repeatable)")


def _load_recipe(args):
    from .recipe import Recipe

    return Recipe.from_yaml(args.recipe, args.overrides)


def cmd_finetune(args) -> int:
    from .runs.dispatch import finetune
    from .tasks.base import get_task
    from .training.arguments import distributed_state

    recipe = _load_recipe(args)
    started = time.monotonic()
    result = finetune(recipe)
    if distributed_state().is_main_process:
        pushed = recipe.output.hub_model_id if recipe.output.push_to_hub else None
        _print_summary(result.metrics, result.output_dir, wall_s=time.monotonic() - started, pushed_to=pushed,
                       roles=get_task(recipe.task).input_roles)
    return 0


def cmd_check(args) -> int:
    from .check import check_recipe

    report = check_recipe(_load_recipe(args))
    print(json.dumps(report, indent=2, default=str))
    print(f"OK: {len(report['labels'])} labels, splits {report['splits']}. Nothing was trained.")
    return 0


def cmd_evaluate(args) -> int:
    from .errors import RecipeError
    from .evaluation.evaluate import check_report_path, evaluate_model, write_report

    if args.batch_size < 1:
        raise RecipeError(f"--batch-size must be a whole number of at least 1; got {args.batch_size}.")
    if args.output:
        check_report_path(args.output, args.overwrite)
    report = evaluate_model(args.model_dir, args.data, split=args.split, overrides=args.overrides,
                            batch_size=args.batch_size)
    text = json.dumps(report, indent=2)
    if args.output:
        write_report(args.output, text + "\n")
    print(text if not args.output else f"accuracy {report['accuracy']:.4f}; report written to {args.output}")
    return 0


def cmd_predict(args) -> int:
    from .prediction import predict

    results = predict(args.model_dir, images=args.image or None, texts=args.text or None,
                      text_pairs=args.text_pair or None, top_k=args.top_k)
    for result in results:
        print(json.dumps(result))
    return 0


def cmd_push(args) -> int:
    from .hub import push_folder

    print(push_folder(args.model_dir, args.repo_id, private=args.private, commit_message=args.commit_message,
                      revision=args.revision, create_pr=args.create_pr, include_subruns=args.include_subruns))
    return 0


def cmd_bench(args) -> int:
    from pathlib import Path

    from .bench import SCENARIOS, BenchSettings, markdown_table, run_benchmarks
    from .errors import RecipeError

    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        raise RecipeError(f"Unknown scenario(s) {', '.join(unknown)}. Available: {', '.join(SCENARIOS)}.")
    shared = Path(args.shared)
    if not (shared / "data").is_dir():
        raise RecipeError(f"'{shared}' holds no data/ folder; pass --shared pointing at the benchmark data and models.")
    settings = BenchSettings.quick(shared) if args.quick else BenchSettings(shared=shared)
    for name in ("steps", "repeats", "eval_samples", "bf16"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.switches is not None:
        from .bench.switches import DEFAULT_SCENARIOS, run_switch_benchmarks, switches_table

        report = run_switch_benchmarks(args.scenarios or list(DEFAULT_SCENARIOS), settings, Path(args.output),
                                       only=args.switches)
        print(switches_table(report))
    else:
        report = run_benchmarks(args.scenarios or list(SCENARIOS), settings, Path(args.output))
        print(markdown_table(report))
    print(f"Wrote {args.output}")
    return 0


def cmd_rank(args) -> int:
    from pathlib import Path

    from .transferability.cli import rank_recipe
    from .transferability.ranking import rank_candidates
    from .transferability.report import check_output, markdown_table, summary, write_ranking

    output = Path(args.output)
    _check_rank_folder(output)
    check_output(output, args.overwrite)
    recipe = rank_recipe(args)
    ranking = rank_candidates(recipe, max_samples=args.max_samples)
    _claim_rank_folder(output)
    write_ranking(ranking, output, overwrite=args.overwrite)
    print(f"\n{summary(ranking)}\n\n{markdown_table(ranking)}\n\nWrote {output}/ranking.json, ranking.md, ranking.png")
    return 0


def _check_rank_folder(output: Path) -> None:
    """The run folders' rule for ``rank --output``: a new or empty folder, or one hf-transfer made (its marker
    lists what it wrote) holding nothing else; a user's own files are never written over."""
    from .atomic import check_output_path
    from .training.outputs import check_ours

    check_output_path(output, "--output", folder=True)
    check_ours(output, "--output")


def _claim_rank_folder(output: Path) -> None:
    """List the ranking files in the folder's marker before writing them (a new marker for a new or empty folder)."""
    from .training.outputs import record
    from .transferability.report import JSON_FILE, MARKDOWN_FILE, PLOT_FILE

    record(output, JSON_FILE, MARKDOWN_FILE, PLOT_FILE, claim=True)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _print_summary(metrics: dict, output_dir, wall_s: float | None = None, pushed_to: str | None = None,
                   roles: tuple[str, ...] = ()) -> None:
    """Results, how long it took, and where the model is with the commands that use it.

    ``wall_s``: the whole command's wall time (``metrics['wall_s']`` when the metrics carry one); the training
    time alone comes from ``metrics['train']['runtime_s']``. ``pushed_to``: the Hub repo the run was pushed to.
    ``roles``: the task's inputs, so that the ``predict`` line shows its own flags.
    """
    def line(name: str, report: dict | None) -> None:
        if report:
            print(f"  {name:<24} accuracy {report['accuracy']:.2%}  macro-F1 {report['f1_macro']:.2%}")

    split = "test" if "test" in metrics else "validation"
    print(f"\nResults on the {split} split ({output_dir}):")
    line("pretrained (transfer)", metrics.get(split))
    if "scratch" in metrics:
        line("from scratch", metrics["scratch"].get(split))
        print(f"  {'transfer gain':<24} accuracy {metrics['transfer_gain']['accuracy']:+.2%}")
    _print_domains(metrics, split)
    modalities = metrics.get("compare_modalities")
    if modalities:  # evaluation.compare_modalities: each input alone, then the fused model
        print(f"Each input alone vs fused ({modalities['split']} split):")
        for name, report in modalities["runs"].items():
            line(name, report)
        gain = modalities["fusion_gain"]
        print(f"  {'fusion gain':<24} accuracy {gain['accuracy']:+.2%}  macro-F1 {gain['f1_macro']:+.2%}"
              "  (fused minus the best single input)")
    wall = metrics.get("wall_s", wall_s)
    training = (metrics.get("train") or {}).get("runtime_s")
    if wall is not None:
        print(f"Wall time {_duration(wall)}" + (f" (training {_duration(training)})." if training else "."))
    elif training:
        print(f"Training time {_duration(training)}.")
    folder = str(output_dir)
    print(f"Model folder: {folder} (model card with how to load it: {Path(folder) / 'README.md'})")
    flags = " ".join(f"--{role} {'PATH' if role == 'image' else 'TEXT'}" for role in roles if role != "text_pair")
    print(f"  predict: hf-transfer predict {folder} {flags or '--image PATH | --text TEXT'}")
    if pushed_to:
        print(f"  on the Hub: https://huggingface.co/{pushed_to}")
    else:
        print(f"  push:    hf-transfer push {folder} user/model-name")


def _print_domains(metrics: dict, split: str) -> None:
    """Domain adaptation (``target_test``/``target_validation`` in the metrics): source and target side by side,
    with the source-only baseline and the adaptation gain when ``evaluation.compare_source_only`` trained it."""
    import textwrap

    from .card import statistics_note

    target = "target_test" if "target_test" in metrics else "target_validation"
    if target not in metrics:
        return

    def cell(report: dict | None) -> str:
        return f"{report['accuracy']:.2%} (F1 {report['f1_macro']:.2%})" if report else "-"

    method = (metrics.get("domain_adaptation") or {}).get("method", "adapted")
    print(f"Source vs target domain (source {split} split, target {target.removeprefix('target_')} split; "
          "accuracy (macro-F1)):")
    print(f"  {'':<24} {'source':<22} target")
    print(f"  {method:<24} {cell(metrics.get(split)):<22} {cell(metrics[target])}")
    baseline = metrics.get("source_only")
    if baseline:
        plain = baseline.get("target_with_source_statistics")  # per-domain statistics: the baseline without them
        if plain:
            print(f"  {'source only, no adapt.':<24} {cell(baseline.get(split)):<22} {cell(plain)}")
        name = "source only, target BN" if plain else "source only"
        print(f"  {name:<24} {cell(baseline.get(split)):<22} {cell(baseline.get(target))}")
        gain = metrics.get("adaptation_gain", {})
        points = [f"{gain[d]['accuracy'] * 100:+.2f} pts" if d in gain else "-" for d in ("source", "target")]
        print(f"  {'adaptation gain':<24} {points[0]:<22} {points[1]}")
    adaptation = metrics.get("domain_adaptation") or {}
    if adaptation.get("saved_statistics"):
        print(textwrap.fill(statistics_note(adaptation), width=110, initial_indent="  ", subsequent_indent="  "))


def _version() -> str:
    from . import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hf-transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE (on the Python path) first, so that the strategies, methods, tasks or "
                             "scores it registers can be named in recipes (repeatable; entry points of the group "
                             "hf_transfer.plugins are always imported)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    finetune = commands.add_parser("finetune", help="train a recipe and write its model folder")
    _recipe_arguments(finetune)
    finetune.set_defaults(run=cmd_finetune)
    check = commands.add_parser("check", help="validate recipe, model config and data; train nothing")
    _recipe_arguments(check)
    check.set_defaults(run=cmd_check)
    evaluate = commands.add_parser("evaluate", help="evaluate a saved model folder on labelled data")
    evaluate.add_argument("model_dir", help="a model folder written by hf-transfer")
    evaluate.add_argument("--data", required=True, help="dataset id, folder or file")
    evaluate.add_argument("--split", default="test",
                          help="split to evaluate (default: test; the run's own test subset when the data is the "
                               "run's)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="examples per forward pass (default: 64)")
    evaluate.add_argument("--output", help="write the JSON report here (a new file unless --overwrite)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                          help="override a field of the run's recipe, e.g. --set data.max_test_samples=null "
                               "(repeatable)")
    evaluate.set_defaults(run=cmd_evaluate)
    bench = commands.add_parser("bench", help="throughput and memory against a raw loop and a naive Trainer")
    bench.add_argument("--quick", action="store_true", help="few steps, one repeat (a smoke run of ~3 minutes)")
    bench.add_argument("--output", default="bench.json", help="where the JSON report goes")
    bench.add_argument("--scenarios", nargs="*", default=[], help="names to run (default: all)")
    bench.add_argument("--shared", default="../shared", help="folder with data/ and models/ for the benchmarks")
    bench.add_argument("--steps", type=int, help="training steps per epoch (default 24; --quick 6)")
    bench.add_argument("--repeats", type=int, help="interleaved repeats; the report gives medians (default 3)")
    bench.add_argument("--eval-samples", type=int, help="validation examples evaluated (default 512)")
    bench.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="precision of every runner (default: bf16 where hf-transfer turns it on, i.e. bf16 GPUs)")
    bench.add_argument("--switches", nargs="*", default=None, metavar="SWITCH",
                       choices=["channels_last_off", "torch_compile", "bf16"],
                       help="measure the recipe path with these switches (all when none are named: channels_last_off, "
                            "torch_compile, bf16) against its defaults (default scenarios: image_full_ft text_full_ft)")
    bench.set_defaults(run=cmd_bench)
    rank = commands.add_parser("rank", help="score candidate backbones on the data (LogME, LEEP, NCE, H-score)")
    from .transferability.cli import add_rank_arguments

    add_rank_arguments(rank)
    rank.set_defaults(run=cmd_rank)
    predict = commands.add_parser("predict", help="labels and scores of a finished model folder for new inputs")
    predict.add_argument("model_dir", help="a model folder written by hf-transfer")
    predict.add_argument("--image", action="append", default=[], metavar="PATH",
                         help="an image file; repeat for several (image and image-text models)")
    predict.add_argument("--text", action="append", default=[], metavar="TEXT",
                         help="a text; repeat for several, in the order of the images (text and image-text models)")
    predict.add_argument("--text-pair", action="append", default=[], metavar="TEXT",
                         help="the second text of a pair, one per --text")
    predict.add_argument("--top-k", type=int, default=None, help="labels per example, best first (default: all)")
    predict.set_defaults(run=cmd_predict)
    push = commands.add_parser(
        "push", help="upload a finished model folder to the Hub",
        description="Upload a finished model folder to the Hugging Face Hub (token from HF_TOKEN or `hf auth "
                    "login`). Uploads the run's own model and files; checkpoints, hidden files and, unless "
                    "--include-subruns, the sub-runs are left out.")
    push.add_argument("model_dir", help="a finished model folder written by hf-transfer")
    push.add_argument("repo_id", help="Hub repo id, e.g. user/model-name (created if it does not exist)")
    push.add_argument("--private", action="store_true",
                      help="create the repo private (an existing repo keeps its visibility)")
    push.add_argument("--revision", metavar="BRANCH",
                      help="branch to commit to, created from main if missing (default: main); with --create-pr, "
                           "the existing branch the pull request targets")
    push.add_argument("--create-pr", action="store_true",
                      help="open a pull request with the upload instead of committing to the branch")
    push.add_argument("--commit-message", metavar="TEXT",
                      help=f"commit (or pull request) title (default: '{_DEFAULT_COMMIT_MESSAGE}')")
    push.add_argument("--include-subruns", action="store_true",
                      help="also upload the sub-runs: folds/, stages/, learning_curve/, modalities/, scratch/ and "
                           "source_only/ (their checkpoints never)")
    push.set_defaults(run=cmd_push)
    return parser


def run_cli(argv: list[str] | None, default: Callable | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_plugins(args.plugins)
        return args.run(args)
    except HfTransferError as error:
        if args.debug:
            raise
        print(f"error: {user_message(error)}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:  # Ctrl-C outside training (loading, evaluating, writing); training handles its own
        if args.debug:
            raise
        print("error: interrupted (Ctrl-C); nothing finished was written and checkpoints already saved are kept. "
              "Run the same command again to start or resume.", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(argv))


if __name__ == "__main__":
    main()
