"""locca: LocCa referring-expression boxes (Ref), IoU >= 0.5 accuracy per language."""

from common.cli import add_json_argument, add_languages_argument, existing_file, existing_folder
from eval.commands import add_model_args, encoder_of

HELP = "LocCa: referring-expression boxes (Ref), IoU >= 0.5 accuracy per language"
DESCRIPTION = ("For every annotation with referring expressions (`refs`: {language: text}) in a COCO-style "
               "instances file, the model's LocCa decoder reads the expression and writes a box; reports "
               "the share with IoU >= 0.5 against the true box, and the mean IoU, per language.")


def add_args(parser) -> None:
    add_model_args(parser, "a run trained with --locca (its folder holds locca.json)")
    parser.add_argument("--instances", type=existing_file, required=True,
                        help="instances JSON (e.g. data/scenes/instances_test.json)")
    parser.add_argument("--images", type=existing_folder, required=True, help="folder of the images' file_name")
    add_languages_argument(parser, "the decoder writes")
    add_json_argument(parser)


def run(args) -> dict:
    from embedding.loading import model_folder
    from embedding.locca import load_decoder
    from eval.locca import referring_accuracy

    encoder = encoder_of(args)
    decoder = load_decoder(model_folder(args.model))  # beside the towers
    result = referring_accuracy(encoder, decoder, args.instances, args.images, args.languages)
    for lang, row in result.items():
        print(f"{lang:>5}  Ref acc@IoU0.5 {row['acc_iou50']:6.2f}%  mean IoU {row['mean_iou']:.3f}"
              + (f"  ({row['n']} expressions)" if "n" in row else ""))
    return result
