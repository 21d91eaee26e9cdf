"""What every tab of the page shares: the library, the model, the upload limits, and one way to turn results
and errors into what Gradio shows."""

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from app.model import ModelLoader
from app.search import Result, make_filters, more_like_this, percent, why_empty
from app.thumbnails import thumbnail
from app.uploads import UploadLimits, open_upload
from indexer import Hit, Library
from indexer.library import LibraryWriteError

if TYPE_CHECKING:  # torch: not imported before the page answers (app.model)
    from embedding import Encoder
    from embedding.locca import LocCaDecoder
    from embedding.words import TextReader


@dataclass(frozen=True)
class Page:
    library: Library
    model: ModelLoader
    decoder: "LocCaDecoder | None" = None   # a model trained with SigLIP 2's LocCa decoder can also caption
    limits: UploadLimits = UploadLimits()  # noqa: RUF009 (frozen, so one shared default is safe)
    index_roots: tuple[Path, ...] = ()     # the page may index folders below these (--allow-index)

    @property
    def encoder(self) -> "Encoder":
        """The model: waits while it loads (`app.model`); ValueError when it could not be loaded."""
        return self.model.get()

    @property
    def text_reader(self) -> "TextReader":
        """What reads a text query: the model's text side alone while the rest loads (`app.model`)."""
        return self.model.text_reader()

    def checked(self, run):
        """`run()`, its refusals (a bad query, filter or upload; a full disk) shown to the user in words."""
        try:
            return run()
        except (ValueError, LibraryWriteError) as error:
            raise refusal(str(error)) from None

    def upload(self, path: str | None) -> Image.Image:
        """An uploaded image, checked against the limits before it is decoded (a refusal: ValueError)."""
        return open_upload(path, self.limits, min_side=2 * self.encoder.input_side)

    def gallery(self, results: list[Result]) -> tuple[list[tuple[str, str]], list[str]]:
        """Search results for a gallery, each captioned with its probability (or how alike) and name."""
        return self.captioned([(r, (percent(r.probability) if not math.isnan(r.probability)
                                    else f"{max(r.score, 0):.0%} alike") + f" · {Path(r.path).name}")
                               for r in results])

    def more_like(self, path: str | None, n: int, *filters: str) -> tuple[list, list[str], str]:
        """Gallery, originals and note for "More like this" (the photo view), among the photos passing `filters`
        (the values of `filter_controls`)."""
        if not path:
            raise refusal("select a photo in the results first")
        chosen = self.checked(lambda: make_filters(*filters))
        results = self.checked(lambda: more_like_this(self.library, path, int(n), chosen))
        return *self.gallery(results), count_note(results, int(n)) or why_empty(self.library, chosen)

    def captioned(self, items: list[tuple[Result | Hit, str]]) -> tuple[list[tuple[str, str]], list[str]]:
        """Thumbnails with these captions for a gallery, and the originals' paths (to act on a selection)."""
        return ([(thumbnail(self.library.folder, r.id, r.path, r.hash), caption) for r, caption in items],
                [r.path for r, _ in items])


def refusal(message: str) -> gr.Error:
    """The error a refused request shows in the page, said in one line in the terminal too (Gradio would print
    a 30-line traceback of its own code for each)."""
    print(f"refused: {message}", file=sys.stderr, flush=True)
    return gr.Error(message, print_exception=False)


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


def photo_grid(**kwargs) -> gr.Gallery:
    """A gallery of thumbnails six across, each opening the app's photo view (app/photo_view.py): Gradio's own
    preview stays shut, and a single photo keeps a tile's size (Gradio widens the columns to fill the row)."""
    return gr.Gallery(columns=6, object_fit="cover", height="auto", allow_preview=False, fit_columns=False, **kwargs)


def filter_controls(library: Library, elem_id: str) -> list[gr.components.Component]:
    """The filters, folded away: below a folder, taken between two dates, with or without GPS, tagged. Their
    values go to `app.search.make_filters` in this order."""
    with gr.Accordion("Filters", open=False, elem_id=elem_id), gr.Row():
        folder = gr.Textbox(label="Only below folder", placeholder="/home/me/Pictures/2024")
        taken_from = gr.Textbox(label="Taken from (YYYY-MM-DD)")
        taken_to = gr.Textbox(label="Taken until (YYYY-MM-DD)")
        gps = gr.Radio(["any", "yes", "no"], value="any", label="Has GPS")
        tagged = gr.Dropdown(["", *library.vocabulary()], value="", label="Tagged", allow_custom_value=True)
    return [folder, taken_from, taken_to, gps, tagged]


def changed(controls: list[gr.components.Component]) -> list:
    """The events by which each control says it changed: a typed box on Enter, a slider on release, others on
    change (so a search re-runs once per change, not per keystroke)."""
    return [control.submit if isinstance(control, gr.Textbox) else
            control.release if isinstance(control, gr.Slider) else control.change for control in controls]


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def count_note(results: list, k: int) -> str:
    """"12 photos." ("The best 24 photos." when more may match), or "" for none (say why instead)."""
    if not results:
        return ""
    if len(results) == k:
        return f"The best {k} photos (raise “Results” for more)."
    return f"{plural(len(results), 'photo')}."
