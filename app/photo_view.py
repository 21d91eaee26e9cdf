"""The photo view of a gallery, as photo apps have it: the selected photo over the results, as large as the
window allows (the app's own copy of it, `app.thumbnails`), with what the library knows of it (date taken,
camera, place, size, folder, tags with their probabilities); previous and next through the gallery, by button
or by the arrow keys, Escape to close (app/page.js); "more like this" searches on from it."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from app.page import Page, refusal
from app.search import percent
from app.thumbnails import view_copy


@dataclass
class PhotoView:
    selected: gr.State  # the selected photo's path (for "more like this")
    outputs: list       # what opening a photo updates
    show: Callable      # (paths, index) -> the outputs' values for photo `index` of `paths`
    like: gr.Button     # "More like this": the tab searches from `selected` (and closes the view: `overlay`)
    overlay: gr.Column  # the view, shown over the page while a photo is open

    def opener(self, offset: int = 0) -> Callable:
        """A gallery's select handler, for a gallery whose photo i is photo `offset + i` of the view's paths
        (one day of the library view, say)."""
        def select(paths: list[str], event: gr.SelectData):
            return self.show(paths, offset + event.index)
        return select


def build(page: Page, gallery: gr.Gallery, originals: gr.State, prefix: str = "") -> PhotoView:
    """The view, opened by selecting a photo of `gallery` (whose originals' paths `originals` holds, as other
    galleries' may through `PhotoView.opener`; `prefix` sets its elements' ids apart from another view's)."""
    def show(paths: list[str], index: int):  # -> selected path, the photo, its details, its index
        path = paths[index]
        known = page.library.details(path)
        photo = view_copy(page.library.folder, known["id"], path, known["hash"]) if known else None
        return path, photo, describe(page, path, known), index, gr.Column(visible=True)

    def step(paths: list[str], index: int, delta: int):
        if not paths or index < 0:
            raise refusal("select a photo in the results first")
        return show(paths, (index + delta) % len(paths))

    with gr.Column(visible=False, elem_id=f"{prefix}photo-view", elem_classes="photo-view") as overlay:
        with gr.Row(elem_classes="photo-view-bar"):
            previous = gr.Button("← Previous", elem_id=f"{prefix}previous-photo", elem_classes="previous-photo")
            following = gr.Button("Next →", elem_id=f"{prefix}next-photo", elem_classes="next-photo")
            like = gr.Button("More like this", elem_id=f"{prefix}more-like")
            close = gr.Button("✕ Close", elem_id=f"{prefix}close-photo", elem_classes="close-photo")
        photo = gr.Image(show_label=False, type="filepath", interactive=False, elem_id=f"{prefix}full-size",
                         elem_classes="full-size")
        details = gr.Markdown(elem_id=f"{prefix}selected-path")
    selected, index = gr.State(None), gr.State(-1)
    view = PhotoView(selected, [selected, photo, details, index, overlay], show, like, overlay)
    private = {"api_visibility": "private", "show_progress": "hidden"}
    gallery.select(view.opener(), originals, view.outputs, **private)
    previous.click(lambda paths, i: step(paths, i, -1), [originals, index], view.outputs, **private)
    following.click(lambda paths, i: step(paths, i, 1), [originals, index], view.outputs, **private)
    gr.on([close.click, like.click], lambda: gr.Column(visible=False), None, overlay, queue=False, **private)
    return view


def describe(page: Page, path: str, known: dict | None) -> str:
    """A photo's details as Markdown (`known`: the library's `details` of it): name, folder, size; date taken,
    camera, place; tags."""
    if known is None:
        return f"**{Path(path).name}** is no longer in the library"
    file = Path(path)
    lines = [f"**{file.name}** · folder `{file.parent}`"
             + (f" · {known['width']}×{known['height']}" if known.get("width") else "")
             + (f" · {_size(known['bytes'])}" if known.get("bytes") else "")]
    taken = known.get("taken_at")
    lines.append(" · ".join(filter(None, [
        f"taken {taken:%Y-%m-%d %H:%M}" if taken else "no date taken (EXIF)",
        known.get("camera"),
        f"place {known['gps_lat']:.5f}, {known['gps_lon']:.5f}" if known.get("gps_lat") is not None else None])))
    tags = page.library.image_tags(path)
    lines.append("tags: " + (", ".join(f"{tag} {percent(p)}" for tag, p in tags.items()) if tags else "none"))
    return "  \n".join(lines)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MB" if count >= 2**20 else f"{max(count // 1024, 1)} KB"
