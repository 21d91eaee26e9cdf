"""The JSON endpoints for scripts (gradio_client): /search, /more_like_this, /search_image and /library (the
folder served). (/tag, /caption and /index_folder are their tabs' buttons.)"""

import gradio as gr

from app.page import Page
from app.search import as_json, make_filters, more_like_this, search_image, search_text


def build(page: Page) -> None:
    library, encoder = page.library, page.encoder

    def search(query: str, k: int = 24, min_probability: float = 0.0, folder: str = "", taken_from: str = "",
               taken_to: str = "", gps: str = "any", tag: str = "") -> list[dict]:
        """Text or combined query, optionally filtered (folder, dates YYYY-MM-DD, gps any/yes/no, tag)
        -> [{image, score, probability}], best first."""
        return as_json(page.checked(lambda: search_text(library, encoder, query, int(k), float(min_probability),
                                                        make_filters(folder, taken_from, taken_to, gps, tag))))

    def similar(image: str, k: int = 24, folder: str = "", taken_from: str = "", taken_to: str = "",
                gps: str = "any", tag: str = "") -> list[dict]:
        """Images most like one already in the library (given by its path), optionally filtered as /search is
        -> [{image, score}]."""
        return as_json(page.checked(lambda: more_like_this(library, image, int(k),
                                                           make_filters(folder, taken_from, taken_to, gps, tag))))

    def by_image(image: str | None, k: int, folder: str, taken_from: str, taken_to: str, gps: str,
                 tag: str) -> list[dict]:
        return as_json(page.checked(lambda: search_image(library, encoder, page.upload(image), int(k),
                                                         make_filters(folder, taken_from, taken_to, gps, tag))))

    def served_library() -> str:
        """The folder of the library this app serves (the shell search checks it before trusting an answer)."""
        return str(library.folder.resolve())

    gr.api(search, api_name="search")
    gr.api(served_library, api_name="library")
    gr.api(similar, api_name="more_like_this")
    upload = gr.File(type="filepath", visible=False)  # no decoding before open_upload's checks
    k = gr.Number(24, visible=False)
    filters = [gr.Textbox(value, visible=False) for value in ("", "", "", "any", "")]  # folder .. tag, as /search
    gr.Button(visible=False).click(by_image, [upload, k, *filters], gr.JSON(visible=False), api_name="search_image")
