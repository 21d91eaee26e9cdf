"""The model, loaded in a thread while the page already answers: the library view needs no model, and loading
one (the towers, the learned words' text readings, the demo photos embedded on a first run) takes seconds to
a minute. A request that needs the model waits for it; one that comes after a failed load is refused with the
reason."""

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedding import Encoder


class ModelLoader:
    def __init__(self, name: str, load: Callable[[], "Encoder"]):
        """Start `load()` in a thread; `name` is the model as the user gave it (shown while it loads)."""
        self.name = name
        self._done = threading.Event()
        self._encoder: Encoder | None = None
        self._error: str | None = None
        threading.Thread(target=self._run, args=(load,), name="model-loader", daemon=True).start()

    def _run(self, load: Callable[[], "Encoder"]) -> None:
        try:
            self._encoder = load()
        except Exception as error:  # said on every request that needs the model, and once in the terminal
            self._error = str(error) or type(error).__name__
            print(f"error: the model could not be loaded: {self._error}", file=sys.stderr, flush=True)
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._error is None

    def get(self) -> "Encoder":
        """The model, once loaded (waiting for it meanwhile); ValueError when it could not be."""
        self._done.wait()
        if self._error is not None:
            raise ValueError(f"the model could not be loaded: {self._error}")
        return self._encoder
