"""Built-in harness plugin: the imdb-movies dataset and the dcnn model (seed 000's movie
rating experiment). Shaped like a third-party plugin package."""
