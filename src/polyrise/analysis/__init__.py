"""Analyses that compare models before and after alignment.

`logit_lens`: which language a model "thinks in" layer by layer (also the per-layer hidden-state runner and
loading models one at a time). `similarity`: how close each language's sentence representations sit to English's,
layer by layer. `transfer`: how much of a gain on the trained languages reaches the unseen ones. `writing`: the
figures and Markdown tables they write.
"""
