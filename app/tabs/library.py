"""Library: what the library holds (folders, tags, files that could not be read); taking a folder out, once
the page has asked "are you sure" (/remove_folder, which asks nothing: it only narrows what is served) and,
where the operator allowed it (--allow-index), indexing a folder from the page (/index_folder), committed in
small steps so that the header's count and the searches follow it."""

from pathlib import Path

import gradio as gr

from app.page import Page, plural
from indexer import Filters

TITLE = "Library"
COMMIT_EVERY = 128  # photos: a commit is an append and one transaction, and the page shows each


def build(page: Page, ui: gr.Blocks) -> None:
    library = page.library

    def index_folder(folder: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio passes progress)
        """Add a folder's photos to the library (searches go on meanwhile); the run's summary and the new status."""
        from indexer import index_folders  # torch, loaded with the model by then
        from indexer.tags import tag_library

        root = page.checked(lambda: allowed_folder(folder, page.index_roots))
        summary = page.checked(lambda: index_folders(library, page.encoder, [root], commit_every=COMMIT_EVERY))
        if library.vocabulary():
            tag_library(library, page.encoder, library.vocabulary())
        return str(summary), *refreshed()

    def ask(folder: str | None):  # "are you sure", with how many photos would go
        count = page.checked(lambda: len(library.filtered_ids(Filters(folder=chosen_folder(folder)))))
        return gr.Column(visible=True), (f"Remove **{plural(count, 'photo')}** below `{folder}` from the library? "
                                         "The files stay where they are; indexing the folder again adds them back.")

    def remove_folder(folder: str | None):
        """Take a folder's photos out of the library (the files stay where they are)."""
        removed = page.checked(lambda: library.remove_root(chosen_folder(folder)))
        return f"removed {plural(removed, 'photo')} below {folder} from the library (the files are untouched)", \
            *refreshed()

    def refreshed():  # what the tab shows after a change: status, failures, the folder choice
        return status(page), failures(page), gr.Dropdown(choices=folders(page), value=None)

    text = gr.Markdown(lambda: status(page), elem_id="library-status")  # a callable: computed on every page load
    with gr.Row():
        folder = gr.Textbox(label="Index a folder on this machine (only new or changed photos are embedded)",
                            placeholder="/home/me/Pictures", scale=4, elem_id="index-folder")
        button = gr.Button("Index", variant="primary", elem_id="index-button")
    with gr.Row():
        # Filled on load (the page's config, sent before any login, names no folder); any value is let through
        # to remove_root, which refuses a folder that is not the library's: the choices a session was built
        # with miss the folders added since.
        chosen = gr.Dropdown([], value=None, label="The library's folders", scale=4, allow_custom_value=True,
                             elem_id="library-folders")
        remove = gr.Button("Remove from the library", variant="stop", elem_id="remove-button")
    with gr.Column(visible=False, elem_id="confirm-remove") as confirmation, gr.Row():
        question = gr.Markdown()
        sure = gr.Button("Remove", variant="stop", elem_id="confirm-remove-button", scale=0)
        cancel = gr.Button("Cancel", elem_id="cancel-remove-button", scale=0)
    log = gr.Textbox(label="Last change", lines=3, interactive=False, elem_id="index-log")
    failed = gr.Dataframe(lambda: failures(page), headers=["file", "why it could not be read"], interactive=False)
    outputs = [log, text, failed, chosen]
    button.click(index_folder, folder, outputs, api_name="index_folder", concurrency_limit=1, show_progress_on=log)
    remove.click(ask, chosen, [confirmation, question], api_visibility="private")
    hide = {"fn": lambda: gr.Column(visible=False), "inputs": None, "outputs": confirmation,
            "api_visibility": "private", "queue": False}
    sure.click(**hide).then(remove_folder, chosen, outputs, api_name="remove_folder", concurrency_limit=1)
    cancel.click(**hide)
    chosen.focus(lambda: gr.Dropdown(choices=folders(page)), None, chosen, api_visibility="private")  # fresh
    ui.load(lambda: gr.Dropdown(choices=folders(page)), None, chosen, api_visibility="private")


def status(page: Page) -> str:
    library = page.library
    tags = ", ".join(f"{tag} (≥ {threshold:.2f})" for tag, threshold in library.vocabulary().items()) or "none"
    allowed = ", ".join(f"`{root}`" for root in page.index_roots)
    adding = (f"Add photos from below {allowed} here, or" if allowed else
              "Indexing from this page is off (start the app with `--allow-index FOLDER` to allow it); add photos")
    lost = (f" · **{plural(len(library.lost()), 'photo')} lost their vectors** (a missing or damaged index file): "
            "the next indexing run embeds them again" if library.lost() else "")
    model = (f"model `{page.encoder.name}` (fingerprint `{page.encoder.fingerprint}`)" if page.model.ready
             else f"model `{page.model.name}` (loading)")
    return (f"**{plural(len(library), 'photo')}** in `{library.folder}` · {model} · "
            f"{plural(len(library.roots()), 'folder')} · tags: {tags} · "
            f"**{plural(len(library.failures()), 'file')} could not be read** (below){lost}. {adding} with "
            f"`python -m indexer FOLDER --library {library.folder}` while the app is stopped; tags with "
            f"`--tag LABEL[=THRESHOLD]`.")


def chosen_folder(folder: str | None) -> str:
    """The folder chosen in the list; ValueError (said in the page) when none is."""
    if not folder:
        raise ValueError("choose one of the library's folders first")
    return folder


def folders(page: Page) -> list[str]:
    return [str(root) for root in page.library.roots()]


def failures(page: Page) -> list[list[str]]:
    return [[path, reason] for path, reason in page.library.failures()]


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
