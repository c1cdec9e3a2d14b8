"""The embedded tiny models: a procedural scene dataset, their training recipes, and the quality measurement."""
