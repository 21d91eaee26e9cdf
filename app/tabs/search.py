"""Search: text and combined queries with filters, and "more like" a selected result."""

import gradio as gr

from app.page import Page, count_note
from app.search import make_filters, more_like_this, search_text, why_empty

TITLE = "Search"
QUERY_HELP = ("Any language the model knows. Combine terms with commas; `-` excludes, `2:` weighs: "
              "`beach, -people, 2:sunset`.")


def build(page: Page) -> None:
    library, encoder = page.library, page.encoder

    def find(query, n, threshold, folder, taken_from, taken_to, gps, tag):  # -> gallery, originals, note
        filters = page.checked(lambda: make_filters(folder, taken_from, taken_to, gps, tag))
        results = page.checked(lambda: search_text(library, encoder, query, int(n), float(threshold), filters))
        return *page.gallery(results), count_note(results, int(n)) or why_empty(library, filters, float(threshold))

    def find_again(query, *controls):  # a control changed: the search on the page follows it
        return find(query, *controls) if query.strip() else (gr.skip(), gr.skip(), gr.skip())

    def find_similar(path: str | None, n: int):
        if not path:
            raise gr.Error("select a photo in the results first")
        results = page.checked(lambda: more_like_this(library, path, int(n)))
        return *page.gallery(results), count_note(results, int(n)) or why_empty(library)

    def remember(originals: list[str], event: gr.SelectData) -> tuple[str, str, str]:
        """The selected result: kept for "more like this", and shown full size with its path and tags."""
        path = originals[event.index]
        tags = ", ".join(f"{tag} {p:.0%}" for tag, p in library.image_tags(path).items())
        return path, path, f"`{path}`" + (f" · tags: {tags}" if tags else "")

    with gr.Row():
        query = gr.Textbox(label="Search", info=QUERY_HELP, scale=5, autofocus=True, elem_id="query",
                           placeholder="a dog in the snow · ein Hund im Schnee · 雪中的狗")
        k = gr.Slider(1, 100, value=24, step=1, label="Results", scale=1)
        threshold = gr.Slider(0, 1, value=0, step=0.01, label="Hide matches below", scale=1)
    with gr.Row():
        go = gr.Button("Search", variant="primary")
        like = gr.Button("More like the selected photo")
    with gr.Accordion("Filters", open=False), gr.Row():
        folder = gr.Textbox(label="Only below folder", placeholder="/home/me/Pictures/2024")
        taken_from = gr.Textbox(label="Taken from (YYYY-MM-DD)")
        taken_to = gr.Textbox(label="Taken until (YYYY-MM-DD)")
        gps = gr.Radio(["any", "yes", "no"], value="any", label="Has GPS")
        tagged = gr.Dropdown(["", *library.vocabulary()], value="", label="Tagged", allow_custom_value=True)
    note = gr.Markdown(elem_id="result-note")
    results = gr.Gallery(label="Results", columns=6, object_fit="cover", height="auto", elem_id="results")
    with gr.Row():
        full_size = gr.Image(label="Selected photo, full size", type="filepath", interactive=False,
                             elem_id="full-size", scale=3)
        selected_info = gr.Markdown(elem_id="selected-path")
    originals, selected = gr.State([]), gr.State(None)
    controls = [query, k, threshold, folder, taken_from, taken_to, gps, tagged]
    gr.on([query.submit, go.click], find, controls, [results, originals, note], api_visibility="private")
    gr.on([k.release, threshold.release, taken_from.submit, taken_to.submit, folder.submit, gps.change,
           tagged.change], find_again, controls, [results, originals, note], api_visibility="private")
    results.select(remember, originals, [selected, full_size, selected_info], api_visibility="private")
    like.click(find_similar, [selected, k], [results, originals, note], api_visibility="private")

