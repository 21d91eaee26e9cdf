"""Search by image: the library's photos most like an uploaded one, each opening in the photo view."""

import gradio as gr

from app import photo_view
from app.page import Page, count_note, image_upload
from app.search import search_image, why_empty

TITLE = "By image"


def build(page: Page, ui: gr.Blocks) -> None:
    def find_like_upload(image: str | None, n: int):  # -> gallery, originals, note, the upload box
        if image is None:
            return [], [], "", gr.skip()
        try:
            picture = page.upload(image)
        except ValueError as error:  # said beside the box, which is cleared (a browser cannot show the file)
            return [], [], f"**{error}**", None
        results = page.checked(lambda: search_image(page.library, page.encoder, picture, int(n)))
        return *page.gallery(results), count_note(results, int(n)) or why_empty(page.library), gr.skip()

    with gr.Row():
        upload = image_upload(label="A photo like the ones you want", elem_id="search-upload", scale=5, min_width=320)
        k = gr.Slider(1, 100, value=24, step=1, label="Results", scale=1)
    note = gr.Markdown(elem_id="image-result-note")
    results = gr.Gallery(label="Most similar photos (how alike: cosine similarity)", columns=6, object_fit="cover",
                         elem_id="image-results")
    originals = gr.State([])
    photo_view.build(page, results, originals, prefix="image-")
    gr.on([upload.upload, k.release], find_like_upload, [upload, k], [results, originals, note, upload],
          api_visibility="private")
