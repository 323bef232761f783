"""Ray actors: one role per file, each a plain class wrapping coral/ functions."""
