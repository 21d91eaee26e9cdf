"""The commands of `python -m train` beside training itself, one module each: HELP, DESCRIPTION,
`add_args(parser)` and `run(args)` (as `eval/commands`). A new one is one module here plus one line in
`train.__main__.COMMANDS`. Each imports what its job needs inside `run`, so its `--help` is quick."""

from pathlib import Path

FLICKR8K = Path("../shared/data/flickr8k")
