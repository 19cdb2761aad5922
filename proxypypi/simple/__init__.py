"""
The simple repository API (PEP 503 / 691 / 700): data model, parsing of
upstream pages, rendering of our own pages and content negotiation.
"""
