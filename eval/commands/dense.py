"""dense: a linear probe on frozen patch tokens (patch accuracy, mIoU)."""

from common.cli import add_json_argument, existing_folder
from eval.commands import add_model_args, encoder_of

HELP = "dense features: linear probe on frozen patch tokens (patch accuracy, mIoU)"
DESCRIPTION = ("Fits a linear classifier on the frozen ViT patch tokens of --train-images scenes to each "
               "patch's majority class in masks/<key>.png, and scores it on every test scene.")


def add_args(parser) -> None:
    add_model_args(parser, "a model with an open_clip ViT image tower")
    parser.add_argument("--scenes", type=existing_folder, required=True, help="folder from `python -m train scenes`")
    parser.add_argument("--train-images", type=int, default=2000)
    add_json_argument(parser)


def run(args) -> dict:
    from eval.dense import linear_probe

    result = linear_probe(encoder_of(args), args.scenes, train_images=args.train_images)
    print(f"patch accuracy {result['patch_accuracy']:.2f}%  mIoU {result['miou']:.2f}% "
          f"({result['classes']} classes, {result['test_patches']} test patches)")
    return result
