"""Simulations on a labelled file (`proxal simulate`) and the embedded demo, its preset
on a bundled Banking77 subset."""
