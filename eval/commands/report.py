"""report: compare runs in one table and one plot."""

from pathlib import Path

from common.cli import existing_folder

HELP = "compare runs: one table and one plot"
DESCRIPTION = ("For each run directory: its training curve (metrics.jsonl) and its recall (an xm3600 "
               "JSON saved in the directory, else the last validation in metrics.jsonl).")


def add_args(parser) -> None:
    parser.add_argument("runs", type=existing_folder, nargs="+")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--plot", type=Path, help="write loss curves and mean R@5 (PNG)")


def run(args) -> None:
    from eval.report import collect_run, plot_runs, report_markdown

    runs = [collect_run(run) for run in args.runs]
    table = report_markdown(runs)
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.plot:
        plot_runs(runs, args.plot)
