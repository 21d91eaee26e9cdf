"""Keeping a library's folders up to date while an app runs (`python -m app --watch`).

watchdog reports changes under the library's folders; once they have been quiet for a moment, the folders
that changed are indexed again in one background thread: the indexer's usual incremental run, so new,
changed, moved and deleted photos are all picked up, a burst of changes costs one run, and searches go on
meanwhile (the library is thread-safe; one indexing run at a time, see Library.indexing). The watch follows
the library's folders: one added from the page while the app runs is watched within `FOLLOW_S`, and one
removed is dropped. Each folder is indexed once when the watch starts, so what changed while nothing watched
(the app stopped, or loading its model) is picked up too. A folder deleted from the disk keeps its photos in
the library (an unplugged disk is not an emptied one); when a folder of that name is there again it is
watched and indexed anew, which takes out the photos it no longer holds."""

import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from common.images import IMAGE_SUFFIXES
from embedding import Encoder
from indexer.library import Library
from indexer.run import index_folders
from indexer.tags import tag_library

QUIET_S = 1.0  # a change is indexed once its folder has been quiet this long (a copy in progress settles)
FOLLOW_S = 2.0  # how often the watch looks for folders added to or removed from the library
UNSEEN = ("never looked at",)  # a folder's identity before the first look


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, None when there is none by that name."""
    try:
        info = folder.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if folder.is_dir() else None


class FolderWatch(FileSystemEventHandler):
    """Watch the library's folders; `start` and `stop` it around the app's life."""

    def __init__(self, library: Library, encoder: Encoder, quiet_s: float = QUIET_S, follow_s: float = FOLLOW_S):
        super().__init__()
        self.library, self.encoder, self.quiet_s, self.follow_s = library, encoder, quiet_s, follow_s
        self.watches: dict[Path, object] = {}  # folder -> its watchdog watch
        self.identity: dict[Path, tuple] = {}  # folder -> `_identity` at the last look
        self.dirty: set[Path] = set()
        self.stopping = False
        self.last_change = 0.0
        self.changed = threading.Condition()
        self.observer = Observer()
        self.worker = threading.Thread(target=self._run, name="folder-watch", daemon=True)

    def start(self) -> None:
        self.follow()
        self.observer.start()
        self.worker.start()

    def follow(self) -> None:
        """Watch exactly the library's folders as they are now on the disk. A folder deleted and made again is
        another folder to the system's notifications: it is watched again, and indexed anew."""
        roots = {Path(root) for root in self.library.roots()}
        watches = dict(self.watches)
        for root in set(watches) - roots:
            self._unschedule(watches.pop(root))
            self.identity.pop(root, None)
        for root in roots:
            now, before = _identity(root), self.identity.get(root, UNSEEN)
            if root in watches and now == before:
                continue
            if root in watches:  # deleted, or another folder by its name
                self._unschedule(watches.pop(root))
            self.identity[root] = now
            if now is None:
                if before not in (None, UNSEEN):
                    print(f"watch: {root} is gone from the disk; its photos stay in the library until it is back "
                          "(or removed from the library)", flush=True)
                continue  # looked for again at the next look
            try:
                watches[root] = self.observer.schedule(self, str(root), recursive=True)
            except OSError as error:  # unreadable: tried again at the next look
                print(f"watch: cannot watch {root}: {error}", flush=True)
                self.identity[root] = None
                continue
            with self.changed:  # first seen, or back again: indexed as it is now
                self.dirty.add(root)
                self.last_change = time.monotonic()
        self.watches = watches  # replaced whole: the observer's thread reads it

    def _unschedule(self, watch) -> None:
        try:
            self.observer.unschedule(watch)
        except (KeyError, OSError):  # its notifications ended with its folder
            pass

    def stop(self) -> None:
        """Stop watching, and let an indexing run in progress end first."""
        self.observer.stop()
        self.observer.join()
        with self.changed:
            self.stopping = True
            self.changed.notify()
        self.worker.join()

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        touched = [Path(p) for p in paths if p and (event.is_directory or Path(p).suffix.lower() in IMAGE_SUFFIXES)
                   and not Path(p).is_relative_to(self.library.folder.absolute())]  # the app's previews, copies
        roots = {root for root in self.watches for path in touched if path.is_relative_to(root)}
        if roots and event.event_type != "opened" and event.event_type != "closed_no_write":
            with self.changed:
                self.dirty |= roots
                self.last_change = time.monotonic()
                self.changed.notify()

    def _run(self) -> None:
        while (roots := self._settled()) is not None:
            if roots:
                self._index(roots)
            else:
                self.follow()

    def _settled(self) -> list[Path] | None:
        """The library's folders whose changes have settled; [] after a wait in which none did; None once stopping."""
        with self.changed:
            waiting = not self.dirty or time.monotonic() - self.last_change < self.quiet_s
            if waiting and not self.stopping:
                self.changed.wait(timeout=min(self.quiet_s, self.follow_s) if self.dirty else self.follow_s)
            if self.stopping:
                return None
            if waiting:
                return []
            roots, self.dirty = sorted(self.dirty & set(self.library.roots())), set()  # (one removed since: no)
            return roots

    def _index(self, roots: list[Path]) -> None:
        roots = [root for root in roots if root.is_dir()]  # a deleted one: `follow` says so, and waits for it
        if not roots:
            return
        try:
            summary = index_folders(self.library, self.encoder, roots, progress=False)
            if summary.indexed and self.library.vocabulary():
                tag_library(self.library, self.encoder, self.library.vocabulary())
            print(f"watch: {', '.join(map(str, roots))}: {str(summary).splitlines()[0]}", flush=True)
        except (ValueError, OSError) as error:  # a full disk, a folder gone: said, and the watch goes on
            print(f"watch: error: {error}", flush=True)
