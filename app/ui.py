"""The Gradio page and API: text, combined and image queries, "more like this", tagging, captions (a model
trained with a LocCa decoder), library status."""

import math
from pathlib import Path

import gradio as gr
from PIL import Image

from app.search import Result, make_filters, more_like_this, search_image, search_text, tag_image
from app.thumbnails import thumbnail
from app.uploads import UploadLimits, open_upload
from embedding import Encoder
from embedding.locca import LocCaDecoder, caption_images
from indexer import Library, index_folders
from indexer.library import LibraryWriteError
from indexer.tags import tag_library

CONCURRENT_REQUESTS = 4  # per endpoint (indexing: one at a time)
QUERY_HELP = ("Any language the model knows. Combine terms with commas; `-` excludes, `2:` weighs: "
              "`beach, -people, 2:sunset`.")


def build_ui(library: Library, encoder: Encoder, decoder: LocCaDecoder | None = None,
             limits: UploadLimits = UploadLimits(), index_roots: tuple[Path, ...] = ()) -> gr.Blocks:  # noqa: B008
    """The page; API endpoints /search, /search_image, /more_like_this and /tag return JSON, and /caption
    returns text when the model has a LocCa `decoder`. Uploads are held to `limits`; the Library panel
    (and /index_folder) indexes only folders below `index_roots` (--allow-index), none by default."""

    def as_json(results: list[Result]) -> list[dict]:
        # The key is not "path": gradio_client would take such dicts for files and download them.
        return [{"image": r.path, "score": r.score,
                 **({} if math.isnan(r.probability) else {"probability": r.probability})} for r in results]

    def gallery(results: list[Result]) -> tuple[list[tuple[str, str]], list[str]]:
        """Thumbnails with captions for the gallery, and the originals' paths (to act on a selection)."""
        shown = [(thumbnail(library.folder, r.id, r.path, r.hash),
                  (f"{r.probability:.0%}" if not math.isnan(r.probability) else f"cos {r.score:.2f}")
                  + f" · {Path(r.path).name}") for r in results]
        return shown, [r.path for r in results]

    def checked(run):
        try:
            return run()
        except (ValueError, LibraryWriteError) as error:  # a bad query, filter, upload; a full disk: in words
            raise gr.Error(str(error)) from None

    def uploaded(path: str | None) -> Image.Image:
        return checked(lambda: open_upload(path, limits, min_side=2 * encoder.input_side))

    def search_gallery(query, n, threshold, folder, taken_from, taken_to, gps, tag):  # -> gallery, originals
        return gallery(checked(lambda: search_text(library, encoder, query, int(n), float(threshold),
                                                   make_filters(folder, taken_from, taken_to, gps, tag))))

    def search(query: str, k: int = 24, min_probability: float = 0.0, folder: str = "", taken_from: str = "",
               taken_to: str = "", gps: str = "any", tag: str = "") -> list[dict]:
        """Text or combined query, optionally filtered (folder, dates YYYY-MM-DD, gps any/yes/no, tag)
        -> [{image, score, probability}], best first."""
        return as_json(checked(lambda: search_text(library, encoder, query, int(k), float(min_probability),
                                                   make_filters(folder, taken_from, taken_to, gps, tag))))

    def similar(image: str, k: int = 24) -> list[dict]:
        """Images most like one already in the library (given by its path) -> [{image, score}]."""
        return as_json(checked(lambda: more_like_this(library, image, int(k))))

    def by_image(image: str | None, k: int) -> list[dict]:
        picture = uploaded(image)
        return as_json(checked(lambda: search_image(library, encoder, picture, int(k))))

    def tag(image: str | None, labels: str) -> dict[str, float]:
        return tag_image(encoder, uploaded(image), labels.split(","))

    def caption(image: str | None, language: str) -> str:
        return caption_images(encoder, decoder, [uploaded(image)], language)[0]

    def remember(originals: list[str], event: gr.SelectData) -> tuple[str, str, str]:
        """The selected result: kept for "more like this", and shown full size with its path and tags."""
        path = originals[event.index]
        tags = ", ".join(f"{tag} {p:.0%}" for tag, p in library.image_tags(path).items())
        return path, path, f"`{path}`" + (f" · tags: {tags}" if tags else "")

    def index_folder(folder: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio passes progress)
        """Add a folder's photos to the library (searches go on meanwhile); the run's summary and the new status."""
        root = checked(lambda: allowed_folder(folder, index_roots))
        summary = checked(lambda: index_folders(library, encoder, [root]))  # its tqdm bars drive the progress bar
        if library.vocabulary():
            tag_library(library, encoder, library.vocabulary())
        return str(summary), *library_status()

    def similar_gallery(path: str | None, n: int):
        return gallery(checked(lambda: more_like_this(library, path, int(n)))) if path else ([], [])

    def library_status() -> tuple[str, list[list[str]]]:
        roots = ", ".join(f"`{root}`" for root in library.roots()) or "none"
        failures = library.failures()
        tags = ", ".join(f"{tag} (≥ {threshold:.2f})" for tag, threshold in library.vocabulary().items()) or "none"
        allowed = ", ".join(f"`{root}`" for root in index_roots)
        adding = (f"Add photos from below {allowed} here, or" if allowed else
                  "Indexing from this page is off (start the app with `--allow-index FOLDER` to allow it); add "
                  "photos")
        lost = (f" · **{len(library.lost)} photos lost their vectors** (a missing or damaged index file): the next "
                "indexing run embeds them again" if library.lost else "")
        text = (f"**{len(library)} photos** in `{library.folder}` · model `{encoder.name}` "
                f"(fingerprint `{encoder.fingerprint}`) · folders: {roots} · tags: {tags} · **{len(failures)} "
                f"files could not be read** (below){lost}. {adding} with "
                f"`python -m indexer FOLDER --library {library.folder}` while the app is stopped; tags with "
                f"`--tag LABEL[=THRESHOLD]`.")
        return text, [[path, reason] for path, reason in failures]

    with gr.Blocks(title="sigsearch") as ui:
        gr.Markdown(f"## sigsearch\nSearch {len(library)} photos. Model: `{encoder.name}`. "
                    "Percentages are the model's match probability σ(t·cos + b).")
        with gr.Tab("Search"):
            with gr.Row():
                query = gr.Textbox(label="Search", info=QUERY_HELP, scale=5, autofocus=True, elem_id="query",
                                   placeholder="a dog in the snow · ein Hund im Schnee · 雪中的狗")
                k = gr.Slider(1, 100, value=24, step=1, label="Results", scale=1)
                threshold = gr.Slider(0, 1, value=0, step=0.01, label="Hide matches below", scale=1)
            with gr.Row():
                go = gr.Button("Search", variant="primary")
                like = gr.Button("More like the selected photo")
            with gr.Accordion("Filters", open=False):
                with gr.Row():
                    folder = gr.Textbox(label="Only below folder", placeholder="/home/me/Pictures/2024")
                    taken_from = gr.Textbox(label="Taken from (YYYY-MM-DD)")
                    taken_to = gr.Textbox(label="Taken until (YYYY-MM-DD)")
                    gps = gr.Radio(["any", "yes", "no"], value="any", label="Has GPS")
                    tagged = gr.Dropdown(["", *library.vocabulary()], value="", label="Tagged", allow_custom_value=True)
            results = gr.Gallery(label="Results", columns=6, object_fit="cover", height="auto", elem_id="results")
            with gr.Row():
                full_size = gr.Image(label="Selected photo, full size", type="filepath", interactive=False,
                                     elem_id="full-size", scale=3)
                selected_info = gr.Markdown(elem_id="selected-path")
            originals, selected = gr.State([]), gr.State(None)
            for trigger in (query.submit, go.click):
                trigger(search_gallery, [query, k, threshold, folder, taken_from, taken_to, gps, tagged],
                        [results, originals], api_visibility="private")
            results.select(remember, originals, [selected, full_size, selected_info], api_visibility="private")
            like.click(similar_gallery, [selected, k], [results, originals], api_visibility="private")
        with gr.Tab("Search by image"):
            upload = gr.Image(type="filepath", image_mode=None, label="A photo like the ones you want",
                              elem_id="search-upload")
            image_results = gr.Gallery(label="Most similar photos (cosine)", columns=6, object_fit="cover")
            upload.change(lambda image, n: gallery(checked(lambda: search_image(
                library, encoder, uploaded(image), int(n))))[0] if image is not None else [],
                [upload, k], image_results, api_visibility="private")
        with gr.Tab("Tag an image"):
            with gr.Row():
                tag_upload = gr.Image(type="filepath", image_mode=None, label="Image", elem_id="tag-image")
                with gr.Column():
                    labels = gr.Textbox(label="Labels, comma-separated, any language", elem_id="tag-labels",
                                        value="dog, cat, beach, snow, people, Fahrrad, 汽车")
                    tag_button = gr.Button("Tag", variant="primary", elem_id="tag-button")
                    tags = gr.Label(label="Independent probability per label", num_top_classes=20, elem_id="tags")
            tag_button.click(tag, [tag_upload, labels], tags, api_name="tag")
            if decoder is not None:  # the model was trained with SigLIP 2's LocCa decoder: it can also caption
                with gr.Row():
                    language = gr.Dropdown(decoder.config.languages, value=decoder.config.languages[0],
                                           label="Caption language", elem_id="caption-language")
                    caption_button = gr.Button("Caption", elem_id="caption-button")
                    written = gr.Textbox(label="Caption (LocCa decoder)", interactive=False, elem_id="caption")
                caption_button.click(caption, [tag_upload, language], written, api_name="caption")
        with gr.Tab("Library"):
            status = gr.Markdown()
            with gr.Row():
                new_folder = gr.Textbox(label="Index a folder on this machine (only new or changed photos are "
                                              "embedded)", placeholder="/home/me/Pictures", scale=4,
                                        elem_id="index-folder")
                index_button = gr.Button("Index", variant="primary", elem_id="index-button")
            index_log = gr.Textbox(label="Last indexing run", lines=3, interactive=False, elem_id="index-log")
            failed = gr.Dataframe(headers=["file", "why it could not be read"], interactive=False)
            ui.load(library_status, None, [status, failed], api_visibility="private")
            index_button.click(index_folder, new_folder, [index_log, status, failed], api_name="index_folder",
                               concurrency_limit=1)
        # JSON endpoints for scripts (gradio_client); the image one takes an uploaded file.
        gr.api(search, api_name="search")
        gr.api(similar, api_name="more_like_this")
        api_image = gr.File(type="filepath", visible=False)  # no decoding before open_upload's checks
        api_k = gr.Number(24, visible=False)
        gr.Button(visible=False).click(by_image, [api_image, api_k], gr.JSON(visible=False), api_name="search_image")
    # Several searches at once (the library and the encoder are thread-safe, tested), so a quick query need
    # not wait behind a slow one; on 2 cores it measured no faster than one at a time (bench/RESULTS.md).
    return ui.queue(default_concurrency_limit=CONCURRENT_REQUESTS)


def allowed_folder(folder: str, index_roots: tuple[Path, ...]) -> Path:
    """The folder a page or API request asks to index, if it lies below a root the operator allowed."""
    if not index_roots:
        raise ValueError("indexing from the page is off: start the app with --allow-index FOLDER to allow the "
                         "folders below FOLDER")
    root = Path(folder.strip()).expanduser().resolve()
    if not folder.strip() or not any(root.is_relative_to(allowed.resolve()) for allowed in index_roots):
        raise ValueError(f"{folder!r} is not below a folder this app may index (--allow-index: "
                         f"{', '.join(str(allowed) for allowed in index_roots)})")
    if not root.is_dir():
        raise ValueError(f"not a folder on the server: {folder!r}")
    return root
