"""Any of `python -m eval`'s evaluations during training (big_vision's `config.evals`): `--eval COMMAND`
runs `python -m eval COMMAND --model RUN --json FILE` on the checkpoint just written, in its own process,
so a new evaluation needs no line here and train/ imports nothing from eval/."""

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_eval(command: str, model: Path) -> dict:
    """The JSON result of `python -m eval COMMAND --model MODEL`, or a ValueError with its error line."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        done = subprocess.run([sys.executable, "-m", "eval", *shlex.split(command), "--model", str(model.resolve()),
                               "--json", str(result)], cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0 or not result.is_file():
            said = (done.stderr.strip().splitlines() or ["no result written"])[-1]
            raise ValueError(f"--eval {command!r} failed: {said}")
        return json.loads(result.read_text(encoding="utf-8"))
