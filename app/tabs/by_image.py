"""Search by image: the library's photos most like an uploaded one."""

import gradio as gr

from app.page import Page
from app.search import search_image

TITLE = "Search by image"


def build(page: Page) -> None:
    def find_like_upload(image: str | None, n: int):
        if image is None:
            return []
        return page.gallery(page.checked(lambda: search_image(page.library, page.encoder, page.upload(image),
                                                              int(n))))[0]

    with gr.Row():
        upload = gr.Image(type="filepath", image_mode=None, label="A photo like the ones you want",
                          elem_id="search-upload", scale=5)
        k = gr.Slider(1, 100, value=24, step=1, label="Results", scale=1)
    results = gr.Gallery(label="Most similar photos (cosine)", columns=6, object_fit="cover")
    upload.change(find_like_upload, [upload, k], results, api_visibility="private")
