"""Built-in harness plugin: the imdb-movies dataset and the dcnn model (Bharadhwaj et al.'s (2024) movie
rating experiment). Shaped like a third-party plugin package."""
