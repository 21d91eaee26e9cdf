"""python -m eval: measure encoders (retrieval recall per language, zero-shot classification, reports)."""

import argparse
import json
import sys
from pathlib import Path

from embedding import EncoderUnavailable, load_encoder
from embedding.loading import add_device_argument, process_device
from indexer import LibraryBusy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval",
        description="Measure image-text encoders on real data. `xm3600`: Crossmodal-3600-style retrieval "
                    "recall per language (both published protocols); `locca`, `caption`, `dense`: SigLIP 2's "
                    "localisation, captioning and dense features; `zeroshot`: zero-shot classification "
                    "of a folder-per-class image set; `captions`: what a caption file gives each language "
                    "(length, captions shared by several images); `tags`: one-word search and zero-shot tags "
                    "per language; `ann`: recall and latency of a library's "
                    "ANN index vs exact search; `report`: compare training runs in one table and plot. "
                    "Embeddings are cached per model fingerprint in $SIGSEARCH_CACHE or ~/.cache/sigsearch.",
        epilog="example: python -m eval xm3600 --captions ../shared/data/flickr8k/captions_test.jsonl "
               "--images ../shared/data/flickr8k/images --model bundled --protocol both --json recall.json")
    commands = parser.add_subparsers(dest="command", required=True)

    xm = commands.add_parser(
        "xm3600", help="retrieval recall per language, Crossmodal-3600 layout",
        description="Text->image and image->text recall@1/5/10 (percent) per language and their mean. "
                    "all-captions (SigLIP papers): every caption of a language is a query; image->text hits "
                    "when any of the image's captions is in the top k. first-caption (CLIP_benchmark): one "
                    "caption per image, a 1:1 task. The two give incomparable numbers; every output names "
                    "its protocol. Ties count against the model. Reads captions.jsonl (real XM3600 or ours) "
                    "with images named <image/key>.jpg.")
    xm.add_argument("--captions", type=Path, required=True, help="captions.jsonl")
    xm.add_argument("--images", type=Path, required=True, help="folder of <image/key>.jpg")
    xm.add_argument("--model", default="bundled", help="model spec (default: bundled)")
    xm.add_argument("--protocol", choices=["all-captions", "first-caption", "both"], default="all-captions")
    xm.add_argument("--languages", help="comma-separated languages (default: all in the file)")
    xm.add_argument("--skip-missing", action="store_true", help="evaluate without missing image files "
                    "(their count is reported) instead of stopping")
    xm.add_argument("--json", type=Path, help="write the result as JSON")
    xm.add_argument("--markdown", type=Path, help="write the result as Markdown tables")
    xm.add_argument("--plot", type=Path, help="write a bar chart (PNG)")
    xm.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")

    zs = commands.add_parser(
        "zeroshot", help="zero-shot classification of a folder per class",
        description="Top-1/top-5 accuracy and mean per-class recall of zero-shot classification: each class "
                    "is the mean embedding of its prompts (templates per language, including 'This is a "
                    "photo of {label}.'); class names per language from --classnames (built in for "
                    "CIFAR-10 in en, de, fr, zh, cs).")
    zs.add_argument("--images", type=Path, required=True, help="folder with one sub-folder of images per class")
    zs.add_argument("--model", default="bundled")
    zs.add_argument("--language", default="en", help="language of class names and prompts (default en)")
    zs.add_argument("--classnames", type=Path, help='JSON {"de": {"<folder>": "<name>", ...}, ...}')
    zs.add_argument("--templates", type=Path, help='JSON {"de": ["Das ist ein Foto von {label}.", ...], ...}')
    zs.add_argument("--json", type=Path)
    zs.add_argument("--no-cache", action="store_true")

    cs = commands.add_parser(
        "captions", help="per-language caption statistics of a captions.jsonl (no model needed)",
        description="Per language: images, captions, characters and words per caption, and the percent of "
                    "captions that (case, spaces and punctuation aside) also caption another image. Short, "
                    "shared captions cap what any model can retrieve; read them beside per-language recall.")
    cs.add_argument("--captions", type=Path, required=True, help="captions.jsonl")
    cs.add_argument("--languages", help="comma-separated languages (default: all in the file)")
    cs.add_argument("--json", type=Path)

    an = commands.add_parser(
        "ann", help="ANN recall of a library's index (and candidate index types) against exact search",
        description="recall@k of the library's FAISS index, and of candidate FAISS indexes built on the same "
                    "vectors, against exact inner-product search, with per-query latency. Queries: real texts "
                    "(--texts, embedded with the library's model) or stored vectors plus noise.")
    an.add_argument("--library", type=Path, default=None, help="library folder (default: the default library)")
    an.add_argument("--k", type=int, default=10)
    an.add_argument("--queries", type=int, default=1000, help="number of perturbed-vector queries")
    an.add_argument("--noise", type=float, default=1.0, help="noise norm added to each perturbed query")
    an.add_argument("--texts", type=Path, help="a file of text queries, one per line, instead")
    an.add_argument("--try", dest="candidates", action="append", metavar="FACTORY[:PARAMS]",
                    help="a FAISS index to compare, e.g. HNSW32:efSearch=64 or 'IVF256,PQ32:nprobe=16' "
                         "(repeatable; default: HNSW32 at two efSearch values, and IVF-Flat above 1,000 vectors)")
    an.add_argument("--json", type=Path)

    rp = commands.add_parser(
        "report", help="compare runs: one table and one plot",
        description="For each run directory: its training curve (metrics.jsonl) and its recall (an xm3600 "
                    "JSON saved in the directory, else the last validation in metrics.jsonl).")
    rp.add_argument("runs", type=Path, nargs="+")
    rp.add_argument("--markdown", type=Path, help="also write the table here")
    rp.add_argument("--plot", type=Path, help="write loss curves and mean R@5 (PNG)")
    lc = commands.add_parser(
        "locca", help="LocCa: referring-expression boxes (Ref), IoU >= 0.5 accuracy per language",
        description="For every annotation with referring expressions (`refs`: {language: text}) in a COCO-style "
                    "instances file, the model's LocCa decoder reads the expression and writes a box; reports "
                    "the share with IoU >= 0.5 against the true box, and the mean IoU, per language.")
    lc.add_argument("--model", required=True, help="a run trained with --locca (its folder holds locca.json)")
    lc.add_argument("--instances", type=Path, required=True,
                    help="instances JSON (e.g. data/scenes/instances_test.json)")
    lc.add_argument("--images", type=Path, required=True, help="folder of the images' file_name")
    lc.add_argument("--languages", help="comma-separated (default: every language the decoder writes)")
    lc.add_argument("--json", type=Path)

    cp = commands.add_parser("caption", help="LocCa: caption images",
                             description="Greedy captions from a run's LocCa decoder, one line per image.")
    cp.add_argument("images", type=Path, nargs="+")
    cp.add_argument("--model", required=True, help="a run trained with --locca")
    cp.add_argument("--language", default="en", help="caption language (default en)")

    dn = commands.add_parser(
        "dense", help="dense features: linear probe on frozen patch tokens (patch accuracy, mIoU)",
        description="Fits a linear classifier on the frozen ViT patch tokens of --train-images scenes to each "
                    "patch's majority class in masks/<key>.png, and scores it on every test scene.")
    dn.add_argument("--model", required=True, help="a model with an open_clip ViT image tower")
    dn.add_argument("--scenes", type=Path, required=True, help="folder from `python -m train scenes`")
    dn.add_argument("--train-images", type=int, default=2000)
    dn.add_argument("--json", type=Path)
    tg = commands.add_parser(
        "tags", help="everyday words: one-word search mAP, tag F1, calibration, per language",
        description="Scores labels as the product does (the tag panel's and --tag's path: a word the model "
                    "learned, with its own σ(t·cos+b), else the text tower with the model's) on one image set: "
                    "--captions with --images (the ~40 concepts of "
                    "eval/data/concepts.json; an image holds a concept when 2 of its 5 English captions name "
                    "it), --classes (a folder per CIFAR-10 class, names also in es/it/pl), or --demo (each demo "
                    "photo's subject first for its own name, en and de). Per language: one-word search mAP, tag "
                    "precision/recall/F1 at the default threshold, the median probability of true pairs, expected "
                    "calibration error (and top-1 for classes).")
    sets = tg.add_mutually_exclusive_group(required=True)
    sets.add_argument("--captions", type=Path, help="captions.jsonl (with --images)")
    sets.add_argument("--classes", type=Path, help="folder with one sub-folder per CIFAR-10 class")
    sets.add_argument("--demo", type=Path, help="a folder of the demo photos (`python -m app` copies them)")
    tg.add_argument("--images", type=Path, help="folder of <image/key>.jpg (with --captions)")
    tg.add_argument("--model", default="bundled")
    tg.add_argument("--languages", help="comma-separated (default: every language with labels)")
    tg.add_argument("--json", type=Path)
    tg.add_argument("--markdown", type=Path)
    tg.add_argument("--no-cache", action="store_true")
    for command in (xm, zs, an, lc, cp, dn, tg):  # the commands that load a model
        add_device_argument(command)
    args = parser.parse_args(argv)

    try:
        if args.command == "report":
            return _report(args)
        if args.command == "ann":
            return _ann(args)
        if args.command == "captions":
            return _captions(args)
        encoder = load_encoder(args.model, process_device(args.device))
        if args.command in ("locca", "caption", "dense"):
            return _siglip2(args, encoder)
        if args.command == "tags":
            return _tags(args, encoder)
        return _xm3600(args, encoder) if args.command == "xm3600" else _zeroshot(args, encoder)
    except (EncoderUnavailable, LibraryBusy, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _xm3600(args, encoder) -> int:
    from eval.xm3600 import evaluate_xm3600, format_markdown, format_table

    result = evaluate_xm3600(encoder, args.captions, args.images,
                             args.languages.split(",") if args.languages else None, args.protocol,
                             skip_missing=args.skip_missing, cache=not args.no_cache)
    print(f"{args.model}: recall in percent")
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(format_markdown(result), encoding="utf-8")
    if args.plot:
        from eval.report import plot_recall
        plot_recall(result, args.plot)
    return 0


def _zeroshot(args, encoder) -> int:
    from eval.zeroshot import evaluate_zeroshot

    result = evaluate_zeroshot(encoder, args.images, args.language, args.classnames, args.templates,
                               cache=not args.no_cache)
    print(f"{args.model}: zero-shot on {result['images']} images, {len(result['classes'])} classes, "
          f"language {result['language']}, {len(result['templates'])} templates")
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
          f"mean per-class recall {result['mean_per_class_recall']:.2f}%")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


def _tags(args, encoder) -> int:
    from eval.tags import caption_concepts, class_folders, demo_subjects, evaluate_tags, tags_markdown

    if args.demo:
        result = demo_subjects(encoder, args.demo, cache=not args.no_cache)
        for lang, found in result.items():
            print(f"{lang}: {found['first']} of {found['subjects']} subjects first for their own name; ranks "
                  + ", ".join(f"{label} {rank}" for label, rank in found["ranks"].items()))
        text = None
    else:
        if args.captions and not args.images:
            raise ValueError("--captions needs --images")
        paths, truth, labels = (caption_concepts(args.captions, args.images) if args.captions
                                else class_folders(args.classes))
        result = evaluate_tags(encoder, paths, truth, labels, args.languages.split(",") if args.languages else None,
                               cache=not args.no_cache)
        text = tags_markdown(result)
        print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    if args.markdown and text:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


def _siglip2(args, encoder) -> int:
    """The SigLIP 2 measures: Ref boxes, captions, dense probe."""
    from embedding.loading import model_folder
    from embedding.locca import caption_images, load_decoder

    decoder = load_decoder(model_folder(args.model)) if args.command != "dense" else None  # beside the towers
    if args.command == "caption":
        for image, text in zip(args.images, caption_images(encoder, decoder, args.images,
                                                           args.language), strict=True):
            print(f"{image}\t{text}")
        return 0
    if args.command == "locca":
        from eval.locca import referring_accuracy
        result = referring_accuracy(encoder, decoder, args.instances, args.images,
                                    args.languages.split(",") if args.languages else None)
        for lang, row in result.items():
            print(f"{lang:>5}  Ref acc@IoU0.5 {row['acc_iou50']:6.2f}%  mean IoU {row['mean_iou']:.3f}"
                  + (f"  ({row['n']} expressions)" if "n" in row else ""))
    else:
        from eval.dense import linear_probe
        result = linear_probe(encoder, args.scenes, train_images=args.train_images)
        print(f"patch accuracy {result['patch_accuracy']:.2f}%  mIoU {result['miou']:.2f}% "
              f"({result['classes']} classes, {result['test_patches']} test patches)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _captions(args) -> int:
    from eval.caption_stats import caption_stats, format_stats
    from eval.captions import read_captions

    stats = caption_stats(read_captions(args.captions, args.languages.split(",") if args.languages else None))
    print(format_stats(stats))
    if args.json:
        args.json.write_text(json.dumps(stats, indent=2))
    return 0


def _ann(args) -> int:
    from eval.ann import evaluate_ann, library_vectors, perturbed_queries
    from indexer import Library, default_library_dir

    library = Library(args.library or default_library_dir())
    vectors = library_vectors(library)
    if args.texts:
        texts = [line.strip() for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()]
        queries = load_encoder(library.setting("model"), process_device(args.device)).embed_texts(texts)
    else:
        queries = perturbed_queries(vectors, args.queries, args.noise)
    candidates = args.candidates
    if candidates is None:
        lists = max(1, min(int(4 * len(vectors) ** 0.5), len(vectors) // 39))  # FAISS wants 39 points per list
        candidates = ["HNSW32", "HNSW32:efSearch=128"]
        if len(vectors) >= 1000:
            candidates.append(f"IVF{lists},Flat:nprobe={max(1, lists // 16)}")
    result = evaluate_ann(vectors, queries, min(args.k, len(vectors)), candidates, library.index)
    print(f"{result['vectors']} vectors of dim {result['dim']}, {result['queries']} queries, recall@{result['k']}")
    print(f"{'index':<36} {'recall %':>9} {'p50 ms':>8} {'p99 ms':>8} {'build s':>8}")
    for name, row in result["indexes"].items():
        build = f"{row['build_s']:8.2f}" if "build_s" in row else " " * 8
        print(f"{name:<36} {row['recall']:9.2f} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {build}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _report(args) -> int:
    from eval.report import collect_run, plot_runs, report_markdown

    runs = [collect_run(run) for run in args.runs]
    table = report_markdown(runs)
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.plot:
        plot_runs(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
