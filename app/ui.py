"""The Gradio page and API: a text box in any language -> a gallery of matching photos."""

from pathlib import Path

import gradio as gr

from app.search import search_text
from embedding import Encoder
from indexer import Library


def build_ui(library: Library, encoder: Encoder) -> gr.Blocks:
    """The search page; its API endpoint `/search` returns JSON results."""

    def search(query: str, k: int = 24) -> list[dict]:
        """Search the library: a list of {image, score, probability}, best match first."""
        # The key is not "path": gradio_client would take such dicts for files and download them.
        return [{"image": r.path, "score": r.score, "probability": r.probability}
                for r in search_text(library, encoder, query, int(k))]

    def search_gallery(query: str, k: int) -> list[tuple[str, str]]:
        return [(r.path, f"{r.probability:.0%} · {Path(r.path).name}")
                for r in search_text(library, encoder, query, int(k))]

    with gr.Blocks(title="sigsearch") as ui:
        gr.Markdown(f"## sigsearch\nSearch {len(library)} photos in any language the model knows. "
                    f"Model: `{encoder.name}`. Captions show the match probability σ(t·cos + b).")
        with gr.Row():
            query = gr.Textbox(label="Search", placeholder="a dog in the snow · ein Hund im Schnee · 雪中的狗",
                               scale=5, autofocus=True)
            k = gr.Slider(1, 100, value=24, step=1, label="Results", scale=1)
            button = gr.Button("Search", variant="primary", scale=1)
        gallery = gr.Gallery(label="Results", columns=6, object_fit="cover", height="auto")
        for trigger in (query.submit, button.click):
            trigger(search_gallery, [query, k], gallery, api_visibility="private")
        gr.api(search, api_name="search")
    return ui
