"""Documentation kept as data: the README's table of differences from the official code (:mod:`.differences`)."""
