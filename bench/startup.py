"""Where a command's seconds go before it does anything: `--help` of every entry point, a search from the
shell, and the app from start until its page answers and until a search sent then is answered, each as its own
process, median of --repeats.

    python -m bench.startup --library LIBRARY [--repo PATH] [--repeats 3]

`--repo` runs the commands of another checkout (an older commit, say) from its own folder, so two trees
are compared in one run on one machine.
"""

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import free_port

HELPS = (["app", "--help"], ["indexer", "--help"], ["eval", "--help"], ["train", "--help"])


def seconds(command: list[str], repo: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *command], cwd=repo, check=True, capture_output=True)
    return time.perf_counter() - start


def app_start(library: Path, repo: Path) -> tuple[float, float]:
    """Seconds from `python -m app` to its page's first answer, and to the answer of a search sent then."""
    from gradio_client import Client

    port = free_port()
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "app", "--library", str(library), "--port", str(port)],
                              cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("the app exited") from None
                time.sleep(0.1)
        page = time.perf_counter() - start
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict("a dog in the snow", 5, api_name="/search")
        return page, time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, required=True, help="a library the app and the search open")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout whose commands run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    library = args.library.resolve()
    rows = [(" ".join(command), [seconds(command, args.repo) for _ in range(args.repeats)]) for command in HELPS]
    starts = [app_start(library, args.repo) for _ in range(args.repeats)]
    rows.append(("app, until the page answers", [page for page, _ in starts]))
    rows.append(("app, until a search sent then is answered", [search for _, search in starts]))
    search = ["app", "search", "a dog in the snow", "--library", str(library), "-k", "5"]
    if (args.repo / "app" / "shell.py").is_file():  # (older trees have no shell search)
        rows.append(("app search QUERY", [seconds(search, args.repo) for _ in range(args.repeats)]))
    print(f"| command ({args.repo}) | median s | runs |")
    print("|---|---|---|")
    for name, times in rows:
        print(f"| `python -m {name}` | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")


if __name__ == "__main__":
    main()
