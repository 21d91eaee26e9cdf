"""Leave-one-source-out: each labelled source scored by a model that never saw it.

A figure measured on the photos a model learned from says little about a user's photos, so every source of
`python -m train data` is held out in turn: the model's words are fitted on Flickr8k and the other sources
(`train.words.learn_words`, as `python -m train words --data ...` fits them), then the held-out source's
photos are scored as the product scores labels (`eval.tags`, its labels named in the five caption
languages). `--baseline-words` scores the same photos with another words file too (the shipped model's
before the sources came), for the ratio the issue asks for. The words the image tower's classifier teaches
(`train.teacher`) are fitted on the same photos, so the held-out source teaches nothing either. The model's
towers stay as they are: this measures what the learned words transfer.

    python -m bench.leave_one_out --model bundled --data ../shared/data/flickr8k \\
        --source data/caltech101 --source data/catsdogs --source data/food --source data/nasa \\
        --baseline-words runs/words-flickr8k/words.safetensors
"""

import argparse
import json
from pathlib import Path

from common.cli import add_device_argument, add_model_argument, entry_point
from embedding import load_encoder
from embedding.loading import process_device
from embedding.words import load_words
from eval.tags import evaluate_tags, source_labels
from train.config import add_word_fit_arguments
from train.words import learn_words, source_name

FIGURES = (("top1", "top-1"), ("map", "mAP"), ("f1", "tag F1"), ("median_probability_true", "median p (true)"),
           ("false_photos", "photos with a false label >= 0.5 (%)"), ("ece", "ECE"))


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.leave_one_out", description=__doc__.split("\n\n")[0])
    add_model_argument(parser)
    add_device_argument(parser)
    parser.add_argument("--data", type=Path, action="append", default=[], help="always fitted on (Flickr8k)")
    parser.add_argument("--source", type=Path, action="append", required=True, help="a `train data` folder")
    parser.add_argument("--baseline-words", type=Path, help="a words.safetensors to score the same photos with")
    parser.add_argument("--json", type=Path)
    add_word_fit_arguments(parser)
    args = parser.parse_args(argv)
    encoder = load_encoder(args.model, process_device(args.device), words=False)
    baseline = load_words(args.baseline_words.parent, encoder.fingerprint) if args.baseline_words else None
    results = {}
    for held_out in args.source:
        others = args.data + [source for source in args.source if source != held_out]
        encoder.words, summary = learn_words(encoder, others, args.min_photos, args.min_lift, args.steps,
                                             args.weight_decay, args.min_overlap, args.teacher)
        paths, truth, labels = source_labels(held_out)
        name = source_name(held_out)
        results[name] = {"without_it": evaluate_tags(encoder, paths, truth, labels), "words": len(encoder.words.words),
                         "fitted_on": summary["sources"]}
        if baseline is not None:
            encoder.words = baseline
            results[name]["baseline"] = evaluate_tags(encoder, paths, truth, labels)
        print(markdown(name, results[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


def markdown(name: str, result: dict) -> str:
    """One held-out source's table: per language, each figure without it (and the baseline's, after a slash)."""
    scored = result["without_it"]
    lines = [f"### {name}: {scored['images']} photos, {scored['labels']} labels ({result['words']} words fitted "
             "without it; after / the baseline's words)", "",
             "| language | " + " | ".join(title for _, title in FIGURES) + " |", "|---" * (len(FIGURES) + 1) + "|"]
    for lang, figures in scored["languages"].items():
        cells = []
        for key, _ in FIGURES:
            cell = _cell(figures[key])
            if "baseline" in result:
                cell += " / " + _cell(result["baseline"]["languages"][lang][key])
            cells.append(cell)
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
