"""The adapter box: the content-addressed adapter store and the single-flight cache."""
