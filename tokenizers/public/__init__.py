"""Adapters that load the released files of public tokenizers into tokbench.

One module per upstream; each public name is a registry factory (entry-point group
``tokbench.tokenizers``) ``build(weights=None, **options)`` carrying its `Release` facts.
"""
