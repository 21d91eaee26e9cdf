"""pack: a trained two-tower folder with its weights stored small (embedding/packing.py)."""

from pathlib import Path

from common.cli import existing_folder

HELP = "a SigLiT run folder with its weights in float16 or int8"
DESCRIPTION = ("Copy a SigLiT run folder (two_towers.json, trained.safetensors, its training log) with the trained "
               "weights stored as float16, or int8 (each matrix as int8 rows with a float32 scale per row, the rest "
               "float16; about a quarter of float32). Every stored type loads as float32.")


def add_args(parser) -> None:
    from embedding.packing import DTYPES

    parser.add_argument("run", type=existing_folder, help="the run folder `python -m train` wrote")
    parser.add_argument("--weights", choices=DTYPES, default="int8", help="stored type (default int8)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args) -> None:
    from train.checkpoints import pack_two_towers

    weights = pack_two_towers(args.run, args.out, args.weights)
    print(f"{weights}: {weights.stat().st_size / 1e6:.1f} MB")
