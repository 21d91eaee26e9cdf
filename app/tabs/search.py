"""Search: the library newest first, grouped by day, until a query is typed; text and combined queries with
filters; "more like" a selected photo; the next page loads as the page scrolls to "Show more" (app/page.js),
which shows while more photos may match; a photo view over the results (app/photo_view.py)."""

import itertools
from datetime import datetime
from pathlib import Path

import gradio as gr

from app import photo_view
from app.page import Page, changed, count_note, filter_controls, photo_grid, plural
from app.search import MAX_RESULTS, browse, make_filters, search_text, why_empty
from indexer import Filters, Hit

TITLE = "Search"
PAGE = 24  # photos a view shows at first, and "Show more" adds
QUERY_HELP = ("Any language the model knows. Combine terms with commas; `-` excludes, `2:` weighs: "
              "`beach, -people, 2:sunset`.")


def build(page: Page, ui: gr.Blocks) -> None:
    library = page.library

    def answer(items: list, paths: list[str], note: str, more: bool = False):  # the library view put away
        return gr.Gallery(items, visible=True), paths, note, [], gr.Button(visible=more)

    def find(query, n, threshold, folder, taken_from, taken_to, gps, tag):  # -> shown (below)
        filters = page.checked(lambda: make_filters(folder, taken_from, taken_to, gps, tag))
        results = page.checked(lambda: search_text(library, page.text_reader, query, int(n), float(threshold), filters))
        return answer(*page.gallery(results),
                      count_note(results, int(n)) or why_empty(library, filters, float(threshold)),
                      more=len(results) == int(n) < MAX_RESULTS)

    def newest(n, threshold=0.0, folder="", taken_from="", taken_to="", gps="any", tag=""):  # no query
        filters = page.checked(lambda: make_filters(folder, taken_from, taken_to, gps, tag))
        shown = page.checked(lambda: browse(library, int(n), filters))
        passing = " passing the filters" if filters.active() else ""
        note = (f"The newest {plural(len(shown), 'photo')}{passing}, by date taken (else the file's time), of "
                f"{len(library):,} in the library." if shown else why_empty(library, filters))
        return (gr.Gallery([], visible=False), [hit.path for hit, _ in shown], note, days(page, shown, filters),
                gr.Button(visible=len(shown) == int(n) < MAX_RESULTS))

    def show(query, n, *filters):  # a control changed: the page follows it
        return find(query, n, *filters) if query.strip() else newest(n, *filters)

    def more(query, n, *filters):  # the next page of photos: the same view, longer
        n = min(int(n) + PAGE, MAX_RESULTS)
        return n, *show(query, n, *filters)

    with gr.Row():
        query = gr.Textbox(label="Search", info=QUERY_HELP, scale=5, min_width=320, autofocus=True, elem_id="query",
                           placeholder="a dog in the snow · ein Hund im Schnee · 雪中的狗")
        k = gr.Slider(1, MAX_RESULTS, value=PAGE, step=1, label="Results", scale=1, elem_id="result-count")
        threshold = gr.Slider(0, 1, value=0, step=0.01, label="Hide matches below", scale=1)
    go = gr.Button("Search", variant="primary")
    filters = filter_controls(library, "filters")
    note = gr.Markdown(elem_id="result-note")
    day_groups = gr.State([])  # the library view: [{title, items, start}], a day each

    with gr.Column(elem_id="library-view"):
        @gr.render(inputs=day_groups)
        def library_view(groups: list[dict]):
            for group in groups:
                gr.Markdown(f"#### {group['title']}", elem_classes="day-heading")
                day = photo_grid(value=group["items"], show_label=False, elem_classes="day")
                day.select(view.opener(group["start"]), originals, view.outputs, api_visibility="private")

    results = photo_grid(label="Photos", elem_id="results", visible=False)
    show_more = gr.Button("Show more", elem_id="show-more", visible=False)
    originals = gr.State([])
    view = photo_view.build(page, results, originals)
    controls = [query, k, threshold, *filters]
    shown = [results, originals, note, day_groups, show_more]
    ui.load(newest, k, shown, api_visibility="private")
    gr.on([query.submit, go.click], find, controls, shown, api_visibility="private")
    gr.on(changed([k, threshold, *filters]), show, controls, shown, api_visibility="private")
    show_more.click(more, controls, [k, *shown], api_visibility="private")
    view.like.click(lambda *values: answer(*page.more_like(*values)), [view.selected, k, *filters], shown,
                    api_visibility="private")


def days(page: Page, shown: list[tuple[Hit, datetime]], filters: Filters) -> list[dict]:
    """The library view, a group per day: its heading (the day's photos passing `filters`, and how many of them
    are shown), its gallery items and the position of its first photo among `shown`."""
    groups, start = [], 0
    totals = page.library.day_counts([when.date() for _, when in shown], filters)
    for day, photos in itertools.groupby(shown, key=lambda pair: pair[1].date()):
        photos = list(photos)
        items, _ = page.captioned([(hit, f"{when:%H:%M} · {Path(hit.path).name}") for hit, when in photos])
        count = plural(totals[day], "photo")
        groups.append({"title": f"{day:%A %d %B %Y} · " + (count if totals[day] == len(photos) else
                                                              f"{len(photos):,} of {count} shown"),
                       "items": items, "start": start})
        start += len(photos)
    return groups
