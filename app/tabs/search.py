"""Search: the library newest first until a query is typed; text and combined queries with filters; "more
like" a selected photo; "Show more" pages on; a photo view under the results (app/photo_view.py)."""

from pathlib import Path

import gradio as gr

from app import photo_view
from app.page import Page, changed, count_note, filter_controls, plural
from app.search import MAX_RESULTS, make_filters, search_text, why_empty

TITLE = "Search"
PAGE = 24  # photos a view shows at first, and "Show more" adds
QUERY_HELP = ("Any language the model knows. Combine terms with commas; `-` excludes, `2:` weighs: "
              "`beach, -people, 2:sunset`.")


def build(page: Page, ui: gr.Blocks) -> None:
    library, encoder = page.library, page.encoder

    def find(query, n, threshold, folder, taken_from, taken_to, gps, tag):  # -> gallery, originals, note
        filters = page.checked(lambda: make_filters(folder, taken_from, taken_to, gps, tag))
        results = page.checked(lambda: search_text(library, encoder, query, int(n), float(threshold), filters))
        return *page.gallery(results), count_note(results, int(n)) or why_empty(library, filters, float(threshold))

    def browse(n, threshold=0.0, folder="", taken_from="", taken_to="", gps="any", tag=""):  # no query: the library
        filters = page.checked(lambda: make_filters(folder, taken_from, taken_to, gps, tag))
        shown = library.newest(int(n), filters)
        passing = " passing the filters" if filters.active() else ""
        note = (f"The newest {plural(len(shown), 'photo')}{passing}, by date taken (else the file's time), of "
                f"{len(library):,} in the library." if shown else why_empty(library, filters))
        return *page.captioned([(hit, f"{when:%Y-%m-%d} · {Path(hit.path).name}") for hit, when in shown]), note

    def show(query, n, *filters):  # a control changed: the page follows it
        return find(query, n, *filters) if query.strip() else browse(n, *filters)

    def more(query, n, *filters):  # the next page of photos: the same view, longer
        n = min(int(n) + PAGE, MAX_RESULTS)
        return n, *show(query, n, *filters)

    with gr.Row():
        query = gr.Textbox(label="Search", info=QUERY_HELP, scale=5, min_width=320, autofocus=True, elem_id="query",
                           placeholder="a dog in the snow · ein Hund im Schnee · 雪中的狗")
        k = gr.Slider(1, MAX_RESULTS, value=PAGE, step=1, label="Results", scale=1, elem_id="result-count")
        threshold = gr.Slider(0, 1, value=0, step=0.01, label="Hide matches below", scale=1)
    with gr.Row():
        go = gr.Button("Search", variant="primary")
        like = gr.Button("More like the selected photo", elem_id="more-like")
    filters = filter_controls(library, "filters")
    note = gr.Markdown(elem_id="result-note")
    results = gr.Gallery(label="Photos", columns=6, object_fit="cover", height="auto", elem_id="results")
    show_more = gr.Button("Show more", elem_id="show-more")
    originals = gr.State([])
    selected = photo_view.build(page, results, originals)
    controls = [query, k, threshold, *filters]
    shown = [results, originals, note]
    ui.load(browse, k, shown, api_visibility="private")
    gr.on([query.submit, go.click], find, controls, shown, api_visibility="private")
    gr.on(changed([k, threshold, *filters]), show, controls, shown, api_visibility="private")
    show_more.click(more, controls, [k, *shown], api_visibility="private")
    like.click(page.more_like, [selected, k, *filters], shown, api_visibility="private")
