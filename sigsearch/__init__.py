"""sigsearch: one command for the whole tool (`sigsearch --help`); each job stays its package's own."""
