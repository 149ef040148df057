"""Built-in harness plugin: distillers (none, kd, sad)."""
