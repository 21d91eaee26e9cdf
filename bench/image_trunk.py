"""The bundled image tower's bare forward pass under each CPU runtime, in one process.

Eager fp32, channels-last, bf16 autocast (+ channels-last), torch.compile and onnxruntime (one session
using every thread, and what `embedding/` runs: the batch split over one single-threaded session per
thread), on the same ready tensors; each row also gives the worst cosine to eager's vectors.

    python -m bench.image_trunk --batch-size 32 --batches 8
"""

import argparse
import time

import onnxruntime
import torch

from embedding import load_encoder
from embedding.onnx_trunk import image_trunk_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="a model on pretrained bases (two_towers.json)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per runtime (after one warm-up)")
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    model, size = encoder.model, encoder.input_side
    onnx_trunk, model.onnx_image_trunk = model.onnx_image_trunk, None
    pixels = torch.randn(args.batch_size, 3, size, size).clamp(-1, 1)
    channels_last = pixels.to(memory_format=torch.channels_last)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    one_session = onnxruntime.InferenceSession(str(image_trunk_file(model.visual.trunk, size)), options,
                                               providers=["CPUExecutionProvider"])

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.encode_image(x)

    # In this order: the channels-last rows convert the model's weights in place.
    runtimes = [("eager fp32", lambda: (model.encode_image, pixels)),
                ("torch.compile fp32", lambda: (torch.compile(model.encode_image), pixels)),
                ("onnxruntime fp32, one session", lambda: (lambda x: model.image_head(torch.from_numpy(
                    one_session.run(None, {"pixels": x.numpy()})[0])), pixels)),
                ("onnxruntime fp32, a session per thread", lambda: (lambda x: model.image_head(onnx_trunk(x)),
                                                                    pixels)),
                ("channels-last fp32", lambda: (model.to(memory_format=torch.channels_last).encode_image,
                                                channels_last)),
                ("bf16 autocast, channels-last", lambda: (bf16, channels_last))]
    print("| runtime | batch | images/s | vs eager | worst cosine to eager |")
    print("|---|---|---|---|---|")
    reference, eager_rate = None, None
    with torch.inference_mode():
        for name, setup in runtimes:
            run, x = setup()
            out = torch.nn.functional.normalize(run(x).float(), dim=-1).numpy()  # warm-up (compiles, exports)
            start = time.perf_counter()
            for _ in range(args.batches):
                run(x)
            rate = args.batches * args.batch_size / (time.perf_counter() - start)
            reference = out if reference is None else reference
            eager_rate = eager_rate or rate
            cosine = float((out * reference).sum(axis=1).min())
            print(f"| {name} | {args.batch_size} | {rate:.1f} | {rate / eager_rate:.2f} | {cosine:.6f} |", flush=True)

if __name__ == "__main__":
    main()
