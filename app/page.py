"""What every tab of the page shares: the library, the model, the upload limits, and one way to turn results
and errors into what Gradio shows."""

import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from app.search import Result
from app.thumbnails import thumbnail
from app.uploads import UploadLimits, open_upload
from embedding import Encoder
from embedding.locca import LocCaDecoder
from indexer import Hit, Library
from indexer.library import LibraryWriteError


@dataclass(frozen=True)
class Page:
    library: Library
    encoder: Encoder
    decoder: LocCaDecoder | None = None   # a model trained with SigLIP 2's LocCa decoder can also caption
    limits: UploadLimits = UploadLimits()  # noqa: RUF009 (frozen, so one shared default is safe)
    index_roots: tuple[Path, ...] = ()     # the page may index folders below these (--allow-index)

    def checked(self, run):
        """`run()`, its refusals (a bad query, filter or upload; a full disk) shown to the user in words."""
        try:
            return run()
        except (ValueError, LibraryWriteError) as error:
            raise gr.Error(str(error)) from None

    def upload(self, path: str | None) -> Image.Image:
        """An uploaded image, checked against the limits before it is decoded (a refusal: ValueError)."""
        return open_upload(path, self.limits, min_side=2 * self.encoder.input_side)

    def gallery(self, results: list[Result]) -> tuple[list[tuple[str, str]], list[str]]:
        """Search results for a gallery, each captioned with its probability (or how alike) and name."""
        return self.captioned([(r, (f"{r.probability:.0%}" if not math.isnan(r.probability)
                                    else f"{max(r.score, 0):.0%} alike") + f" · {Path(r.path).name}")
                               for r in results])

    def captioned(self, items: list[tuple[Result | Hit, str]]) -> tuple[list[tuple[str, str]], list[str]]:
        """Thumbnails with these captions for a gallery, and the originals' paths (to act on a selection)."""
        return ([(thumbnail(self.library.folder, r.id, r.path, r.hash), caption) for r, caption in items],
                [r.path for r, _ in items])


def image_upload(**kwargs) -> gr.Image:
    """An image input whose upload reaches the handler unopened, as a path: `Page.upload` then checks its size,
    header and format and says in words what is wrong with a bad one. (gr.Image opens every upload itself
    first, and a file that is no image fails there with a bare "Error" and a traceback. The override is on
    the instance: a subclass of a Gradio component makes Gradio write a .pyi stub beside this module.)"""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    opened = image.preprocess

    def unopened(payload):
        return opened(payload) if payload is None or payload.path is None else str(payload.path)

    image.preprocess = unopened
    return image


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def count_note(results: list, k: int) -> str:
    """"12 photos." ("The best 24 photos." when more may match), or "" for none (say why instead)."""
    if not results:
        return ""
    if len(results) == k:
        return f"The best {k} photos (raise “Results” for more)."
    return f"{plural(len(results), 'photo')}."
