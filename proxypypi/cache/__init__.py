"""
What is kept on local disk: the storage layout and its atomic writes,
project pages, the project list, file downloads, and the bound on the
cache's size.
"""
