"""What several parts read, kept below them all so data flows one way: opening image files and finding them
in folders, the caption file format, the cache of recomputable arrays (embeddings, locked-trunk features),
retrieval metrics, and the command line every entry point shares."""
