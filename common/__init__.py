"""What training and evaluation both read, kept below both so data flows one way: the caption file
format, the cache of recomputable arrays (embeddings, locked-trunk features), and retrieval metrics."""
