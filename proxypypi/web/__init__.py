"""
The twisted.web resource tree.
"""
