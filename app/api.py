"""The JSON endpoints for scripts (gradio_client): /search, /more_like_this, /search_image, /browse (the
library by filters alone, newest first) and /library (the folder served). (/tag, /caption, /index_folder and
/remove_folder are their tabs' buttons.)"""

import gradio as gr

from app.page import Page
from app.search import as_json, browse, make_filters, more_like_this, search_image, search_text
from indexer import Filters


def build(page: Page) -> None:
    library = page.library

    def search(query: str, k: int = 24, min_probability: float = 0.0, folder: str = "", taken_from: str = "",
               taken_to: str = "", gps: str = "any", tag: str = "") -> list[dict]:
        """Text or combined query, optionally filtered (folder, dates YYYY-MM-DD, gps any/yes/no, tag)
        -> [{image, score, probability}], best first."""
        return as_json(page.checked(lambda: search_text(
            library, page.text_reader, _text(query, "query"), _whole(k), _probability(min_probability),
            _filters(folder, taken_from, taken_to, gps, tag))))

    def similar(image: str, k: int = 24, folder: str = "", taken_from: str = "", taken_to: str = "",
                gps: str = "any", tag: str = "") -> list[dict]:
        """Images most like one already in the library (given by its path), optionally filtered as /search is
        -> [{image, score}]."""
        return as_json(page.checked(lambda: more_like_this(library, _text(image, "image"), _whole(k),
                                                           _filters(folder, taken_from, taken_to, gps, tag))))

    def by_image(image: str | None, k: int, folder: str, taken_from: str, taken_to: str, gps: str,
                 tag: str) -> list[dict]:
        return as_json(page.checked(lambda: search_image(library, page.encoder, page.upload(image), _whole(k),
                                                         _filters(folder, taken_from, taken_to, gps, tag))))

    def newest(k: int = 24, folder: str = "", taken_from: str = "", taken_to: str = "", gps: str = "any",
               tag: str = "") -> list[dict]:
        """The library without a query: the photos passing the filters (as /search's), newest first by date
        taken, else the file's time -> [{image, time}]."""
        shown = page.checked(lambda: browse(library, _whole(k), _filters(folder, taken_from, taken_to, gps, tag)))
        return [{"image": hit.path, "time": when.isoformat()} for hit, when in shown]

    def served_library() -> str:
        """The folder of the library this app serves (the shell search checks it before trusting an answer)."""
        return str(library.folder.resolve())

    gr.api(search, api_name="search")
    gr.api(served_library, api_name="library")
    gr.api(similar, api_name="more_like_this")
    gr.api(newest, api_name="browse")
    upload = gr.File(type="filepath", visible=False)  # no decoding before open_upload's checks
    k = gr.Number(24, visible=False)
    filters = [gr.Textbox(value, visible=False) for value in ("", "", "", "any", "")]  # folder .. tag, as /search
    gr.Button(visible=False).click(by_image, [upload, k, *filters], gr.JSON(visible=False), api_name="search_image")


# An API call's values come as the JSON had them: a wrong type is refused in words, as a bad value is (a
# TypeError deep inside once answered `"error": null`, and a NaN probability matched nothing, silently).
def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is text, not {_shown(value)}")
    return value


def _whole(value, name: str = "k") -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError(f"{name} is a whole number, not {_shown(value)}")
    return int(value)


def _probability(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:  # NaN is neither
        raise ValueError(f"min_probability is a number from 0 to 1, not {_shown(value)}")
    return float(value)


def _filters(*values) -> Filters:
    """`make_filters` of the filter values, each text or left out (None)."""
    names = ("folder", "taken_from", "taken_to", "gps", "tag")
    return make_filters(*(None if value is None else _text(value, name) for value, name in zip(values, names,
                                                                                                strict=True)))


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
