"""Keeping a library's folders up to date while an app runs (`python -m app --watch`).

watchdog reports changes under the library's folders; once they have been quiet for a moment, the folders
that changed are indexed again in one background thread: the indexer's usual incremental run, so new,
changed, moved and deleted photos are all picked up, a burst of changes costs one run, and searches go on
meanwhile (the library is thread-safe; one indexing run at a time, see Library.indexing)."""

import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from embedding import Encoder
from embedding.images import IMAGE_SUFFIXES
from indexer.library import Library
from indexer.run import index_folders
from indexer.tags import tag_library

QUIET_S = 1.0  # a change is indexed once its folder has been quiet this long (a copy in progress settles)


class FolderWatch(FileSystemEventHandler):
    """Watch the library's folders; `start` and `stop` it around the app's life."""

    def __init__(self, library: Library, encoder: Encoder, quiet_s: float = QUIET_S):
        super().__init__()
        self.library, self.encoder, self.quiet_s = library, encoder, quiet_s
        self.roots = [Path(root) for root in library.roots()]
        self.dirty: set[Path] = set()
        self.last_change = 0.0
        self.changed = threading.Condition()
        self.observer = Observer()
        self.worker = threading.Thread(target=self._run, name="folder-watch", daemon=True)

    def start(self) -> None:
        for root in self.roots:
            self.observer.schedule(self, str(root), recursive=True)
        self.observer.start()
        self.worker.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join()

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        touched = [Path(p) for p in paths if p and (event.is_directory or Path(p).suffix.lower() in IMAGE_SUFFIXES)]
        roots = {root for root in self.roots for path in touched if path.is_relative_to(root)}
        if roots and event.event_type != "opened" and event.event_type != "closed_no_write":
            with self.changed:
                self.dirty |= roots
                self.last_change = time.monotonic()
                self.changed.notify()

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.dirty or time.monotonic() - self.last_change < self.quiet_s:
                    self.changed.wait(timeout=self.quiet_s if self.dirty else None)
                roots, self.dirty = sorted(self.dirty & set(self.library.roots())), set()  # (one removed since: no)
            if not roots:
                continue
            try:
                summary = index_folders(self.library, self.encoder, roots, progress=False)
                if summary.indexed and self.library.vocabulary():
                    tag_library(self.library, self.encoder, self.library.vocabulary())
                print(f"watch: {', '.join(map(str, roots))}: {str(summary).splitlines()[0]}", flush=True)
            except (ValueError, OSError) as error:  # a full disk, a folder gone: said, and the watch goes on
                print(f"watch: error: {error}", flush=True)
