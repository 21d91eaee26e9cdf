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
from indexer import Library
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
        """An uploaded image, checked against the limits before it is decoded."""
        return self.checked(lambda: open_upload(path, self.limits, min_side=2 * self.encoder.input_side))

    def gallery(self, results: list[Result]) -> tuple[list[tuple[str, str]], list[str]]:
        """Thumbnails with captions for a gallery, and the originals' paths (to act on a selection)."""
        shown = [(thumbnail(self.library.folder, r.id, r.path, r.hash),
                  (f"{r.probability:.0%}" if not math.isnan(r.probability) else f"cos {r.score:.2f}")
                  + f" · {Path(r.path).name}") for r in results]
        return shown, [r.path for r in results]


def as_json(results: list[Result]) -> list[dict]:
    """Results as the API returns them, best first: {image, score, probability (text queries)}."""
    # The key is not "path": gradio_client would take such dicts for files and download them.
    return [{"image": r.path, "score": r.score,
             **({} if math.isnan(r.probability) else {"probability": r.probability})} for r in results]
