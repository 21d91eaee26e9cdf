"""The Gradio page and API: a tab per module of app/tabs, in TABS' order, and the JSON endpoints (app/api.py).
A new tab is one module with TITLE and build(page, ui), and a line here. (A tab's handlers are named apart from
the endpoints': Gradio names every event after its function, private ones too, and the first comes first.)"""

from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from app import api
from app.model import ModelLoader
from app.page import Page
from app.tabs import by_image, library, search, tag
from app.uploads import UploadLimits
from indexer import Library

if TYPE_CHECKING:
    from embedding.locca import LocCaDecoder

TABS = (search, by_image, tag, library)
STYLE = Path(__file__).with_name("page.css")  # what Gradio's own layout lacks: the photo view over the page
SCRIPT = Path(__file__).with_name("page.js")   # the photo view's keys, sliders on Enter, scrolling for more
CONCURRENT_REQUESTS = 4  # per endpoint (indexing: one at a time)
HEADER_REFRESH_S = 2  # seconds: the count follows an indexing run as it commits


def build_ui(library: Library, model: ModelLoader, decoder: "LocCaDecoder | None" = None,
             limits: UploadLimits = UploadLimits(), index_roots: tuple[Path, ...] = ()) -> gr.Blocks:  # noqa: B008
    """The page; API endpoints /search, /search_image, /more_like_this and /tag return JSON, and /caption
    returns text when the model has a LocCa `decoder`. Uploads are held to `limits`; the Library tab
    (and /index_folder) indexes only folders below `index_roots` (--allow-index), none by default."""
    page = Page(library, model, decoder, limits, index_roots)
    with gr.Blocks(title="sigsearch") as ui:
        header = gr.Markdown(lambda: _header(page), elem_id="header")
        gr.Timer(HEADER_REFRESH_S).tick(lambda: _header(page), None, header, api_visibility="private",
                                        show_progress="hidden")  # the count stays true while others index
        for tab in TABS:
            with gr.Tab(tab.TITLE):
                tab.build(page, ui)
        api.build(page)
    # Several searches at once (the library and the encoder are thread-safe, tested), so a quick query need
    # not wait behind a slow one; on 2 cores it measured no faster than one at a time (bench/RESULTS.md).
    return ui.queue(default_concurrency_limit=CONCURRENT_REQUESTS)


def _header(page: Page) -> str:
    count = len(page.library)
    model = (f"`{page.encoder.name}`" if page.model.ready else
             f"`{page.model.name}` (loading: text searches answer, searching by image waits)" if page.model.text_ready
             else f"`{page.model.name}` (loading: a search waits for it)")
    return (f"## sigsearch\nSearch {count:,} photo{'' if count == 1 else 's'}. Model: {model}. "
            "Percentages of a text query are the model's match probability σ(t·cos + b); of an image query, "
            "how alike the two photos are (cosine similarity).")
