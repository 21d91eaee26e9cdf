"""The model, loaded in a thread while the page already answers: the library view needs no model, and loading
one (the towers, the learned words' text readings, the demo photos embedded on a first run) takes seconds to
a minute. A request that needs the model waits for it; one that comes after a failed load is refused with the
reason.

Text searches need less: where the library's model recorded its text side (`embedding.text_query`: the text
tower in onnxruntime, no torch), that loads first, in about a second, and answers them. The whole model then
waits for the page to answer (`page_answers`) before it loads: on two cores its imports would slow Gradio's,
and until it is there only the by-image search, tagging and indexing wait for it."""

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedding import Encoder
    from embedding.words import TextReader
    from indexer import Library


def recorded_text_side(library: "Library", model: str | None, device: str) -> "TextReader | None":
    """The text side of the library's model without torch (`embedding.text_query`), where a load of it recorded
    one and the user asked for no other model, and for the CPU (one query is little work, even where a GPU is);
    else None: load the model the usual way."""
    recorded = library.setting("fingerprint")
    if not recorded or model not in (None, library.setting("model")) or device not in ("auto", "cpu"):
        return None
    from embedding.text_query import load_text_query

    return load_text_query(recorded)


class ModelLoader:
    def __init__(self, name: str, load: Callable[[], "Encoder"],
                 text_side: Callable[[], "TextReader | None"] = lambda: None):
        """Start `text_side()` then `load()` in a thread; `name` is the model as the user gave it (shown while
        it loads). With a text side, `load()` waits for `page_answers()`."""
        self.name = name
        self._done, self._text_done, self._page = threading.Event(), threading.Event(), threading.Event()
        self._encoder: Encoder | None = None
        self._text: TextReader | None = None
        self._error: str | None = None
        threading.Thread(target=self._run, args=(load, text_side), name="model-loader", daemon=True).start()

    def _run(self, load: Callable[[], "Encoder"], text_side: Callable[[], "TextReader | None"]) -> None:
        try:
            self._text = self._quietly(text_side)
            self._text_done.set()
            if self._text is not None:
                self._page.wait()
            self._encoder = load()
        except Exception as error:  # said on every request that needs the model, and once in the terminal
            self._error = str(error) or type(error).__name__
            print(f"error: the model could not be loaded: {self._error}", file=sys.stderr, flush=True)
        finally:
            self._text_done.set()
            self._done.set()

    @staticmethod
    def _quietly(text_side: Callable[[], "TextReader | None"]) -> "TextReader | None":
        """The text side, or None where it fails (a damaged cache): the whole model, loaded next, answers."""
        try:
            return text_side()
        except Exception as error:
            print(f"warning: the text side alone could not be loaded ({error}): searches wait for the model",
                  file=sys.stderr, flush=True)
            return None

    def page_answers(self) -> None:
        """The page is up: the whole model may load now."""
        self._page.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._error is None

    @property
    def text_ready(self) -> bool:
        """Text searches answer without waiting."""
        return self.ready or (self._text_done.is_set() and self._text is not None)

    def get(self) -> "Encoder":
        """The model, once loaded (waiting for it meanwhile); ValueError when it could not be."""
        self._done.wait()
        if self._error is not None:
            raise ValueError(f"the model could not be loaded: {self._error}")
        return self._encoder

    def text_reader(self) -> "TextReader":
        """What reads text queries: the model's text side alone while the model loads, if it has one."""
        self._text_done.wait()
        return self._text if self._text is not None and not self.ready else self.get()
