"""Billing rules: money, spend windows, customer accounts and their decisions (pure).

Import the modules themselves (``domain.billing.books`` …): this package imports nothing,
so the event catalogue can use its state types without an import cycle.
"""
