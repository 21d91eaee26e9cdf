"""ann: ANN recall of a library's index (and candidate index types) against exact search."""

from common.cli import add_device_argument, add_json_argument, add_library_argument, existing_file, positive

HELP = "ANN recall of a library's index (and candidate index types) against exact search"
DESCRIPTION = ("recall@k of the library's FAISS index, and of candidate FAISS indexes built on the same "
               "vectors, against exact inner-product search, with per-query latency. Queries: real texts "
               "(--texts, embedded with the library's model) or stored vectors plus noise.")


def add_args(parser) -> None:
    add_library_argument(parser)
    parser.add_argument("--k", type=positive, default=10)
    parser.add_argument("--queries", type=int, default=1000, help="number of perturbed-vector queries")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm added to each perturbed query")
    parser.add_argument("--texts", type=existing_file, help="a file of text queries, one per line, instead")
    parser.add_argument("--try", dest="candidates", action="append", metavar="FACTORY[:PARAMS]",
                        help="a FAISS index to compare, e.g. HNSW32:efSearch=64 or 'IVF256,PQ32:nprobe=16' "
                             "(repeatable; default: HNSW32 at two efSearch values, and IVF-Flat above 1,000 "
                             "vectors)")
    add_device_argument(parser, "the library's model (for --texts)")
    add_json_argument(parser)


def run(args) -> dict:
    from embedding.loading import load_encoder, process_device
    from eval.ann import evaluate_ann, library_vectors, perturbed_queries
    from indexer import Library

    library = Library(args.library)
    ids, vectors = library_vectors(library)
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
    result = evaluate_ann(vectors, queries, min(args.k, len(vectors)), candidates, library, ids)
    print(f"{result['vectors']} vectors of dim {result['dim']}, {result['queries']} queries, recall@{result['k']}")
    print(f"{'index':<36} {'recall %':>9} {'p50 ms':>8} {'p99 ms':>8} {'build s':>8}")
    for name, row in result["indexes"].items():
        build = f"{row['build_s']:8.2f}" if "build_s" in row else " " * 8
        print(f"{name:<36} {row['recall']:9.2f} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {build}")
    return result
