"""Search by image: the library's photos most like an uploaded one, among those passing the filters; each opens
in the photo view, and "more like" a selected one searches on from it."""

import gradio as gr

from app import photo_view
from app.page import Page, changed, count_note, filter_controls, image_upload, photo_grid
from app.search import MAX_RESULTS, make_filters, search_image, why_empty

TITLE = "By image"


def build(page: Page, ui: gr.Blocks) -> None:
    def find_like_upload(image: str | None, n: int, *filters: str):  # -> gallery, originals, note, the upload box
        if image is None:
            return [], [], "", gr.skip()
        try:
            picture = page.upload(image)
        except ValueError as error:  # said beside the box, which is cleared (a browser cannot show the file)
            return [], [], f"**{error}**", None
        chosen = page.checked(lambda: make_filters(*filters))
        results = page.checked(lambda: search_image(page.library, page.encoder, picture, int(n), chosen))
        return *page.gallery(results), count_note(results, int(n)) or why_empty(page.library, chosen), gr.skip()

    with gr.Row():
        upload = image_upload(label="A photo like the ones you want", elem_id="search-upload", scale=5, min_width=320)
        k = gr.Slider(1, MAX_RESULTS, value=24, step=1, label="Results", scale=1)
    filters = filter_controls(page.library, "image-filters")
    note = gr.Markdown(elem_id="image-result-note")
    results = photo_grid(label="Most similar photos (how alike: cosine similarity)", elem_id="image-results")
    originals = gr.State([])
    view = photo_view.build(page, results, originals, prefix="image-")
    gr.on([upload.upload, *changed([k, *filters])], find_like_upload, [upload, k, *filters],
          [results, originals, note, upload], api_visibility="private")
    view.like.click(page.more_like, [view.selected, k, *filters], [results, originals, note], api_visibility="private")
