"""Combined queries on Flickr8k test: how many of the top results hold what a query excludes.

`beach, -people` once put 6 photos with people in its top 8: the query's vector (the terms' vectors summed,
the excluded one subtracted) ranks photos of a beach with people well. Each query below is searched as the
app searches (`app.search.search_text`) in a library of the Flickr8k test photos, and, for the ratio, by the
query's vector alone. A photo holds a subject when one of its five English captions names it.

    python -m bench.combined_queries --model bundled --data ../shared/data/flickr8k
"""

import argparse
import json
import re
import tempfile
from pathlib import Path

from app.search import parse_query, query_vector, search_text
from common.captions import image_file, read_captions
from common.cli import add_model_argument, entry_point
from embedding import load_encoder
from embedding.words import read_labels
from indexer import Library, index_folders

PEOPLE = r"\b(man|men|woman|women|boy|boys|girl|girls|child|children|kid|kids|person|people|lady|ladies|guy|guys|"\
         r"baby|toddler|player|players|crowd|couple|family|surfer|swimmer|skier|biker|rider)\b"
QUERIES = (("beach, -people", "beach", PEOPLE), ("Strand, -Menschen", "beach", PEOPLE),
           ("snow, -people", r"snow", PEOPLE), ("water, -dog", r"water|lake|river|ocean|pool", r"\bdogs?\b"),
           ("dog, -grass", r"\bdogs?\b", r"\bgrass"), ("a dog, -a ball", r"\bdogs?\b", r"\bballs?\b"))
TOP = 8


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.combined_queries", description=__doc__.split("\n\n")[0])
    add_model_argument(parser)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/flickr8k"))
    args = parser.parse_args(argv)
    encoder = load_encoder(args.model)
    records = read_captions(args.data / "captions_test.jsonl", ["en"])
    photos = {image_file(args.data / "images", r.key): " ".join(r.captions["en"]).lower() for r in records}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        for path in photos:  # the test photos only: links, which the indexer follows
            (folder / path.name).symlink_to(path.resolve())
        library = Library(Path(scratch) / "library")  # new each run: links of an earlier run are gone
        index_folders(library, encoder, [folder], progress=False)
        captions = {path.name: text for path, text in photos.items()}
        rows = [measure(library, encoder, query, captions) for query in QUERIES]
    print(f"| query | top {TOP} holding the subject (app / vector) | holding the excluded (app / vector) | "
          "shown probabilities (app) |\n|---|---|---|---|")
    for row in rows:
        print(f"| `{row['query']}` | {row['subject'][0]} / {row['subject'][1]} | {row['excluded'][0]} / "
              f"{row['excluded'][1]} | {row['shown']} |")
    print(json.dumps(rows, ensure_ascii=False))
    return 0


def measure(library: Library, encoder, query: tuple[str, str, str], captions: dict[str, str]) -> dict:
    """For one (query, subject pattern, excluded pattern): how many of the top photos hold each."""
    text, subject, excluded = query
    terms = parse_query(text)
    results = search_text(library, encoder, text, TOP)
    by_app = [r.path for r in results]
    by_vector = [h.path for h in library.search(query_vector(read_labels(encoder, [t.text for t in terms]), terms),
                                                TOP)]
    def count(paths: list[str], pattern: str) -> int:
        return sum(bool(re.search(pattern, captions[Path(path).name])) for path in paths)
    shown = [f"{r.probability:.0%}" for r in results]
    return {"query": text, "subject": (count(by_app, subject), count(by_vector, subject)),
            "excluded": (count(by_app, excluded), count(by_vector, excluded)), "shown": " ".join(shown)}


if __name__ == "__main__":
    raise SystemExit(main())
