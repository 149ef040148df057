"""Built-in harness plugin: pruners (none; sp, lth and ss come with the pruning issue)."""
