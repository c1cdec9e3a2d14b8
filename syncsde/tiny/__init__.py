"""The embedded tiny models: a procedural scene dataset, and their training recipes (the model card:
:mod:`syncsde.evaluation.quality`)."""
