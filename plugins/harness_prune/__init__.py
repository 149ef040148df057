"""Built-in harness plugin: pruners none, sp, lth, lth-u and ss, with real shrinking."""
